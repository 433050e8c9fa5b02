//! A run's events, as ansible's callback plugin reported them, written in batches together
//! with the run's output.

use crate::{OutputChunk, StoreResult};
use async_trait::async_trait;
use troupe_core::Event;

/// A run's events, and the batch write that stores events and output together.
#[async_trait]
pub trait EventStore {
    /// Appends events in one transaction. An event whose counter is already stored for the
    /// run is skipped, so a retried batch never duplicates.
    async fn append_events(&self, run_id: i64, events: &[Event]) -> StoreResult<()> {
        self.append_batch(run_id, events, &[]).await
    }
    /// Events with `counter > after`, in counter order, at most `limit`.
    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>>;
    /// The events that mean a host failed (`runner_on_failed` not ignored, and
    /// `runner_on_unreachable`), in counter order.
    async fn host_failures(&self, run_id: i64) -> StoreResult<Vec<Event>>;
    /// Appends events and output chunks together, in one transaction, skipping what is
    /// already stored as [`EventStore::append_events`] and
    /// [`OutputStore::append_output`](crate::OutputStore::append_output) do: what a running
    /// playbook produced since the last flush costs one commit.
    async fn append_batch(
        &self,
        run_id: i64,
        events: &[Event],
        chunks: &[OutputChunk],
    ) -> StoreResult<()>;
}
