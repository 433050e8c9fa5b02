-- troupe's PostgreSQL schema.
-- JSON that troupe only reads back whole is `json` (kept as written, and unlike `jsonb` it
-- accepts the \u0000 escape that ansible output can contain); small structured values are
-- `jsonb`.

CREATE TABLE projects (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    source      JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE inventories (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    env         TEXT,
    version     TEXT,
    format      TEXT        NOT NULL CHECK (format IN ('yaml', 'ini')),
    hosts       TEXT        NOT NULL,
    vars        TEXT,
    host_count  BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id        BIGINT      NOT NULL REFERENCES projects (id),
    playbook          TEXT        NOT NULL,
    inventory_id      BIGINT      REFERENCES inventories (id),
    -- The inventory as it was when the run was created.
    inventory_format  TEXT        NOT NULL CHECK (inventory_format IN ('yaml', 'ini')),
    inventory_hosts   TEXT        NOT NULL,
    inventory_vars    TEXT,
    options           JSON        NOT NULL,
    -- Read copy of run_labels, so a run is read from one row.
    labels            JSONB       NOT NULL DEFAULT '{}',
    tag               TEXT,
    status            TEXT        NOT NULL CHECK (status IN
                        ('queued', 'running', 'successful', 'failed', 'canceled', 'timeout', 'error')),
    status_reason     TEXT,
    rc                INTEGER,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    worker_id         TEXT,
    lease_expires_at  TIMESTAMPTZ,
    cancel_requested  TEXT        CHECK (cancel_requested IN ('graceful', 'force')),
    summary           JSONB       NOT NULL DEFAULT '{}',
    event_count       BIGINT      NOT NULL DEFAULT 0
);

-- Claim order: the oldest queued run.
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';
-- Lease expiry and dead-worker sweeps look only at running runs.
CREATE INDEX runs_running ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_project ON runs (project_id, id);
CREATE INDEX runs_by_tag ON runs (tag, id) WHERE tag IS NOT NULL;

CREATE TABLE run_labels (
    run_id  BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key     TEXT   NOT NULL,
    value   TEXT   NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX run_labels_lookup ON run_labels (key, value, run_id);

CREATE TABLE events (
    run_id       BIGINT      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    counter      BIGINT      NOT NULL,
    uuid         TEXT        NOT NULL,
    event        TEXT        NOT NULL,
    parent_uuid  TEXT,
    -- Copied out of event_data for queries.
    host         TEXT,
    task         TEXT,
    created      TIMESTAMPTZ NOT NULL,
    stdout       TEXT        NOT NULL,
    start_line   BIGINT      NOT NULL,
    end_line     BIGINT      NOT NULL,
    event_data   JSON        NOT NULL,
    PRIMARY KEY (run_id, counter)
);
CREATE INDEX events_by_name ON events (run_id, event);

CREATE TABLE run_output (
    run_id  BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    stream  TEXT   NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text    TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL,
    hash        TEXT        NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);
