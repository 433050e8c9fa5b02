//! The relay: what other replicas sharing the store publish, delivered to this replica's live
//! subscribers.
//!
//! A hub with a bus ([`LiveHub::with_bus`]) announces, as short notices: the counters of a
//! batch it stored for a run some other replica follows ([`Notice::Events`]); a run's end; run
//! and flow changes; and, every [`WATCH_RENEW`], which runs its own subscribers follow
//! ([`Notice::Watch`], so the replica executing a run knows to announce its events and to
//! flush them at the followed pace). The relay hears every replica's notices, ignores its own,
//! and for a run followed here reads the new events from the store, after the last counter it
//! delivered, and hands them to the hub's subscribers, which skip what they already have and
//! read any gap from the store themselves (see `troupe-api`'s stream): nothing is lost or
//! doubled whatever notices are lost. After the bus reconnects, every followed run is read
//! again from the store.

use crate::live::{LiveHub, RunChange, WATCH_RENEW};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe_core::RunStatus;
use troupe_core::flow::FlowChange;
use troupe_store::{Heard, LiveBus, MAX_NOTICE_BYTES, Store};

/// Events read from the store per page when relaying.
const PAGE: i64 = 1000;
/// Longest text kept of a flow change's log line or error in a notice.
const MAX_TEXT_BYTES: usize = 2000;

/// What replicas tell each other. Serialized as `{"o": origin, "n": notice}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notice {
    /// Events `first..=last` of a run are stored.
    Events {
        /// The run.
        run_id: i64,
        /// The batch's first counter.
        first: i64,
        /// Its last.
        last: i64,
    },
    /// A run ended, with this status (its events are all stored).
    Finished {
        /// The run.
        run_id: i64,
        /// Its final status.
        status: RunStatus,
    },
    /// A run changed.
    Change(RunChange),
    /// A run changed, but the change was too long for a notice: read the run.
    ChangeOf {
        /// The run.
        run_id: i64,
        /// `run_created`, `status_changed` or `summary_updated`.
        kind: ChangeKind,
    },
    /// A flow execution changed.
    Flow(FlowChange),
    /// The sender follows this run live.
    Watch {
        /// The run.
        run_id: i64,
    },
}

/// Which change of a run a [`Notice::ChangeOf`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// [`RunChange::RunCreated`].
    RunCreated,
    /// [`RunChange::StatusChanged`].
    StatusChanged,
    /// [`RunChange::SummaryUpdated`].
    SummaryUpdated,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    o: &'a str,
    n: &'a Notice,
}

#[derive(Deserialize)]
struct Incoming {
    o: String,
    n: Notice,
}

