//! The embedded worker pool: a dispatcher that claims runs while it has free slots, and one
//! task per run in flight.

use crate::backend::{Backend, StoreBackend};
use crate::live::{LiveHub, RunChange};
use crate::status::CancelCause;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troupe_ansible::{Ansible, Grace, Limits};
use troupe_core::RunStatus;
use troupe_core::run::{CancelMode, NewRun, Run};
use troupe_core::worker::{NewWorker, WorkerKind};
use troupe_launch::Reserved;
use troupe_store::{Admission, Claimant, JobRuns, Store, StoreResult};
use troupe_telemetry::StoreOp;

/// How a pool runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This process's stable id (kept in the data dir); worker ids start with it.
    pub node_id: String,
    /// Runs executed at once; the rest wait `queued`, first in first out.
    pub slots: usize,
    /// How job unit actions are given slots.
    pub job_slots: JobSlots,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// The ansible-playbook to run.
    pub ansible: Ansible,
    /// Where per-run private directories are made.
    pub runs_dir: PathBuf,
    /// Where git projects are checked out (one directory per project id).
    pub projects_dir: PathBuf,
    /// Hands runs the commit trees of git projects: the same syncer the API syncs with, so
    /// that pruning spares the trees runs hold.
    pub git: Arc<crate::git::ProjectSyncer>,
    /// Size limits on results and output.
    pub limits: Limits,
    /// Delays between SIGINT, SIGTERM and SIGKILL on a forced cancel.
    pub grace: Grace,
    /// How often to look for queued runs when nobody wakes the pool (other processes may
    /// enqueue into a shared store).
    pub poll_interval: Duration,
    /// Longest time an event waits in memory before it is written.
    pub flush_interval: Duration,
    /// Opens the sealed secrets of the credentials runs use.
    pub sealer: Arc<dyn troupe_core::secret::Sealer>,
    /// Labels runs may require of this pool.
    pub labels: Vec<String>,
    /// Where claims, launches, stored events and ended runs are counted and traced.
    pub telemetry: Arc<troupe_telemetry::Telemetry>,
    /// How runs that do not choose (`options.launcher`) start ansible-playbook.
    pub launcher: troupe_core::run::LauncherKind,
    /// The warm parents of runs started with the warm launcher.
    pub warm: Arc<troupe_ansible::WarmPool>,
}

/// How a pool gives job unit actions (the runs of a job's fan-out) their slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSlots {
    /// Like any other run, in `slots` (a remote worker: its server cannot tell them apart).
    Shared,
    /// In a lane of their own, at most this many at once (`None`: no limit), apart from
    /// `slots`: a job's units all start at once, whatever else runs, and a run that triggers
    /// a job action and waits for it cannot hold the slot its units need.
    Own(Option<usize>),
}

/// Most runs claimed in one store transaction.
const MAX_CLAIM_BATCH: usize = 64;

/// A message to a run in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    Cancel(CancelCause),
}

/// A lane of slots: the runs it takes, and a permit per run it may execute at once.
struct Lane {
    job_runs: JobRuns,
    slots: Arc<Semaphore>,
}

