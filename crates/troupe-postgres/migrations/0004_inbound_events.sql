-- Inbound events (webhooks, broker messages...): each one as recorded, the runs its rules
-- started, the marks throttle and dedupe gates leave, and the rules document.

-- event_id: the event whose rule started a run. No foreign key: records are pruned by
-- retention while the runs they started stay.
-- concurrency_key: runs sharing it (a rule and a routing key) count as the same work for the
-- rule's concurrency policy.
ALTER TABLE runs
    ADD COLUMN event_id         BIGINT,
    ADD COLUMN concurrency_key  TEXT;
-- The active (queued or running) runs of a concurrency key.
CREATE INDEX runs_active_by_concurrency ON runs (concurrency_key, id)
    WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'running');

CREATE TABLE event_records (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at        TIMESTAMPTZ NOT NULL,
    source             TEXT        NOT NULL,
    routing_key        TEXT        NOT NULL,
    delivery_id        TEXT,
    -- Hex SHA-256 over the routing key and the payload: spots redeliveries without an id.
    content_hash       TEXT        NOT NULL,
    payload_size       BIGINT      NOT NULL,
    payload            TEXT,
    payload_truncated  BOOLEAN     NOT NULL DEFAULT FALSE,
    status             TEXT        NOT NULL CHECK (status IN
                         ('accepted', 'unmatched', 'skipped', 'failed', 'rejected')),
    reason             TEXT,
    -- The rule outcomes (`Vec<RuleOutcome>`), in rule order; `json`, as it is only read back
    -- whole and gate keys rendered from payloads may hold \u0000.
    rules              JSON        NOT NULL DEFAULT '[]',
    -- The runs it started.
    run_ids            BIGINT[]    NOT NULL DEFAULT '{}'
);
-- A delivery is recorded once per source.
CREATE UNIQUE INDEX event_records_delivery ON event_records (source, delivery_id)
    WHERE delivery_id IS NOT NULL;
-- Listings, newest first.
CREATE INDEX event_records_by_source ON event_records (source, id);
CREATE INDEX event_records_by_routing_key ON event_records (routing_key, id);
CREATE INDEX event_records_by_status ON event_records (status, id);
-- Redeliveries: the same content from the same source, recently.
CREATE INDEX event_records_by_content ON event_records (source, content_hash, received_at);
-- Retention.
CREATE INDEX event_records_by_received ON event_records (received_at);

-- A run started by a rule closes its throttle and dedupe gates for a while: a mark per gate.
CREATE TABLE rule_gates (
    rule        TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('throttle', 'dedupe')),
    -- The rendered group (throttle) or event id (dedupe).
    key         TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    -- started_at plus the gate's window: the gate is closed to events received before this.
    expires_at  TIMESTAMPTZ NOT NULL,
    -- The event whose run closed it (no foreign key: records are pruned on their own).
    event_id    BIGINT      NOT NULL
);
CREATE INDEX rule_gates_lookup ON rule_gates (rule, kind, key, expires_at);
CREATE INDEX rule_gates_by_expiry ON rule_gates (expires_at);

-- The rules document: one row, or none before the first one is stored.
CREATE TABLE rules_doc (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    revision    BIGINT      NOT NULL,
    text        TEXT        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
