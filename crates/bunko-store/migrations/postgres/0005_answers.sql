-- bunko schema (PostgreSQL) v5: what asking produces and keeps. Conversations carry the turns a follow-up
-- question sees; summaries keep every generation (the newest is served); notes are a
-- project's Markdown with citations (JSON [{n, document_id, title, page, …}]).

CREATE TABLE conversations (
    id          TEXT COLLATE "C" PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE conversation_turns (
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    question        TEXT COLLATE "C" NOT NULL,
    answer          TEXT COLLATE "C" NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE summaries (
    id           TEXT COLLATE "C" PRIMARY KEY,
    document_id  TEXT COLLATE "C" NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    body         TEXT COLLATE "C" NOT NULL
);
CREATE INDEX summaries_document ON summaries (document_id, created_at);

CREATE TABLE notes (
    id          TEXT COLLATE "C" PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       TEXT COLLATE "C" NOT NULL,
    body        TEXT COLLATE "C" NOT NULL,
    tags        TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    author_id   TEXT COLLATE "C" REFERENCES users (id) ON DELETE SET NULL,
    citations   TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX notes_project ON notes (project_id, id);
