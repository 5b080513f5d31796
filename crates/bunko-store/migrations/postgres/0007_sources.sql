-- bunko schema (PostgreSQL) v7: sources (crawlers and watched folders) with their cursors, the items each
-- has taken in (so an unchanged item is skipped by its content hash and a crawl killed midway
-- resumes without duplicates), and versions of documents: a document taken from a source has
-- an external id (`arxiv:2101.00001`, `egov:411AC0000000127`); each version (arXiv vN, a law's
-- revision) is its own document with the date it is valid from; the current one is what
-- search sees unless asked "as of" a date.

ALTER TABLE documents ADD COLUMN external_id TEXT COLLATE "C";
ALTER TABLE documents ADD COLUMN version TEXT COLLATE "C";
ALTER TABLE documents ADD COLUMN valid_from TEXT COLLATE "C";   -- YYYY-MM-DD
ALTER TABLE documents ADD COLUMN valid_to TEXT COLLATE "C";     -- the next version's valid_from
ALTER TABLE documents ADD COLUMN is_current BIGINT NOT NULL DEFAULT 1;
ALTER TABLE documents ADD COLUMN origin_meta TEXT COLLATE "C";  -- the source's metadata (JSON)
CREATE INDEX documents_external ON documents (project_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX documents_superseded ON documents (project_id) WHERE is_current = 0;

CREATE TABLE sources (
    name         TEXT COLLATE "C" PRIMARY KEY,
    definition   TEXT COLLATE "C" NOT NULL,          -- the SourceDef as JSON
    origin       TEXT COLLATE "C" NOT NULL CHECK (origin IN ('config', 'api')),
    cursor       TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    last_run     BIGINT,
    last_job_id  TEXT COLLATE "C",
    last_status  TEXT COLLATE "C",                   -- ok | failed
    last_error   TEXT COLLATE "C",
    last_stats   TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE source_items (
    source        TEXT COLLATE "C" NOT NULL REFERENCES sources (name) ON DELETE CASCADE,
    item_key      TEXT COLLATE "C" NOT NULL,         -- arXiv id + version, law revision id, feed entry id, path
    content_hash  TEXT COLLATE "C" NOT NULL,         -- SHA-256 of what was taken in
    document_id   TEXT COLLATE "C",
    seen_at       BIGINT NOT NULL,
    PRIMARY KEY (source, item_key)
);

-- The usage ledger rolled up: rows older than `gateway.ledger_detail_days` become one row per
-- UTC day, user, key, project and model (the daily maintenance job moves them in one
-- transaction). Totals read both tables.
CREATE TABLE usage_daily (
    at             BIGINT NOT NULL,     -- the day's start, ms since the epoch (UTC)
    user_id        TEXT COLLATE "C" NOT NULL,
    key_id         TEXT COLLATE "C" NOT NULL DEFAULT '',
    project_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
    model          TEXT COLLATE "C" NOT NULL,
    requests       BIGINT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    cost_usd       DOUBLE PRECISION NOT NULL,
    errors         BIGINT NOT NULL,
    PRIMARY KEY (at, user_id, key_id, project_id, model)
);
