-- bunko schema v3: documents (content-addressed originals), their pages of normalised text and
-- the chunks search indexes. Pages and chunks are replaced together with status `ready` in one
-- transaction, so a document is never half-processed.

CREATE TABLE documents (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title         TEXT NOT NULL,
    filename      TEXT NOT NULL,
    doc_type      TEXT NOT NULL CHECK (doc_type IN ('pdf', 'png', 'jpeg', 'tiff', 'html', 'markdown', 'text')),
    sha256        TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    status        TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    stage         TEXT,
    progress      REAL NOT NULL DEFAULT 0,
    error_code    TEXT,
    error_message TEXT,
    page_count    INTEGER NOT NULL DEFAULT 0,
    chunk_count   INTEGER NOT NULL DEFAULT 0,
    language      TEXT,
    meta          TEXT NOT NULL DEFAULT '{}',
    source        TEXT NOT NULL DEFAULT 'upload',
    tags          TEXT NOT NULL DEFAULT '[]',
    job_id        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
-- The same bytes in one project are one document.
CREATE UNIQUE INDEX documents_project_sha ON documents (project_id, sha256);
CREATE INDEX documents_sha ON documents (sha256);
CREATE INDEX documents_status ON documents (status);

CREATE TABLE document_pages (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page        INTEGER NOT NULL CHECK (page >= 1),
    text        TEXT NOT NULL,
    raw         TEXT NOT NULL,
    method      TEXT NOT NULL CHECK (method IN ('text', 'ocr')),
    confidence  REAL,
    -- [[normalised index, raw index], …] where the correspondence jumps (characters)
    offsets     TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (document_id, page)
) STRICT;

CREATE TABLE chunks (
    id            TEXT PRIMARY KEY,
    document_id   TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    project_id    TEXT NOT NULL,
    ord           INTEGER NOT NULL,
    text          TEXT NOT NULL,
    page_start    INTEGER NOT NULL,
    page_end      INTEGER NOT NULL,
    char_start    INTEGER NOT NULL,
    char_end      INTEGER NOT NULL,
    section_path  TEXT NOT NULL DEFAULT '',
    language      TEXT NOT NULL,
    is_references INTEGER NOT NULL DEFAULT 0,
    content_hash  TEXT NOT NULL
) STRICT;
CREATE INDEX chunks_document ON chunks (document_id, ord);
CREATE INDEX chunks_project ON chunks (project_id);

-- A password given for an encrypted PDF, kept only until its processing ends (so a retry
-- after a crash can still open the file), never in the job payload that job views show.
CREATE TABLE document_passwords (
    document_id TEXT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    password    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
