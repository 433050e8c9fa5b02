//! Batching a run's events and output into store transactions: one write per batch, never
//! one per event, and nothing dropped when the store hiccups.

use crate::live::LiveHub;
use std::sync::Arc;
use std::time::Duration;
use troupe_ansible::Output;
use troupe_core::Event;
use troupe_core::event::STATS_EVENT;
use troupe_core::run::{HostStats, RunSummary};
use troupe_store::{OutputChunk, Store, Stream};

/// Events or chunks pending before a flush is due regardless of the timer.
pub(crate) const BATCH_MAX: usize = 500;
/// When a flush is due and more output is already waiting, up to this many items go into the
/// same transaction.
pub(crate) const BATCH_BACKLOG_MAX: usize = 5_000;

pub(crate) struct Batcher {
    run_id: i64,
    hub: Arc<LiveHub>,
    events: Vec<Event>,
    output: Vec<OutputChunk>,
    next_seq: i64,
    summary: Option<RunSummary>,
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
        }
    }

    /// Events and chunks pending.
    pub(crate) fn len(&self) -> usize {
        self.events.len() + self.output.len()
    }

    /// Takes one output of the process; true when a flush is due.
    pub(crate) fn push(&mut self, out: Output) -> bool {
        match out {
            Output::Event(ev) => {
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

    fn push_text(&mut self, stream: Stream, text: String) {
        if text.is_empty() {
            return;
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
    pub(crate) async fn flush(&mut self, store: &Arc<dyn Store>) {
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

    async fn try_flush(&mut self, store: &Arc<dyn Store>) -> Result<(), troupe_store::StoreError> {
        if self.events.is_empty() && self.output.is_empty() {
            return Ok(());
        }
        // One transaction, one commit, for both.
        store
            .append_batch(self.run_id, &self.events, &self.output)
            .await?;
        // Published only once stored: a subscriber that read the store first and listens here
        // afterwards can never miss an event.
        if !self.events.is_empty() {
            self.hub.publish_events(self.run_id, &self.events);
            self.events.clear();
        }
        self.output.clear();
        Ok(())
    }
}
