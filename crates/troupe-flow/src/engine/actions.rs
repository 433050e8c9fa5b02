//! One attempt of one step, for each kind of step.

use chrono::Utc;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::time::Duration;
use troupe_core::RunStatus;
use troupe_core::flow::{ExecutionStatus, ParentStep, StepRecord, StepStatus};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::overrides::Overrides;
use troupe_core::run::{CancelMode, Origin};
use troupe_launch::{InventorySource, LaunchOptions, LaunchRequest, ProjectRef, Ref, Target};
use troupe_store::StoreError;

use super::StartRequest;
use super::drive::{Ctx, Stop};
use crate::discovery::inventory_of;
use crate::doc::{
    Action, ApprovalStep, FlowStep, HttpStep, NodeSource, PlaybookStep, ShellStep, Step,
};
use crate::expr;
use crate::shell::{self, Shell};

/// The most of a command's stdout or stderr, or of an HTTP body, kept in a result.
pub(crate) const OUTPUT_LIMIT: usize = 64 * 1024;
/// How long an approval waits when its step does not say.
const APPROVAL_WAIT: Duration = Duration::from_secs(3600);

/// How one attempt ended.
pub(crate) enum Attempt {
    /// It ran to its end (or to the step's timeout: the record's status says `timeout`).
    Ended {
        /// Whether it succeeded (before `until`).
        ok: bool,
        /// Why not.
        error: Option<String>,
    },
    /// The execution must stop.
    Stopped(Stop),
}

/// What a simple action produced: success, its result, and why it failed.
type Done = (bool, Value, Option<String>);

/// Makes one attempt of `step`, filling `record.result` (and its run or execution ids).
pub(crate) async fn attempt(
    ctx: &mut Ctx<'_>,
    step: &Step,
    record: &mut StepRecord,
) -> Result<Attempt, StoreError> {
    let timeout = step.timeout.map(|t| t.0);
    match &step.action {
        Action::Playbook(p) => playbook(ctx, p, timeout, record).await,
        Action::Flow(f) => subflow(ctx, f, timeout, record).await,
        Action::Approval(a) => approval(ctx, a, record).await,
        Action::Shell(s) => {
            let work = shell(ctx, s);
            simple(ctx, record, timeout, work).await
        }
        Action::Http(h) => {
            let work = http(ctx, h);
            simple(ctx, record, timeout, work).await
        }
        Action::Slack(s) => {
            let work = slack(ctx, &s.webhook, &s.text);
            simple(ctx, record, timeout, work).await
        }
        Action::Sleep(d) => {
            let d = d.0;
            let work = async move {
                tokio::time::sleep(d).await;
                (true, json!({"slept_s": d.as_secs_f64()}), None)
            };
            simple(ctx, record, timeout, work).await
        }
        Action::Log(text) => match expr::render(text, &ctx.scope) {
            Ok(line) => {
                ctx.log(&line);
                record.result = json!({"line": ctx.scrubber.scrub_str(&line)});
                Ok(Attempt::Ended {
                    ok: true,
                    error: None,
                })
            }
            Err(e) => Ok(Attempt::Ended {
                ok: false,
                error: Some(e.to_string()),
            }),
        },
    }
}

