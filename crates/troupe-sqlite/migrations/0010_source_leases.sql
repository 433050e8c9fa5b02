-- Leader leases: which process runs an event source (or retention) right now.
CREATE TABLE source_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
