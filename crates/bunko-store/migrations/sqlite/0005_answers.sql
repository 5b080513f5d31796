-- bunko schema v5: what asking produces and keeps. Conversations carry the turns a follow-up
-- question sees; summaries keep every generation (the newest is served); notes are a
-- project's Markdown with citations (JSON [{n, document_id, title, page, …}]).

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE conversation_turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    question        TEXT NOT NULL,
    answer          TEXT NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) STRICT;

CREATE TABLE summaries (
    id           TEXT PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    body         TEXT NOT NULL
) STRICT;
CREATE INDEX summaries_document ON summaries (document_id, created_at);

CREATE TABLE notes (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]',
    author_id   TEXT REFERENCES users (id) ON DELETE SET NULL,
    citations   TEXT NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX notes_project ON notes (project_id, id);
