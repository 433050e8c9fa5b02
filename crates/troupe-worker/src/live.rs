//! Live publication of what runs do, after it is stored.
//!
//! Events reach subscribers only once the store has them, so a subscriber that reads history
//! from the store and then listens here sees every event exactly once: it subscribes first,
//! reads the store, then skips live events it already has. Each run has one broadcast channel
//! carrying whole batches, so a thousand subscribers cost one store write and one clone of an
//! `Arc` each per batch. A subscriber that falls more than [`RUN_CHANNEL_BATCHES`] batches
//! behind is told it lagged (tokio's broadcast semantics) and must resume from the store.
//!
//! Replicas sharing a store: a hub made [`LiveHub::with_bus`] also announces on the
//! [`LiveBus`] what it publishes (a run's new counters, while another replica follows the run;
//! a run's end; run and flow changes), and [`crate::relay`] hears the other replicas' notices,
//! reads what they stored and delivers it to this hub's subscribers.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use troupe_core::run::RunSummary;
use troupe_core::{Event, RunStatus};
use troupe_store::LiveBus;

/// Batches a subscriber may fall behind before it is cut off.
pub const RUN_CHANNEL_BATCHES: usize = 1024;
/// Run changes a dashboard subscriber may fall behind before it is cut off.
pub const CHANGE_CHANNEL_CAPACITY: usize = 4096;

/// An event ready to send: serialized once, when published, for every subscriber.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The event's counter.
    pub counter: i64,
    /// The stream message `{"type": "event", "event": {...}}` as JSON.
    pub frame: Bytes,
}

#[derive(Serialize)]
struct EventFrame<'a> {
    r#type: &'static str,
    event: &'a Event,
}

/// The stream message for one event (`{"type": "event", "event": {...}}`), as JSON.
pub fn event_frame(event: &Event) -> Bytes {
    serde_json::to_vec(&EventFrame {
        r#type: "event",
        event,
    })
    .map(Bytes::from)
    .unwrap_or_default()
}

/// What one run's channel carries.
#[derive(Debug, Clone)]
pub enum RunMessage {
    /// Events just stored, in counter order, each already serialized.
    Events(Arc<[LiveEvent]>),
    /// The run reached a final status; nothing follows.
    Finished(RunStatus),
}

/// A change of some run, for dashboards following many runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunChange {
    /// A run was queued.
    RunCreated {
        /// The run.
        run_id: i64,
        /// Its project.
        project_id: i64,
        /// Its tag.
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Its labels.
        labels: std::collections::BTreeMap<String, String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run's status changed.
    StatusChanged {
        /// The run.
        run_id: i64,
        /// Its project.
        project_id: i64,
        /// Its tag.
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Its labels.
        labels: std::collections::BTreeMap<String, String>,
        /// The new status.
        status: RunStatus,
        /// Why, when it needs saying.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// ansible-playbook's exit code, once known.
        #[serde(skip_serializing_if = "Option::is_none")]
        rc: Option<i32>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run's per-host summary is known (from its stats event).
    SummaryUpdated {
        /// The run.
        run_id: i64,
        /// Its project.
        project_id: i64,
        /// Its tag.
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Its labels.
        labels: std::collections::BTreeMap<String, String>,
        /// Per-host totals.
        #[schema(value_type = Object)]
        summary: RunSummary,
        /// When.
        at: DateTime<Utc>,
    },
}

impl RunChange {
    /// The run this change is about.
    pub fn run_id(&self) -> i64 {
        match self {
            RunChange::RunCreated { run_id, .. }
            | RunChange::StatusChanged { run_id, .. }
            | RunChange::SummaryUpdated { run_id, .. } => *run_id,
        }
    }

    /// A run's status as it is now, for subscribers.
    pub fn status_of(run: &troupe_core::run::Run) -> RunChange {
        RunChange::StatusChanged {
            run_id: run.id,
            project_id: run.project_id,
            tag: run.tag.clone(),
            labels: run.labels.clone(),
            status: run.status,
            reason: run.status_reason.clone(),
            rc: run.rc,
            at: chrono::Utc::now(),
        }
    }

    /// (project id, tag, labels) of the run.
    pub fn run_keys(
        &self,
    ) -> (
        i64,
        Option<&str>,
        &std::collections::BTreeMap<String, String>,
    ) {
        match self {
            RunChange::RunCreated {
                project_id,
                tag,
                labels,
                ..
            }
            | RunChange::StatusChanged {
                project_id,
                tag,
                labels,
                ..
            }
            | RunChange::SummaryUpdated {
                project_id,
                tag,
                labels,
                ..
            } => (*project_id, tag.as_deref(), labels),
        }
    }
}

/// How long another replica's interest in a run lasts unless it says it again (it does every
/// [`WATCH_RENEW`]).
pub const REMOTE_WATCH_TTL: Duration = Duration::from_secs(6);
/// How often a replica tells the others which runs it follows.
pub const WATCH_RENEW: Duration = Duration::from_secs(2);

/// The bus a hub announces on, and its own name there (so it can ignore its own notices).
struct BusLink {
    bus: Arc<dyn LiveBus>,
    origin: String,
}

/// Where stored events and run changes are announced.
pub struct LiveHub {
    runs: Mutex<HashMap<i64, broadcast::Sender<RunMessage>>>,
    changes: broadcast::Sender<RunChange>,
    flows: broadcast::Sender<troupe_core::flow::FlowChange>,
    bus: Option<BusLink>,
    /// Runs other replicas follow, until when.
    remote_watches: Mutex<HashMap<i64, Instant>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
            flows: broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
            bus: None,
            remote_watches: Mutex::new(HashMap::new()),
        }
    }
}

