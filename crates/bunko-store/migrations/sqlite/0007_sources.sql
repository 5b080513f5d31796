-- bunko schema v7: sources (crawlers and watched folders) with their cursors, the items each
-- has taken in (so an unchanged item is skipped by its content hash and a crawl killed midway
-- resumes without duplicates), and versions of documents: a document taken from a source has
-- an external id (`arxiv:2101.00001`, `egov:411AC0000000127`); each version (arXiv vN, a law's
-- revision) is its own document with the date it is valid from; the current one is what
-- search sees unless asked "as of" a date.

ALTER TABLE documents ADD COLUMN external_id TEXT;
ALTER TABLE documents ADD COLUMN version TEXT;
ALTER TABLE documents ADD COLUMN valid_from TEXT;   -- YYYY-MM-DD
ALTER TABLE documents ADD COLUMN valid_to TEXT;     -- the next version's valid_from
ALTER TABLE documents ADD COLUMN is_current INTEGER NOT NULL DEFAULT 1;
ALTER TABLE documents ADD COLUMN origin_meta TEXT;  -- the source's metadata (JSON)
CREATE INDEX documents_external ON documents (project_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX documents_superseded ON documents (project_id) WHERE is_current = 0;

CREATE TABLE sources (
    name         TEXT PRIMARY KEY,
    definition   TEXT NOT NULL,          -- the SourceDef as JSON
    origin       TEXT NOT NULL CHECK (origin IN ('config', 'api')),
    cursor       TEXT NOT NULL DEFAULT '{}',
    last_run     INTEGER,
    last_job_id  TEXT,
    last_status  TEXT,                   -- ok | failed
    last_error   TEXT,
    last_stats   TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE source_items (
    source        TEXT NOT NULL REFERENCES sources (name) ON DELETE CASCADE,
    item_key      TEXT NOT NULL,         -- arXiv id + version, law revision id, feed entry id, path
    content_hash  TEXT NOT NULL,         -- SHA-256 of what was taken in
    document_id   TEXT,
    seen_at       INTEGER NOT NULL,
    PRIMARY KEY (source, item_key)
) STRICT;

-- The usage ledger rolled up: rows older than `gateway.ledger_detail_days` become one row per
-- UTC day, user, key, project and model (the daily maintenance job moves them in one
-- transaction). Totals read both tables.
CREATE TABLE usage_daily (
    at             INTEGER NOT NULL,     -- the day's start, ms since the epoch (UTC)
    user_id        TEXT NOT NULL,
    key_id         TEXT NOT NULL DEFAULT '',
    project_id     TEXT NOT NULL DEFAULT '',
    model          TEXT NOT NULL,
    requests       INTEGER NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       REAL NOT NULL,
    errors         INTEGER NOT NULL,
    PRIMARY KEY (at, user_id, key_id, project_id, model)
) STRICT;
