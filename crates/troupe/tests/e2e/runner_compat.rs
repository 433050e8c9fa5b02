//! ansible-runner compatibility: one playbook run under the real `ansible-runner` and through
//! troupe, then `troupe runs export`; the exported artifact directory must read like runner's.
//!
//! What is compared, after the normalisation below:
//! - the events: name, host, task, and the name of the parent event, in order;
//! - the per-host stats of `playbook_on_stats`;
//! - the `rc` and `status` files (and the exported `stdout` equals the API's `/stdout`).
//!
//! Normalisation, and why:
//! - Host order inside a task. ansible runs a task on all hosts at once (forks), so two runs of
//!   the same playbook, under runner or not, interleave the hosts' `runner_on_*` events
//!   differently. Between two `playbook_on_*` events the events are stably sorted by host,
//!   which keeps each host's own order (start, items, result) and drops only the interleaving.
//! - Nothing else. Events for text printed outside any callback (`verbose`, `warning`,
//!   `deprecated`...) would be a legitimate difference too (runner and troupe classify such
//!   text differently), but this playbook prints none, so none is dropped: any such event on
//!   either side is reported.

use crate::helpers::*;
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Two hosts succeed (one ignoring a failure), one fails for real: every common event kind
/// (ok, changed, skipped, loop items, ignored and real failures) and a run that ends `failed`.
const PLAYBOOK: &str = r#"- name: compat play
  hosts: all
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: "hello {{ inventory_hostname }}"
    - name: change something
      ansible.builtin.command: "true"
    - name: skipped on purpose
      ansible.builtin.debug:
        msg: never
      when: false
    - name: loop over items
      ansible.builtin.debug:
        msg: "item {{ item }}"
      loop: [a, b]
    - name: fail on h2 but ignore
      ansible.builtin.fail:
        msg: ignored failure
      when: inventory_hostname == 'h2'
      ignore_errors: true
    - name: fail on h3 for real
      ansible.builtin.fail:
        msg: real failure
      when: inventory_hostname == 'h3'
    - name: after the failure
      ansible.builtin.debug:
        msg: still here
"#;

/// The stats columns of `playbook_on_stats`, as runner names them.
const STATS: [&str; 7] = [
    "ok", "changed", "failures", "dark", "skipped", "rescued", "ignored",
];

/// One event as compared: (event, host, task, parent's event name).
type Key = (String, Option<String>, Option<String>, Option<String>);

