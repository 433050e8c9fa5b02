//! The flow engine's capabilities, as this server provides them: runs awaited through the live
//! hub, changes published on it, secrets sealed with the server's key.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use troupe_core::flow::{Execution, FlowChange, StepRecord};
use troupe_core::run::Run;
use troupe_flow::engine::{Observe, WaitRun};
use troupe_store::{Store, StoreResult};
use troupe_worker::{LiveHub, RunChange};

/// Waits for a run's end: woken by the hub's status changes, checked against the store (which
/// has the last word, and covers runs finished on another replica).
pub struct HubRuns {
    /// Where runs are kept.
    pub store: Arc<dyn Store>,
    /// Where their changes are announced.
    pub hub: Arc<LiveHub>,
}

#[async_trait]
impl WaitRun for HubRuns {
    async fn finished(&self, run_id: i64) -> StoreResult<Run> {
        // Subscribe first, then read: a change between the two is not missed.
        let mut changes = self.hub.subscribe_changes();
        loop {
            let run = self.store.get_run(run_id).await?;
            if run.status.is_finished() {
                return Ok(run);
            }
            let deadline = tokio::time::sleep(Duration::from_secs(2));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(RunChange::StatusChanged { run_id: id, status, .. })
                            if id == run_id && status.is_finished() => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                    },
                    _ = &mut deadline => break,
                }
            }
        }
    }
}

/// Publishes what executions do on the hub's cross-run stream.
pub struct HubObserver(pub Arc<LiveHub>);

impl Observe for HubObserver {
    fn execution(&self, execution: &Execution) {
        self.0.publish_flow(FlowChange::of_execution(execution));
    }

    fn step(&self, record: &StepRecord) {
        self.0.publish_flow(FlowChange::of_step(record));
    }

    fn log(&self, execution_id: i64, line: &str) {
        self.0.publish_flow(FlowChange::ExecutionLog {
            execution_id,
            line: line.to_owned(),
            at: chrono::Utc::now(),
        });
    }
}

/// Wakes the notifier whenever a run or an execution ends, so notifications go out at once
/// rather than at its next look (which still catches what this misses: other replicas' ends,
/// lagging subscriptions).
pub async fn wake_on_ends(
    hub: Arc<LiveHub>,
    notifier: Arc<troupe_notify::Notifier>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut runs = hub.subscribe_changes();
    let mut flows = hub.subscribe_flows();
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            change = runs.recv() => match change {
                Ok(RunChange::StatusChanged { status, .. }) => status.is_finished(),
                Ok(_) => false,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            change = flows.recv() => match change {
                Ok(FlowChange::ExecutionChanged { status, .. }) => status.is_finished(),
                Ok(_) => false,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
        };
        if ended {
            notifier.wake();
        }
    }
}
