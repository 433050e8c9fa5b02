//! Driving one execution: admission (concurrency and locks), discovery, the phases in order,
//! and its end.

use chrono::Utc;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use troupe_core::flow::{Execution, ExecutionStatus, Phase, StepRecord, StepStatus};
use troupe_store::{SlotRequest, StoreError};

use super::seams::{Nodes, open_map};
use super::steps::{StepEnd, run_step};
use super::{Engine, Handle};
use crate::doc::{Behavior, FlowDoc, NodeSet, Step};
use crate::expr::{self, Scope};
use crate::inputs::{Inputs, Scrubber};
use crate::load;

/// Why an execution's work stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A cancel was asked for.
    Canceled,
    /// The flow's time limit passed.
    Deadline,
    /// This replica let go (shutting down, or another took the execution over): nothing is
    /// written, the execution stays as it is for the next holder.
    Released,
}

/// What stops the work of one execution.
#[derive(Clone)]
pub(crate) struct Stops {
    handle: Handle,
    deadline: Option<Instant>,
}

impl Stops {
    /// Resolves when the execution must stop.
    pub(crate) async fn wait(&self) -> Stop {
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.handle.release.cancelled() => Stop::Released,
            _ = self.handle.cancel.cancelled() => Stop::Canceled,
            _ = deadline => Stop::Deadline,
        }
    }

    /// Whether the execution must stop now.
    pub(crate) fn now(&self) -> Option<Stop> {
        if self.handle.release.is_cancelled() {
            Some(Stop::Released)
        } else if self.handle.cancel.is_cancelled() {
            Some(Stop::Canceled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::Deadline)
        } else {
            None
        }
    }

    /// Sleeps for `d`, or less if the execution must stop.
    pub(crate) async fn sleep(&self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            stop = self.wait() => Err(stop),
        }
    }
}

/// Everything a step of one execution sees.
pub(crate) struct Ctx<'e> {
    pub(crate) engine: &'e Arc<Engine>,
    pub(crate) execution: Execution,
    pub(crate) doc: FlowDoc,
    pub(crate) inputs: Inputs,
    pub(crate) scrubber: Scrubber,
    pub(crate) stops: Stops,
    /// What expressions see.
    pub(crate) scope: Scope,
    /// The records of earlier rounds and of this one so far.
    pub(crate) prior: Vec<StepRecord>,
    /// Node sets found empty with `when_empty: skip`.
    pub(crate) skipped_sets: Vec<String>,
}

impl Ctx<'_> {
    /// Writes a step's record (secrets scrubbed) and tells watchers.
    pub(crate) async fn put(&self, record: &mut StepRecord) -> Result<(), StoreError> {
        self.scrubber.scrub(&mut record.result);
        for v in record.published.values_mut() {
            self.scrubber.scrub(v);
        }
        if let Some(e) = &record.error {
            record.error = Some(self.scrubber.scrub_str(e));
        }
        self.engine.parts.store.put_step(record).await?;
        self.engine.parts.observe.step(record);
        Ok(())
    }

    /// A line of the execution's log (secrets scrubbed).
    pub(crate) fn log(&self, line: &str) {
        let line = self.scrubber.scrub_str(line);
        tracing::info!(execution = self.execution.id, flow = %self.execution.flow, "{line}");
        self.engine.parts.observe.log(self.execution.id, &line);
    }
}

/// The scope before anything ran: `inputs` (clear), `execution`.
pub(crate) fn input_scope(doc: &FlowDoc, inputs: &Map<String, Value>) -> Scope {
    let mut scope = Scope::new();
    scope.insert("inputs".into(), Value::Object(inputs.clone()));
    scope.insert("flow".into(), json!({"name": doc.name}));
    scope
}

