//! The engine that runs executions.
//!
//! Every execution is driven by one task on one replica: the one holding its lease in the store
//! ([`ExecutionStore::claim_execution`]). The task writes each step's record before and after
//! every attempt, so whatever replica takes an execution over (after a restart, or when a
//! replica dies and its lease runs out) knows which steps are done and goes on from there.
//! A background loop renews leases, takes over executions nobody holds, and notices cancels
//! asked for on other replicas.

mod actions;
mod drive;
mod seams;
mod steps;

pub use seams::{FindNodes, Nodes, Observe, Unobserved, WaitRun};

use chrono::Utc;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use troupe_core::flow::{Approval, Execution, NewExecution, ParentStep, StepRecord};
use troupe_core::notify::SealedNotify;
use troupe_launch::Launch;
use troupe_store::{Store, StoreError};

use crate::doc::FlowDoc;
use crate::inputs;
use crate::load::{self, FlowError};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This replica's name in the store: the owner of the executions it runs. Stable across
    /// restarts of the same replica, so a restarted troupe takes its executions back at once.
    pub owner: String,
    /// How long a hold on an execution lasts without renewal.
    pub lease: Duration,
    /// How often the engine looks for executions to take, slots that freed, and cancels.
    pub poll: Duration,
    /// Where each execution gets a working directory of its own (`<id>/`), where its shell
    /// steps run.
    pub work_dir: PathBuf,
    /// Put first on shell steps' `PATH` (where ansible is).
    pub bin_dir: Option<PathBuf>,
}

impl EngineConfig {
    /// Defaults for a replica named `owner`.
    pub fn new(owner: impl Into<String>, work_dir: PathBuf) -> Self {
        EngineConfig {
            owner: owner.into(),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            work_dir,
            bin_dir: None,
        }
    }
}

/// Why an execution could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No flow of that name (or version).
    #[error("no flow named {0:?}")]
    UnknownFlow(String),
    /// The stored document no longer loads.
    #[error("flow {name:?}: {source}")]
    Document {
        /// The flow.
        name: String,
        /// Why.
        #[source]
        source: FlowError,
    },
    /// The inputs are wrong; each problem names its input.
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Inputs(Vec<load::Problem>),
    /// The secret inputs could not be sealed.
    #[error("the secret inputs could not be sealed: {0}")]
    Seal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What starting an execution needs.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The flow's name.
    pub flow: String,
    /// Its version (the newest when `None`).
    pub version: Option<i64>,
    /// The inputs as given (strings are coerced to the declared types).
    pub inputs: Map<String, Value>,
    /// Who or what starts it (`api`, `schedule:<name>`, `rule:<name>`).
    pub started_by: String,
    /// The parent execution's step, for a sub-flow.
    pub parent: Option<ParentStep>,
}

/// Why an action on an execution was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The store refused or failed (`NotFound`, `Conflict`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the engine is given to work with.
pub struct Parts {
    /// Where everything is kept.
    pub store: Arc<dyn Store>,
    /// Starts and cancels runs.
    pub launch: Arc<dyn Launch>,
    /// Waits for runs to end.
    pub runs: Arc<dyn WaitRun>,
    /// Finds nodes.
    pub nodes: Arc<dyn FindNodes>,
    /// Seals secret inputs.
    pub seal: Arc<dyn troupe_core::secret::Sealer>,
    /// Hears what happens.
    pub observe: Arc<dyn Observe>,
    /// Sends what `http` and `slack` steps and handlers send (from [`troupe_http::builder`],
    /// with the CAs the server trusts and a timeout on every request).
    pub http: reqwest::Client,
}

/// Runs executions of flows.
pub struct Engine {
    parts: Parts,
    cfg: EngineConfig,
    /// The one HTTP sender (shared with notifications): `http` and `slack` steps.
    sender: troupe_notify::Sender,
    /// Executions this replica drives, with what stops each.
    running: Mutex<HashMap<i64, Handle>>,
    /// Rung when something may have become possible: an execution queued, a slot freed, an
    /// approval answered.
    wake: Notify,
    /// Canceled when the engine stops: tasks end without touching their executions, which
    /// stay `running` in the store for the next start to take back.
    shutdown: CancellationToken,
    me: Weak<Engine>,
}