#[tokio::test]
async fn exported_artifacts_match_ansible_runner() -> anyhow::Result<()> {
    let hosts = local_hosts(3);

    // (a) The real ansible-runner.
    let pdd = tempfile::tempdir()?;
    let runner_dir = run_ansible_runner(pdd.path(), &hosts)?;
    let runner_events = read_job_events(&runner_dir.join("job_events"))?;

    // (b) troupe, then `troupe runs export`.
    let server = serve()?;
    let proj = project_dir(&[("site.yml", PLAYBOOK)])?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "site.yml", &hosts, json!({}))
        .await?;
    let run = server.wait_finished(id).await?;
    let out = tempfile::tempdir()?;
    let export_dir = out.path().join("export");
    let cli = Command::new(troupe_bin())
        .args(["runs", "export", &id.to_string()])
        .arg(&export_dir)
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    ensure!(
        cli.status.success(),
        "troupe runs export failed: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let troupe_events = read_job_events(&export_dir.join("job_events"))?;
    let read = |dir: &Path, name: &str| std::fs::read_to_string(dir.join(name));

    // The export holds exactly the stored events, one per file.
    let api_events = server.events(id).await?;
    assert_eq!(
        troupe_events, api_events,
        "exported events differ from the API's"
    );
    assert_eq!(
        run["event_count"].as_u64(),
        Some(troupe_events.len() as u64)
    );

    // Every field troupe writes is one runner writes too.
    for e in &troupe_events {
        let obj = e.as_object().context("event is an object")?;
        for k in obj.keys() {
            assert!(
                runner_events.iter().any(|r| r.get(k).is_some()),
                "troupe's event field {k:?} is not one of runner's"
            );
        }
    }

    // The same events, hosts, tasks and parents.
    let theirs = normalise(&runner_events);
    let ours = normalise(&troupe_events);
    if theirs != ours {
        bail!("event sequences differ:\n{}", diff(&theirs, &ours));
    }

    // Each event's details: every key runner gives is there, with the same value where the
    // value does not depend on the run (uuids, times, paths) or on how args are shown.
    let theirs = by_position(&runner_events);
    let ours = by_position(&troupe_events);
    for (r, t) in theirs.iter().zip(&ours) {
        compare_event_data(r, t)?;
    }

    // stdout's lines [start_line, end_line) are each event's stdout.
    let stdout_file = read(&export_dir, "stdout")?;
    let lines: Vec<&str> = stdout_file.split_inclusive('\n').collect();
    for e in &troupe_events {
        let (Some(start), Some(end)) = (e["start_line"].as_u64(), e["end_line"].as_u64()) else {
            bail!("event without line numbers: {e}");
        };
        let slice = lines
            .get(start as usize..end as usize)
            .with_context(|| format!("event {} lines {start}..{end} beyond stdout", e["counter"]))?
            .concat();
        assert_eq!(
            slice,
            e["stdout"].as_str().unwrap_or_default(),
            "event {}",
            e["counter"]
        );
    }

    // The same recap.
    assert_eq!(
        stats(&troupe_events)?,
        stats(&runner_events)?,
        "playbook_on_stats differs"
    );

    // rc and status as runner writes them (no newline), and the same outcome.
    assert_eq!(read(&export_dir, "rc")?, read(&runner_dir, "rc")?);
    assert_eq!(read(&export_dir, "status")?, read(&runner_dir, "status")?);
    assert_eq!(read(&export_dir, "status")?, "failed");
    assert_eq!(read(&export_dir, "rc")?, run["rc"].to_string());

    // stdout is the API's, colours kept (runner's stdout keeps them too); so is stderr.
    let stdout = server
        .text(&format!("/api/v1/runs/{id}/stdout?ansi=true"))
        .await?;
    assert_eq!(read(&export_dir, "stdout")?, stdout);
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    let stderr = server
        .text(&format!("/api/v1/runs/{id}/stderr?ansi=true"))
        .await?;
    assert_eq!(read(&export_dir, "stderr")?, stderr);

    // command: runner's shape, the playbook last, the project as cwd, no environment.
    let command: Value = serde_json::from_str(&read(&export_dir, "command")?)?;
    let argv = command["command"].as_array().context("command is a list")?;
    assert_eq!(argv.first(), Some(&json!("ansible-playbook")));
    assert_eq!(argv.last(), Some(&json!("site.yml")));
    assert_eq!(command["cwd"], json!(proj.path()));
    assert_eq!(command["env"], json!({}));
    let runner_command: Value = serde_json::from_str(&read(&runner_dir, "command")?)?;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&command), keys(&runner_command));
    Ok(())
}

#[tokio::test]
async fn unfinished_runs_and_unknown_runs_are_refused() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "slow.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 30\n",
    )])?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "slow.yml", &local_hosts(1), json!({}))
        .await?;
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{id}/artifacts"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_not_finished");

    let out = tempfile::tempdir()?;
    let cli = Command::new(troupe_bin())
        .args(["runs", "export", &id.to_string()])
        .arg(out.path().join("x"))
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    assert_eq!(cli.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("run_not_finished"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    server
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            &json!({"mode": "force"}),
        )
        .await?;

    let doc = server.get("/api/v1/openapi.json").await?;
    let ok = &doc["paths"]["/api/v1/runs/{id}/artifacts"]["get"]["responses"]["200"];
    assert!(
        ok["content"].get("application/gzip").is_some(),
        "artifacts route missing from the OpenAPI document: {ok}"
    );

    let (status, body) = server
        .call(reqwest::Method::GET, "/api/v1/runs/999999/artifacts", None)
        .await?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    // Once canceled, the run exports with status `canceled`.
    server.wait_finished(id).await?;
    let resp = server
        .http
        .get(server.url(&format!("/api/v1/runs/{id}/artifacts")))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/gzip")
    );
    let disposition = resp
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        disposition.starts_with("attachment") && disposition.contains(&format!("troupe-run-{id}")),
        "{disposition}"
    );
    Ok(())
}

