-- bunko schema (PostgreSQL) v4: the gateway's usage ledger. One row per model call, appended in batches
-- off the request path; read by /api/v1/usage and to seed quota budgets at start. `at` is
-- milliseconds since the epoch (UTC); queries are by time range, optionally per user.

CREATE TABLE usage_ledger (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             BIGINT NOT NULL,
    user_id        TEXT COLLATE "C" NOT NULL,
    key_id         TEXT COLLATE "C",
    project_id     TEXT COLLATE "C",
    api            TEXT COLLATE "C" NOT NULL,
    model          TEXT COLLATE "C" NOT NULL,
    provider       TEXT COLLATE "C" NOT NULL,
    input_tokens   BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens  BIGINT NOT NULL CHECK (output_tokens >= 0),
    estimated      BIGINT NOT NULL CHECK (estimated IN (0, 1)),
    cost_usd       DOUBLE PRECISION NOT NULL CHECK (cost_usd >= 0),
    duration_ms    DOUBLE PRECISION NOT NULL,
    ttft_ms        DOUBLE PRECISION,
    outcome        TEXT COLLATE "C" NOT NULL
);

CREATE INDEX usage_ledger_at ON usage_ledger (at);
CREATE INDEX usage_ledger_user_at ON usage_ledger (user_id, at);