impl LiveHub {
    /// A hub that also announces what it publishes on `bus`, as `origin` (this replica's unique
    /// name), for the other replicas' relays. Run [`crate::relay::run`] beside it to hear theirs.
    pub fn with_bus(bus: Arc<dyn LiveBus>, origin: impl Into<String>) -> LiveHub {
        LiveHub {
            bus: Some(BusLink {
                bus,
                origin: origin.into(),
            }),
            ..LiveHub::default()
        }
    }

    /// This hub's name on its bus, if it has one.
    pub fn origin(&self) -> Option<&str> {
        self.bus.as_ref().map(|b| b.origin.as_str())
    }

    fn announce(&self, notice: crate::relay::Notice) {
        if let Some(link) = &self.bus
            && let Some(text) = notice.encode(&link.origin)
        {
            link.bus.announce(text);
        }
    }

    /// Listens to one run. Subscribe *before* reading history from the store.
    pub fn subscribe(&self, run_id: i64) -> broadcast::Receiver<RunMessage> {
        let rx = {
            let Ok(mut runs) = self.runs.lock() else {
                // A poisoned lock only happens after a panic elsewhere; a closed receiver makes
                // the subscriber fall back to the store.
                return broadcast::channel(1).1;
            };
            // Drop channels nobody listens to any more.
            runs.retain(|_, tx| tx.receiver_count() > 0);
            runs.entry(run_id)
                .or_insert_with(|| broadcast::channel(RUN_CHANNEL_BATCHES).0)
                .subscribe()
        };
        // The replica storing the run's events announces them only while someone follows it.
        self.announce(crate::relay::Notice::Watch { run_id });
        rx
    }

    /// Says again on the bus that this hub follows `run_id`.
    pub(crate) fn rewatch(&self, run_id: i64) {
        self.announce(crate::relay::Notice::Watch { run_id });
    }

    /// True while someone follows the run live (a WebSocket or SSE stream of its events), here
    /// or on another replica.
    pub fn is_watched(&self, run_id: i64) -> bool {
        self.is_watched_here(run_id) || self.is_watched_elsewhere(run_id)
    }