impl Lane {
    fn new(job_runs: JobRuns, slots: usize) -> Self {
        Lane {
            job_runs,
            slots: Arc::new(Semaphore::new(slots.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Whether a run that is (or is not) a job unit action goes in this lane.
    fn takes(&self, job_run: bool) -> bool {
        match self.job_runs {
            JobRuns::Any => true,
            JobRuns::Only => job_run,
            JobRuns::Exclude => !job_run,
        }
    }
}

/// Claims and executes runs. Cheap to share: wrap in `Arc`.
pub struct WorkerPool {
    /// The pool itself, for runs admitted at create to be executed by an `Arc` of it.
    this: Weak<WorkerPool>,
    /// Where runs come from and what they produce goes.
    pub(crate) backend: Arc<dyn Backend>,
    /// The store, for a pool inside a server: it coordinates split runs, sweeps expired leases
    /// and cancels queued runs. `None` for a remote worker.
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) hub: Arc<LiveHub>,
    pub(crate) cfg: WorkerConfig,
    pub(crate) worker_id: String,
    wake: Notify,
    /// Wakes the job lane's dispatcher (see [`JobSlots::Own`]).
    wake_jobs: Notify,
    /// One lane, or job unit actions in a lane of their own (see [`JobSlots`]).
    lanes: Vec<Lane>,
    pub(crate) active: Mutex<HashMap<i64, mpsc::UnboundedSender<Control>>>,
    stop_claiming: CancellationToken,
    tracker: TaskTracker,
    draining: AtomicBool,
}

impl WorkerPool {
    /// Recovers what a previous incarnation of this node left behind, then starts claiming.
    ///
    /// Runs still marked running under this node's id are marked `error`; process groups of
    /// runs whose private directories survived a crash are killed.
    pub async fn start(store: Arc<dyn Store>, hub: Arc<LiveHub>, cfg: WorkerConfig) -> Arc<Self> {
        reap(&cfg).await;
        let prefix = format!("{}/", cfg.node_id);
        match store
            .fail_runs_of_workers(&prefix, "troupe restarted while the run was in flight")
            .await
        {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(runs = ?ids, "marked runs lost by a previous troupe as error");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not recover runs left running"),
        }
        let worker_id = format!("{}/{}", cfg.node_id, uuid::Uuid::new_v4().simple());
        let registration = NewWorker {
            id: worker_id.clone(),
            name: host_name(),
            kind: WorkerKind::Embedded,
            labels: cfg.labels.clone(),
            capacity: u32::try_from(cfg.slots).unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        if let Err(e) = store.register_worker(&registration).await {
            tracing::warn!(error = %e, "could not register the embedded worker");
        }
        let mut backend = StoreBackend::new(
            Arc::clone(&store),
            cfg.labels.clone(),
            Arc::clone(&cfg.git),
            Arc::clone(&cfg.sealer),
        );
        backend.registration = Some(registration);
        let pool = Self::new(Arc::new(backend), Some(store), hub, cfg, Some(worker_id));
        pool.start_dispatch();
        tokio::spawn(Arc::clone(&pool).sweep_leases());
        tokio::spawn(Arc::clone(&pool).heartbeat());
        pool
    }

    /// Starts claiming from `backend` (a server, for a remote worker) under `worker_id`. The
    /// caller kills what a previous incarnation left running before it registers
    /// (`troupe_ansible::reap_orphans`), since registering ends those runs. Split runs are not
    /// taken.
    pub async fn start_remote(
        backend: Arc<dyn Backend>,
        cfg: WorkerConfig,
        worker_id: String,
    ) -> Arc<Self> {
        let pool = Self::new(
            backend,
            None,
            Arc::new(LiveHub::default()),
            cfg,
            Some(worker_id),
        );
        pool.start_dispatch();
        tokio::spawn(Arc::clone(&pool).heartbeat());
        pool
    }

    fn new(
        backend: Arc<dyn Backend>,
        store: Option<Arc<dyn Store>>,
        hub: Arc<LiveHub>,
        cfg: WorkerConfig,
        worker_id: Option<String>,
    ) -> Arc<Self> {
        let worker_id = worker_id
            .unwrap_or_else(|| format!("{}/{}", cfg.node_id, uuid::Uuid::new_v4().simple()));
        let lanes = match cfg.job_slots {
            JobSlots::Shared => vec![Lane::new(JobRuns::Any, cfg.slots)],
            JobSlots::Own(limit) => vec![
                Lane::new(JobRuns::Exclude, cfg.slots),
                Lane::new(JobRuns::Only, limit.unwrap_or(Semaphore::MAX_PERMITS)),
            ],
        };
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            backend,
            store,
            hub,
            cfg,
            worker_id,
            wake: Notify::new(),
            wake_jobs: Notify::new(),
            lanes,
            active: Mutex::new(HashMap::new()),
            stop_claiming: CancellationToken::new(),
            tracker: TaskTracker::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// True once the pool was asked to drain: it finishes its runs and claims no more.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Heartbeats every third of a lease; a drain asked for stops claiming.
    async fn heartbeat(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        loop {
            match self
                .backend
                .heartbeat(&self.worker_id, self.active_runs())
                .await
            {
                Ok(draining) => {
                    if draining && !self.draining.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "asked to drain: finishing runs in flight, claiming no more"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// How long a claim holds without renewal (a worker silent this long counts as lost).
    pub fn lease(&self) -> Duration {
        self.cfg.lease
    }

    /// The id this pool claims runs under.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Tells the pool a run was queued, so it claims without waiting for its poll interval.
    pub fn wake(&self) {
        self.wake.notify_one();
        self.wake_jobs.notify_one();
    }

    /// Number of runs executing now.
    pub fn active_runs(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Passes a cancel to a run this pool executes. Returns false when the run is not here
    /// (the worker holding it sees the request at its next lease renewal).
    pub fn cancel(&self, run_id: i64, mode: CancelMode) -> bool {
        self.send(run_id, Control::Cancel(CancelCause::Requested(mode)))
    }

    /// Announces a run just stored as `queued`: wakes the dispatcher and tells live
    /// subscribers. Every way of creating a run ends here (or in [`WorkerPool::admit`]).
    pub fn run_created(&self, run: &Run) {
        self.wake();
        self.publish_created(run);
    }

    fn publish_created(&self, run: &Run) {
        self.hub.publish_change(RunChange::RunCreated {
            run_id: run.id,
            project_id: run.project_id,
            tag: run.tag.clone(),
            labels: run.labels.clone(),
            at: run.created_at,
        });
    }

    /// Admission at create, for the pool inside a server: when the run's lane has a free slot,
    /// stores `new` already claimed by this pool (unless an older run it would take is
    /// waiting: then `new` is stored `queued` and announced) and starts it at once. `None`
    /// when no slot is free (or the pool drains, stops, or is a remote worker's): the caller
    /// stores the run `queued`.
    ///
    /// A run admitted here is held under this pool's lease like a claimed one: if troupe dies
    /// before it starts, the lease sweep (or this node's restart) ends it as it would a claim.
    pub async fn admit(&self, new: &NewRun) -> Option<StoreResult<Run>> {
        let store = self.store.as_ref()?;
        let mut slots = self.reserve_in(new.origin.job_unit().is_some(), 1)?;
        let admission = slots.admission();
        let run = match store
            .create_run_claimed(new, &admission.claimant, admission.lease)
            .await
        {
            Ok(run) => run,
            Err(e) => return Some(Err(e)),
        };
        if run.status == RunStatus::Running {
            slots.start(&run);
        } else {
            drop(slots);
            self.run_created(&run);
        }
        Some(Ok(run))
    }

    /// Up to `wanted` free slots of the lane of job unit actions (`job_run`) or of the other
    /// runs, held for runs to be stored claimed by this pool; `None` when none is free (or the
    /// pool drains, stops, or is a remote worker's).
    fn reserve_in(&self, job_run: bool, wanted: usize) -> Option<Slots> {
        self.store.as_ref()?;
        if self.stop_claiming.is_cancelled() || self.is_draining() {
            return None;
        }
        let lane = self.lanes.iter().find(|lane| lane.takes(job_run))?;
        let pool = self.this.upgrade()?;
        let permits: Vec<_> =
            std::iter::from_fn(|| Arc::clone(&lane.slots).try_acquire_owned().ok())
                .take(wanted)
                .collect();
        if permits.is_empty() {
            return None;
        }
        Some(Slots {
            pool,
            job_runs: lane.job_runs,
            permits,
        })
    }

    /// Asks for a run to stop: a queued run is canceled on the spot (and followers are told),
    /// a running one is passed to the worker executing it. `Conflict` when it has finished.
    pub async fn cancel_run(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        let Some(store) = &self.store else {
            return Err(troupe_store::StoreError::Conflict(
                "a remote worker cannot cancel runs for others".into(),
            ));
        };
        let run = store.request_cancel(run_id, mode).await?;
        if run.status == RunStatus::Running {
            self.cancel(run_id, mode);
        } else if run.status.is_finished() {
            self.hub.publish_change(RunChange::status_of(&run));
            self.hub.publish_finished(run.id, run.status);
        }
        Ok(run)
    }

    fn send(&self, run_id: i64, msg: Control) -> bool {
        let Ok(active) = self.active.lock() else {
            return false;
        };
        active.get(&run_id).is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Stops claiming, lets runs in flight finish for up to `grace`, then cancels the rest
    /// (status `canceled`, reason says troupe shut down) and waits for them to be recorded.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_claiming.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            self.say_goodbye().await;
            return;
        }
        let ids: Vec<i64> = self
            .active
            .lock()
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default();
        tracing::warn!(runs = ?ids, "grace period over: canceling runs in flight");
        for id in ids {
            self.send(id, Control::Cancel(CancelCause::Shutdown));
        }
        self.tracker.wait().await;
        self.say_goodbye().await;
    }

    async fn say_goodbye(&self) {
        if let Err(e) = self.backend.goodbye(&self.worker_id).await {
            tracing::warn!(error = %e, "could not say goodbye to the server");
        }
    }

    /// One dispatcher per lane: every run in `slots`, or job unit actions in a lane of their
    /// own and the other runs in `slots`.
    fn start_dispatch(self: &Arc<Self>) {
        for lane in 0..self.lanes.len() {
            tokio::spawn(Arc::clone(self).dispatch(lane));
        }
    }

    async fn dispatch(self: Arc<Self>, lane: usize) {
        let Some(Lane { job_runs, slots }) = self.lanes.get(lane) else {
            return;
        };
        let (job_runs, slots) = (*job_runs, Arc::clone(slots));
        let wake = if job_runs == JobRuns::Only {
            &self.wake_jobs
        } else {
            &self.wake
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = self.stop_claiming.cancelled() => return,
            };
            if self.stop_claiming.is_cancelled() {
                return;
            }
            if self.is_draining() {
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(self.cfg.poll_interval) => continue,
                    () = self.stop_claiming.cancelled() => return,
                }
            }
            // Every free slot is claimed for in one transaction (a burst of queued runs starts
            // at the pace of process spawns, not of one store round trip per run).
            let mut permits = vec![permit];
            while permits.len() < MAX_CLAIM_BATCH {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let asked = std::time::Instant::now();
            let claimed = self
                .backend
                .claim(&self.worker_id, self.cfg.lease, permits.len(), job_runs)
                .await;
            self.cfg
                .telemetry
                .metrics
                .store_op(StoreOp::claim, asked.elapsed());
            match claimed {
                Ok(runs) if !runs.is_empty() => {
                    backoff = Duration::from_millis(100);
                    // Slots left over (fewer runs were queued) go back to the semaphore.
                    permits.truncate(runs.len());
                    for (run, permit) in runs.into_iter().zip(permits) {
                        self.hub.publish_change(RunChange::status_of(&run));
                        let pool = Arc::clone(&self);
                        self.tracker.spawn(async move {
                            pool.execute(run, permit).await;
                        });
                    }
                }
                Ok(_) => {
                    drop(permits);
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(self.cfg.poll_interval) => {}
                        () = self.stop_claiming.cancelled() => return,
                    }
                }
                Err(e) => {
                    drop(permits);
                    tracing::error!(error = %e, "could not claim runs; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop_claiming.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Runs whose worker stopped renewing (another process died) are marked `error`.
    async fn sweep_leases(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.cfg.lease) => {}
                () = self.stop_claiming.cancelled() => return,
            }
            match store
                .expire_leases(
                    chrono::Utc::now(),
                    "worker lost: the worker running it stopped renewing its lease",
                )
                .await
            {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(runs = ?ids, "runs with expired leases marked error")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not sweep expired leases"),
            }
        }
    }
}

/// Kills processes of runs whose private directories survived a crash.
async fn reap(cfg: &WorkerConfig) {
    let orphans = troupe_ansible::reap_orphans(&cfg.runs_dir).await;
    if !orphans.is_empty() {
        tracing::warn!(
            count = orphans.len(),
            "killed processes left behind by a previous troupe"
        );
    }
}

/// Free slots of one lane held for runs stored claimed by this pool (admission at create);
/// dropped, it gives back those no run took.
struct Slots {
    pool: Arc<WorkerPool>,
    job_runs: JobRuns,
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

impl troupe_launch::Reserved for Slots {
    fn admission(&self) -> Admission<'_> {
        Admission {
            claimant: Claimant {
                worker_id: &self.pool.worker_id,
                labels: &self.pool.cfg.labels,
                splits: true,
                job_runs: self.job_runs,
            },
            lease: self.pool.cfg.lease,
            slots: self.permits.len(),
        }
    }

    fn start(&mut self, run: &Run) {
        let Some(permit) = self.permits.pop() else {
            // The store claims no more runs than there are slots: a caller's mistake. The
            // run's lease is not renewed, so the lease sweep ends it.
            tracing::error!(run = run.id, "a run was admitted without a free slot");
            return;
        };
        let pool = &self.pool;
        pool.publish_created(run);
        pool.hub.publish_change(RunChange::status_of(run));
        let admitted = run.clone();
        let executor = Arc::clone(pool);
        pool.tracker.spawn(async move {
            executor.execute(admitted, permit).await;
        });
    }
}

/// The launcher announces runs to the pool and passes cancels through it.
#[async_trait::async_trait]
impl troupe_launch::Queue for WorkerPool {
    async fn admit(&self, new: &NewRun) -> Option<StoreResult<Run>> {
        WorkerPool::admit(self, new).await
    }

    fn reserve(&self, slots: usize) -> Option<Box<dyn troupe_launch::Reserved>> {
        let slots = self.reserve_in(false, slots)?;
        Some(Box::new(slots))
    }

    fn run_created(&self, run: &Run) {
        WorkerPool::run_created(self, run);
    }

    async fn cancel_run(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        WorkerPool::cancel_run(self, run_id, mode).await
    }
}

/// This machine's host name, for people reading the workers list.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