fn cut(text: &mut String) {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

impl Notice {
    /// The notice as sent by `origin`; changes too long for the bus are shortened (a run's
    /// change is referred to, a flow change's text cut).
    pub fn encode(&self, origin: &str) -> Option<String> {
        let text = serde_json::to_string(&Outgoing { o: origin, n: self }).ok()?;
        if text.len() <= MAX_NOTICE_BYTES {
            return Some(text);
        }
        let shorter = match self {
            Notice::Change(change) => Notice::ChangeOf {
                run_id: change.run_id(),
                kind: match change {
                    RunChange::RunCreated { .. } => ChangeKind::RunCreated,
                    RunChange::StatusChanged { .. } => ChangeKind::StatusChanged,
                    RunChange::SummaryUpdated { .. } => ChangeKind::SummaryUpdated,
                },
            },
            Notice::Flow(change) => {
                let mut change = change.clone();
                match &mut change {
                    FlowChange::ExecutionChanged { error, .. }
                    | FlowChange::StepChanged { error, .. } => {
                        if let Some(e) = error {
                            cut(e);
                        }
                    }
                    FlowChange::ExecutionLog { line, .. } => cut(line),
                }
                Notice::Flow(change)
            }
            _ => return None,
        };
        let text = serde_json::to_string(&Outgoing {
            o: origin,
            n: &shorter,
        })
        .ok()?;
        (text.len() <= MAX_NOTICE_BYTES).then_some(text)
    }

    /// A notice as heard, with its sender's origin.
    pub fn decode(text: &str) -> Option<(String, Notice)> {
        serde_json::from_str::<Incoming>(text)
            .ok()
            .map(|i| (i.o, i.n))
    }
}

/// Relays other replicas' notices to `hub` until `stop`. `hub` must have been made with
/// [`LiveHub::with_bus`] on `bus`.
pub async fn run(
    hub: Arc<LiveHub>,
    store: Arc<dyn Store>,
    bus: Arc<dyn LiveBus>,
    stop: CancellationToken,
) {
    let Some(origin) = hub.origin().map(str::to_owned) else {
        return;
    };
    let mut relay = Relay {
        hub,
        store,
        origin,
        cursors: HashMap::new(),
    };
    let mut heard: Option<mpsc::Receiver<Heard>> = None;
    let mut renew = tokio::time::interval(WATCH_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(rx) = heard.as_mut() else {
            match bus.listen().await {
                Ok(rx) => {
                    heard = Some(rx);
                    relay.reconnected().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for live notices; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
            continue;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => relay.renew_watches(&*bus),
            h = rx.recv() => match h {
                Some(Heard::Notice(text)) => relay.heard(&text).await,
                Some(Heard::Reconnected) => relay.reconnected().await,
                None => heard = None,
            },
        }
    }
}

struct Relay {
    hub: Arc<LiveHub>,
    store: Arc<dyn Store>,
    origin: String,
    /// Per run followed here: the last counter relayed.
    cursors: HashMap<i64, i64>,
}

impl Relay {
    fn renew_watches(&mut self, bus: &dyn LiveBus) {
        let watched = self.hub.watched_runs();
        self.cursors.retain(|run, _| watched.contains(run));
        for run_id in watched {
            if let Some(text) = (Notice::Watch { run_id }).encode(&self.origin) {
                bus.announce(text);
            }
        }
    }

    async fn heard(&mut self, text: &str) {
        let Some((origin, notice)) = Notice::decode(text) else {
            tracing::debug!("ignoring a live notice this troupe does not understand");
            return;
        };
        if origin == self.origin {
            return;
        }
        match notice {
            Notice::Events {
                run_id,
                first,
                last,
            } => {
                if !self.hub.is_watched_here(run_id) {
                    self.cursors.remove(&run_id);
                    return;
                }
                let cursor = *self.cursors.entry(run_id).or_insert(first - 1);
                if last > cursor {
                    self.relay_events(run_id).await;
                }
            }
            Notice::Finished { run_id, status } => {
                if self.hub.is_watched_here(run_id) {
                    if self.cursors.contains_key(&run_id) {
                        self.relay_events(run_id).await;
                    }
                    self.hub.deliver_finished(run_id, status);
                }
                self.cursors.remove(&run_id);
            }
            Notice::Change(change) => self.hub.deliver_change(change),
            Notice::ChangeOf { run_id, kind } => {
                if !self.hub.changes_followed() {
                    return;
                }
                match self.store.get_run(run_id).await {
                    Ok(run) => self.hub.deliver_change(match kind {
                        ChangeKind::StatusChanged => RunChange::status_of(&run),
                        ChangeKind::RunCreated => RunChange::RunCreated {
                            run_id: run.id,
                            project_id: run.project_id,
                            tag: run.tag.clone(),
                            labels: run.labels.clone(),
                            at: run.created_at,
                        },
                        ChangeKind::SummaryUpdated => RunChange::SummaryUpdated {
                            run_id: run.id,
                            project_id: run.project_id,
                            tag: run.tag.clone(),
                            labels: run.labels.clone(),
                            summary: run.summary.clone(),
                            at: chrono::Utc::now(),
                        },
                    }),
                    Err(e) => {
                        tracing::debug!(run = run_id, error = %e, "cannot relay a run change")
                    }
                }
            }
            Notice::Flow(change) => {
                if self.hub.flows_followed() {
                    self.hub.deliver_flow(change);
                }
            }
            Notice::Watch { run_id } => self.hub.note_remote_watch(run_id),
        }
    }

    /// Reads the run's events after its cursor from the store and delivers them.
    async fn relay_events(&mut self, run_id: i64) {
        let Some(mut cursor) = self.cursors.get(&run_id).copied() else {
            return;
        };
        loop {
            let page = match self.store.list_events(run_id, cursor, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    // The followers' own reads of the store cover what this misses.
                    tracing::warn!(run = run_id, error = %e, "cannot read events to relay");
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.counter) else {
                break;
            };
            self.hub.deliver_events(run_id, &page);
            cursor = last;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        self.cursors.insert(run_id, cursor);
    }

    /// Notices may have been lost: read every followed run again, and say again what is
    /// followed here.
    async fn reconnected(&mut self) {
        for run_id in self.hub.watched_runs() {
            // Announce the watch again at once, so the executing replica resumes announcing.
            self.hub.rewatch(run_id);
            if self.cursors.contains_key(&run_id) {
                self.relay_events(run_id).await;
            }
            match self.store.get_run(run_id).await {
                Ok(run) if run.status.is_finished() => {
                    self.hub.deliver_finished(run_id, run.status);
                    self.cursors.remove(&run_id);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(run = run_id, error = %e, "cannot read a followed run"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let n = Notice::Events {
            run_id: 7,
            first: 3,
            last: 9,
        };
        let text = n.encode("node/1").expect("encodes");
        assert_eq!(Notice::decode(&text), Some(("node/1".to_owned(), n)));
        let w = Notice::Watch { run_id: 1 };
        let text = w.encode("x").expect("encodes");
        assert_eq!(Notice::decode(&text), Some(("x".to_owned(), w)));
    }

    #[test]
    fn long_changes_are_referred_to() {
        let change = RunChange::StatusChanged {
            run_id: 5,
            project_id: 1,
            tag: None,
            labels: Default::default(),
            status: RunStatus::Failed,
            reason: Some("x".repeat(10_000)),
            rc: Some(2),
            at: chrono::Utc::now(),
        };
        let text = Notice::Change(change).encode("o").expect("encodes");
        assert!(text.len() <= MAX_NOTICE_BYTES);
        assert_eq!(
            Notice::decode(&text).map(|(_, n)| n),
            Some(Notice::ChangeOf {
                run_id: 5,
                kind: ChangeKind::StatusChanged
            })
        );
        let log = FlowChange::ExecutionLog {
            execution_id: 1,
            line: "é".repeat(5_000),
            at: chrono::Utc::now(),
        };
        let text = Notice::Flow(log).encode("o").expect("encodes");
        assert!(text.len() <= MAX_NOTICE_BYTES);
        assert!(Notice::decode(&text).is_some());
    }

    #[test]
    fn garbage_is_not_a_notice() {
        assert_eq!(Notice::decode("42"), None);
        assert_eq!(Notice::decode("{\"o\":\"a\",\"n\":{\"k\":\"nope\"}}"), None);
    }
}
