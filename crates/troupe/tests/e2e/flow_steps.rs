//! Flow step kinds, handlers, concurrency and discovery end to end, through the real binary:
//! `http`, `slack`, `sleep`, `log`, `flow` and `approval` steps against receivers the tests
//! start; retries until exhaustion and every handler path; parallel launches under a
//! concurrency group (`queue`, `skip`, `cancel_older`) and a named lock shared by two flows;
//! a node set discovered over HTTP used as a playbook's inventory; and the Choria seed's
//! web-cluster upgrade (`examples/flows/web-cluster.yml`) through the CLI.

use crate::flows::{put_flow, start, wait_execution};
use crate::helpers::*;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe_core::flow::FlowChange;
use troupe_testkit::Api;
use troupe_wire::flows::{ExecutionList, ExecutionStatus, ExecutionView, StepRecord, StepStatus};

// ---------------------------------------------------------------------------------------------
// What the tests share

/// An execution once it has a final status (or `want`), typed.
async fn ended(api: &Api, id: i64, want: Option<&str>) -> anyhow::Result<ExecutionView> {
    Ok(serde_json::from_value(
        wait_execution(api, id, want).await?,
    )?)
}

/// An execution as it is now, typed.
async fn view(api: &Api, id: i64) -> anyhow::Result<ExecutionView> {
    Ok(serde_json::from_value(
        api.get(&format!("/api/v1/executions/{id}")).await?,
    )?)
}

/// The latest record of step `key`; an error naming the steps there are when it has none.
fn rec<'v>(e: &'v ExecutionView, key: &str) -> anyhow::Result<&'v StepRecord> {
    e.steps.iter().rev().find(|s| s.key == key).ok_or_else(|| {
        let keys: Vec<&str> = e.steps.iter().map(|s| s.key.as_str()).collect();
        anyhow::anyhow!(
            "execution {} has no step {key}; it has {keys:?}",
            e.execution.id
        )
    })
}

/// Whether the execution has a record of step `key` at all.
fn ran(e: &ExecutionView, key: &str) -> bool {
    e.steps.iter().any(|s| s.key == key)
}