/// Runs an action that can simply be dropped when the execution stops or the step times out.
async fn simple(
    ctx: &Ctx<'_>,
    record: &mut StepRecord,
    timeout: Option<Duration>,
    work: impl Future<Output = Done>,
) -> Result<Attempt, StoreError> {
    tokio::select! {
        (ok, result, error) = work => {
            record.result = result;
            Ok(Attempt::Ended { ok, error })
        }
        stop = ctx.stops.wait() => Ok(Attempt::Stopped(stop)),
        _ = sleep_or_never(timeout) => Ok(timed_out(record, timeout)),
    }
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn timed_out(record: &mut StepRecord, timeout: Option<Duration>) -> Attempt {
    record.status = StepStatus::Timeout;
    let after = timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_default();
    Attempt::Ended {
        ok: false,
        error: Some(format!("timed out after {after}")),
    }
}

fn failed(error: impl Into<String>) -> Result<Attempt, StoreError> {
    Ok(Attempt::Ended {
        ok: false,
        error: Some(error.into()),
    })
}

/// Extra vars with every value that holds a secret input's text sealed whole, whatever its
/// name: the run is stored with them sealed and redacts them from what it prints, as it does
/// extra vars `redact_vars` names.
fn sealed_secrets(
    ctx: &Ctx<'_>,
    mut vars: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    if ctx.scrubber.is_empty() {
        return Ok(vars);
    }
    for value in vars.values_mut() {
        if !troupe_core::redact::is_sealed(value) && ctx.scrubber.finds(&value.to_string()) {
            *value = troupe_core::redact::sealed(value, ctx.engine.parts.seal.as_ref())
                .map_err(|e| format!("extra_vars: a secret input could not be sealed: {e}"))?;
        }
    }
    Ok(vars)
}

/// The launch a playbook step asks for.
fn playbook_request(ctx: &Ctx<'_>, p: &PlaybookStep, key: &str) -> Result<LaunchRequest, String> {
    let extra_vars = match expr::render_value(&Value::Object(p.extra_vars.clone()), &ctx.scope)
        .map_err(|e| format!("extra_vars: {e}"))?
    {
        Value::Object(m) => sealed_secrets(ctx, m)?,
        _ => Map::new(),
    };
    let mut options = match expr::render_value(&Value::Object(p.options.clone()), &ctx.scope)
        .map_err(|e| format!("options: {e}"))?
    {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let nodes: Option<(&String, Vec<String>)> = p.nodes.as_ref().map(|set| {
        let names = ctx
            .scope
            .get("nodes")
            .and_then(|n| n.get(set))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (set, names)
    });
    let stored = match &p.inventory {
        Some(inv) => Some(expr::render(inv, &ctx.scope).map_err(|e| format!("inventory: {e}"))?),
        None => None,
    };
    let inventory = match (stored, nodes) {
        (Some(inv), None) => Some(InventorySource::Stored(Ref::Name(inv))),
        (Some(inv), Some((_, names))) => {
            options.insert("limit".into(), Value::String(names.join(",")));
            Some(InventorySource::Stored(Ref::Name(inv)))
        }
        (None, Some((set, names))) => {
            let node_set = ctx.doc.nodes.get(set);
            let vars = node_set.map(|s| s.vars.clone()).unwrap_or_default();
            match node_set.map(|s| &s.source) {
                // A set from a stored inventory keeps that inventory's variables: the run uses
                // the inventory, limited to the nodes found.
                Some(NodeSource::Inventory(inv)) if vars.is_empty() => {
                    options.insert("limit".into(), Value::String(names.join(",")));
                    Some(InventorySource::Stored(Ref::Name(inv.name.clone())))
                }
                _ => Some(InventorySource::Inline(inventory_of(&names, &vars))),
            }
        }
        (None, None) if p.template.is_none() => Some(InventorySource::Inline(InventoryContent {
            format: InventoryFormat::Ini,
            hosts: troupe_launch::jobs::LOCALHOST.to_owned(),
            vars: None,
        })),
        (None, None) => None,
    };
    let mut overrides = Overrides::from_map(options).map_err(|e| format!("options: {e}"))?;
    overrides.add_extra_vars(extra_vars);
    let target = match (&p.template, &p.project, &p.playbook) {
        (Some(t), _, _) => Target::Template(Ref::Name(t.clone())),
        (None, Some(project), Some(playbook)) => Target::Playbook {
            project: ProjectRef::Ref(Ref::Name(project.clone())),
            playbook: playbook.clone(),
        },
        _ => return Err("a playbook step needs a template, or a project and a playbook".into()),
    };
    let mut labels = troupe_core::run::Labels::new();
    labels.insert("troupe.flow".into(), ctx.execution.flow.clone());
    labels.insert("troupe.execution".into(), ctx.execution.id.to_string());
    labels.insert("troupe.step".into(), key.to_owned());
    Ok(LaunchRequest {
        target,
        inventory,
        options: LaunchOptions::Over(overrides),
        labels,
        tag: None,
        notify: Vec::new(),
    })
}

async fn playbook(
    ctx: &mut Ctx<'_>,
    p: &PlaybookStep,
    timeout: Option<Duration>,
    record: &mut StepRecord,
) -> Result<Attempt, StoreError> {
    if let Some(set) = &p.nodes
        && ctx
            .scope
            .get("nodes")
            .and_then(|n| n.get(set))
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        record.result = json!({"hosts": {}});
        return failed(format!("node set {set} has no node to run against"));
    }
    let request = match playbook_request(ctx, p, &record.key) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let actor = format!("flow:{}", ctx.execution.id);
    let run = match ctx
        .engine
        .parts
        .launch
        .launch_by(request, Origin::Api, &actor)
        .await
    {
        Ok(run) => run,
        Err(e) => return failed(format!("the run could not start: {e}")),
    };
    record.run_ids.push(run.id);
    record.result = json!({"run_id": run.id, "status": run.status});
    ctx.put(record).await?;
    let waiting = ctx.engine.parts.runs.finished(run.id);
    tokio::pin!(waiting);
    let interrupted = tokio::select! {
        ended = &mut waiting => return Ok(run_ended(record, ended?)),
        stop = ctx.stops.wait() => Some(stop),
        _ = sleep_or_never(timeout) => None,
    };
    if interrupted == Some(Stop::Released) {
        return Ok(Attempt::Stopped(Stop::Released));
    }
    // Stopped gracefully: the task in flight finishes on every host, then the run ends.
    if let Err(e) = ctx
        .engine
        .parts
        .launch
        .cancel(run.id, CancelMode::Graceful)
        .await
    {
        tracing::warn!(run = run.id, error = %e, "flow engine: could not cancel a step's run");
    }
    let ended = waiting.await?;
    let _ = run_ended(record, ended);
    Ok(match interrupted {
        Some(stop) => Attempt::Stopped(stop),
        None => timed_out(record, timeout),
    })
}

/// The result of a finished run: its status, rc and per-host totals.
fn run_ended(record: &mut StepRecord, run: troupe_core::run::Run) -> Attempt {
    let failed_hosts: Vec<&String> = run
        .summary
        .iter()
        .filter(|(_, s)| s.failed > 0 || s.unreachable > 0)
        .map(|(h, _)| h)
        .collect();
    let changed = run.summary.values().any(|s| s.changed > 0);
    record.result = json!({
        "run_id": run.id,
        "status": run.status,
        "rc": run.rc,
        "hosts": run.summary,
        "failed_hosts": failed_hosts,
        "changed": changed,
    });
    let ok = run.status == RunStatus::Successful;
    Attempt::Ended {
        ok,
        error: (!ok).then(|| match &run.status_reason {
            Some(reason) => format!("run {} ended {}: {reason}", run.id, run.status),
            None => format!("run {} ended {}", run.id, run.status),
        }),
    }
}

async fn subflow(
    ctx: &mut Ctx<'_>,
    f: &FlowStep,
    timeout: Option<Duration>,
    record: &mut StepRecord,
) -> Result<Attempt, StoreError> {
    let mut inputs = match expr::render_value(&Value::Object(f.inputs.clone()), &ctx.scope) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => return failed(format!("inputs: {e}")),
    };
    if f.pass_inputs {
        let declared = match ctx.engine.parts.store.get_flow(&f.name, None).await {
            Ok(v) => crate::load::load(&v.document)
                .map(|d| d.inputs.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default(),
            Err(StoreError::NotFound { .. }) => {
                return failed(format!("no flow named {:?}", f.name));
            }
            Err(e) => return Err(e),
        };
        for (k, v) in ctx.inputs.all() {
            if declared.contains(k) && !inputs.contains_key(k) {
                inputs.insert(k.clone(), v.clone());
            }
        }
    }
    let child = match ctx
        .engine
        .start(StartRequest {
            flow: f.name.clone(),
            version: None,
            inputs,
            started_by: format!("flow:{}", ctx.execution.id),
            parent: Some(ParentStep {
                execution_id: ctx.execution.id,
                step: record.key.clone(),
            }),
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(format!("flow {:?} could not start: {e}", f.name)),
    };
    record.execution_ids.push(child.id);
    record.result = json!({"execution_id": child.id, "status": child.status});
    ctx.put(record).await?;
    let store = ctx.engine.parts.store.clone();
    let poll = ctx.engine.cfg.poll.min(Duration::from_millis(100));
    let child_id = child.id;
    let waiting = async move {
        loop {
            let e = store.get_execution(child_id).await?;
            if e.status.is_finished() {
                return Ok::<_, StoreError>(e);
            }
            tokio::time::sleep(poll).await;
        }
    };
    tokio::pin!(waiting);
    let interrupted: Option<Stop> = tokio::select! {
        ended = &mut waiting => {
            let ended = ended?;
            return child_ended(ctx, record, ended).await;
        }
        stop = ctx.stops.wait() => Some(stop),
        _ = sleep_or_never(timeout) => None,
    };
    if interrupted == Some(Stop::Released) {
        return Ok(Attempt::Stopped(Stop::Released));
    }
    if let Err(e) = ctx.engine.cancel(child_id).await {
        tracing::warn!(execution = child_id, error = %e, "flow engine: could not cancel a sub-flow");
    }
    let ended = waiting.await?;
    let _ = child_ended(ctx, record, ended).await?;
    Ok(match interrupted {
        Some(stop) => Attempt::Stopped(stop),
        None => timed_out(record, timeout),
    })
}

/// The result of a finished sub-flow: its status, and what its steps published.
async fn child_ended(
    ctx: &Ctx<'_>,
    record: &mut StepRecord,
    child: troupe_core::flow::Execution,
) -> Result<Attempt, StoreError> {
    let mut published = Map::new();
    for r in ctx.engine.parts.store.list_steps(child.id).await? {
        if r.status == StepStatus::Successful {
            published.extend(r.published);
        }
    }
    record.result = json!({
        "execution_id": child.id,
        "status": child.status,
        "error": child.error,
        "published": published,
    });
    let ok = child.status == ExecutionStatus::Successful;
    Ok(Attempt::Ended {
        ok,
        error: (!ok).then(|| match &child.error {
            Some(e) => format!(
                "flow {} (execution {}) ended {}: {e}",
                child.flow, child.id, child.status
            ),
            None => format!(
                "flow {} (execution {}) ended {}",
                child.flow, child.id, child.status
            ),
        }),
    })
}

async fn approval(
    ctx: &mut Ctx<'_>,
    a: &ApprovalStep,
    record: &mut StepRecord,
) -> Result<Attempt, StoreError> {
    let wait = a.timeout.map(|t| t.0).unwrap_or(APPROVAL_WAIT);
    if record.status != StepStatus::Waiting {
        let message = match &a.message {
            Some(m) => match expr::render(m, &ctx.scope) {
                Ok(m) => Some(m),
                Err(e) => return failed(format!("message: {e}")),
            },
            None => None,
        };
        record.status = StepStatus::Waiting;
        record.result = json!({"message": message, "waiting_since": Utc::now()});
        ctx.put(record).await?;
        ctx.log(&format!(
            "step {}: waiting for approval{}",
            record.key,
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    let since = record
        .result
        .get("waiting_since")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    let deadline = since + chrono::Duration::from_std(wait).unwrap_or_default();
    loop {
        let stored = ctx
            .engine
            .parts
            .store
            .list_steps(ctx.execution.id)
            .await?
            .into_iter()
            .find(|r| r.key == record.key && r.round == record.round);
        if let Some(answer) = stored
            .as_ref()
            .and_then(|r| r.result.get("approval"))
            .cloned()
        {
            record.result = stored.map(|r| r.result).unwrap_or_default();
            let approved = answer.get("approved").and_then(Value::as_bool) == Some(true);
            let by = answer
                .get("by")
                .and_then(Value::as_str)
                .unwrap_or("someone");
            return Ok(Attempt::Ended {
                ok: approved,
                error: (!approved).then(|| format!("denied by {by}")),
            });
        }
        let left = (deadline - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            record.status = StepStatus::Timeout;
            return failed(format!(
                "no answer within {}",
                humantime::format_duration(wait)
            ));
        }
        tokio::select! {
            _ = ctx.engine.wake.notified() => {}
            _ = tokio::time::sleep(ctx.engine.cfg.poll.min(left)) => {}
            stop = ctx.stops.wait() => return Ok(Attempt::Stopped(stop)),
        }
    }
}

async fn shell(ctx: &Ctx<'_>, s: &ShellStep) -> Done {
    let rendered = (|| -> Result<_, String> {
        let command = expr::render(&s.command, &ctx.scope).map_err(|e| format!("command: {e}"))?;
        let mut env = Vec::new();
        for (k, v) in &s.env {
            env.push((
                k.clone(),
                expr::render(v, &ctx.scope).map_err(|e| format!("env {k}: {e}"))?,
            ));
        }
        let cwd = match &s.cwd {
            Some(cwd) => Some(expr::render(cwd, &ctx.scope).map_err(|e| format!("cwd: {e}"))?),
            None => None,
        };
        Ok((command, env, cwd))
    })();
    let (command, env, cwd) = match rendered {
        Ok(r) => r,
        Err(e) => return (false, Value::Null, Some(e)),
    };
    // Each execution has a working directory of its own; a relative `cwd` is inside it.
    let home = ctx.engine.cfg.work_dir.join(ctx.execution.id.to_string());
    if let Err(e) = std::fs::create_dir_all(&home) {
        return (
            false,
            Value::Null,
            Some(format!("could not create {}: {e}", home.display())),
        );
    }
    let cwd = match cwd {
        Some(cwd) => home.join(cwd),
        None => home,
    };
    let run = shell::run(Shell {
        command: &command,
        env,
        cwd: &cwd,
        bin_dir: ctx.engine.cfg.bin_dir.as_deref(),
        stdout_max: OUTPUT_LIMIT,
        stderr_max: OUTPUT_LIMIT,
    });
    let out = match run.await {
        Ok(out) => out,
        Err(e) => return (false, Value::Null, Some(format!("could not run sh: {e}"))),
    };
    let text = |bytes: &[u8], whole: bool| {
        let mut t = String::from_utf8_lossy(bytes).into_owned();
        if !whole {
            t.push_str("\n[… cut at 64 KiB]");
        }
        t
    };
    let stdout = text(&out.stdout, out.stdout_whole);
    let stderr = text(&out.stderr, true);
    let rc = out.status.code().unwrap_or(-1);
    let error = (rc != 0).then(
        || match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => format!("exited with {rc}: {last}"),
            None => format!("exited with {rc}"),
        },
    );
    (
        rc == 0,
        json!({"rc": rc, "stdout": stdout, "stderr": stderr}),
        error,
    )
}

async fn http(ctx: &Ctx<'_>, h: &HttpStep) -> Done {
    let rendered = (|| -> Result<_, String> {
        let url = expr::render(&h.url, &ctx.scope).map_err(|e| format!("url: {e}"))?;
        let mut headers = Vec::new();
        for (k, v) in &h.headers {
            headers.push((
                k.clone(),
                expr::render(v, &ctx.scope).map_err(|e| format!("header {k}: {e}"))?,
            ));
        }
        let body = match &h.body {
            Some(b) => Some(expr::render_value(b, &ctx.scope).map_err(|e| format!("body: {e}"))?),
            None => None,
        };
        Ok((url, headers, body))
    })();
    let (url, headers, body) = match rendered {
        Ok(r) => r,
        Err(e) => return (false, Value::Null, Some(e)),
    };
    let method = match reqwest::Method::from_bytes(h.method.to_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return (
                false,
                Value::Null,
                Some(format!("method {:?} is not an HTTP method", h.method)),
            );
        }
    };
    let mut req = ctx.engine.sender.client().request(method, &url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req = match body {
        Some(Value::String(s)) => req.body(s),
        Some(v) => req.json(&v),
        None => req,
    };
    let shown = troupe_core::url::redact_credentials(&url);
    let response = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                false,
                Value::Null,
                Some(format!("{shown}: {}", troupe_http::describe(&e))),
            );
        }
    };
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    let kept = &bytes[..bytes.len().min(OUTPUT_LIMIT)];
    let body = serde_json::from_slice::<Value>(kept)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(kept).into_owned()));
    let ok = if h.expect.is_empty() {
        (200..300).contains(&status)
    } else {
        h.expect.contains(&status)
    };
    let error = (!ok).then(|| format!("{shown} answered {status}"));
    (ok, json!({"status": status, "body": body}), error)
}

async fn slack(ctx: &Ctx<'_>, webhook: &str, text: &str) -> Done {
    let rendered = expr::render(webhook, &ctx.scope)
        .map_err(|e| format!("webhook: {e}"))
        .and_then(|w| {
            Ok((
                w,
                expr::render(text, &ctx.scope).map_err(|e| format!("text: {e}"))?,
            ))
        });
    let (url, text) = match rendered {
        Ok(r) => r,
        Err(e) => return (false, Value::Null, Some(e)),
    };
    // The one sender: its errors name the webhook by scheme and host only.
    match ctx.engine.sender.slack(&url, &text).await {
        Ok(status) => (true, json!({"status": status}), None),
        Err(e @ troupe_notify::SendError::Status { status, .. }) => {
            (false, json!({"status": status}), Some(e.to_string()))
        }
        Err(e) => (false, Value::Null, Some(e.to_string())),
    }
}
