-- bunko schema (PostgreSQL) v1: settings, projects, the durable job queue.
-- Times are Unix milliseconds (BIGINT); ids are UUIDv7 text, so they sort by creation time.
-- Text is compared byte-wise (COLLATE "C"), as SQLite compares it, whatever the database locale.

CREATE TABLE settings (
    key        TEXT COLLATE "C" PRIMARY KEY,
    value      TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE projects (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    slug        TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    queue            TEXT COLLATE "C" NOT NULL,
    kind             TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    payload          TEXT COLLATE "C" NOT NULL,
    result           TEXT COLLATE "C",
    idempotency_key  TEXT COLLATE "C",
    priority         BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL CHECK (max_attempts >= 1),
    run_at           BIGINT NOT NULL,
    lease_owner      TEXT COLLATE "C",
    lease_expires_at BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    last_error_code  TEXT COLLATE "C",
    last_error       TEXT COLLATE "C",
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);

CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs (queue, state, priority DESC, run_at);
CREATE INDEX jobs_lease ON jobs (queue, state, lease_expires_at);
