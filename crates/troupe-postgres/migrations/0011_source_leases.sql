-- Leader leases: which replica runs an event source (or retention) right now.
CREATE TABLE source_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