/// Drives an execution this replica holds until it ends, or until the replica lets go.
pub(crate) async fn drive(engine: &Arc<Engine>, execution: Execution, handle: Handle) {
    let id = execution.id;
    if let Err(e) = drive_inner(engine, execution, handle).await {
        // The store failed: let go. The lease runs out and some replica takes it again.
        tracing::warn!(execution = id, error = %e, "flow engine: execution interrupted by a store error");
    }
}

async fn drive_inner(
    engine: &Arc<Engine>,
    execution: Execution,
    handle: Handle,
) -> Result<(), StoreError> {
    let store = &engine.parts.store;
    let version = store
        .get_flow(&execution.flow, Some(execution.version))
        .await?;
    let doc = match load::load(&version.document) {
        Ok(doc) => doc,
        Err(e) => {
            let why = format!(
                "version {} of the flow no longer loads: {e}",
                version.version
            );
            return finish_early(engine, &execution, ExecutionStatus::Failed, &why).await;
        }
    };
    let secrets = match open_map(
        engine.parts.seal.as_ref(),
        execution.sealed_secrets.as_deref(),
    ) {
        Ok(s) => s,
        Err(_) => {
            let why = "its secret inputs cannot be opened with this server's key";
            return finish_early(engine, &execution, ExecutionStatus::Failed, why).await;
        }
    };
    let inputs = Inputs::with_secrets(execution.inputs.clone(), secrets);
    let scrubber = inputs.scrubber();
    let mut scope = input_scope(&doc, inputs.all());
    scope.insert(
        "execution".into(),
        json!({
            "id": execution.id,
            "flow": execution.flow,
            "version": execution.version,
            "round": execution.round,
            "started_by": execution.started_by,
        }),
    );
    scope.insert("steps".into(), Value::Object(Map::new()));
    scope.insert("published".into(), Value::Object(Map::new()));
    scope.insert("nodes".into(), Value::Object(Map::new()));
    let prior = store.list_steps(execution.id).await?;
    let mut ctx = Ctx {
        engine,
        execution,
        doc,
        inputs,
        scrubber,
        stops: Stops {
            handle,
            deadline: None,
        },
        scope,
        prior,
        skipped_sets: Vec::new(),
    };

    if ctx.execution.status == ExecutionStatus::Queued {
        match admit(&ctx).await? {
            Admission::In => {}
            Admission::Out(status, why) => {
                return finish(&mut ctx, status, why.as_deref()).await;
            }
            Admission::Released => return Ok(()),
        }
        ctx.execution = store
            .set_execution_status(ctx.execution.id, ExecutionStatus::Running, None)
            .await?;
        engine.parts.observe.execution(&ctx.execution);
        ctx.log(&format!(
            "execution {} of flow {} (version {}) started",
            ctx.execution.id, ctx.execution.flow, ctx.execution.version
        ));
    } else {
        ctx.log(&format!(
            "execution {} of flow {} taken up again by {}",
            ctx.execution.id, ctx.execution.flow, engine.cfg.owner
        ));
    }

    ctx.stops.deadline = deadline_of(&ctx);

    // Discovery, then pre and steps; then on_success or on_failure; finally always.
    let mut failure: Option<Failure> = discover(&mut ctx).await?;
    let mut stop = None;
    if failure.is_none() {
        for (phase, steps) in [
            (Phase::Pre, ctx.doc.pre.clone()),
            (Phase::Steps, ctx.doc.steps.clone()),
        ] {
            match run_list(&mut ctx, phase, &steps).await? {
                ListEnd::Done => {}
                ListEnd::Failed(f) => {
                    failure = Some(f);
                    break;
                }
                ListEnd::Stopped(s) => {
                    stop = Some(s);
                    break;
                }
            }
        }
    }
    if stop == Some(Stop::Released) {
        return Ok(());
    }
    // Handlers run even past the time limit or after a cancel, with a fresh stop signal: only
    // letting go stops them.
    ctx.stops.deadline = None;
    let was_canceled = ctx.stops.handle.cancel.is_cancelled();
    ctx.stops.handle.cancel = tokio_util::sync::CancellationToken::new();
    let handlers = match (stop, &failure) {
        (Some(_), _) => None,
        (None, None) => Some((Phase::OnSuccess, ctx.doc.on_success.clone())),
        (None, Some(f)) => {
            ctx.scope.insert("failure".into(), f.to_value());
            Some((Phase::OnFailure, ctx.doc.on_failure.clone()))
        }
    };
    let mut handler_failure = None;
    for (phase, steps) in handlers
        .into_iter()
        .chain([(Phase::Finally, ctx.doc.finally.clone())])
    {
        match run_list(&mut ctx, phase, &steps).await? {
            ListEnd::Done => {}
            ListEnd::Failed(f) => {
                handler_failure.get_or_insert(f);
            }
            ListEnd::Stopped(Stop::Released) => return Ok(()),
            ListEnd::Stopped(_) => {}
        }
    }
    let (status, why) = match (stop, failure, handler_failure) {
        (Some(Stop::Canceled), _, _) => (ExecutionStatus::Canceled, Some("canceled".to_owned())),
        (Some(_), _, _) => (
            ExecutionStatus::Timeout,
            Some(format!(
                "stopped at its time limit of {}",
                ctx.doc.timeout.map(|t| t.to_string()).unwrap_or_default()
            )),
        ),
        (None, Some(f), _) => (ExecutionStatus::Failed, Some(f.to_string())),
        (None, None, Some(f)) => (ExecutionStatus::Failed, Some(f.to_string())),
        (None, None, None) if was_canceled => {
            (ExecutionStatus::Canceled, Some("canceled".to_owned()))
        }
        (None, None, None) => (ExecutionStatus::Successful, None),
    };
    finish(&mut ctx, status, why.as_deref()).await
}

