-- Flows: the versions of each flow document, their executions with a record per step and
-- round, the slots executions hold in concurrency groups and named locks, and schedules with
-- the fires each of them claimed.
--
-- JSON columns are `json`, not `jsonb`: inputs, step results and published values come from
-- commands' output and may hold \u0000, which jsonb refuses. They are only read back whole.

CREATE TABLE flow_versions (
    name        TEXT        NOT NULL,
    -- 1, 2, 3... per name.
    version     BIGINT      NOT NULL CHECK (version > 0),
    document    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE executions (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow                 TEXT        NOT NULL,
    version              BIGINT      NOT NULL,
    status               TEXT        NOT NULL CHECK (status IN ('queued', 'running',
                           'successful', 'failed', 'canceled', 'timeout', 'skipped')),
    -- Secret inputs are masked.
    inputs               JSON        NOT NULL,
    -- The secret inputs, sealed by the engine: opaque here.
    sealed_secrets       TEXT,
    concurrency_key      TEXT,
    parent_execution_id  BIGINT      REFERENCES executions (id),
    parent_step          TEXT,
    started_by           TEXT        NOT NULL,
    round                INTEGER     NOT NULL DEFAULT 0,
    error                TEXT,
    cancel_requested     BOOLEAN     NOT NULL DEFAULT FALSE,
    -- The replica running it and until when its hold lasts.
    owner                TEXT,
    lease_until          TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL,
    started_at           TIMESTAMPTZ,
    finished_at          TIMESTAMPTZ,
    FOREIGN KEY (flow, version) REFERENCES flow_versions (name, version),
    CHECK ((parent_execution_id IS NULL) = (parent_step IS NULL))
);
CREATE INDEX executions_by_flow ON executions (flow, id);
CREATE INDEX executions_by_status ON executions (status, id);
CREATE INDEX executions_by_parent ON executions (parent_execution_id, id)
    WHERE parent_execution_id IS NOT NULL;
-- Unclaimed lookups and takeovers look only at unfinished executions.
CREATE INDEX executions_unfinished ON executions (id) WHERE status IN ('queued', 'running');

-- One record per step, per round of its execution (a resume starts a new round).
CREATE TABLE execution_steps (
    execution_id   BIGINT      NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    round          INTEGER     NOT NULL,
    key            TEXT        NOT NULL,
    phase          TEXT        NOT NULL CHECK (phase IN
                     ('pre', 'steps', 'on_success', 'on_failure', 'finally')),
    position       INTEGER     NOT NULL,
    kind           TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('running', 'waiting', 'successful',
                     'failed', 'skipped', 'canceled', 'timeout')),
    attempts       INTEGER     NOT NULL,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    -- The last attempt's result, and the values published for later steps.
    result         JSON        NOT NULL,
    published      JSON        NOT NULL,
    error          TEXT,
    -- The runs and executions the step started.
    run_ids        BIGINT[]    NOT NULL DEFAULT '{}',
    execution_ids  BIGINT[]    NOT NULL DEFAULT '{}',
    PRIMARY KEY (execution_id, round, key)
);

-- The places executions hold in concurrency groups and named locks: a row per holder. Rows are
-- only added under a transaction-scoped advisory lock on the key, so counting the holders and
-- adding one is a single step across replicas.
CREATE TABLE execution_slots (
    key           TEXT   NOT NULL,
    execution_id  BIGINT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    PRIMARY KEY (key, execution_id)
);
CREATE INDEX execution_slots_by_execution ON execution_slots (execution_id);

CREATE TABLE schedules (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT        NOT NULL UNIQUE,
    cron          TEXT        NOT NULL,
    timezone      TEXT        NOT NULL,
    -- `ScheduleTarget`.
    target        JSON        NOT NULL,
    missed        TEXT        NOT NULL CHECK (missed IN ('skip', 'once')),
    next_fire_at  TIMESTAMPTZ NOT NULL,
    -- Copied from the latest claimed fire, so a schedule is read from one row.
    last_fire_at  TIMESTAMPTZ,
    last_result   TEXT,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at);

-- Each fire claimed, once: the key is what makes two replicas never fire the same time twice.
CREATE TABLE schedule_fires (
    schedule_id  BIGINT      NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_at      TIMESTAMPTZ NOT NULL,
    claimed_at   TIMESTAMPTZ NOT NULL,
    -- What the fire started (`run:<id>`, `execution:<id>`) or why it could not.
    result       TEXT,
    PRIMARY KEY (schedule_id, fire_at)
);
