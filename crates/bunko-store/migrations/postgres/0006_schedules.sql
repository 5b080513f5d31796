-- bunko schema (PostgreSQL) v6: the scheduler. Schedules come from the configuration (origin 'config',
-- replaced at each start) or the API ('api'); every firing is a row in schedule_runs next to
-- the job it enqueued. `leases` holds the one scheduler lease (and any later ones).

CREATE TABLE schedules (
    name         TEXT COLLATE "C" PRIMARY KEY,
    definition   TEXT COLLATE "C" NOT NULL,          -- the ScheduleDef as JSON
    origin       TEXT COLLATE "C" NOT NULL CHECK (origin IN ('config', 'api')),
    paused       BIGINT NOT NULL DEFAULT 0,
    next_run     BIGINT,
    last_run     BIGINT,
    last_job_id  TEXT COLLATE "C",
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE schedule_runs (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- SQLite's rowid: firing order
    schedule  TEXT COLLATE "C" NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    slot      BIGINT NOT NULL,
    fired_at  BIGINT NOT NULL,
    kind      TEXT COLLATE "C" NOT NULL,
    job_id    TEXT COLLATE "C",
    slots     BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule, fired_at);

CREATE TABLE leases (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL
);
