-- troupe's SQLite schema.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC): exact, compact, and they
-- compare and sort as numbers. JSON is stored as TEXT.

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE inventories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    env         TEXT,
    version     TEXT,
    format      TEXT    NOT NULL CHECK (format IN ('yaml', 'ini')),
    hosts       TEXT    NOT NULL,
    vars        TEXT,
    host_count  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE runs (
    -- AUTOINCREMENT: ids are never reused, so they keep increasing with creation.
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id        INTEGER NOT NULL REFERENCES projects (id),
    playbook          TEXT    NOT NULL,
    inventory_id      INTEGER REFERENCES inventories (id),
    -- The inventory as it was when the run was created.
    inventory_format  TEXT    NOT NULL CHECK (inventory_format IN ('yaml', 'ini')),
    inventory_hosts   TEXT    NOT NULL,
    inventory_vars    TEXT,
    options           TEXT    NOT NULL,
    -- Read copy of run_labels, so a run is read from one row.
    labels            TEXT    NOT NULL DEFAULT '{}',
    tag               TEXT,
    status            TEXT    NOT NULL CHECK (status IN
                        ('queued', 'running', 'successful', 'failed', 'canceled', 'timeout', 'error')),
    status_reason     TEXT,
    rc                INTEGER,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    worker_id         TEXT,
    lease_expires_at  INTEGER,
    cancel_requested  TEXT    CHECK (cancel_requested IN ('graceful', 'force')),
    summary           TEXT    NOT NULL DEFAULT '{}',
    event_count       INTEGER NOT NULL DEFAULT 0
);

-- Claim order: the oldest queued run.
CREATE INDEX runs_queued ON runs (id) WHERE status = 'queued';
-- Lease expiry and dead-worker sweeps look only at running runs.
CREATE INDEX runs_running ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_project ON runs (project_id, id);
CREATE INDEX runs_by_tag ON runs (tag, id) WHERE tag IS NOT NULL;

CREATE TABLE run_labels (
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX run_labels_lookup ON run_labels (key, value, run_id);

CREATE TABLE events (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    counter      INTEGER NOT NULL,
    uuid         TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    parent_uuid  TEXT,
    -- Copied out of event_data for queries.
    host         TEXT,
    task         TEXT,
    created      INTEGER NOT NULL,
    stdout       TEXT    NOT NULL,
    start_line   INTEGER NOT NULL,
    end_line     INTEGER NOT NULL,
    event_data   TEXT    NOT NULL,
    PRIMARY KEY (run_id, counter)
);
CREATE INDEX events_by_name ON events (run_id, event);

CREATE TABLE run_output (
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    stream  TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text    TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
