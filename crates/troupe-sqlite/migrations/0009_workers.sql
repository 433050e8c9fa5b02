-- Token roles, and the workers that claim runs (embedded pools and remote agents).
ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';

CREATE TABLE workers (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    labels          TEXT    NOT NULL,
    capacity        INTEGER NOT NULL,
    active_runs     INTEGER NOT NULL DEFAULT 0,
    version         TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL,
    draining        INTEGER NOT NULL DEFAULT 0,
    stopped_at      INTEGER
);
CREATE INDEX workers_heartbeat ON workers (last_heartbeat);
