//! Batching a run's events and output into store transactions: one write per batch, never
//! one per event, and nothing dropped when the store hiccups.

use crate::backend::Backend;
use crate::live::LiveHub;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use troupe_ansible::Output;
use troupe_core::Event;
use troupe_core::event::STATS_EVENT;
use troupe_core::redact::Redactor;
use troupe_core::run::{HostStats, RunSummary};
use troupe_store::{OutputChunk, Stream};
use troupe_telemetry::{StoreOp, Telemetry};

/// Events or chunks pending before a flush is due regardless of the timer.
pub(crate) const BATCH_MAX: usize = 500;
/// When a flush is due and more output is already waiting, up to this many items go into the
/// same transaction.
pub(crate) const BATCH_BACKLOG_MAX: usize = 5_000;
/// How long what a run produced may wait to be stored while nobody follows the run live. A
/// followed run is flushed on every tick of the configured `event_flush_ms`; an unfollowed one
/// costs a transaction (and its thread hand-offs) a few times a second instead of fifty, while
/// ansible shares the machine.
pub(crate) const UNWATCHED_FLUSH: Duration = Duration::from_millis(250);

pub(crate) struct Batcher {
    run_id: i64,
    hub: Arc<LiveHub>,
    events: Vec<Event>,
    output: Vec<OutputChunk>,
    next_seq: i64,
    summary: Option<RunSummary>,
    /// When the oldest item still pending arrived.
    pending_since: Option<Instant>,
    /// The run's secrets, replaced in everything before it is stored (empty: no work).
    redactor: Redactor,
    /// Where stored events and the writes' latency are counted.
    telemetry: Option<Arc<Telemetry>>,
}

impl Batcher {
    pub(crate) fn new(run_id: i64, hub: Arc<LiveHub>) -> Self {
        Self {
            run_id,
            hub,
            events: Vec::new(),
            output: Vec::new(),
            next_seq: 1,
            summary: None,
            pending_since: None,
            redactor: Redactor::default(),
            telemetry: None,
        }
    }

