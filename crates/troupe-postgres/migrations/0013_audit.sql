-- The audit log: who changed or launched what, when, from where. Never a request body.
-- detail: JSON text (only ever read back whole).
CREATE TABLE audit (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    actor        TEXT        NOT NULL,
    token_id     BIGINT,
    token_name   TEXT,
    role         TEXT,
    action       TEXT        NOT NULL,
    method       TEXT,
    route        TEXT,
    target_kind  TEXT,
    target_id    TEXT,
    target_name  TEXT,
    status       INTEGER,
    client_addr  TEXT,
    user_agent   TEXT,
    detail       TEXT        NOT NULL
);
-- Pruning by age.
CREATE INDEX audit_at ON audit (at);