/// The `line` a log step wrote.
fn line_of(e: &ExecutionView, key: &str) -> anyhow::Result<String> {
    Ok(rec(e, key)?.result["line"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Answers an approval step; (status, body).
async fn answer(api: &Api, id: i64, step: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    api.call(
        reqwest::Method::POST,
        &format!("/api/v1/executions/{id}/approvals/{step}"),
        Some(&body),
    )
    .await
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Received {
    seen: Mutex<Vec<Seen>>,
    /// Fixed JSON answers, by path.
    fixed: Vec<(String, Value)>,
}

/// An HTTP server standing in for what flows call (a webhook receiver, Slack, a node API).
/// It keeps every request and answers the status its query's `answer=` asks for (200 when
/// absent) with `{"seen": <path>}`, or the fixed JSON of its path.
struct Receiver {
    base: String,
    state: Arc<Received>,
}

impl Receiver {
    async fn start(fixed: &[(&str, Value)]) -> anyhow::Result<Receiver> {
        let state = Arc::new(Received {
            seen: Mutex::new(Vec::new()),
            fixed: fixed
                .iter()
                .map(|(p, v)| ((*p).to_owned(), v.clone()))
                .collect(),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { base, state })
    }

    /// Every request to `path`, oldest first.
    fn to(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|s| s.iter().filter(|r| r.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

async fn receive(
    State(state): State<Arc<Received>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let path = uri.path().to_owned();
    if let Ok(mut seen) = state.seen.lock() {
        seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            headers,
            body,
        });
    }
    if let Some((_, answer)) = state.fixed.iter().find(|(p, _)| *p == path) {
        return (StatusCode::OK, axum::Json(answer.clone()));
    }
    let status = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("answer="))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    (status, axum::Json(json!({"seen": path})))
}

/// A subscription to the cross-run stream (every execution's changes), open before what it
/// is to see starts.
struct Changes(reqwest::Response);

impl Changes {
    async fn open(api: &Api) -> anyhow::Result<Changes> {
        let resp = api
            .http
            .get(api.url("/api/v1/stream/sse"))
            .bearer_auth(api.token())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "the stream answered {}",
            resp.status()
        );
        Ok(Changes(resp))
    }

    /// The log lines of execution `id`, until it ends.
    async fn log_of(self, id: i64) -> anyhow::Result<Vec<String>> {
        let mut messages = self.0.bytes_stream().eventsource();
        let mut lines = Vec::new();
        let read = async {
            while let Some(message) = messages.next().await {
                let Ok(change) = serde_json::from_str::<FlowChange>(&message?.data) else {
                    continue;
                };
                match change {
                    FlowChange::ExecutionLog {
                        execution_id, line, ..
                    } if execution_id == id => lines.push(line),
                    FlowChange::ExecutionChanged {
                        execution_id,
                        status,
                        ..
                    } if execution_id == id && status.is_finished() => return Ok(()),
                    _ => {}
                }
            }
            anyhow::bail!("the stream ended before execution {id} did")
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| anyhow::anyhow!("execution {id} did not end; log so far: {lines:?}"))??;
        Ok(lines)
    }
}

// ---------------------------------------------------------------------------------------------
// Step kinds

const CHILD_FLOW: &str = r#"
name: child
inputs:
  who: {type: string, required: true}
  n: {type: integer, required: true}
steps:
  - id: double
    shell: {command: "echo $(( {{ inputs.n }} * 2 ))"}
    publish: {doubled: "{{ result.stdout | trim | int }}", who: "{{ inputs.who }}"}
"#;

const KINDS_FLOW: &str = r#"
name: kinds
inputs:
  base: {type: string, required: true}
  name: {type: string, required: true, validate: shellsafe}
steps:
  - id: put
    http:
      method: put
      url: "{{ inputs.base }}/things/{{ inputs.name }}?answer=202"
      headers: {X-Trace: "exec-{{ execution.id }}"}
      body: {name: "{{ inputs.name }}", count: 2, tags: [a, "{{ inputs.name }}"]}
      expect: [202]
    publish: {seen: "{{ result.body.seen }}"}
  - id: text
    http: {method: POST, url: "{{ inputs.base }}/text", body: "plain {{ inputs.name }}"}
  - id: refused
    http: {url: "{{ inputs.base }}/gone?answer=503"}
    continue_on_error: true
  - id: unexpected
    http: {url: "{{ inputs.base }}/fine", expect: [204]}
    continue_on_error: true
  - id: tell
    slack: {webhook: "{{ inputs.base }}/slack", text: "{{ inputs.name }} is at {{ published.seen }}, by {{ execution.started_by }}"}
  - id: nap
    sleep: 300ms
  - id: sub
    flow: {name: child, inputs: {who: "{{ inputs.name }}", n: 21}}
    publish: {doubled: "{{ result.published.doubled }}"}
  - id: said
    log: "{{ inputs.name }}: refused with {{ steps.refused.result.status }}, doubled to {{ published.doubled }}"
"#;

#[tokio::test]
async fn http_slack_sleep_log_and_sub_flow_steps_do_what_they_say() -> anyhow::Result<()> {
    let server = serve()?;
    let receiver = Receiver::start(&[]).await?;
    put_flow(&server, CHILD_FLOW).await?;
    put_flow(&server, KINDS_FLOW).await?;
    let changes = Changes::open(&server).await?;
    let id = start(
        &server,
        "kinds",
        json!({"base": receiver.base, "name": "widget"}),
    )
    .await?;
    let log = changes.log_of(id).await?;
    let e = ended(&server, id, None).await?;
    assert_eq!(
        e.execution.status,
        ExecutionStatus::Successful,
        "{e:#?}\n{}",
        server.log()
    );

    // http: the method, headers and JSON body arrived; the expected status counted as success.
    let put = receiver.to("/things/widget");
    assert_eq!(put.len(), 1, "{put:?}");
    assert_eq!(put[0].method, "PUT");
    assert_eq!(put[0].header("x-trace"), format!("exec-{id}"));
    assert_eq!(put[0].header("content-type"), "application/json");
    assert_eq!(
        put[0].json(),
        json!({"name": "widget", "count": 2, "tags": ["a", "widget"]})
    );
    let step = rec(&e, "steps/put")?;
    assert_eq!(step.status, StepStatus::Successful);
    assert_eq!(step.result["status"], 202);
    assert_eq!(step.published["seen"], "/things/widget");
    // A string body is sent as it is.
    let text = receiver.to("/text");
    assert_eq!(text.len(), 1, "{text:?}");
    assert_eq!(
        (text[0].method.as_str(), text[0].body.as_str()),
        ("POST", "plain widget")
    );
    // A status that is not expected fails the step, naming the status.
    let refused = rec(&e, "steps/refused")?;
    assert_eq!(refused.status, StepStatus::Failed);
    assert_eq!(refused.result["status"], 503);
    assert!(
        refused.error.as_deref().unwrap_or_default().contains("503"),
        "{refused:?}"
    );
    let unexpected = rec(&e, "steps/unexpected")?;
    assert_eq!(unexpected.status, StepStatus::Failed);
    assert!(
        unexpected
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("answered 200"),
        "{unexpected:?}"
    );

    // slack: the webhook got `{"text": ...}`, rendered.
    let slack = receiver.to("/slack");
    assert_eq!(slack.len(), 1);
    assert_eq!(
        slack[0].json(),
        json!({"text": "widget is at /things/widget, by api"})
    );
    assert_eq!(rec(&e, "steps/tell")?.result["status"], 200);

    // sleep: it slept at least as long as it says.
    let nap = rec(&e, "steps/nap")?;
    assert_eq!(nap.status, StepStatus::Successful);
    assert_eq!(nap.result["slept_s"], 0.3);
    let (Some(from), Some(to)) = (nap.started_at, nap.finished_at) else {
        anyhow::bail!("the sleep step has no times: {nap:?}");
    };
    assert!(to - from >= chrono::Duration::milliseconds(300), "{nap:?}");

    // flow: the child ran with its inputs, linked both ways; what it published came back.
    let sub = rec(&e, "steps/sub")?;
    assert_eq!(sub.execution_ids.len(), 1, "{sub:?}");
    let child_id = sub.execution_ids[0];
    let child = ended(&server, child_id, None).await?;
    assert_eq!(child.execution.flow, "child");
    assert_eq!(child.execution.status, ExecutionStatus::Successful);
    assert_eq!(child.execution.inputs["who"], "widget");
    assert_eq!(child.execution.inputs["n"], 21);
    assert_eq!(child.execution.started_by, format!("flow:{id}"));
    let parent = child
        .execution
        .parent
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the child has no parent: {child:?}"))?;
    assert_eq!(
        (parent.execution_id, parent.step.as_str()),
        (id, "steps/sub")
    );
    assert_eq!(sub.result["published"]["doubled"], 42);
    assert_eq!(sub.published["doubled"], 42);
    let children: ExecutionList = serde_json::from_value(
        server
            .get(&format!("/api/v1/executions?parent={id}"))
            .await?,
    )?;
    let ids: Vec<i64> = children.executions.iter().map(|c| c.id).collect();
    assert_eq!(ids, [child_id]);

    // log: the line is in the step's result and in the execution's log on the stream.
    let said = "widget: refused with 503, doubled to 42";
    assert_eq!(line_of(&e, "steps/said")?, said);
    assert!(log.iter().any(|l| l == said), "{log:#?}");
    Ok(())
}

#[tokio::test]
async fn an_unanswered_approval_times_out_and_a_denied_one_fails_the_execution()
-> anyhow::Result<()> {
    let server = serve()?;
    put_flow(
        &server,
        r#"
name: gates
inputs:
  what: {type: string, required: true}
steps:
  - id: unanswered
    approval: {message: "anyone?", timeout: 1s}
    continue_on_error: true
  - id: asked
    approval: {message: "ship {{ inputs.what }}?"}
  - id: never
    log: "not reached"
on_failure:
  - id: why
    log: "{{ failure.step }}: {{ failure.error }}"
"#,
    )
    .await?;
    let id = start(&server, "gates", json!({"what": "v2"})).await?;
    wait_until(
        "the second approval waits",
        Duration::from_secs(30),
        || async {
            let e = view(&server, id).await?;
            Ok(e.steps
                .iter()
                .any(|s| s.key == "steps/asked" && s.status == StepStatus::Waiting))
        },
    )
    .await?;
    let e = view(&server, id).await?;
    let unanswered = rec(&e, "steps/unanswered")?;
    assert_eq!(unanswered.status, StepStatus::Timeout, "{unanswered:?}");
    assert_eq!(unanswered.error.as_deref(), Some("no answer within 1s"));
    assert_eq!(rec(&e, "steps/asked")?.result["message"], "ship v2?");

    // An answer for a step that never waited, or no longer waits, is refused; a deny is taken.
    let (status, _) = answer(&server, id, "never", json!({"approved": true})).await?;
    assert_eq!(status, 404);
    let (status, body) = answer(&server, id, "unanswered", json!({"approved": true})).await?;
    assert_eq!(status, 409, "{body}");
    let (status, body) = answer(
        &server,
        id,
        "asked",
        json!({"approved": false, "by": "ops", "comment": "not today"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let e = ended(&server, id, None).await?;
    assert_eq!(e.execution.status, ExecutionStatus::Failed, "{e:#?}");
    let asked = rec(&e, "steps/asked")?;
    assert_eq!(asked.status, StepStatus::Failed);
    assert_eq!(asked.error.as_deref(), Some("denied by ops"));
    assert_eq!(
        asked.result["approval"],
        json!({"approved": false, "by": "ops", "comment": "not today"})
    );
    assert!(!ran(&e, "steps/never"));
    assert_eq!(line_of(&e, "on_failure/why")?, "asked: denied by ops");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retries and handlers

const HANDLED_FLOW: &str = r#"
name: handled
inputs:
  mode: {type: string, required: true, enum: [ok, pre, steps, handler]}
  ticket: {type: string, default: T-1}
pre:
  - id: check
    shell: {command: "test {{ inputs.mode }} != pre || { echo pre says no >&2; exit 5; }"}
steps:
  - id: flaky
    shell: {command: "echo try >> tries; test {{ inputs.mode }} != steps || { echo still broken >&2; exit 4; }"}
    retry: {attempts: 3, delay: 100ms, backoff: 2}
  - id: after
    log: "after flaky"
on_success:
  - id: cheer
    shell: {command: "test {{ inputs.mode }} != handler || { echo handler broke >&2; exit 6; }"}
on_failure:
  - id: told
    log: "{{ failure.phase }}/{{ failure.step }} failed: {{ failure.error }}"
  - id: cleanup
    flow: {name: cleanup, pass_inputs: true}
finally:
  - id: always
    shell: {command: "cat tries 2>/dev/null | wc -l"}
"#;

const CLEANUP_FLOW: &str = r#"
name: cleanup
inputs:
  mode: {type: string, required: true}
  ticket: {type: string, required: true}
steps:
  - id: note
    log: "cleaning up {{ inputs.ticket }} after {{ inputs.mode }}"
"#;

#[tokio::test]
async fn retries_run_out_and_every_handler_path_runs_as_documented() -> anyhow::Result<()> {
    let server = serve()?;
    put_flow(&server, CLEANUP_FLOW).await?;
    put_flow(&server, HANDLED_FLOW).await?;
    let mut ids = Vec::new();
    for mode in ["ok", "pre", "steps", "handler"] {
        ids.push(start(&server, "handled", json!({"mode": mode, "ticket": "T-9"})).await?);
    }
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(ended(&server, *id, None).await?);
    }
    let [ok, pre, steps, handler] = runs.as_slice() else {
        anyhow::bail!("four executions expected");
    };
    let tries = |e: &ExecutionView| -> anyhow::Result<String> {
        Ok(rec(e, "finally/always")?.result["stdout"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned())
    };

    // Success: on_success, not on_failure; finally.
    assert_eq!(ok.execution.status, ExecutionStatus::Successful, "{ok:#?}");
    assert_eq!(rec(ok, "steps/flaky")?.attempts, 1);
    assert_eq!(rec(ok, "on_success/cheer")?.status, StepStatus::Successful);
    assert!(!ran(ok, "on_failure/told") && !ran(ok, "on_failure/cleanup"));
    assert_eq!(tries(ok)?, "1");

    // `pre` fails: the steps do not run; on_failure sees the phase and the step; finally.
    assert_eq!(pre.execution.status, ExecutionStatus::Failed, "{pre:#?}");
    assert!(!ran(pre, "steps/flaky") && !ran(pre, "on_success/cheer"));
    assert_eq!(
        line_of(pre, "on_failure/told")?,
        "pre/check failed: exited with 5: pre says no"
    );
    assert!(
        pre.execution
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("pre/check"),
        "{:?}",
        pre.execution.error
    );
    assert_eq!(tries(pre)?, "0");

    // A step fails after every attempt: three attempts counted; the next step does not run;
    // on_failure names it and its last error, and starts `cleanup` with the same inputs.
    assert_eq!(steps.execution.status, ExecutionStatus::Failed);
    let flaky = rec(steps, "steps/flaky")?;
    assert_eq!(
        (flaky.status, flaky.attempts),
        (StepStatus::Failed, 3),
        "{flaky:?}"
    );
    assert_eq!(flaky.error.as_deref(), Some("exited with 4: still broken"));
    assert!(!ran(steps, "steps/after"));
    assert_eq!(
        line_of(steps, "on_failure/told")?,
        "steps/flaky failed: exited with 4: still broken"
    );
    assert_eq!(tries(steps)?, "3");
    for (e, mode) in [(pre, "pre"), (steps, "steps")] {
        let cleanup = rec(e, "on_failure/cleanup")?;
        assert_eq!(cleanup.status, StepStatus::Successful, "{cleanup:?}");
        let child = ended(&server, cleanup.execution_ids[0], None).await?;
        assert_eq!(
            serde_json::to_value(&child.execution.inputs)?,
            json!({"mode": mode, "ticket": "T-9"})
        );
        assert_eq!(
            line_of(&child, "steps/note")?,
            format!("cleaning up T-9 after {mode}")
        );
    }

    // A handler that fails fails the execution; on_failure does not run for it; finally does.
    assert_eq!(handler.execution.status, ExecutionStatus::Failed);
    assert_eq!(rec(handler, "on_success/cheer")?.status, StepStatus::Failed);
    assert!(
        handler
            .execution
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("on_success/cheer"),
        "{:?}",
        handler.execution.error
    );
    assert!(!ran(handler, "on_failure/told"));
    assert_eq!(tries(handler)?, "1");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Concurrency and locks

/// A shell command that fails (rc 9) when another holder is inside at the same time, and
/// stays inside `ms` milliseconds.
fn exclusive(dir: &Path, ms: u32) -> String {
    let held = dir.join("held");
    format!(
        "mkdir {held} || exit 9; sleep {}; rmdir {held}",
        f64::from(ms) / 1000.0,
        held = held.display()
    )
}

/// A shell command that says it started (a file `started-<execution id>`), then waits until
/// the file `go` exists.
fn hold_until_go(dir: &Path) -> String {
    format!(
        "echo on > {d}/started-{{{{ execution.id }}}}; while [ ! -f {d}/go ]; do sleep 0.05; done",
        d = dir.display()
    )
}

/// Waits until execution `id` says it started (see [`hold_until_go`]); an error showing the
/// execution when it does not.
async fn started(api: &Api, dir: &Path, id: i64) -> anyhow::Result<()> {
    let file = dir.join(format!("started-{id}"));
    if wait_file(&file, Duration::from_secs(30)).await.is_ok() {
        return Ok(());
    }
    let e = view(api, id).await?;
    anyhow::bail!("execution {id} did not start its step: {e:#?}")
}

/// The (start, end) of one step of each execution, ordered by start.
fn spans(
    views: &[ExecutionView],
    key: &str,
) -> anyhow::Result<Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>> {
    let mut out = Vec::new();
    for e in views {
        let r = rec(e, key)?;
        match (r.started_at, r.finished_at) {
            (Some(a), Some(b)) => out.push((a, b)),
            _ => anyhow::bail!("step {key} has no times: {r:?}"),
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn parallel_launches_in_a_queued_group_run_one_at_a_time_and_all_finish() -> anyhow::Result<()>
{
    let server = serve()?;
    let dir = tempfile::tempdir()?;
    put_flow(
        &server,
        &format!(
            r#"
name: serial
inputs:
  site: {{type: string, required: true}}
concurrency: {{key: "{{{{ inputs.site }}}}", limit: 1, behavior: queue}}
steps:
  - id: work
    shell: {{command: "{}"}}
"#,
            exclusive(dir.path(), 300)
        ),
    )
    .await?;
    let launches = (0..5).map(|_| start(&server, "serial", json!({"site": "east"})));
    let ids = futures_util::future::try_join_all(launches).await?;
    let mut views = Vec::new();
    for id in ids {
        views.push(ended(&server, id, None).await?);
    }
    for e in &views {
        assert_eq!(
            e.execution.status,
            ExecutionStatus::Successful,
            "{e:#?}\n{}",
            server.log()
        );
        assert_eq!(e.execution.concurrency_key.as_deref(), Some("east"));
    }
    // Never two at once: each started after the one before it ended.
    let spans = spans(&views, "steps/work")?;
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlap: {spans:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_full_group_skips_new_executions_or_cancels_the_older_one() -> anyhow::Result<()> {
    let server = serve()?;
    let skip_dir = tempfile::tempdir()?;
    let newest_dir = tempfile::tempdir()?;
    let doc = |name: &str, behavior: &str, dir: &Path| {
        format!(
            "name: {name}\nconcurrency: {{limit: 1, behavior: {behavior}}}\nsteps:\n  - id: hold\n    shell: {{command: \"{}\"}}\nfinally:\n  - id: bye\n    log: \"{{{{ execution.id }}}} ends\"\n",
            hold_until_go(dir)
        )
    };
    put_flow(&server, &doc("single", "skip", skip_dir.path())).await?;
    put_flow(&server, &doc("newest", "cancel_older", newest_dir.path())).await?;

    // skip: while the first holds the group, new ones end `skipped` at once.
    let first = start(&server, "single", json!({})).await?;
    started(&server, skip_dir.path(), first).await?;
    let extra =
        futures_util::future::try_join_all((0..2).map(|_| start(&server, "single", json!({}))))
            .await?;
    for id in extra {
        let e = ended(&server, id, None).await?;
        assert_eq!(e.execution.status, ExecutionStatus::Skipped, "{e:#?}");
        assert_eq!(
            e.execution.error.as_deref(),
            Some("its concurrency group was full")
        );
        assert!(
            e.steps.is_empty(),
            "a skipped execution runs nothing: {e:#?}"
        );
    }
    assert_eq!(
        view(&server, first).await?.execution.status,
        ExecutionStatus::Running
    );
    std::fs::write(skip_dir.path().join("go"), "")?;
    assert_eq!(
        ended(&server, first, None).await?.execution.status,
        ExecutionStatus::Successful
    );

    // cancel_older: a new one cancels the running one (whose `finally` still runs), then runs.
    let older = start(&server, "newest", json!({})).await?;
    started(&server, newest_dir.path(), older).await?;
    let newer = start(&server, "newest", json!({})).await?;
    let old = ended(&server, older, None).await?;
    assert_eq!(old.execution.status, ExecutionStatus::Canceled, "{old:#?}");
    assert_eq!(rec(&old, "steps/hold")?.status, StepStatus::Canceled);
    assert_eq!(line_of(&old, "finally/bye")?, format!("{older} ends"));
    started(&server, newest_dir.path(), newer).await?;
    std::fs::write(newest_dir.path().join("go"), "")?;
    let new = ended(&server, newer, None).await?;
    assert_eq!(
        new.execution.status,
        ExecutionStatus::Successful,
        "{new:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_named_lock_shared_by_two_flows_serialises_them() -> anyhow::Result<()> {
    let server = serve()?;
    let dir = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    for name in ["backup", "migrate"] {
        put_flow(
            &server,
            &format!(
                "name: {name}\ninputs:\n  db: {{type: string, required: true}}\n  dir: {{type: string, required: true}}\nlocks: [\"db-{{{{ inputs.db }}}}\"]\nsteps:\n  - id: work\n    shell: {{command: \"mkdir {{{{ inputs.dir }}}}/held || exit 9; echo on > {{{{ inputs.dir }}}}/started-{{{{ execution.id }}}}; while [ ! -f {{{{ inputs.dir }}}}/go-{{{{ execution.id }}}} ]; do sleep 0.05; done; rmdir {{{{ inputs.dir }}}}/held\"}}\n"
            ),
        )
        .await?;
    }
    let d = dir.path().display().to_string();
    let backup = start(&server, "backup", json!({"db": "main", "dir": d})).await?;
    started(&server, dir.path(), backup).await?;
    let migrate = start(&server, "migrate", json!({"db": "main", "dir": d})).await?;
    // The same flow on another database holds another lock: it runs meanwhile.
    let o = other.path().display().to_string();
    let elsewhere = start(&server, "migrate", json!({"db": "other", "dir": o})).await?;
    std::fs::write(other.path().join(format!("go-{elsewhere}")), "")?;
    assert_eq!(
        ended(&server, elsewhere, None).await?.execution.status,
        ExecutionStatus::Successful
    );
    // `migrate` on `main` has tried and waits for the lock.
    let waits = format!("execution {migrate} waits for its concurrency group or locks");
    wait_until(
        "migrate waits for the lock",
        Duration::from_secs(30),
        || {
            let log = server.log();
            let waits = waits.clone();
            async move { Ok(log.contains(&waits)) }
        },
    )
    .await?;
    assert_eq!(
        view(&server, migrate).await?.execution.status,
        ExecutionStatus::Queued
    );
    assert!(!dir.path().join(format!("started-{migrate}")).exists());

    std::fs::write(dir.path().join(format!("go-{backup}")), "")?;
    let first = ended(&server, backup, None).await?;
    assert_eq!(first.execution.status, ExecutionStatus::Successful);
    started(&server, dir.path(), migrate).await?;
    std::fs::write(dir.path().join(format!("go-{migrate}")), "")?;
    let second = ended(&server, migrate, None).await?;
    assert_eq!(
        second.execution.status,
        ExecutionStatus::Successful,
        "{second:#?}"
    );
    let spans = spans(&[first, second], "steps/work")?;
    assert!(spans[1].0 >= spans[0].1, "overlap: {spans:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[tokio::test]
async fn nodes_discovered_over_http_are_a_playbook_steps_inventory() -> anyhow::Result<()> {
    let api = Receiver::start(&[(
        "/v1/web",
        json!({"items": [{"host": "web-a"}, {"host": "web-b"}, {"host": "web-c"}]}),
    )])
    .await?;
    let proj = named_project(&[(
        "touch.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - copy: {dest: \"{{ out }}/{{ inventory_hostname }}\", content: \"{{ role }}\"}\n",
    )])?;
    let server = serve_with(with_project(proj.path()))?;
    let out = tempfile::tempdir()?;
    put_flow(
        &server,
        &format!(
            r#"
name: discovered
inputs:
  api: {{type: string, required: true}}
  out: {{type: string, required: true}}
nodes:
  web:
    http: {{url: "{{{{ inputs.api }}}}/v1/web", pointer: /items, field: host}}
    at_least: 2
    vars: {{ansible_connection: local, ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}", role: web}}
steps:
  - id: touch
    playbook: {{project: {}, playbook: touch.yml, nodes: web, extra_vars: {{out: "{{{{ inputs.out }}}}"}}}}
  - id: listed
    log: "{{{{ nodes.web | join(' ') }}}}"
"#,
            project_name(proj.path())
        ),
    )
    .await?;
    let id = start(
        &server,
        "discovered",
        json!({"api": api.base, "out": out.path()}),
    )
    .await?;
    let e = ended(&server, id, None).await?;
    assert_eq!(
        e.execution.status,
        ExecutionStatus::Successful,
        "{e:#?}\n{}",
        server.log()
    );
    assert_eq!(
        rec(&e, "nodes/web")?.result["nodes"],
        json!(["web-a", "web-b", "web-c"])
    );
    assert_eq!(api.to("/v1/web").len(), 1, "discovered once");
    let touch = rec(&e, "steps/touch")?;
    let hosts: BTreeSet<&str> = touch.result["hosts"]
        .as_object()
        .map(|h| h.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(hosts, BTreeSet::from(["web-a", "web-b", "web-c"]));
    for host in ["web-a", "web-b", "web-c"] {
        assert_eq!(std::fs::read_to_string(out.path().join(host))?, "web");
    }
    assert_eq!(line_of(&e, "steps/listed")?, "web-a web-b web-c");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The web-cluster example

/// The lines of the load balancer stand-in's file for `tier`, sorted.
fn backend(state: &Path, tier: &str) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(state.join(format!("lb/{tier}.cfg")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// `examples/flows/web-cluster.yml` through the CLI, as its header says to run it: tier alfa
/// is upgraded and back in the load balancer after its checks turn green; tier bravo's app
/// never turns green, so the failure handlers run (the webhook, Slack, and the
/// `web-cluster-failure` sub-flow with the same inputs) and bravo stays out.
#[tokio::test]
async fn the_web_cluster_example_upgrades_a_tier_and_handles_a_failed_one_from_the_cli()
-> anyhow::Result<()> {
    let root =
        std::fs::canonicalize(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))?;
    let server = serve_with(with_project(&root.join("examples/web-cluster")))?;
    let hooks = Receiver::start(&[]).await?;
    let state = tempfile::tempdir()?;
    // The CLI runs beside this test's runtime, which must go on serving the receiver.
    let troupe = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(troupe_bin());
        cmd.current_dir(&root)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .args(args);
        async move {
            let out = cmd.output().await?;
            anyhow::Ok((
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ))
        }
    };
    let (code, out) = troupe(
        ["flow", "put", "examples/flows/web-cluster-failure.yml"]
            .map(String::from)
            .to_vec(),
    )
    .await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("flow web-cluster-failure version 1"), "{out}");
    let inputs = |tier: &str, revision: &str| {
        [
            format!("tier={tier}"),
            format!("revision={revision}"),
            format!("state={}", state.path().display()),
            format!("webhook={}/hook", hooks.base),
            format!("slack_hook={}/slack", hooks.base),
        ]
    };
    let run = |extra: &[String]| {
        let mut args = ["flow", "run", "examples/flows/web-cluster.yml", "--follow"]
            .map(String::from)
            .to_vec();
        for i in extra {
            args.extend(["-i".to_owned(), i.clone()]);
        }
        troupe(args)
    };

    // The happy path: alfa at 2.1, enabled again; the check passed on its third try.
    let (code, out) = run(&inputs("alfa", "2.1")).await?;
    assert_eq!(code, Some(0), "{out}\n{}", server.log());
    assert!(
        out.contains("tier alfa is back in the load balancer after 3 checks: alfa1 2.1, alfa2 2.1"),
        "{out}"
    );
    assert_eq!(
        backend(state.path(), "alfa"),
        ["server alfa1 enabled", "server alfa2 enabled"]
    );
    for host in ["alfa1", "alfa2"] {
        let version = std::fs::read_to_string(state.path().join(format!("app/{host}.version")))?;
        assert_eq!(version, "2.1\n");
    }
    let told = hooks.to("/hook");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].json()["ok"], true);
    assert_eq!(told[0].json()["tier"], "alfa");
    assert_eq!(
        hooks.to("/slack")[0].json(),
        json!({"text": "tier alfa upgraded to 2.1"})
    );

    // The failure: bravo's app never turns green within the 10 checks.
    let mut failing = inputs("bravo", "2.2").to_vec();
    failing.push("warmup=50".into());
    let (code, out) = run(&failing).await?;
    assert_eq!(code, Some(2), "{out}\n{}", server.log());
    assert!(
        out.contains(
            "the upgrade of bravo stopped at check: exited with 2: bravo2 is not green yet"
        ),
        "{out}"
    );
    assert!(
        out.contains("execution 2 failed"),
        "the CLI says how it ended: {out}"
    );
    // bravo stays out of the load balancer; alfa is untouched.
    assert_eq!(
        backend(state.path(), "bravo"),
        ["server bravo1 disabled", "server bravo2 disabled"]
    );
    assert_eq!(
        backend(state.path(), "alfa"),
        ["server alfa1 enabled", "server alfa2 enabled"]
    );
    let e = ended(&server, 2, None).await?;
    let check = rec(&e, "steps/check")?;
    assert_eq!((check.status, check.attempts), (StepStatus::Failed, 10));
    assert!(!ran(&e, "steps/enable"));
    let told = hooks.to("/hook");
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(
        (
            &told[1].json()["ok"],
            &told[1].json()["tier"],
            &told[1].json()["step"]
        ),
        (&json!(false), &json!("bravo"), &json!("check"))
    );
    assert_eq!(
        hooks.to("/slack")[1].json(),
        json!({"text": "tier bravo NOT upgraded to 2.2: check failed"})
    );
    // The failure handler ran as its own execution, linked, with the same inputs.
    let handler = rec(&e, "on_failure/handler")?;
    assert_eq!(handler.status, StepStatus::Successful, "{handler:?}");
    let sub = ended(&server, handler.execution_ids[0], None).await?;
    assert_eq!(sub.execution.flow, "web-cluster-failure");
    assert_eq!(sub.execution.inputs["revision"], "2.2");
    assert_eq!(
        std::fs::read_to_string(state.path().join("incidents/bravo.txt"))?,
        "upgrade of bravo to 2.2 failed at check: exited with 2: bravo2 is not green yet\n"
    );
    // The Slack hook is a secret: the execution shows it masked.
    assert_eq!(e.execution.inputs["slack_hook"], "********");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A restart with steps in flight

/// troupe stops while two steps are in flight: after the restart, the one with a retry left
/// runs again (its lost attempt counted), the one without fails, saying why; neither is run
/// more often than that.
#[tokio::test]
async fn steps_in_flight_at_a_restart_follow_their_retry_policy() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let opts = || ServerOpts {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    // Each try adds a line to tries-<id>; only the first try waits (for the restart).
    let step = |retry: &str| {
        format!(
            "  - id: slow\n    shell: {{command: \"echo on >> {d}/tries-{{{{ execution.id }}}}; test $(wc -l < {d}/tries-{{{{ execution.id }}}}) -gt 1 || sleep 60\"}}\n{retry}",
            d = dir.path().display()
        )
    };
    put_flow(
        &server,
        &format!(
            "name: retried\nsteps:\n{}",
            step("    retry: {attempts: 2}\n")
        ),
    )
    .await?;
    put_flow(&server, &format!("name: single\nsteps:\n{}", step(""))).await?;
    let retried = start(&server, "retried", json!({})).await?;
    let single = start(&server, "single", json!({})).await?;
    for id in [retried, single] {
        wait_file(
            &dir.path().join(format!("tries-{id}")),
            Duration::from_secs(30),
        )
        .await?;
    }
    server.terminate()?;
    let server = serve_with(opts())?;

    let e = ended(&server, retried, None).await?;
    assert_eq!(
        e.execution.status,
        ExecutionStatus::Successful,
        "{e:#?}\n{}",
        server.log()
    );
    assert_eq!(rec(&e, "steps/slow")?.attempts, 2);
    let e = ended(&server, single, None).await?;
    assert_eq!(e.execution.status, ExecutionStatus::Failed, "{e:#?}");
    let slow = rec(&e, "steps/slow")?;
    assert_eq!((slow.status, slow.attempts), (StepStatus::Failed, 1));
    assert_eq!(
        slow.error.as_deref(),
        Some("attempt 1 was interrupted: troupe stopped")
    );
    let tries = |id: i64| {
        std::fs::read_to_string(dir.path().join(format!("tries-{id}")))
            .map(|t| t.lines().count())
            .unwrap_or_default()
    };
    assert_eq!((tries(retried), tries(single)), (2, 1));
    Ok(())
}

/// A playbook whose first task is still running when the step's time is up.
const SLOW_PLAYBOOK: &str = "- hosts: all
  gather_facts: false
  tasks:
    - name: in flight
      ansible.builtin.command: sleep 10
    - name: never started
      ansible.builtin.debug: {msg: late}
";

#[tokio::test]
async fn a_playbook_step_past_its_timeout_stops_after_the_task_in_flight() -> anyhow::Result<()> {
    let proj = named_project(&[("slow.yml", SLOW_PLAYBOOK)])?;
    let server = serve_with(with_project(proj.path()))?;
    let doc = format!(
        "name: slow\nnodes:\n  local:\n    static: [alpha]\n    vars: {{ansible_connection: local, ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"}}\nsteps:\n  - id: upgrade\n    timeout: 6s\n    playbook: {{project: {}, playbook: slow.yml, nodes: local}}\n",
        project_name(proj.path())
    );
    put_flow(&server, &doc).await?;
    let id = start(&server, "slow", json!({})).await?;
    let e = wait_execution(&server, id, None).await?;
    let upgrade = crate::flows::step(&e, "steps/upgrade");
    assert_eq!(upgrade["status"], "timeout", "{e}\n{}", server.log());
    assert_ne!(e["status"], "successful", "{e}");
    assert_eq!(upgrade["result"]["status"], "canceled", "{upgrade}");
    // Stopped gracefully: the task in flight finished on its host; the next one never began.
    let run_id = upgrade["run_ids"][0].as_i64().unwrap_or_default();
    let out = server
        .text(&format!("/api/v1/runs/{run_id}/stdout"))
        .await?;
    assert!(out.contains("TASK [in flight]"), "{out}");
    assert!(out.contains("changed: [alpha]"), "{out}");
    assert!(!out.contains("never started"), "{out}");
    Ok(())
}