    /// The batcher counting what it stores in `telemetry`.
    pub(crate) fn counted(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The batcher replacing the run's secrets in events and output as they come.
    pub(crate) fn redacting(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Whether a timer tick should flush: always when someone follows the run live, otherwise
    /// once the oldest pending item has waited `unwatched`.
    pub(crate) fn due(&self, unwatched: Duration) -> bool {
        match self.pending_since {
            None => false,
            Some(since) => since.elapsed() >= unwatched || self.hub.is_watched(self.run_id),
        }
    }

    /// Events and chunks pending.
    pub(crate) fn len(&self) -> usize {
        self.events.len() + self.output.len()
    }

    /// Takes one output of the process; true when a flush is due.
    pub(crate) fn push(&mut self, out: Output) -> bool {
        self.pending_since.get_or_insert_with(Instant::now);
        match out {
            Output::Event(mut ev) => {
                if !self.redactor.is_empty() {
                    self.redactor.redact_event(&mut ev);
                }
                if ev.event == STATS_EVENT {
                    self.summary = Some(HostStats::from_stats_event(&ev.event_data.to_value()));
                }
                self.events.push(ev);
            }
            Output::Stdout(text) => self.push_text(Stream::Stdout, text),
            Output::Stderr(text) => self.push_text(Stream::Stderr, text),
            Output::Truncated(stream) => {
                let stream = match stream {
                    troupe_ansible::Stream::Stdout => Stream::Stdout,
                    troupe_ansible::Stream::Stderr => Stream::Stderr,
                };
                self.push_text(
                    stream,
                    "\n[troupe: output limit reached; the rest of this stream was not kept]\n"
                        .to_owned(),
                );
            }
        }
        self.events.len() >= BATCH_MAX || self.output.len() >= BATCH_MAX
    }

    fn push_text(&mut self, stream: Stream, mut text: String) {
        if text.is_empty() {
            return;
        }
        if !self.redactor.is_empty() {
            self.redactor.redact_string(&mut text);
        }
        // Consecutive pieces of one stream are merged so that many small reads cost one row.
        if let Some(last) = self.output.last_mut()
            && last.stream == stream
            && last.text.len() < 64 * 1024
        {
            last.text.push_str(&text);
            return;
        }
        self.output.push(OutputChunk {
            stream,
            seq: self.next_seq,
            text,
        });
        self.next_seq += 1;
    }

    /// The per-host summary from the stats event, once it has been seen.
    pub(crate) fn summary(&self) -> Option<&RunSummary> {
        self.summary.as_ref()
    }

    /// Writes what is pending, retrying with backoff until the store takes it: events are
    /// never dropped. The write is idempotent, so a retry after an unknown outcome is safe.
    pub(crate) async fn flush(&mut self, store: &dyn Backend) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.try_flush(store).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(run = self.run_id, error = %e, "could not store events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_flush(&mut self, store: &dyn Backend) -> Result<(), troupe_store::StoreError> {
        if self.events.is_empty() && self.output.is_empty() {
            self.pending_since = None;
            return Ok(());
        }
        // One transaction, one commit, for both.
        let asked = std::time::Instant::now();
        store
            .store_batch(self.run_id, &self.events, &self.output)
            .await?;
        if let Some(t) = &self.telemetry {
            t.metrics.store_op(StoreOp::event_batch, asked.elapsed());
            t.metrics.events_stored(self.events.len());
        }
        // Published only once stored: a subscriber that read the store first and listens here
        // afterwards can never miss an event.
        if !self.events.is_empty() {
            self.hub.publish_events(self.run_id, &self.events);
            self.events.clear();
        }
        self.output.clear();
        self.pending_since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unfollowed_run_waits_a_followed_one_does_not() {
        let hub = Arc::new(LiveHub::default());
        let mut batcher = Batcher::new(7, Arc::clone(&hub));
        let wait = Duration::from_millis(250);
        assert!(!batcher.due(wait), "nothing pending");

        batcher.push(Output::Stdout("PLAY [all]\n".into()));
        assert!(!batcher.due(wait), "pending, but young and nobody follows");
        tokio::time::advance(Duration::from_millis(100)).await;
        batcher.push(Output::Stdout("ok: [a]\n".into()));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!batcher.due(wait), "the oldest item has waited 200 ms");

        let follower = hub.subscribe(7);
        assert!(batcher.due(wait), "followed: every tick flushes");
        drop(follower);
        assert!(!batcher.due(wait));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(batcher.due(wait), "the oldest item has waited 250 ms");
        assert!(!Batcher::new(8, hub).due(Duration::ZERO));
    }

    #[test]
    fn a_redacting_batcher_replaces_secrets_in_output_and_events() {
        let hub = Arc::new(LiveHub::default());
        let mut batcher = Batcher::new(7, hub).redacting(Redactor::new(["s3cr3t-value"]));
        batcher.push(Output::Stdout("pw=s3cr3t-value\n".into()));
        batcher.push(Output::Stderr("'s3cr3t-value'\n".into()));
        let ev: Event = serde_json::from_value(serde_json::json!({
            "counter": 1, "uuid": "u", "event": "runner_on_ok",
            "created": "2026-01-01T00:00:00Z", "stdout": "ok: s3cr3t-value",
            "event_data": {"host": "h", "res": {"msg": "s3cr3t-value"}}
        }))
        .expect("event");
        batcher.push(Output::Event(ev));
        assert_eq!(batcher.output[0].text, "pw=********\n");
        assert_eq!(batcher.output[1].text, "'********'\n");
        assert_eq!(batcher.events[0].stdout, "ok: ********");
        assert_eq!(
            batcher.events[0].event_data.to_value()["res"]["msg"],
            "********"
        );
    }
}
