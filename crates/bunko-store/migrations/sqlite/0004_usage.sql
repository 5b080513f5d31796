-- bunko schema v4: the gateway's usage ledger. One row per model call, appended in batches
-- off the request path; read by /api/v1/usage and to seed quota budgets at start. `at` is
-- milliseconds since the epoch (UTC); queries are by time range, optionally per user.

CREATE TABLE usage_ledger (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    user_id        TEXT NOT NULL,
    key_id         TEXT,
    project_id     TEXT,
    api            TEXT NOT NULL,
    model          TEXT NOT NULL,
    provider       TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens  INTEGER NOT NULL CHECK (output_tokens >= 0),
    estimated      INTEGER NOT NULL CHECK (estimated IN (0, 1)),
    cost_usd       REAL NOT NULL CHECK (cost_usd >= 0),
    duration_ms    REAL NOT NULL,
    ttft_ms        REAL,
    outcome        TEXT NOT NULL
) STRICT;

CREATE INDEX usage_ledger_at ON usage_ledger (at);
CREATE INDEX usage_ledger_user_at ON usage_ledger (user_id, at);