/// When the flow's time limit ends, counted from when the execution (this round) started.
fn deadline_of(ctx: &Ctx<'_>) -> Option<Instant> {
    let limit = ctx.doc.timeout?.0;
    let started = ctx.execution.started_at.unwrap_or_else(Utc::now);
    let left = started + chrono::Duration::from_std(limit).unwrap_or_default() - Utc::now();
    Some(Instant::now() + left.to_std().unwrap_or_default())
}

/// Why an execution failed: which step, and its error.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) key: String,
    pub(crate) step: Option<String>,
    pub(crate) phase: Phase,
    pub(crate) error: String,
}

impl Failure {
    fn to_value(&self) -> Value {
        json!({
            "key": self.key,
            "step": self.step.clone().unwrap_or_else(|| self.key.clone()),
            "phase": self.phase.as_str(),
            "error": self.error,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} failed: {}", self.key, self.error)
    }
}

enum Admission {
    In,
    Out(ExecutionStatus, Option<String>),
    Released,
}

/// Waits for the execution's concurrency slot and locks.
async fn admit(ctx: &Ctx<'_>) -> Result<Admission, StoreError> {
    let store = &ctx.engine.parts.store;
    let mut slots = Vec::new();
    if let (Some(c), Some(key)) = (&ctx.doc.concurrency, &ctx.execution.concurrency_key) {
        slots.push(SlotRequest {
            key: format!("flow:{}:{key}", ctx.doc.name),
            limit: i64::from(c.limit),
        });
    }
    for lock in &ctx.doc.locks {
        match expr::render(lock, &ctx.scope) {
            Ok(name) => slots.push(SlotRequest {
                key: format!("lock:{name}"),
                limit: 1,
            }),
            Err(e) => {
                let why = format!("lock {lock:?}: {}", ctx.scrubber.scrub_str(&e.to_string()));
                return Ok(Admission::Out(ExecutionStatus::Failed, Some(why)));
            }
        }
    }
    let behavior = ctx
        .doc
        .concurrency
        .as_ref()
        .map(|c| c.behavior)
        .unwrap_or_default();
    let mut said = false;
    loop {
        match ctx.stops.now() {
            Some(Stop::Released) => return Ok(Admission::Released),
            Some(Stop::Canceled) => {
                return Ok(Admission::Out(
                    ExecutionStatus::Canceled,
                    Some("canceled while queued".into()),
                ));
            }
            _ => {}
        }
        if store.acquire_slots(ctx.execution.id, &slots).await? {
            return Ok(Admission::In);
        }
        match behavior {
            Behavior::Skip
                if ctx.doc.concurrency.is_some() && concurrency_full(ctx, &slots).await? =>
            {
                let why = "its concurrency group was full".to_owned();
                return Ok(Admission::Out(ExecutionStatus::Skipped, Some(why)));
            }
            Behavior::CancelOlder => {
                if let Some(first) = slots.first() {
                    for holder in store.slot_holders(&first.key).await? {
                        if holder != ctx.execution.id {
                            let _ = ctx.engine.cancel(holder).await;
                        }
                    }
                }
            }
            _ => {}
        }
        if !said {
            ctx.log(&format!(
                "execution {} waits for its concurrency group or locks",
                ctx.execution.id
            ));
            said = true;
        }
        tokio::select! {
            _ = ctx.engine.wake.notified() => {}
            _ = tokio::time::sleep(ctx.engine.cfg.poll) => {}
            _ = ctx.stops.handle.release.cancelled() => {}
            _ = ctx.stops.handle.cancel.cancelled() => {}
        }
    }
}

/// Whether the concurrency group itself is full (rather than a lock being held).
async fn concurrency_full(ctx: &Ctx<'_>, slots: &[SlotRequest]) -> Result<bool, StoreError> {
    let Some(first) = slots.first().filter(|s| s.key.starts_with("flow:")) else {
        return Ok(false);
    };
    let holders = ctx.engine.parts.store.slot_holders(&first.key).await?;
    Ok(holders.len() as i64 >= first.limit)
}

/// Finds every node set. A set that cannot be found fails the execution.
async fn discover(ctx: &mut Ctx<'_>) -> Result<Option<Failure>, StoreError> {
    let sets = ctx.doc.nodes.clone();
    for (position, (name, set)) in sets.iter().enumerate() {
        let key = format!("nodes/{name}");
        let round = ctx.execution.round;
        // Within a round, discovery is done once: a restart uses the nodes found before.
        if let Some(r) = ctx
            .prior
            .iter()
            .find(|r| r.key == key && r.round == round && r.status == StepStatus::Successful)
        {
            let nodes = r
                .result
                .get("nodes")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            if r.result.get("skip").and_then(Value::as_bool) == Some(true) {
                ctx.skipped_sets.push(name.clone());
            }
            set_node_scope(ctx, name, nodes);
            continue;
        }
        let mut record = StepRecord {
            execution_id: ctx.execution.id,
            round,
            key: key.clone(),
            phase: Phase::Pre,
            position: -1 - position as i32,
            kind: format!("discovery:{}", set.source.kind()),
            status: StepStatus::Running,
            attempts: 1,
            started_at: Some(Utc::now()),
            finished_at: None,
            result: Value::Object(Map::new()),
            published: Map::new(),
            error: None,
            run_ids: vec![],
            execution_ids: vec![],
        };
        ctx.put(&mut record).await?;
        let rendered = render_set(set, &ctx.scope);
        let found = match rendered {
            Ok(set) => ctx.engine.parts.nodes.find(name, &set).await,
            Err(e) => Err(format!("node set {name}: {e}")),
        };
        record.finished_at = Some(Utc::now());
        match found {
            Ok(Nodes::Found(nodes)) => {
                ctx.log(&format!("node set {name}: {} node(s)", nodes.len()));
                record.status = StepStatus::Successful;
                record.result = json!({"nodes": nodes});
                ctx.put(&mut record).await?;
                set_node_scope(ctx, name, json!(nodes));
            }
            Ok(Nodes::Skip) => {
                ctx.log(&format!(
                    "node set {name}: no node; steps using it are skipped"
                ));
                record.status = StepStatus::Successful;
                record.result = json!({"nodes": [], "skip": true});
                ctx.put(&mut record).await?;
                ctx.skipped_sets.push(name.clone());
                set_node_scope(ctx, name, json!([]));
            }
            Err(e) => {
                record.status = StepStatus::Failed;
                record.error = Some(e.clone());
                ctx.put(&mut record).await?;
                return Ok(Some(Failure {
                    key,
                    step: None,
                    phase: Phase::Pre,
                    error: ctx.scrubber.scrub_str(&e),
                }));
            }
        }
    }
    Ok(None)
}

/// A node set with its source's strings rendered. Its `vars` are left as written: they are the
/// inventory's host variables, Ansible's to template (`{{ ansible_playbook_python }}`), and
/// the playbook step passes them on unrendered.
fn render_set(set: &NodeSet, scope: &Scope) -> Result<NodeSet, String> {
    let source_only = NodeSet {
        vars: Map::new(),
        ..set.clone()
    };
    let value = serde_json::to_value(&source_only).map_err(|e| e.to_string())?;
    let value = expr::render_value(&value, scope).map_err(|e| e.to_string())?;
    let mut rendered: NodeSet = serde_json::from_value(value).map_err(|e| e.to_string())?;
    rendered.vars = set.vars.clone();
    Ok(rendered)
}

fn set_node_scope(ctx: &mut Ctx<'_>, name: &str, nodes: Value) {
    if let Some(Value::Object(map)) = ctx.scope.get_mut("nodes") {
        map.insert(name.to_owned(), nodes);
    }
}

enum ListEnd {
    Done,
    Failed(Failure),
    Stopped(Stop),
}

/// Runs one list of steps in order; stops at the first failure not continued past.
async fn run_list(ctx: &mut Ctx<'_>, phase: Phase, steps: &[Step]) -> Result<ListEnd, StoreError> {
    for (position, step) in steps.iter().enumerate() {
        match run_step(ctx, phase, position, step).await? {
            StepEnd::Done => {}
            StepEnd::Failed { key, error } => {
                return Ok(ListEnd::Failed(Failure {
                    key,
                    step: step.id.clone(),
                    phase,
                    error,
                }));
            }
            StepEnd::Stopped(stop) => return Ok(ListEnd::Stopped(stop)),
        }
    }
    Ok(ListEnd::Done)
}

/// Ends an execution before anything ran.
async fn finish_early(
    engine: &Arc<Engine>,
    execution: &Execution,
    status: ExecutionStatus,
    why: &str,
) -> Result<(), StoreError> {
    let store = &engine.parts.store;
    let ended = store
        .set_execution_status(execution.id, status, Some(why))
        .await?;
    engine.parts.observe.execution(&ended);
    engine.wake.notify_waiters();
    Ok(())
}

/// Ends an execution: its status, its slots let go (its notifications, stored when it
/// started, are sent by the notifier once the store has its end).
async fn finish(
    ctx: &mut Ctx<'_>,
    status: ExecutionStatus,
    why: Option<&str>,
) -> Result<(), StoreError> {
    let store = &ctx.engine.parts.store;
    let why = why.map(|w| ctx.scrubber.scrub_str(w));
    let ended = match store
        .set_execution_status(ctx.execution.id, status, why.as_deref())
        .await
    {
        Ok(e) => e,
        // Someone else ended it (a cancel of a queued execution): keep what is stored.
        Err(StoreError::Conflict(_)) => store.get_execution(ctx.execution.id).await?,
        Err(e) => return Err(e),
    };
    ctx.log(&format!(
        "execution {} ended {}{}",
        ended.id,
        ended.status,
        why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
    ));
    ctx.engine.parts.observe.execution(&ended);
    ctx.engine.wake.notify_waiters();
    ctx.execution = ended;
    Ok(())
}
