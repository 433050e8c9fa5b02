-- Notifications: where a run's or an execution's end is told (a webhook, Slack). A template
-- keeps its targets sealed; each run or execution gets one row per target, `pending` until it
-- is sent, given up or skipped, claimed under a lease by the replica sending it.

ALTER TABLE templates ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';

CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           INTEGER REFERENCES runs (id) ON DELETE CASCADE,
    execution_id     INTEGER REFERENCES executions (id) ON DELETE CASCADE,
    -- JSON: what may be shown of the target, and the whole target sealed.
    target           TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  INTEGER,
    owner            TEXT,
    lease_until      INTEGER,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    CHECK ((run_id IS NULL) <> (execution_id IS NULL))
);
CREATE INDEX notifications_of_run ON notifications (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX notifications_of_execution ON notifications (execution_id)
    WHERE execution_id IS NOT NULL;
-- The sender looks only at pending ones.
CREATE INDEX notifications_pending ON notifications (id) WHERE state = 'pending';