impl Engine {
    /// An engine; call [`Engine::run`] to have it take and drive executions.
    pub fn new(parts: Parts, cfg: EngineConfig) -> Arc<Engine> {
        let sender = troupe_notify::Sender::new(parts.http.clone());
        Arc::new_cyclic(|me| Engine {
            parts,
            cfg,
            sender,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            me: me.clone(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.parts.store
    }

    /// Stores a flow document (a new version when it differs from the newest), after checking
    /// it.
    pub async fn put_flow(
        &self,
        text: &str,
    ) -> Result<(FlowDoc, troupe_core::flow::FlowVersion), PutError> {
        let doc = load::load(text).map_err(PutError::Document)?;
        let version = self.parts.store.put_flow(&doc.name, text).await?;
        Ok((doc, version))
    }

    /// The flow version a start names, its document and the inputs checked against it.
    async fn resolve(
        &self,
        req: &StartRequest,
    ) -> Result<(troupe_core::flow::FlowVersion, FlowDoc, inputs::Inputs), StartError> {
        let version = match self.parts.store.get_flow(&req.flow, req.version).await {
            Ok(v) => v,
            Err(StoreError::NotFound { .. }) => {
                return Err(StartError::UnknownFlow(req.flow.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let doc = load::load(&version.document).map_err(|source| StartError::Document {
            name: version.name.clone(),
            source,
        })?;
        let inputs = inputs::resolve(&doc.inputs, &req.inputs).map_err(StartError::Inputs)?;
        Ok((version, doc, inputs))
    }

    /// Checks what [`Engine::start`] checks (the flow exists and loads, the inputs are right)
    /// without starting anything; the inputs as checked.
    pub async fn check(&self, req: &StartRequest) -> Result<inputs::Inputs, StartError> {
        self.resolve(req).await.map(|(_, _, inputs)| inputs)
    }

    /// Creates an execution, queued, and starts driving it.
    pub async fn start(&self, req: StartRequest) -> Result<Execution, StartError> {
        let new = self.prepare(req).await?;
        let execution = self.parts.store.create_execution(&new).await?;
        self.admit(&execution).await;
        Ok(execution)
    }

    /// Looks up the flow, checks the inputs and builds the execution to store (secret inputs
    /// sealed and shown redacted), without storing it: for callers that store it in a
    /// transaction of their own, then call [`Engine::admit`].
    pub async fn prepare(&self, req: StartRequest) -> Result<NewExecution, StartError> {
        let (version, doc, inputs) = self.resolve(&req).await?;
        let concurrency_key = match &doc.concurrency {
            Some(c) => {
                let key = c.key.as_deref().unwrap_or(&doc.name);
                let scope = drive::input_scope(&doc, inputs.all());
                Some(crate::expr::render(key, &scope).map_err(|e| {
                    StartError::Inputs(vec![load::Problem {
                        field: "concurrency.key".into(),
                        message: inputs.scrubber().scrub_str(&e.to_string()),
                    }])
                })?)
            }
            None => None,
        };
        let notify = self.notify_targets(&doc, &inputs)?;
        Ok(NewExecution {
            flow: version.name.clone(),
            version: version.version,
            inputs: inputs.redacted(),
            sealed_secrets: seams::seal_map(self.parts.seal.as_ref(), &inputs.secrets())
                .map_err(StartError::Seal)?,
            concurrency_key,
            parent: req.parent,
            started_by: req.started_by,
            notify,
        })
    }

    /// Tells live followers about a stored execution and starts driving it.
    pub async fn admit(&self, execution: &Execution) {
        self.parts.observe.execution(execution);
        self.take(execution.id).await;
    }

    /// The flow's `notify` targets, their URLs and header values rendered over the inputs,
    /// sealed (a rendered URL may hold a secret input).
    fn notify_targets(
        &self,
        doc: &FlowDoc,
        inputs: &inputs::Inputs,
    ) -> Result<Vec<SealedNotify>, StartError> {
        if doc.notify.is_empty() {
            return Ok(Vec::new());
        }
        let scope = drive::input_scope(doc, inputs.all());
        let problem = |field: String, e: &dyn std::fmt::Display| {
            StartError::Inputs(vec![load::Problem {
                field,
                message: inputs.scrubber().scrub_str(&e.to_string()),
            }])
        };
        let mut out = Vec::with_capacity(doc.notify.len());
        for (i, n) in doc.notify.iter().enumerate() {
            let mut n = n.clone();
            for (field, url) in [("webhook", &mut n.webhook), ("slack", &mut n.slack)] {
                if let Some(url) = url {
                    *url = crate::expr::render(url, &scope)
                        .map_err(|e| problem(format!("notify[{i}].{field}"), &e))?;
                }
            }
            for (name, value) in &mut n.headers {
                *value = crate::expr::render(value, &scope)
                    .map_err(|e| problem(format!("notify[{i}].headers.{name}"), &e))?;
            }
            n.validate(&format!("notify[{i}]"), false)
                .map_err(|e| problem(e.field.clone(), &inputs.scrubber().scrub_str(&e.message)))?;
            out.push(
                n.seal_with(|clear| self.parts.seal.seal(clear))
                    .map_err(|e| StartError::Seal(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Asks an execution to stop: at once if queued, else at its next chance (the step in
    /// flight is stopped gracefully).
    pub async fn cancel(&self, id: i64) -> Result<Execution, ActionError> {
        let execution = self.parts.store.cancel_execution(id).await?;
        if let Some(h) = self.handle(id) {
            h.cancel.cancel();
        }
        if execution.status.is_finished() {
            self.parts.observe.execution(&execution);
            self.wake.notify_waiters();
        }
        Ok(execution)
    }

    /// Runs a failed, canceled or timed-out execution again from its first step that did not
    /// succeed.
    pub async fn resume(&self, id: i64) -> Result<Execution, ActionError> {
        let execution = self.parts.store.resume_execution(id).await?;
        self.parts.observe.execution(&execution);
        self.take(id).await;
        Ok(execution)
    }

    /// Answers a waiting approval step (`key` is `<phase>/<id>`, or a step id of `steps`).
    pub async fn answer(
        &self,
        id: i64,
        key: &str,
        approval: &Approval,
    ) -> Result<StepRecord, ActionError> {
        let key = if key.contains('/') {
            key.to_owned()
        } else {
            format!("steps/{key}")
        };
        let record = self.parts.store.answer_approval(id, &key, approval).await?;
        self.wake.notify_waiters();
        Ok(record)
    }

    /// Takes and drives executions until `stop` is canceled: those nobody holds (queued ones
    /// this replica did not start, and those of a replica that stopped), renewing the leases of
    /// its own and noticing cancels asked for elsewhere.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if renewed.elapsed() >= self.cfg.lease / 3 {
                self.renew().await;
                renewed = tokio::time::Instant::now();
            }
            self.check_cancels().await;
            let now = Utc::now();
            match self.parts.store.unclaimed_executions(now, 50).await {
                Ok(found) => {
                    for execution in found {
                        self.take(execution.id).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "flow engine: listing executions failed"),
            }
        }
        // Shutting down is not canceling: the executions stay running in the store and are
        // taken back on the next start; only the tasks stop. Their leases end now, so the next
        // start (of this replica or another) takes them up at once. Which ones is read before
        // the tasks are told to stop: a stopping task takes itself out of `running`.
        let held = self.owned();
        self.shutdown.cancel();
        let now = Utc::now();
        for id in held {
            let _ = self
                .parts
                .store
                .claim_execution(id, &self.cfg.owner, now, now)
                .await;
        }
    }

    /// Claims an execution and drives it in a task of its own, unless this replica already
    /// does or another holds it.
    ///
    /// Boxed, because driving an execution may start another (a `flow` step), which takes it.
    fn take(&self, id: i64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.handle(id).is_some() {
                return;
            }
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
            let execution = match self
                .parts
                .store
                .claim_execution(id, &self.cfg.owner, now, until)
                .await
            {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(execution = id, error = %e, "flow engine: claim failed");
                    return;
                }
            };
            let handle = Handle {
                cancel: CancellationToken::new(),
                release: self.shutdown.child_token(),
            };
            {
                let Ok(mut running) = self.running.lock() else {
                    return;
                };
                if running.contains_key(&id) {
                    return;
                }
                running.insert(id, handle.clone());
            }
            let Some(engine) = self.me.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                drive::drive(&engine, execution, handle).await;
                if let Ok(mut running) = engine.running.lock() {
                    running.remove(&id);
                }
                engine.wake.notify_waiters();
            });
        })
    }

    fn handle(&self, id: i64) -> Option<Handle> {
        self.running.lock().ok()?.get(&id).cloned()
    }

    fn owned(&self) -> Vec<i64> {
        self.running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    async fn renew(&self) {
        let ids = self.owned();
        if ids.is_empty() {
            return;
        }
        let until = Utc::now() + chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
        match self
            .parts
            .store
            .renew_executions(&self.cfg.owner, &ids, until)
            .await
        {
            Ok(kept) => {
                for id in ids.iter().filter(|id| !kept.contains(id)) {
                    tracing::warn!(
                        execution = id,
                        "flow engine: execution taken over elsewhere; letting go"
                    );
                    if let Some(h) = self.handle(*id) {
                        h.release.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "flow engine: renewing leases failed"),
        }
    }

    async fn check_cancels(&self) {
        for id in self.owned() {
            if let Ok(e) = self.parts.store.get_execution(id).await
                && e.cancel_requested
                && let Some(h) = self.handle(id)
            {
                h.cancel.cancel();
            }
        }
    }
}

/// What stops one execution's task.
#[derive(Clone)]
pub(crate) struct Handle {
    /// Canceled when the execution is to be canceled.
    pub(crate) cancel: CancellationToken,
    /// Canceled when this replica lets go of it (shutting down, or its lease was taken).
    pub(crate) release: CancellationToken,
}

/// Why a flow document was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// It does not load.
    #[error(transparent)]
    Document(FlowError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait::async_trait]
impl troupe_launch::StartFlow for Engine {
    async fn prepare(
        &self,
        start: troupe_launch::FlowStart,
    ) -> Result<NewExecution, troupe_launch::FlowStartError> {
        use troupe_launch::FlowStartError as E;
        let req = StartRequest {
            flow: start.flow,
            version: start.version,
            inputs: start.inputs,
            started_by: start.started_by,
            parent: None,
        };
        Engine::prepare(self, req).await.map_err(|e| match e {
            StartError::UnknownFlow(name) => E::UnknownFlow(name),
            e @ (StartError::Document { .. } | StartError::Inputs(_)) => E::Invalid(e.to_string()),
            e @ (StartError::Seal(_) | StartError::Store(_)) => E::Unavailable(e.to_string()),
        })
    }

    async fn announce(&self, execution: &Execution) {
        self.admit(execution).await;
    }
}
