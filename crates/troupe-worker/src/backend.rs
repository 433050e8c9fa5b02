//! What a pool needs from wherever its runs come from: the store itself (the embedded pool of
//! `troupe serve`) or a server over HTTP (`troupe worker`). Executing a run is the same code
//! either way; only these calls differ.

use crate::git::{CommitTree, ProjectSyncer};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use troupe_core::Event;
use troupe_core::credential::CredentialSecret;
use troupe_core::inventory::InventoryContent;
use troupe_core::run::Run;
use troupe_store::{Claimant, JobRuns, Lease, OutputChunk, RunOutcome, Store, StoreResult};

/// What executing a run needs besides the run itself, as it is at execution time.
pub struct Prepared {
    /// The project's files (a checkout, a directory, or an unpacked bundle).
    pub project_dir: PathBuf,
    /// The inventory the run was created with.
    pub inventory: InventoryContent,
    /// The opened secrets of the credentials the run names.
    pub credentials: Vec<CredentialSecret>,
    /// For git projects, the commit the files are at.
    pub commit: Option<String>,
    /// For a git project on a server, its commit's tree, held against pruning while this
    /// lives.
    pub tree: Option<CommitTree>,
    /// The run's extra vars with their sealed values opened, when it has sealed ones (the
    /// run's stored options hold them sealed).
    pub extra_vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// The secret texts of the run besides its credentials' values (its secret extra vars):
    /// redacted from whatever the run produces.
    pub secrets: Vec<String>,
}

impl Prepared {
    /// Everything redacted from what the run produces: its credentials' values and its other
    /// secrets.
    pub fn redactor(&self) -> troupe_core::redact::Redactor {
        troupe_core::redact::Redactor::new(
            self.credentials
                .iter()
                .flat_map(CredentialSecret::secret_values)
                .chain(self.secrets.iter().map(String::as_str)),
        )
    }
}

/// A run's extra vars with their sealed values opened, and the secret texts those held.
#[derive(Default)]
pub struct OpenedVars {
    /// The extra vars opened; `None` when none was sealed (the run's own are used).
    pub extra_vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// The texts of the opened values, to redact.
    pub secrets: Vec<String>,
}

/// Opens the sealed values of a run's extra vars. Messages never quote a value.
pub fn open_extra_vars(
    sealer: &dyn troupe_core::secret::Sealer,
    run: &Run,
) -> Result<OpenedVars, String> {
    if !troupe_core::redact::has_sealed(&run.options.extra_vars) {
        return Ok(OpenedVars::default());
    }
    let mut vars = run.options.extra_vars.clone();
    let secrets = troupe_core::redact::open_sealed(&mut vars, sealer)
        .map_err(|e| format!("could not open the run's secret extra vars: {e}"))?;
    Ok(OpenedVars {
        extra_vars: Some(vars),
        secrets,
    })
}

/// How a finish report was taken.
#[derive(Debug)]
pub enum Finished {
    /// Recorded; the run as it now is, when the backend answers with it at once.
    Recorded(Option<Box<Run>>),
    /// The run was no longer this worker's to finish.
    NotOurs(String),
}

/// Where a pool's runs come from and where what they produce goes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Claims up to `max` queued runs this worker may take, of those `job_runs` names (a
    /// backend that cannot tell them apart, a server for a remote worker, takes any).
    async fn claim(
        &self,
        worker_id: &str,
        lease: Duration,
        max: usize,
        job_runs: JobRuns,
    ) -> StoreResult<Vec<Run>>;
    /// Everything a launch needs. `Err` says why the run cannot start (the run ends `error`
    /// with that reason); messages name credentials, never their values.
    async fn prepare(&self, run: &Run) -> Result<Prepared, String>;
    /// Records that ansible-playbook started.
    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()>;
    /// Extends the run's lease; says whether a cancel was asked for.
    async fn renew(&self, run_id: i64, worker_id: &str, lease: Duration) -> StoreResult<Lease>;
    /// Keeps events and output for good (idempotent by counter and sequence): once this
    /// returns `Ok`, they are not lost whatever happens next.
    async fn store_batch(
        &self,
        run_id: i64,
        events: &[Event],
        output: &[OutputChunk],
    ) -> StoreResult<()>;
    /// Records how the run ended, after everything it produced was handed to `store_batch`.
    async fn finish(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Finished>;
    /// Says this worker is alive and how many runs it executes; answers whether it was asked
    /// to drain (finish its runs, claim no more).
    async fn heartbeat(&self, worker_id: &str, active_runs: usize) -> StoreResult<bool>;
    /// Says this worker stops.
    async fn goodbye(&self, worker_id: &str) -> StoreResult<()>;
    /// True when what a run produces should be handed over on every flush tick even while
    /// nobody here follows it (followers are elsewhere).
    fn eager(&self) -> bool {
        false
    }
}

