//! Inbound events (webhooks, broker messages...) as they are recorded, with the runs their
//! matching rules start in the same transaction; and the rules document.

use crate::{Admission, Page, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use troupe_core::flow::{Execution, NewExecution};
use troupe_core::inbound::{ConcurrencyPolicy, EventRecord, EventStatus, GateKind};
use troupe_core::run::{NewRun, Run};

/// A gate a rule's run must pass: no run was started for the same rule, kind and key within
/// `within` before the event was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Throttle or dedupe.
    pub kind: GateKind,
    /// The rendered group (throttle) or event id (dedupe).
    pub key: String,
    /// The window.
    pub within: Duration,
}

/// A rule's concurrency setting for the run it proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Runs sharing this key (the rule and the routing key) count as the same work.
    pub key: String,
    /// What to do when one of them is queued or running.
    pub policy: ConcurrencyPolicy,
}

/// What a rule starts for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A run, queued (boxed: it is much the larger).
    Run(Box<NewRun>),
    /// An execution of a flow, queued (the flow's own `concurrency` applies to it, not the
    /// proposal's).
    Flow(NewExecution),
}

/// What one matching rule wants done with an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The rule's name.
    pub rule: String,
    /// Gates checked in order, inside the same transaction as the run's (or execution's)
    /// creation; the first closed one holds it back.
    pub gates: Vec<Gate>,
    /// Concurrency policy over runs, checked after the gates (not for a [`Start::Flow`]).
    pub concurrency: Option<Concurrency>,
    /// What to start, or why nothing could be built (recorded as `failed`).
    pub start: Result<Start, String>,
}

/// An event to record, with the runs its matching rules propose.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEventRecord {
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The source's name.
    pub source: String,
    /// The routing key.
    pub routing_key: String,
    /// The source's id for the delivery; unique per source. An event whose (source,
    /// delivery_id) is stored already is not recorded again: `Ingested::Duplicate`.
    pub delivery_id: Option<String>,
    /// Hex SHA-256 over the routing key and the payload bytes.
    pub content_hash: String,
    /// When set (a broker redelivered a message that carries no id), an event of the same
    /// source with the same `content_hash` received within this window counts as this one:
    /// `Ingested::Duplicate`.
    pub redelivery_window: Option<Duration>,
    /// The payload's size in bytes.
    pub payload_size: i64,
    /// The payload (text), whole or cut.
    pub payload: Option<String>,
    /// Whether `payload` was cut.
    pub payload_truncated: bool,
    /// The status when `proposals` is empty (`unmatched` or `rejected`); with proposals the
    /// store decides: `accepted` if a run started, else `failed` if every proposal failed,
    /// else `skipped`.
    pub status: EventStatus,
    /// Why, when it needs saying.
    pub reason: Option<String>,
    /// What the matching rules want, in rule order.
    pub proposals: Vec<Proposal>,
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// Recorded now, with the runs and executions it started (queued).
    Recorded {
        /// The record.
        record: EventRecord,
        /// The runs created, in proposal order.
        runs: Vec<Run>,
        /// The executions created, in proposal order.
        executions: Vec<Execution>,
    },
    /// Recorded before (same delivery): nothing was done now.
    Duplicate(EventRecord),
}

/// Which event records to list.
#[derive(Debug, Clone, Default)]
pub struct EventRecordFilter {
    /// Only from this source.
    pub source: Option<String>,
    /// Only with this routing key.
    pub routing_key: Option<String>,
    /// Only in this status.
    pub status: Option<EventStatus>,
}

/// The rules document, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesDoc {
    /// Increases by one with every change, from 1.
    pub revision: i64,
    /// The YAML text.
    pub text: String,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// Inbound event records and the rules document.
#[async_trait]
pub trait InboundStore {
    /// Records an inbound event and, in the same transaction, creates the runs and executions
    /// its proposals pass (gates, then, for runs, the concurrency policy); each started run
    /// carries the event's id and the proposal's concurrency key. With the `cancel` policy the earlier active runs of the key
    /// are listed in the outcome for the caller to cancel.
    ///
    /// With `admission`, the runs it starts are stored already claimed as far as it allows
    /// (admission at create: they come back `running`); the others come back `queued`.
    async fn ingest_event(
        &self,
        new: &NewEventRecord,
        admission: Option<Admission<'_>>,
    ) -> StoreResult<Ingested>;
    /// An event record by id.
    async fn get_event_record(&self, id: i64) -> StoreResult<EventRecord>;
    /// Event records matching `filter`, newest first.
    async fn list_event_records(
        &self,
        filter: &EventRecordFilter,
        page: Page,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Deletes event records received before `before`, and gate marks whose window ended
    /// before `now`. Returns how many records went.
    async fn prune_event_records(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// The rules document, if one was ever stored.
    async fn get_rules(&self) -> StoreResult<Option<RulesDoc>>;
    /// Replaces the rules document. With `expected_revision`, `Conflict` unless the stored
    /// revision is that one (0: none stored yet).
    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc>;
}
