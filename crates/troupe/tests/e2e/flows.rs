//! Flows end to end: documents stored over HTTP, executions of every step kind, retries,
//! handlers, resume, restarts, approvals, concurrency and secrets, against the real binary
//! and a real ansible-playbook.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use troupe_testkit::Api;

/// Stores a flow document; its answer.
pub(crate) async fn put_flow(api: &Api, yaml: &str) -> anyhow::Result<Value> {
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
pub(crate) async fn start(api: &Api, flow: &str, inputs: Value) -> anyhow::Result<i64> {
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
pub(crate) async fn wait_execution(
    api: &Api,
    id: i64,
    want: Option<&str>,
) -> anyhow::Result<Value> {
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
pub(crate) fn step<'v>(execution: &'v Value, key: &str) -> &'v Value {
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

/// The Ansible driver's sequence: playbooks in order; the second fails until a marker file
/// exists. Resume runs from the failed step and does not repeat the first.
const DRIVER_FLOW: &str = r#"
name: driver
inputs:
  marker: {type: string, required: true}
  hook: {type: string, secret: true, required: true}
nodes:
  local:
    static: [alpha, beta]
    vars: {ansible_connection: local}
steps:
  - id: first
    playbook: {project: PROJECT, playbook: ok.yml, nodes: local}
  - id: second
    playbook: {project: PROJECT, playbook: needs-marker.yml, nodes: local, extra_vars: {marker: "{{ inputs.marker }}", hook_value: "{{ inputs.hook }}"}}
on_failure:
  - id: told
    log: "failed at {{ failure.step }} with {{ inputs.hook }}"
finally:
  - id: always
    shell: {command: "echo done"}
"#;

#[tokio::test]
async fn a_failed_sequence_resumes_from_the_failed_playbook_and_secrets_stay_out()
-> anyhow::Result<()> {
    let proj = named_project(&[
        (
            "ok.yml",
            "- hosts: all\n  gather_facts: false\n  vars: {ansible_python_interpreter: \"{{ ansible_playbook_python }}\"}\n  tasks:\n    - ping:\n",
        ),
        (
            "needs-marker.yml",
            "- hosts: all\n  gather_facts: false\n  vars: {ansible_python_interpreter: \"{{ ansible_playbook_python }}\"}\n  tasks:\n    - debug: {msg: \"hook is {{ hook_value }}\"}\n    - stat: {path: \"{{ marker }}\"}\n      register: m\n    - assert: {that: m.stat.exists}\n",
        ),
    ])?;
    let server = serve_with(with_project(proj.path()))?;
    let doc = DRIVER_FLOW.replace("PROJECT", &project_name(proj.path()));
    put_flow(&server, &doc).await?;
    let marker_dir = tempfile::tempdir()?;
    let marker = marker_dir.path().join("marker");
    let id = start(
        &server,
        "driver",
        json!({"marker": marker, "hook": "s3cr3t-hook-value"}),
    )
    .await?;
    let e = wait_execution(&server, id, None).await?;
    assert_eq!(e["status"], "failed", "{e}\n{}", server.log());
    let first = step(&e, "steps/first");
    let out = server
        .text("/api/v1/runs/1/stdout")
        .await
        .unwrap_or_default();
    assert_eq!(first["status"], "successful", "{first}\n{out}");
    assert_eq!(
        first["result"]["hosts"].as_object().map(|h| h.len()),
        Some(2),
        "{first}"
    );
    let second = step(&e, "steps/second");
    assert_eq!(second["status"], "failed");
    assert_eq!(second["result"]["failed_hosts"], json!(["alpha", "beta"]));
    let told = step(&e, "on_failure/told");
    assert_eq!(
        told["result"]["line"], "failed at second with ********",
        "{told}"
    );
    assert_eq!(step(&e, "finally/always")["status"], "successful");
    assert_eq!(e["inputs"]["hook"], "********");
    // A secret input given to a step's extra var under any name: the run stores it sealed,
    // uses it, and prints it redacted.
    let second_run = second["run_ids"][0].as_i64().unwrap_or_default();
    let run = server.get(&format!("/api/v1/runs/{second_run}")).await?;
    let stored = run["options"]["extra_vars"]["hook_value"]
        .as_str()
        .unwrap_or_default();
    assert!(stored.starts_with("troupe-sealed:v1:"), "{run}");
    let out = server
        .text(&format!("/api/v1/runs/{second_run}/stdout"))
        .await?;
    assert!(out.contains("hook is ********"), "{out}");
    let first_run = first["run_ids"][0].as_i64().unwrap_or_default();
    let run = server.get(&format!("/api/v1/runs/{first_run}")).await?;
    assert_eq!(run["labels"]["troupe.execution"], id.to_string(), "{run}");

    // Resume once the marker exists: the first playbook is not run again.
    std::fs::write(&marker, "")?;
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/executions/{id}/resume"),
            None,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let e = wait_execution(&server, id, None).await?;
    assert_eq!(e["status"], "successful", "{e}");
    assert_eq!(e["round"], 1);
    let firsts: Vec<&Value> = e["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["key"] == "steps/first")
        .collect();
    assert_eq!(firsts.len(), 1, "the first playbook ran once: {firsts:?}");
    assert_eq!(step(&e, "steps/second")["round"], 1);
    // A successful execution cannot be resumed.
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/executions/{id}/resume"),
            None,
        )
        .await?;
    assert_eq!(status, 409);

    // The secret is in no stored byte: not in the database, nor in any file of the data dir.
    for entry in walk(&server.data_dir)? {
        // Files may come and go (a run's private directory); one gone is one without it.
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let found = bytes
            .windows(b"s3cr3t-hook-value".len())
            .any(|w| w == b"s3cr3t-hook-value");
        assert!(!found, "the secret is in {}", entry.display());
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn an_execution_goes_on_after_a_restart_and_approvals_wait_for_an_answer()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let opts = || ServerOpts {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    put_flow(
        &server,
        r#"
name: gated
steps:
  - id: before
    shell: {command: "echo once >> ran"}
  - id: gate
    approval: {message: "go on?", timeout: 10m}
  - id: after
    shell: {command: "cat ran"}
"#,
    )
    .await?;
    let id = start(&server, "gated", json!({})).await?;
    wait_until("the approval waits", Duration::from_secs(30), || async {
        let e = server.get(&format!("/api/v1/executions/{id}")).await?;
        Ok(step(&e, "steps/gate")["status"] == "waiting")
    })
    .await?;
    // Stop troupe mid-execution; a new process on the same data takes it up again.
    server.terminate()?;
    let server = serve_with(opts())?;
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/executions/{id}/approvals/gate"),
            Some(&json!({"approved": true, "by": "ops"})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let e = wait_execution(&server, id, None).await?;
    assert_eq!(e["status"], "successful", "{e}\n{}", server.log());
    // `before` ran once, before the restart: `after` sees one line.
    assert_eq!(step(&e, "steps/after")["result"]["stdout"], "once\n");
    assert_eq!(step(&e, "steps/gate")["result"]["approval"]["by"], "ops");
    // A second answer is refused.
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/executions/{id}/approvals/gate"),
            Some(&json!({"approved": false})),
        )
        .await?;
    assert_eq!(status, 409);
    Ok(())
}

#[tokio::test]
async fn bad_flows_and_bad_inputs_are_refused_with_what_is_wrong() -> anyhow::Result<()> {
    let server = serve()?;
    let cases = [
        (
            "name: x\nsteps:\n  - id: a\n    retry: {attempts: 0}\n    log: hi\n",
            "steps[0].retry.attempts",
        ),
        ("name: x\nsteps:\n  - log: a\n    retries: 3\n", "document"),
        (
            "name: x\nsteps:\n  - when: 'a =='\n    log: b\n",
            "steps[0].when",
        ),
    ];
    for (doc, field) in cases {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/flows",
                Some(&json!({"document": doc})),
            )
            .await?;
        assert_eq!(status, 422, "{doc}: {body}");
        assert_eq!(body["error"]["field"], field, "{doc}: {body}");
    }
    put_flow(&server, "name: typed\ninputs:\n  n: {type: integer, required: true}\n  pw: {type: string, secret: true, pattern: '[a-z]+'}\nsteps:\n  - log: '{{ inputs.n }}'\n").await?;
    let bad_inputs = [
        (json!({}), "n"),
        (json!({"n": "three"}), "n"),
        (json!({"n": 1, "other": 2}), "other"),
        (json!({"n": 1, "pw": "UPPER-secret"}), "pw"),
    ];
    for (inputs, field) in bad_inputs {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/flows/typed/executions",
                Some(&json!({"inputs": inputs})),
            )
            .await?;
        assert_eq!(status, 422, "{inputs}: {body}");
        assert!(
            body["error"]["field"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{inputs}: {body}"
        );
        assert!(!body.to_string().contains("UPPER-secret"), "{body}");
    }
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/flows/nope/executions",
            Some(&json!({})),
        )
        .await?;
    assert_eq!(status, 404);
    let list = server.get("/api/v1/executions").await?;
    assert_eq!(
        list["executions"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    Ok(())
}

/// The example in `examples/flows/sequence.yml`, through the CLI as the README tour runs it:
/// `flow run --follow` exits 2 at the failed check; once the marker exists, `flow resume
/// --follow` exits 0 without running the playbook again.
#[tokio::test]
async fn the_example_sequence_runs_fails_and_resumes_from_the_cli() -> anyhow::Result<()> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::fs::canonicalize(root)?;
    let server = serve_with(with_project(&root.join("examples/hello")))?;
    let marker_dir = tempfile::tempdir()?;
    let marker = marker_dir.path().join("ready");
    let troupe = |args: &[&str]| {
        let mut c = std::process::Command::new(troupe_bin());
        c.current_dir(&root)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .args(args);
        c.output()
    };
    let input = format!("marker={}", marker.display());
    let out = troupe(&[
        "flow",
        "run",
        "examples/flows/sequence.yml",
        "-i",
        &input,
        "--follow",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopped at ready"), "{stdout}");
    assert!(stdout.contains("execution 1 failed"), "{stdout}");

    std::fs::write(&marker, "")?;
    let out = troupe(&["flow", "resume", "1", "--follow"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", server.log());
    assert!(stdout.contains("marker is ready"), "{stdout}");
    assert!(stdout.contains("not run again"), "{stdout}");

    let out = troupe(&["flow", "show", "1"])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("steps/hello") && shown.contains("successful"),
        "{shown}"
    );
    let runs = server.get("/api/v1/runs").await?;
    assert_eq!(
        runs["runs"].as_array().map(Vec::len),
        Some(1),
        "one playbook run: {runs}"
    );
    Ok(())
}
