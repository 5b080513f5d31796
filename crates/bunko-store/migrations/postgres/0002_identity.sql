-- bunko schema (PostgreSQL) v2: users, project memberships, sessions + rotating refresh tokens, API keys,
-- and the append-only audit log.

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    email         TEXT COLLATE "C" NOT NULL,
    display_name  TEXT COLLATE "C" NOT NULL DEFAULT '',
    password_hash TEXT COLLATE "C",
    role          TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin', 'member')),
    status        TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Unique case-insensitively (ASCII, as SQLite's NOCASE: lower() under the "C" collation).
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE memberships (
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT COLLATE "C" NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, project_id);

-- One row per login: refresh tokens rotate inside it; revoking it ends the session at once.
CREATE TABLE sessions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoke_reason TEXT COLLATE "C",
    ip         TEXT COLLATE "C",
    user_agent TEXT COLLATE "C"
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    id         TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    prefix       TEXT COLLATE "C" NOT NULL,
    secret_hash  TEXT COLLATE "C" NOT NULL UNIQUE,
    scopes       TEXT COLLATE "C" NOT NULL,
    project_id   TEXT COLLATE "C" REFERENCES projects (id) ON DELETE CASCADE,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE audit_log (
    id          TEXT COLLATE "C" PRIMARY KEY,
    at          BIGINT NOT NULL,
    event       TEXT COLLATE "C" NOT NULL,
    outcome     TEXT COLLATE "C" NOT NULL,
    actor_user  TEXT COLLATE "C",
    actor_key   TEXT COLLATE "C",
    actor       TEXT COLLATE "C",
    target      TEXT COLLATE "C",
    project_id  TEXT COLLATE "C",
    ip          TEXT COLLATE "C",
    user_agent  TEXT COLLATE "C",
    detail      TEXT COLLATE "C"
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_event ON audit_log (event, at);

-- Append-only: rows never change; only the retention job may delete rows older than the
-- cutoff it has recorded in settings.
CREATE FUNCTION bunko_audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    IF OLD.at >= COALESCE((SELECT CAST(value AS BIGINT) FROM settings
                           WHERE key = 'audit.retention_cutoff_ms'), 0) THEN
        RAISE EXCEPTION 'audit_log rows are deleted only by retention';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION bunko_audit_log_guard();
