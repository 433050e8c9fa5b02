//! Flows end to end: documents stored over HTTP, executions of every step kind, retries,
//! handlers, resume, restarts, approvals, concurrency and secrets, against the real binary
//! and a real ansible-playbook.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use troupe_testkit::Api;

/// Stores a flow document; its answer.
async fn put_flow(api: &Api, yaml: &str) -> anyhow::Result<Value> {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/flows",
            Some(&json!({"document": yaml})),
        )
        .await?;
    anyhow::ensure!(status == 201, "storing the flow answered {status}: {body}");
    Ok(body)
}

/// Starts an execution; its id.
async fn start(api: &Api, flow: &str, inputs: Value) -> anyhow::Result<i64> {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/flows/{flow}/executions"),
            Some(&json!({"inputs": inputs})),
        )
        .await?;
    anyhow::ensure!(status == 201, "starting {flow} answered {status}: {body}");
    body["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

/// An execution once it has a final status (or `want`, when given), with its steps.
async fn wait_execution(api: &Api, id: i64, want: Option<&str>) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = api.get(&format!("/api/v1/executions/{id}")).await?;
        let status = last["status"].as_str().unwrap_or_default();
        let done = match want {
            Some(w) => status == w,
            None => !matches!(status, "queued" | "running"),
        };
        if done {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("execution {id} did not get there: {last}")
}

/// The latest record of step `key`.
fn step<'v>(execution: &'v Value, key: &str) -> &'v Value {
    execution["steps"]
        .as_array()
        .and_then(|steps| steps.iter().rev().find(|s| s["key"] == key))
        .unwrap_or(&Value::Null)
}

const SHELL_FLOW: &str = r#"
name: shells
inputs:
  who: {type: string, required: true, validate: shellsafe}
  times: {type: integer, default: 2}
steps:
  - id: greet
    shell: {command: "echo hello {{ inputs.who }}"}
    publish: {greeting: "{{ result.stdout | trim }}"}
  - id: count
    shell: {command: "n=$(cat counter 2>/dev/null || echo 0); n=$((n+1)); echo $n > counter; echo $n"}
    retry: {attempts: 5, delay: 0, until: "result.stdout | trim | int >= inputs.times"}
  - id: skipped
    when: "inputs.who == 'nobody'"
    log: "never"
  - id: tolerated
    shell: {command: "exit 3"}
    continue_on_error: true
  - id: said
    log: "{{ published.greeting }} after {{ steps.count.attempts }} tries"
"#;

#[tokio::test]
async fn shell_steps_publish_retry_until_skip_and_continue() -> anyhow::Result<()> {
    let server = serve()?;
    let stored = put_flow(&server, SHELL_FLOW).await?;
    assert_eq!(stored["version"], 1, "{stored}");
    // The same document again adds no version; a changed one does.
    assert_eq!(put_flow(&server, SHELL_FLOW).await?["version"], 1);
    let id = start(&server, "shells", json!({"who": "world", "times": "3"})).await?;
    let e = wait_execution(&server, id, None).await?;
    assert_eq!(e["status"], "successful", "{e}\n{}", server.log());
    assert_eq!(
        step(&e, "steps/greet")["published"]["greeting"],
        "hello world"
    );
    let count = step(&e, "steps/count");
    assert_eq!(count["attempts"], 3, "{count}");
    assert_eq!(count["result"]["stdout"], "3\n");
    assert_eq!(step(&e, "steps/skipped")["status"], "skipped");
    let tolerated = step(&e, "steps/tolerated");
    assert_eq!(tolerated["status"], "failed");
    assert_eq!(tolerated["result"]["rc"], 3);
    assert_eq!(
        step(&e, "steps/said")["result"]["line"],
        "hello world after 3 tries"
    );
    assert_eq!(
        e["inputs"]["times"], 3,
        "inputs are stored as their declared type"
    );
    Ok(())
}
