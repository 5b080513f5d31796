-- bunko schema (PostgreSQL) v3: documents (content-addressed originals), their pages of normalised text and
-- the chunks search indexes. Pages and chunks are replaced together with status `ready` in one
-- transaction, so a document is never half-processed.

CREATE TABLE documents (
    id            TEXT COLLATE "C" PRIMARY KEY,
    project_id    TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title         TEXT COLLATE "C" NOT NULL,
    filename      TEXT COLLATE "C" NOT NULL,
    doc_type      TEXT COLLATE "C" NOT NULL CHECK (doc_type IN ('pdf', 'png', 'jpeg', 'tiff', 'html', 'markdown', 'text')),
    sha256        TEXT COLLATE "C" NOT NULL,
    size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
    status        TEXT COLLATE "C" NOT NULL CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    stage         TEXT COLLATE "C",
    progress      DOUBLE PRECISION NOT NULL DEFAULT 0,
    error_code    TEXT COLLATE "C",
    error_message TEXT COLLATE "C",
    page_count    BIGINT NOT NULL DEFAULT 0,
    chunk_count   BIGINT NOT NULL DEFAULT 0,
    language      TEXT COLLATE "C",
    meta          TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    source        TEXT COLLATE "C" NOT NULL DEFAULT 'upload',
    tags          TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    job_id        TEXT COLLATE "C",
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- The same bytes in one project are one document.
CREATE UNIQUE INDEX documents_project_sha ON documents (project_id, sha256);
CREATE INDEX documents_sha ON documents (sha256);
CREATE INDEX documents_status ON documents (status);

CREATE TABLE document_pages (
    document_id TEXT COLLATE "C" NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page        BIGINT NOT NULL CHECK (page >= 1),
    text        TEXT COLLATE "C" NOT NULL,
    raw         TEXT COLLATE "C" NOT NULL,
    method      TEXT COLLATE "C" NOT NULL CHECK (method IN ('text', 'ocr')),
    confidence  DOUBLE PRECISION,
    -- [[normalised index, raw index], …] where the correspondence jumps (characters)
    offsets     TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    PRIMARY KEY (document_id, page)
);

CREATE TABLE chunks (
    id            TEXT COLLATE "C" PRIMARY KEY,
    document_id   TEXT COLLATE "C" NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    project_id    TEXT COLLATE "C" NOT NULL,
    ord           BIGINT NOT NULL,
    text          TEXT COLLATE "C" NOT NULL,
    page_start    BIGINT NOT NULL,
    page_end      BIGINT NOT NULL,
    char_start    BIGINT NOT NULL,
    char_end      BIGINT NOT NULL,
    section_path  TEXT COLLATE "C" NOT NULL DEFAULT '',
    language      TEXT COLLATE "C" NOT NULL,
    is_references BIGINT NOT NULL DEFAULT 0,
    content_hash  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX chunks_document ON chunks (document_id, ord);
CREATE INDEX chunks_project ON chunks (project_id);

-- A password given for an encrypted PDF, kept only until its processing ends (so a retry
-- after a crash can still open the file), never in the job payload that job views show.
CREATE TABLE document_passwords (
    document_id TEXT COLLATE "C" PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    password    TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