/// The embedded pool's backend: the store itself.
pub struct StoreBackend {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) claimant_labels: Vec<String>,
    pub(crate) git: Arc<ProjectSyncer>,
    pub(crate) sealer: Arc<dyn troupe_core::secret::Sealer>,
    /// How this pool registers as a worker.
    pub(crate) registration: Option<troupe_core::worker::NewWorker>,
}

impl StoreBackend {
    /// A backend over `store`: runs get their files from `git` (commit trees of git projects,
    /// directories of the others), credentials open with `sealer`; it takes runs requiring at
    /// most `labels`.
    pub fn new(
        store: Arc<dyn Store>,
        labels: Vec<String>,
        git: Arc<ProjectSyncer>,
        sealer: Arc<dyn troupe_core::secret::Sealer>,
    ) -> Self {
        Self {
            store,
            claimant_labels: labels,
            git,
            sealer,
            registration: None,
        }
    }
}

#[async_trait]
impl Backend for StoreBackend {
    async fn claim(
        &self,
        worker_id: &str,
        lease: Duration,
        max: usize,
        job_runs: JobRuns,
    ) -> StoreResult<Vec<Run>> {
        let claimant = Claimant {
            worker_id,
            labels: &self.claimant_labels,
            splits: true,
            job_runs,
        };
        self.store.claim_for(&claimant, lease, max).await
    }

    async fn prepare(&self, run: &Run) -> Result<Prepared, String> {
        let (project, inventory) = self
            .store
            .get_run_launch(run.id)
            .await
            .map_err(|e| format!("could not load the run's project and inventory: {e}"))?;
        let tree = self.git.tree_for(&project).await.map_err(|e| e.0)?;
        let credentials = open_credentials(
            self.store.as_ref(),
            self.sealer.as_ref(),
            &run.options.credentials,
        )
        .await?;
        let OpenedVars {
            extra_vars,
            secrets,
        } = open_extra_vars(self.sealer.as_ref(), run)?;
        Ok(Prepared {
            project_dir: tree.path().to_path_buf(),
            inventory,
            credentials,
            commit: tree.commit().map(str::to_owned),
            tree: Some(tree),
            extra_vars,
            secrets,
        })
    }

    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()> {
        self.store
            .mark_launched(run_id, worker_id, at, commit)
            .await
    }

    async fn renew(&self, run_id: i64, worker_id: &str, lease: Duration) -> StoreResult<Lease> {
        self.store.renew_lease(run_id, worker_id, lease).await
    }

    async fn store_batch(
        &self,
        run_id: i64,
        events: &[Event],
        output: &[OutputChunk],
    ) -> StoreResult<()> {
        self.store.append_batch(run_id, events, output).await
    }

    async fn finish(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Finished> {
        match self.store.finish_run(run_id, worker_id, outcome).await {
            Ok(run) => Ok(Finished::Recorded(Some(Box::new(run)))),
            Err(troupe_store::StoreError::Conflict(msg)) => Ok(Finished::NotOurs(msg)),
            Err(e) => Err(e),
        }
    }

    async fn heartbeat(&self, worker_id: &str, active_runs: usize) -> StoreResult<bool> {
        let active = u32::try_from(active_runs).unwrap_or(u32::MAX);
        match self.store.heartbeat_worker(worker_id, active).await {
            Ok(w) => Ok(w.draining),
            // Forgotten (another incarnation of this node registered, or the row was
            // removed): register again, as a worker does after its server lost it.
            Err(troupe_store::StoreError::NotFound { .. }) => {
                if let Some(new) = &self.registration {
                    self.store.register_worker(new).await?;
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn goodbye(&self, worker_id: &str) -> StoreResult<()> {
        self.store.stop_worker(worker_id).await
    }
}

/// The opened secrets of the credentials a run names, as they are now (one deleted or
/// changed since the launch is found out here). Messages name credentials, never values.
pub async fn open_credentials(
    store: &dyn Store,
    sealer: &dyn troupe_core::secret::Sealer,
    names: &[String],
) -> Result<Vec<CredentialSecret>, String> {
    let mut public = Vec::with_capacity(names.len());
    let mut secrets = Vec::with_capacity(names.len());
    for name in names {
        let stored = store
            .sealed_credential(name)
            .await
            .map_err(|e| format!("could not load credential {name:?}: {e}"))?
            .ok_or_else(|| format!("credential {name:?} no longer exists"))?;
        let secret = troupe_core::credential::open(sealer, &stored.sealed)
            .map_err(|e| format!("could not open credential {name:?}: {e}"))?;
        public.push(stored.credential);
        secrets.push(secret);
    }
    troupe_core::credential::check_run_credentials(&public, "credentials")
        .map_err(|e| e.message)?;
    Ok(secrets)
}
