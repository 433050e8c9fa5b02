//! Workers: every pool that claims runs registers here and heartbeats, so the API can show
//! them, route runs by label and tell why a run waits.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::worker::{NewWorker, Worker};

/// Where workers are registered.
#[async_trait]
pub trait WorkerStore {
    /// Registers a worker (again, after a restart: its earlier incarnations on the same node
    /// count as stopped).
    async fn register_worker(&self, new: &NewWorker) -> StoreResult<Worker>;
    /// Records a heartbeat with the number of runs it executes. `NotFound` when the worker is
    /// not registered or said goodbye (it registers again).
    async fn heartbeat_worker(&self, id: &str, active_runs: u32) -> StoreResult<Worker>;
    /// One worker.
    async fn get_worker(&self, id: &str) -> StoreResult<Worker>;
    /// Workers not stopped, and those that stopped or went silent after `since`, by id.
    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<Worker>>;
    /// Asks a worker to finish its runs and claim no more. `NotFound` when unknown.
    async fn drain_worker(&self, id: &str) -> StoreResult<Worker>;
    /// Records that a worker stopped.
    async fn stop_worker(&self, id: &str) -> StoreResult<()>;
}
