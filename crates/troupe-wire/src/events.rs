//! Inbound events (webhooks, brokers, dropped files, timers), their record, the rules that
//! turn them into runs, and the sources' states.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use troupe_core::inbound::EventRecord;

pub use troupe_core::inbound::{EventStatus, GateKind, RuleOutcome, RuleResult};

/// An event as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    #[allow(missing_docs)]
    pub id: i64,
    #[allow(missing_docs)]
    pub received_at: DateTime<Utc>,
    #[allow(missing_docs)]
    pub source: String,
    #[allow(missing_docs)]
    pub routing_key: String,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[allow(missing_docs)]
    pub status: EventStatus,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What each matching rule did.
    pub rules: Vec<RuleOutcome>,
    /// The runs it started.
    pub run_ids: Vec<i64>,
    /// The flow executions it started (each named in its rule's `started_flow` outcome).
    #[serde(default)]
    pub execution_ids: Vec<i64>,
    #[allow(missing_docs)]
    pub payload_size: i64,
    /// The payload: JSON when it was JSON and kept whole, else the text kept.
    #[schema(value_type = Object)]
    pub payload: Value,
    #[allow(missing_docs)]
    pub payload_truncated: bool,
}

impl From<EventRecord> for EventView {
    fn from(r: EventRecord) -> Self {
        let payload = match (&r.payload, r.payload_truncated) {
            (Some(text), false) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            (Some(text), true) => Value::String(text.clone()),
            (None, _) => Value::Null,
        };
        let execution_ids = r
            .rules
            .iter()
            .filter_map(|o| match o.result {
                RuleResult::StartedFlow { execution_id } => Some(execution_id),
                _ => None,
            })
            .collect();
        EventView {
            id: r.id,
            received_at: r.received_at,
            source: r.source,
            routing_key: r.routing_key,
            delivery_id: r.delivery_id,
            status: r.status,
            reason: r.reason,
            rules: r.rules,
            run_ids: r.run_ids,
            execution_ids,
            payload_size: r.payload_size,
            payload,
            payload_truncated: r.payload_truncated,
        }
    }
}

/// What a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookResponse {
    /// The event's record.
    pub event: EventView,
    /// True when this delivery was recorded before (same delivery id): nothing was run now.
    pub duplicate: bool,
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only from this source.
    pub source: Option<String>,
    /// Only with this routing key.
    pub routing_key: Option<String>,
    /// Only in this status (`accepted`, `unmatched`, `skipped`, `failed`, `rejected`).
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

// A page of `GET /api/v1/events`, newest first.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// The rules in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RulesView {
    /// The stored document's revision (what `?revision=` and `If-Match` compare with);
    /// increases with every change; 0 when none was ever stored.
    pub revision: i64,
    /// The revision of the rules in force, which `document` shows: the stored one, unless it
    /// could not be compiled (then the previous rules stay in force).
    pub in_force_revision: i64,
    /// When they were last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The document, with literal secrets and URL passwords redacted.
    #[schema(value_type = Object)]
    pub document: Value,
    /// Each rule in a sentence.
    pub explain: Vec<String>,
    /// Each source's state.
    pub sources: BTreeMap<String, SourceView>,
}

// A source as `GET /api/v1/sources` and the rules show it: its kind and its state.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceView {
    /// `webhook`, `amqp`, `nats`, `mqtt`, `redis`, `directory` or `timer`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub state: SourceState,
}

/// How a source is doing, as `GET /api/v1/sources` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceState {
    /// `starting`, `connected` or `disconnected` (passive sources: `ready`); `standby` on a
    /// replica waiting to take over a source another replica runs.
    pub state: String,
    /// The last error, if the source is not connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events delivered since the source started.
    pub delivered: u64,
    /// The replica running the source (node id and incarnation) when replicas share a store:
    /// a source runs on the one holding its lease. Absent for webhooks, which every replica
    /// serves, and while nobody holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// The query of `PUT /api/v1/rules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PutRulesQuery {
    /// Replace only if this is the stored revision (0: none stored yet). `If-Match` works too.
    pub revision: Option<i64>,
}
