//! Events that arrive from outside (webhooks, message brokers, dropped files, timers) and what
//! the rules made of each: the record `GET /api/v1/events` shows.
//!
//! Not to be confused with [`crate::Event`], what ansible emits while a run goes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What became of an event, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// At least one rule started a run or a flow's execution.
    Accepted,
    /// No rule matched its source, routing key and conditions.
    Unmatched,
    /// Rules matched, but none started a run (throttled, duplicate, or skipped by a
    /// concurrency policy).
    Skipped,
    /// Rules matched, but every one failed to build its run (e.g. the playbook the routing
    /// key names does not exist).
    Failed,
    /// The payload could not be read (not JSON or YAML), or could not be stored.
    Rejected,
}

impl EventStatus {
    /// Every status.
    pub const ALL: [EventStatus; 5] = [
        EventStatus::Accepted,
        EventStatus::Unmatched,
        EventStatus::Skipped,
        EventStatus::Failed,
        EventStatus::Rejected,
    ];

    /// The snake_case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Accepted => "accepted",
            EventStatus::Unmatched => "unmatched",
            EventStatus::Skipped => "skipped",
            EventStatus::Failed => "failed",
            EventStatus::Rejected => "rejected",
        }
    }

    /// The status named `s`, if any.
    pub fn parse(s: &str) -> Option<EventStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when a rule fires while an earlier run it started for the same routing key is
/// still queued or running.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    /// Start another run; the worker pool's limit queues it.
    #[default]
    Queue,
    /// Start nothing while the earlier run is active.
    Skip,
    /// Start the new run and cancel the earlier ones.
    Cancel,
}

impl ConcurrencyPolicy {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Queue => "queue",
            ConcurrencyPolicy::Skip => "skip",
            ConcurrencyPolicy::Cancel => "cancel",
        }
    }
}

/// Which gate kept a rule from starting a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// `throttle`: a run was started for the same group within the window.
    Throttle,
    /// `dedupe`: a run was started for the same event id within the window.
    Dedupe,
}

impl GateKind {
    /// The snake_case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Throttle => "throttle",
            GateKind::Dedupe => "dedupe",
        }
    }
}

/// What one matching rule did with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RuleResult {
    /// It started a run; with the `cancel` policy, the earlier runs it asked to stop.
    Started {
        /// The run.
        run_id: i64,
        /// Earlier runs for the same key that are being canceled.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        canceled: Vec<i64>,
    },
    /// It started an execution of a flow (`action.flow`).
    StartedFlow {
        /// The execution.
        execution_id: i64,
    },
    /// A throttle or dedupe gate held it back.
    Gated {
        /// Which gate.
        gate: GateKind,
        /// The gate's key (the rendered group or id).
        key: String,
        /// The event whose run (or execution) closed the gate.
        by_event: i64,
    },
    /// The `skip` concurrency policy held it back: this run is still active.
    Skipped {
        /// The active run.
        active_run: i64,
    },
    /// Its run could not be built (e.g. the playbook is missing).
    Failed {
        /// Why.
        error: String,
    },
}

/// One matching rule's part in an event's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleOutcome {
    /// The rule's name.
    pub rule: String,
    /// What it did.
    #[serde(flatten)]
    pub result: RuleResult,
}

/// An event as recorded: where it came from, a bounded copy of its payload, and what it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Store-assigned id.
    pub id: i64,
    /// When troupe received it.
    pub received_at: DateTime<Utc>,
    /// The source's name.
    pub source: String,
    /// Its routing key (AMQP routing key, NATS subject, MQTT topic with `.` for `/`...).
    pub routing_key: String,
    /// The source's id for this delivery (message id, file name and digest, timer tick...),
    /// unique per source: a redelivered message is recognised by it.
    pub delivery_id: Option<String>,
    /// The payload's size in bytes.
    pub payload_size: i64,
    /// The payload (text), whole or cut to the configured bound.
    pub payload: Option<String>,
    /// Whether `payload` was cut.
    pub payload_truncated: bool,
    /// What became of it.
    pub status: EventStatus,
    /// Why, when it needs saying (rejected payloads, unmatched keys).
    pub reason: Option<String>,
    /// What each matching rule did.
    pub rules: Vec<RuleOutcome>,
    /// The runs it started.
    pub run_ids: Vec<i64>,
}
