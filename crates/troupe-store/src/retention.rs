//! Retention: finished runs pruned with everything stored of them (events, output chunks,
//! labels, sent notifications), a small batch at a time, so writers interleave.
//!
//! A run is pruned only when it has finished and nothing still needs it: a split run goes
//! with its slices (never a slice alone, nor a parent with a slice still queued or running),
//! a run with a notification still pending waits until it is sent or given up, the latest run
//! of a job's unit stays (the unit's status is read from it), and so does a run a step of an
//! unfinished flow execution started. Later runs relaunched from a pruned run keep their own
//! data and lose the link (`relaunch_of` becomes null).

use crate::{Store, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Which finished runs go. Both limits may be set (a run goes when either says so); with
/// neither, nothing goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunRetention {
    /// Runs that finished before this.
    pub finished_before: Option<DateTime<Utc>>,
    /// Runs of a project older than its newest this many (split runs count once, their
    /// slices not at all).
    pub keep_per_project: Option<u32>,
}

impl RunRetention {
    /// Whether this prunes nothing at all.
    pub fn is_off(&self) -> bool {
        self.finished_before.is_none() && self.keep_per_project.is_none()
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs, slices included.
    pub runs: u64,
    /// Their events.
    pub events: u64,
    /// Their stdout and stderr chunks.
    pub output_chunks: u64,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, other: Pruned) {
        self.runs += other.runs;
        self.events += other.events;
        self.output_chunks += other.output_chunks;
    }
}

/// Pruning finished runs.
#[async_trait]
pub trait RetentionStore {
    /// How many runs (slices included) [`RetentionStore::prune_runs`] would remove under
    /// `policy` now, batch after batch.
    async fn count_prunable_runs(&self, policy: &RunRetention) -> StoreResult<u64>;

    /// Removes up to `limit` of the oldest runs `policy` prunes (each with its slices), with
    /// their events, output, labels and notifications. Events and output go first, a few
    /// thousand rows per statement; then the runs, in one short transaction. Nothing (all
    /// zeros) when no run is left to prune. Safe to repeat after a failure or a crash: what a
    /// batch left behind is taken again by the next one.
    async fn prune_runs(&self, policy: &RunRetention, limit: u32) -> StoreResult<Pruned>;
}

/// How many runs a batch of [`prune`] takes by default.
pub const DEFAULT_BATCH: u32 = 500;

/// The pause between two batches of a pass: other writers (runs storing their events) get
/// the store in between.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// One retention pass: batches of `batch` runs until none is left to prune, with `pause`
/// between batches so other writers get the store in between. Returns what went in all.
pub async fn prune(
    store: &dyn Store,
    policy: &RunRetention,
    batch: u32,
    pause: Duration,
) -> StoreResult<Pruned> {
    let mut total = Pruned::default();
    if policy.is_off() {
        return Ok(total);
    }
    loop {
        let pruned = store.prune_runs(policy, batch.max(1)).await?;
        if pruned.runs == 0 {
            return Ok(total);
        }
        total += pruned;
        tokio::time::sleep(pause).await;
    }
}