/// More events than one store page: the export pages through them all, in order.
#[tokio::test]
async fn export_pages_through_long_runs() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "many.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: many items\n      ansible.builtin.debug:\n        msg: \"{{ item }}\"\n      loop: \"{{ range(1200) | list }}\"\n",
    )])?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "many.yml", &local_hosts(1), json!({}))
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let out = tempfile::tempdir()?;
    let cli = Command::new(troupe_bin())
        .args(["runs", "export", &id.to_string()])
        .arg(out.path())
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    ensure!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let events = read_job_events(&out.path().join("job_events"))?;
    assert!(events.len() > 1200, "{} events", events.len());
    assert_eq!(run["event_count"].as_u64(), Some(events.len() as u64));
    assert_eq!(
        events.last().map(|e| &e["event"]),
        Some(&json!("playbook_on_stats"))
    );
    Ok(())
}

/// A module argument the module itself declares `no_log` (here `user`'s `password`) is masked in
/// the result and never printed; ansible-runner's events do not hold it either (`task_args` is
/// empty unless `DISPLAY_ARGS_TO_STDOUT`, and then untemplated). troupe must not store or
/// export the templated value anywhere.
#[tokio::test]
async fn task_args_are_never_rendered_secrets() -> anyhow::Result<()> {
    const SECRET: &str = "SuperSecret-troupe-probe-123";
    let server = serve()?;
    let proj = project_dir(&[(
        "pw.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: set a password\n      ansible.builtin.user:\n        name: troupe_probe_user\n        password: \"{{ secret_pw }}\"\n      check_mode: true\n",
    )])?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(
            project,
            "pw.yml",
            &local_hosts(1),
            json!({"extra_vars": {"secret_pw": SECRET}}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert!(!stdout.contains(SECRET), "ansible itself never prints it");
    for e in server.events(id).await? {
        assert!(
            !e.to_string().contains(SECRET),
            "event {} {} holds the secret: task_args = {}",
            e["counter"],
            e["event"],
            e["event_data"]["task_args"]
        );
    }
    Ok(())
}

/// Runs `site.yml` under `ansible-runner run` in private data dir `pdd`; returns the run's
/// artifact directory.
fn run_ansible_runner(pdd: &Path, hosts: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(pdd.join("project"))?;
    std::fs::create_dir_all(pdd.join("inventory"))?;
    std::fs::write(pdd.join("project/site.yml"), PLAYBOOK)?;
    std::fs::write(pdd.join("inventory/hosts"), hosts)?;
    let out = Command::new("ansible-runner")
        .arg("run")
        .arg(pdd)
        .args(["-p", "site.yml", "--ident", "compat"])
        .output()
        .context(
            "running ansible-runner (scripts/test installs it into the venv it puts on PATH)",
        )?;
    let dir = pdd.join("artifacts/compat");
    ensure!(
        dir.join("status").exists(),
        "ansible-runner wrote no artifacts (exit {:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

/// The `job_events/*.json` files of an artifact directory, in counter order, checking that
/// each file is named `<counter>-<uuid>.json` after its event.
fn read_job_events(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let event: Value = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let expected = format!(
            "{}-{}.json",
            event["counter"],
            event["uuid"].as_str().unwrap_or_default()
        );
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(expected.as_str())
        );
        events.push(event);
    }
    events.sort_by_key(|e| e["counter"].as_i64());
    let counters: Vec<i64> = events
        .iter()
        .filter_map(|e| e["counter"].as_i64())
        .collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(
        counters,
        expected,
        "counters of {} have gaps",
        dir.display()
    );
    Ok(events)
}

/// The events in compared order: within each stretch between two `playbook_on_*` events,
/// stably sorted by host (see the module doc).
fn by_position(events: &[Value]) -> Vec<&Value> {
    let host = |e: &&Value| e["event_data"]["host"].as_str().map(str::to_owned);
    let mut out = Vec::with_capacity(events.len());
    let mut block: Vec<&Value> = Vec::new();
    for e in events {
        if e["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("playbook_on_"))
        {
            block.sort_by_key(host);
            out.append(&mut block);
            out.push(e);
        } else {
            block.push(e);
        }
    }
    block.sort_by_key(host);
    out.append(&mut block);
    out
}

/// The events as compared: (event, host, task, parent's event name), in compared order.
fn normalise(events: &[Value]) -> Vec<Key> {
    let names: BTreeMap<&str, &str> = events
        .iter()
        .filter_map(|e| Some((e["uuid"].as_str()?, e["event"].as_str()?)))
        .collect();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    by_position(events)
        .into_iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                text(&e["event_data"]["host"]),
                text(&e["event_data"]["task"]),
                e["parent_uuid"]
                    .as_str()
                    .and_then(|p| names.get(p))
                    .map(|n| (*n).to_owned()),
            )
        })
        .collect()
}