    /// True while a subscriber of this hub follows the run.
    pub fn is_watched_here(&self, run_id: i64) -> bool {
        self.sender(run_id)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn is_watched_elsewhere(&self, run_id: i64) -> bool {
        self.bus.is_some()
            && self
                .remote_watches
                .lock()
                .ok()
                .and_then(|w| w.get(&run_id).copied())
                .is_some_and(|until| until > Instant::now())
    }

    /// Another replica follows `run_id` (for [`REMOTE_WATCH_TTL`]).
    pub(crate) fn note_remote_watch(&self, run_id: i64) {
        if let Ok(mut w) = self.remote_watches.lock() {
            let now = Instant::now();
            w.retain(|_, until| *until > now);
            w.insert(run_id, now + REMOTE_WATCH_TTL);
        }
    }

    /// The runs this hub's subscribers follow.
    pub fn watched_runs(&self) -> Vec<i64> {
        self.runs.lock().map_or_else(
            |_| Vec::new(),
            |runs| {
                runs.iter()
                    .filter(|(_, tx)| tx.receiver_count() > 0)
                    .map(|(id, _)| *id)
                    .collect()
            },
        )
    }

    /// Whether anyone here follows run changes or flow changes.
    pub(crate) fn changes_followed(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    pub(crate) fn flows_followed(&self) -> bool {
        self.flows.receiver_count() > 0
    }

    /// Announces events the store now holds. They are serialized here, once, and only when
    /// someone listens: a thousand subscribers cost one serialization, not a thousand.
    pub fn publish_events(&self, run_id: i64, events: &[Event]) {
        if let (Some(first), Some(last)) = (events.first(), events.last())
            && self.is_watched_elsewhere(run_id)
        {
            self.announce(crate::relay::Notice::Events {
                run_id,
                first: first.counter,
                last: last.counter,
            });
        }
        self.deliver_events(run_id, events);
    }

    /// Hands stored events to this hub's subscribers only (what the relay heard of).
    pub(crate) fn deliver_events(&self, run_id: i64, events: &[Event]) {
        let Some(tx) = self.sender(run_id) else {
            return;
        };
        if tx.receiver_count() == 0 || events.is_empty() {
            return;
        }
        let batch: Arc<[LiveEvent]> = events
            .iter()
            .map(|e| LiveEvent {
                counter: e.counter,
                frame: event_frame(e),
            })
            .collect();
        let _ = tx.send(RunMessage::Events(batch));
    }

    /// Announces that a run ended (after its last events were published).
    pub fn publish_finished(&self, run_id: i64, status: RunStatus) {
        self.announce(crate::relay::Notice::Finished { run_id, status });
        self.deliver_finished(run_id, status);
    }

    /// Tells this hub's subscribers only that a run ended.
    pub(crate) fn deliver_finished(&self, run_id: i64, status: RunStatus) {
        if let Ok(mut w) = self.remote_watches.lock() {
            w.remove(&run_id);
        }
        let tx = self
            .runs
            .lock()
            .ok()
            .and_then(|mut runs| runs.remove(&run_id));
        if let Some(tx) = tx {
            let _ = tx.send(RunMessage::Finished(status));
        }
    }

    /// Listens to changes of every run.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<RunChange> {
        self.changes.subscribe()
    }

    /// Announces a change of some run.
    pub fn publish_change(&self, change: RunChange) {
        self.announce(crate::relay::Notice::Change(change.clone()));
        self.deliver_change(change);
    }

    /// Hands a run change to this hub's subscribers only.
    pub(crate) fn deliver_change(&self, change: RunChange) {
        let _ = self.changes.send(change);
    }

    /// Listens to changes of every flow execution.
    pub fn subscribe_flows(&self) -> broadcast::Receiver<troupe_core::flow::FlowChange> {
        self.flows.subscribe()
    }

    /// Announces a change of some execution.
    pub fn publish_flow(&self, change: troupe_core::flow::FlowChange) {
        self.announce(crate::relay::Notice::Flow(change.clone()));
        self.deliver_flow(change);
    }

    /// Hands an execution change to this hub's subscribers only.
    pub(crate) fn deliver_flow(&self, change: troupe_core::flow::FlowChange) {
        let _ = self.flows.send(change);
    }

    fn sender(&self, run_id: i64) -> Option<broadcast::Sender<RunMessage>> {
        self.runs.lock().ok()?.get(&run_id).cloned()
    }
}
