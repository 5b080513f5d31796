-- bunko schema v6: the scheduler. Schedules come from the configuration (origin 'config',
-- replaced at each start) or the API ('api'); every firing is a row in schedule_runs next to
-- the job it enqueued. `leases` holds the one scheduler lease (and any later ones).

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    definition   TEXT NOT NULL,          -- the ScheduleDef as JSON
    origin       TEXT NOT NULL CHECK (origin IN ('config', 'api')),
    paused       INTEGER NOT NULL DEFAULT 0,
    next_run     INTEGER,
    last_run     INTEGER,
    last_job_id  TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE schedule_runs (
    schedule  TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    slot      INTEGER NOT NULL,
    fired_at  INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    job_id    TEXT,
    slots     INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule, fired_at);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
