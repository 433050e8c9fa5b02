//! A run's life after it was queued: claimed by a worker under a lease, launched, renewed,
//! finished; canceled on request; failed when its worker died or its lease ran out.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use troupe_core::RunStatus;
use troupe_core::run::{CancelMode, NewRun, Run, RunSummary};

/// How a worker finished a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The final status; must be a legal move from `running`.
    pub status: RunStatus,
    /// ansible-playbook's exit code, when it exited.
    pub rc: Option<i32>,
    /// Why, when it needs saying.
    pub reason: Option<String>,
    /// Per-host totals from the stats event (empty when there was none).
    pub summary: RunSummary,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Still ours; a cancel may have been asked for in the meantime.
    Held {
        /// A cancel asked for and not yet carried out.
        cancel_requested: Option<CancelMode>,
    },
    /// No longer ours (expired and taken away, or the run is over): stop working on it.
    Lost,
}

/// Who claims, and so which queued runs it may take.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The id the runs are claimed under.
    pub worker_id: &'a str,
    /// The worker's labels: it takes only runs whose `worker_labels` are all among them.
    pub labels: &'a [String],
    /// Whether it may take split runs' parents, which queue their slices through the store
    /// (a server's embedded pool; not a remote worker).
    pub splits: bool,
    /// Which runs it takes by whether they are job unit actions.
    pub job_runs: JobRuns,
}

/// Which queued runs a claim takes by whether they are actions of job units: the embedded
/// pool claims those in a lane of their own, so a job's fan-out never waits for other runs'
/// slots (nor for the slot of the run that triggered it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobRuns {
    /// Any run.
    #[default]
    Any,
    /// Only job unit actions (`job_id` set).
    Only,
    /// Every run but job unit actions.
    Exclude,
}

impl JobRuns {
    /// The SQL condition on a row of `runs` named `table` it stands for (both backends spell
    /// it the same).
    pub fn condition(self, table: &str) -> String {
        match self {
            JobRuns::Any => "TRUE".to_owned(),
            JobRuns::Only => format!("{table}.job_id IS NOT NULL"),
            JobRuns::Exclude => format!("{table}.job_id IS NULL"),
        }
    }
}

/// Admission at create for the runs a transaction of someone else's stores (the event
/// ingest's, [`crate::InboundStore::ingest_event`]): up to `slots` of them are stored already
/// claimed by `claimant` under a lease of `lease`, each as
/// [`ClaimStore::create_run_claimed`] would claim it (when `claimant` may take it and no
/// older queued run it may take is waiting).
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// Who the runs are claimed for.
    pub claimant: Claimant<'a>,
    /// How long the claim's lease lasts.
    pub lease: Duration,
    /// How many runs may be claimed: the free slots held for them.
    pub slots: usize,
}

impl<'a> Claimant<'a> {
    /// A worker without labels that coordinates split runs: the embedded pool's default.
    pub fn embedded(worker_id: &'a str) -> Self {
        Claimant {
            worker_id,
            labels: &[],
            splits: true,
            job_runs: JobRuns::Any,
        }
    }
}

/// The run queue as workers see it: claims, leases and the moves of a run's status.
#[async_trait]
pub trait ClaimStore {
    /// Claims the oldest queued run for `worker_id`: it becomes `running` with a lease that
    /// expires after `lease`. Two workers never claim the same run.
    async fn claim_run(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Run>> {
        Ok(self
            .claim_runs(worker_id, lease, 1)
            .await?
            .into_iter()
            .next())
    }
    /// Claims up to `limit` of the oldest queued runs for `worker_id` in one transaction,
    /// returned oldest first; each becomes `running` with a lease that expires after `lease`.
    /// Two workers never claim the same run.
    async fn claim_runs(
        &self,
        worker_id: &str,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        self.claim_for(&Claimant::embedded(worker_id), lease, limit)
            .await
    }
    /// Claims up to `limit` of the oldest queued runs `claimant` may take (its labels cover
    /// the run's `worker_labels`; split parents only when it coordinates splits), as
    /// [`ClaimStore::claim_runs`] does.
    async fn claim_for(
        &self,
        claimant: &Claimant<'_>,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Run>>;
    /// Admission at create: stores `new` as [`crate::RunStore::create_run`] does and, in the
    /// same transaction, claims it for `claimant` as [`ClaimStore::claim_for`] would (it comes
    /// back `running` under a lease of `lease`) when `claimant` may take it and no older queued
    /// run `claimant` may take is waiting (those go first). Otherwise it comes back `queued`.
    /// Nobody sees the run queued and then claimed: it is stored one way or the other.
    async fn create_run_claimed(
        &self,
        new: &NewRun,
        claimant: &Claimant<'_>,
        lease: Duration,
    ) -> StoreResult<Run>;
    /// Records that ansible-playbook was started for a run `worker_id` holds, and for git
    /// projects the commit it runs. `Conflict` when it is not running under that worker.
    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()>;
    /// Extends the lease of a run `worker_id` holds.
    async fn renew_lease(
        &self,
        run_id: i64,
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<Lease>;
    /// Ends a run `worker_id` holds. `Conflict` when it is not running under that worker.
    async fn finish_run(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Run>;
    /// Asks for a run to stop. A queued run is canceled at once; a running one is flagged for
    /// its worker. `Conflict` when the run has already finished.
    async fn request_cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run>;
    /// Marks `error` (with `reason`) every running run whose worker id starts with
    /// `worker_prefix`: the runs a dead process left behind. Returns their ids. Those whose
    /// ansible-playbook never started (not launched, no cancel asked, no slice queued) are
    /// queued again instead.
    async fn fail_runs_of_workers(
        &self,
        worker_prefix: &str,
        reason: &str,
    ) -> StoreResult<Vec<i64>>;
    /// Marks `error` (with `reason`) every running run whose lease expired before `now`; those
    /// whose ansible-playbook never started are queued again instead, as
    /// [`ClaimStore::fail_runs_of_workers`] does.
    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>>;
}