/// event_data keys whose values must match runner's exactly.
const SAME_VALUE: [&str; 11] = [
    "task_args",
    "playbook",
    "play",
    "play_pattern",
    "name",
    "pattern",
    "task_action",
    "resolved_action",
    "is_conditional",
    "event_loop",
    "role",
];

/// Keys of a result (`res`) whose values must match runner's.
const SAME_RESULT: [&str; 5] = ["changed", "failed", "skipped", "msg", "skip_reason"];

/// Runner's event_data keys must all be in troupe's (troupe may add its own), with the same
/// values for run-independent keys. One documented exception:
/// - `ignore_errors`: runner passes ansible's value through (`null` for a task without
///   `ignore_errors`), troupe stores a boolean; they agree on truthiness, which is all the
///   field means.
fn compare_event_data(runner: &Value, troupe: &Value) -> anyhow::Result<()> {
    let what = format!(
        "{} {} {}",
        runner["event"], runner["event_data"]["host"], runner["event_data"]["task"]
    );
    let (r, t) = (&runner["event_data"], &troupe["event_data"]);
    let r_obj = r.as_object().context("runner event_data")?;
    let t_obj = t.as_object().context("troupe event_data")?;
    for key in r_obj.keys() {
        ensure!(
            t_obj.contains_key(key),
            "{what}: troupe lacks event_data.{key}"
        );
    }
    for key in SAME_VALUE {
        ensure!(
            r.get(key) == t.get(key),
            "{what}: event_data.{key}: runner {:?}, troupe {:?}",
            r.get(key),
            t.get(key)
        );
    }
    let truthy = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    ensure!(
        truthy(r.get("ignore_errors")) == truthy(t.get("ignore_errors")),
        "{what}: ignore_errors differs"
    );
    // Runner has no `res` on some events (`runner_on_skipped`) where troupe adds one.
    for key in SAME_RESULT.into_iter().filter(|_| r.get("res").is_some()) {
        ensure!(
            r["res"].get(key) == t["res"].get(key),
            "{what}: res.{key}: runner {:?}, troupe {:?}",
            r["res"].get(key),
            t["res"].get(key)
        );
    }
    Ok(())
}

/// `playbook_on_stats`'s per-host columns.
fn stats(events: &[Value]) -> anyhow::Result<BTreeMap<&'static str, Value>> {
    let stats: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "playbook_on_stats")
        .collect();
    ensure!(stats.len() == 1, "{} playbook_on_stats events", stats.len());
    Ok(STATS
        .into_iter()
        .map(|k| (k, stats[0]["event_data"][k].clone()))
        .collect())
}

/// Both sequences side by side from the first difference.
fn diff(theirs: &[Key], ours: &[Key]) -> String {
    let first = theirs
        .iter()
        .zip(ours)
        .position(|(a, b)| a != b)
        .unwrap_or(theirs.len().min(ours.len()));
    let mut s = format!(
        "runner has {} events, troupe {}; first difference at #{}\n",
        theirs.len(),
        ours.len(),
        first + 1
    );
    for i in first.saturating_sub(2)..theirs.len().max(ours.len()).min(first + 12) {
        s.push_str(&format!(
            "{:>3} runner {:<70} troupe {:?}\n",
            i + 1,
            theirs.get(i).map(|k| format!("{k:?}")).unwrap_or_default(),
            ours.get(i)
        ));
    }
    s
}
