//! Runs end to end: the real binary, real ansible-playbook, over HTTP.

use crate::helpers::*;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const MIXED: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: always ok
      ansible.builtin.debug:
        msg: "hello {{ inventory_hostname }}"
    - name: changes something
      ansible.builtin.command: "true"
    - name: skipped on h2
      ansible.builtin.debug:
        msg: not for h2
      when: inventory_hostname != 'h2'
    - name: failure ignored
      ansible.builtin.command: "false"
      ignore_errors: true
    - name: h3 fails
      ansible.builtin.fail:
        msg: "h3 is broken"
      when: inventory_hostname == 'h3'
    - name: after the failure
      ansible.builtin.debug:
        msg: still here
"#;

#[tokio::test]
async fn a_mixed_run_is_captured_exactly() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("site.yml", MIXED)])?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(
            pid,
            "site.yml",
            &local_hosts(3),
            json!({"labels": {"suite": "e2e"}}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["rc"], 2);

    // The stored summary equals what ansible printed in its PLAY RECAP.
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    let recap = parse_recap(&stdout);
    assert_eq!(recap.len(), 3, "recap in stdout:\n{stdout}");
    for (host, cols) in &recap {
        let s = &run["summary"][host];
        for (col, key) in [
            ("ok", "ok"),
            ("changed", "changed"),
            ("failed", "failed"),
            ("unreachable", "unreachable"),
            ("skipped", "skipped"),
            ("rescued", "rescued"),
            ("ignored", "ignored"),
        ] {
            assert_eq!(
                s[key].as_i64(),
                cols.get(col).copied(),
                "{host} {col}: summary {s} vs recap {cols:?}"
            );
        }
    }
    assert!(
        recap["h2"]["skipped"] >= 1 && recap["h1"]["ignored"] >= 1 && recap["h3"]["failed"] == 1
    );

    // Counters 1..N without gaps, parents point at earlier events.
    let events = server.events(id).await?;
    assert_eq!(run["event_count"].as_u64(), Some(events.len() as u64));
    let mut seen = HashSet::new();
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["counter"].as_u64(), Some(i as u64 + 1), "gap at {ev}");
        if let Some(parent) = ev["parent_uuid"].as_str() {
            assert!(
                seen.contains(parent),
                "event {} has unknown parent {parent}",
                ev["counter"]
            );
        }
        seen.insert(ev["uuid"].as_str().unwrap_or_default().to_owned());
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for expected in [
        "playbook_on_start",
        "playbook_on_play_start",
        "playbook_on_task_start",
        "runner_on_start",
        "runner_on_ok",
        "runner_on_failed",
        "runner_on_skipped",
        "playbook_on_stats",
    ] {
        assert!(names.contains(&expected), "no {expected} in {names:?}");
    }
    assert_eq!(names.last(), Some(&"playbook_on_stats"));

    // Per-host view: h3's failure with its message; the ignored failure is not a failure.
    let hosts = server.get(&format!("/api/v1/runs/{id}/hosts")).await?;
    let h3 = &hosts["h3"]["failures"];
    assert_eq!(h3.as_array().map(Vec::len), Some(1), "{hosts}");
    assert_eq!(h3[0]["msg"], "h3 is broken");
    assert_eq!(h3[0]["task"], "h3 fails");
    assert_eq!(hosts["h1"]["failures"].as_array().map(Vec::len), Some(0));

    // Filters find it.
    let listed = server
        .get("/api/v1/runs?label=suite=e2e&status=failed")
        .await?;
    assert!(
        listed["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == id))
    );
    let none = server.get("/api/v1/runs?label=suite=other").await?;
    assert_eq!(none["runs"].as_array().map(Vec::len), Some(0));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_host_is_reported_with_its_message() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "ping.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    // Nothing listens on port 1: ssh is refused at once.
    let hosts = "[all]\nlocal ansible_connection=local\ngone ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1 ansible_ssh_common_args='-o ConnectTimeout=3'\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n";
    let id = server.launch(pid, "ping.yml", hosts, json!({})).await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "failed");
    assert_eq!(
        run["rc"], 4,
        "ansible exits 4 when hosts are unreachable: {run}"
    );
    assert_eq!(run["summary"]["gone"]["unreachable"], 1);
    assert_eq!(run["summary"]["local"]["ok"], 1);
    let hosts = server.get(&format!("/api/v1/runs/{id}/hosts")).await?;
    assert_eq!(hosts["gone"]["unreachable"], true);
    let msg = hosts["gone"]["failures"][0]["msg"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("port 1") || msg.to_lowercase().contains("refused"),
        "{hosts}"
    );
    Ok(())
}

pub(crate) const SLOW: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: long task
      ansible.builtin.shell: "echo $$ > {{ pid_dir }}/{{ inventory_hostname }}.pid; sleep {{ secs }}; echo done > {{ pid_dir }}/{{ inventory_hostname }}.done"
    - name: next task
      ansible.builtin.file:
        path: "{{ pid_dir }}/{{ inventory_hostname }}.next"
        state: touch
"#;

/// Starts `slow.yml` (a 60 s task) of project `pid` on one host, with its marks in `marks`,
/// and waits until the task runs; the run's id and the task's process group.
async fn slow_task_running(
    server: &Server,
    pid: i64,
    marks: &std::path::Path,
) -> anyhow::Result<(i64, i32)> {
    slow_task_running_with(server, pid, marks, json!({})).await
}

/// [`slow_task_running`] with more run options.
pub(crate) async fn slow_task_running_with(
    server: &Server,
    pid: i64,
    marks: &std::path::Path,
    options: Value,
) -> anyhow::Result<(i64, i32)> {
    let mut body = options;
    body["extra_vars"] = json!({"pid_dir": marks, "secs": 60});
    let id = server
        .launch(pid, "slow.yml", &local_hosts(1), body)
        .await?;
    let shell_pid: i32 = wait_file(&marks.join("h1.pid"), Duration::from_secs(60))
        .await?
        .parse()?;
    let pgid = pgid_of(shell_pid).ok_or_else(|| anyhow::anyhow!("no pgid"))?;
    Ok((id, pgid))
}

#[tokio::test]
async fn graceful_cancel_finishes_the_task_in_flight_and_starts_no_other() -> anyhow::Result<()> {
    let server = serve()?;
    graceful_cancel(&server, json!({})).await
}

/// Cancels a run (with `options`) gracefully while its first task runs on two hosts: the task
/// finishes, no other starts, the stats are still emitted.
pub(crate) async fn graceful_cancel(server: &Server, options: Value) -> anyhow::Result<()> {
    let proj = project_dir(&[("slow.yml", SLOW)])?;
    let marks = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let mut body = options;
    body["extra_vars"] = json!({"pid_dir": marks.path(), "secs": 3});
    let id = server
        .launch(pid, "slow.yml", &local_hosts(2), body)
        .await?;
    for h in ["h1", "h2"] {
        wait_file(
            &marks.path().join(format!("{h}.pid")),
            Duration::from_secs(60),
        )
        .await?;
    }
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&json!({"mode": "graceful"})),
        )
        .await?;
    assert_eq!(code, 202, "{body}");
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "canceled", "{run}");
    for h in ["h1", "h2"] {
        assert!(
            marks.path().join(format!("{h}.done")).exists(),
            "the task in flight finished on {h}"
        );
        assert!(
            !marks.path().join(format!("{h}.next")).exists(),
            "no new task started on {h}"
        );
    }
    let events = server.events(id).await?;
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        names.contains(&"playbook_on_stats"),
        "stats still emitted: {names:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "playbook_on_task_start"
                && e["event_data"]["task"] == "next task")
    );
    // Cancelling again is a conflict: the run is over.
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{id}/cancel"),
            None,
        )
        .await?;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    Ok(())
}

/// Runs `slow.yml` with `body`'s options, force-cancels it (`cancel`) or lets its timeout
/// stop it; the run ends `expected`, and nothing of it is left.
pub(crate) async fn leaves_no_process(
    server: &Server,
    body: Value,
    cancel: bool,
    expected: &str,
) -> anyhow::Result<()> {
    let proj = project_dir(&[("slow.yml", SLOW)])?;
    let marks = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let mut body = body;
    body["extra_vars"] = json!({"pid_dir": marks.path(), "secs": 60});
    let id = server
        .launch(pid, "slow.yml", &local_hosts(1), body)
        .await?;
    let pid_file = marks.path().join("h1.pid");
    // A timeout may stop the run before its task starts on a loaded machine: wait for the
    // task or the end, whichever comes first.
    let start = std::time::Instant::now();
    let mut pgid = None;
    while start.elapsed() < Duration::from_secs(60) {
        // The shell may have created the file and not yet written its pid.
        if let Ok(p) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = p.trim().parse::<i32>()
        {
            pgid = pgid_of(pid);
            break;
        }
        let run = server.get(&format!("/api/v1/runs/{id}")).await?;
        if run["status"] != "queued" && run["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if cancel {
        anyhow::ensure!(
            pgid.is_some(),
            "the task never started: {}\n{}",
            server.get(&format!("/api/v1/runs/{id}")).await?,
            server.log()
        );
        server
            .post(
                &format!("/api/v1/runs/{id}/cancel"),
                &json!({"mode": "force"}),
            )
            .await?;
    }
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], expected, "{run}");
    assert!(run["status_reason"].as_str().is_some_and(|r| !r.is_empty()));
    if let Some(pgid) = pgid {
        let left = wait_group_empty(pgid, Duration::from_secs(5)).await;
        assert!(
            left.is_empty(),
            "processes of the run's task remain: {left:?}"
        );
    }
    let left = processes_of_runs_under(&server.data_dir.join("runs"));
    assert!(
        left.is_empty(),
        "processes carrying the run's marker remain: {left:?}"
    );
    assert!(!marks.path().join("h1.done").exists());
    Ok(())
}

#[tokio::test]
async fn force_cancel_leaves_no_process() -> anyhow::Result<()> {
    let server = serve()?;
    leaves_no_process(&server, json!({}), true, "canceled").await
}

#[tokio::test]
async fn timeout_stops_the_run_and_leaves_no_process() -> anyhow::Result<()> {
    let server = serve()?;
    leaves_no_process(&server, json!({"timeout_s": 3}), false, "timeout").await
}

#[tokio::test]
async fn a_run_lost_in_a_crash_is_marked_error_and_its_processes_are_gone() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let mut server = serve_with(ServerOpts {
        data_dir: Some(data.clone()),
        ..Default::default()
    })?;
    let proj = project_dir(&[
        ("slow.yml", SLOW),
        (
            "quick.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
        ),
    ])?;
    let marks = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let (id, pgid) = slow_task_running(&server, pid, marks.path()).await?;
    server.kill9();

    let server = serve_with(ServerOpts {
        data_dir: Some(data),
        ..Default::default()
    })?;
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("restarted")),
        "{run}"
    );
    let left = wait_group_empty(pgid, Duration::from_secs(10)).await;
    assert!(
        left.is_empty(),
        "processes of the lost run remain: {left:?}"
    );

    let id2 = server
        .launch(pid, "quick.yml", &local_hosts(1), json!({}))
        .await?;
    let run2 = server.wait_finished(id2).await?;
    assert_eq!(run2["status"], "successful", "{run2}");
    Ok(())
}

#[tokio::test]
async fn runs_wait_in_fifo_order_beyond_the_concurrency_limit() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let proj = project_dir(&[(
        "quick.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            server
                .launch(pid, "quick.yml", &local_hosts(1), json!({}))
                .await?,
        );
    }
    let mut spans = Vec::new();
    for id in &ids {
        let run = server.wait_finished(*id).await?;
        assert_eq!(run["status"], "successful");
        let t = |k: &str| chrono::DateTime::parse_from_rfc3339(run[k].as_str().unwrap_or_default());
        spans.push((t("started_at")?, t("finished_at")?));
    }
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "runs overlapped or ran out of order: {spans:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_cancels_runs_that_outlive_the_grace_period() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let mut server = serve_with(ServerOpts {
        data_dir: Some(data.clone()),
        extra_env: vec![("TROUPE_SHUTDOWN_GRACE_S".into(), "1".into())],
        ..Default::default()
    })?;
    let proj = project_dir(&[("slow.yml", SLOW)])?;
    let marks = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let (id, pgid) = slow_task_running(&server, pid, marks.path()).await?;
    let status = server.terminate()?;
    assert!(
        status.success(),
        "troupe exits cleanly on SIGTERM: {status:?}\n{}",
        server.log()
    );
    assert!(
        wait_group_empty(pgid, Duration::from_secs(5))
            .await
            .is_empty()
    );
    drop(server);
    let server = serve_with(ServerOpts {
        data_dir: Some(data),
        ..Default::default()
    })?;
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(run["status"], "canceled", "{run}");
    assert!(
        run["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("shut down")),
        "{run}"
    );
    Ok(())
}

#[tokio::test]
async fn stored_inventories_with_group_vars_and_run_options() -> anyhow::Result<()> {
    let server = serve()?;
    let play = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: write what the run saw
      ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        content: "{{ {'greeting': greeting, 'port': port, 'tagged': true} | to_json }}"
      tags: [write]
    - name: untagged
      ansible.builtin.file:
        path: "{{ out_dir }}/{{ inventory_hostname }}.untagged"
        state: touch
"#;
    let proj = project_dir(&[("web.yml", play)])?;
    let out = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let inv = server
        .post(
            "/api/v1/inventories",
            &json!({
                "name": "webs", "env": "test", "version": "1", "format": "yaml",
                "hosts": "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n  children:\n    web:\n      hosts:\n        web[1:3]:\n    db:\n      hosts:\n        db1:\n",
                "vars": "web:\n  port: 8080\n"
            }),
        )
        .await?;
    assert_eq!(inv["host_count"], 4);
    let run = server
        .post(
            "/api/v1/runs",
            &json!({"project": pid, "playbook": "web.yml", "inventory": "webs", "limit": "web1,web2",
                   "tags": ["write"], "extra_vars": {"out_dir": out.path(), "greeting": "hi"}}),
        )
        .await?;
    let id = run["id"].as_i64().unwrap_or_default();
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["inventory_id"], inv["id"]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("web1.json"))?)?;
    assert_eq!(
        written,
        json!({"greeting": "hi", "port": 8080, "tagged": true})
    );
    assert!(out.path().join("web2.json").exists());
    assert!(!out.path().join("web3.json").exists(), "limit respected");
    assert!(!out.path().join("web1.untagged").exists(), "tags respected");
    let summary: BTreeMap<String, Value> = serde_json::from_value(run["summary"].clone())?;
    assert_eq!(summary.keys().collect::<Vec<_>>(), vec!["web1", "web2"]);
    Ok(())
}

#[tokio::test]
async fn check_mode_changes_nothing() -> anyhow::Result<()> {
    let server = serve()?;
    let play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.file:\n        path: \"{{ target }}\"\n        state: touch\n";
    let proj = project_dir(&[("touch.yml", play)])?;
    let out = tempfile::tempdir()?;
    let target = out.path().join("t");
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(pid, "touch.yml", &local_hosts(1), json!({"check": true, "diff": true, "verbosity": 1, "forks": 2, "extra_vars": {"target": target}}))
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert!(!target.exists());
    assert_eq!(run["summary"]["h1"]["changed"], 1);
    Ok(())
}

/// The default data dir is relative (`./.troupe`); ansible runs in the project directory, so
/// troupe must hand it absolute paths.
#[tokio::test]
async fn a_relative_data_dir_works_for_projects_elsewhere() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let server = serve_with(ServerOpts {
        cwd: Some(home.path().to_path_buf()),
        data_dir: Some(".troupe".into()),
        ..Default::default()
    })?;
    let proj = project_dir(&[(
        "site.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"{{ greeting }}\"\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(
            pid,
            "site.yml",
            &local_hosts(1),
            json!({"extra_vars": {"greeting": "from afar"}}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(
        run["status"],
        "successful",
        "{run}\n{}",
        server.text(&format!("/api/v1/runs/{id}/stderr")).await?
    );
    assert!(home.path().join(".troupe/troupe.db").exists());
    Ok(())
}

/// The runs list answers from JSON kept per run version: every change to a run must show in the
/// list at once, identical to what `GET /runs/{id}` says, page after page.
#[tokio::test]
async fn the_runs_list_follows_every_change_of_a_run() -> anyhow::Result<()> {
    let server = serve()?;
    let gate = tempfile::tempdir()?;
    let release = gate.path().join("go");
    let proj = project_dir(&[(
        "wait.yml",
        &format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.wait_for:\n        path: {}\n        timeout: 60\n    - ansible.builtin.debug:\n        msg: done\n",
            release.display()
        ),
    )])?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(pid, "wait.yml", &local_hosts(1), json!({}))
        .await?;
    let listed = async || -> anyhow::Result<Value> {
        let page = server.get("/api/v1/runs?limit=5").await?;
        let run = page["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["id"] == id))
            .cloned()
            .with_context(|| format!("run {id} not listed: {page}"))?;
        Ok(run)
    };
    // Seen while it waits (cached in that state), then launched, then finished.
    let before = listed().await?;
    assert!(
        matches!(before["status"].as_str(), Some("queued" | "running")),
        "{before}"
    );
    server
        .wait_run(id, Duration::from_secs(60), |s| s == "running")
        .await?;
    let start = Instant::now();
    loop {
        let run = listed().await?;
        if run.get("launched_at").is_some() {
            assert_eq!(run["status"], "running");
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "never launched: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&release, "")?;
    let done = server.wait_finished(id).await?;
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(listed().await?, done, "the list shows the run as it is now");
    assert!(done["event_count"].as_i64().unwrap_or(0) > 0, "{done}");
    // A second page through the cursor holds the same JSON too.
    let other = server
        .launch(pid, "wait.yml", &local_hosts(1), json!({}))
        .await?;
    let page = server
        .get(&format!("/api/v1/runs?limit=1&cursor={other}"))
        .await?;
    assert_eq!(page["runs"][0], done, "{page}");
    assert_eq!(page["next_cursor"], id, "a full page points past itself");
    server.wait_finished(other).await?;
    Ok(())
}

/// The runs list and each run carry an `ETag`: asked again with `If-None-Match`, an unchanged
/// answer is a bodiless 304; a change (a new run on the page, a run that finished) sends it
/// whole with a new tag, and leaves the tags of runs it did not touch.
#[tokio::test]
async fn runs_answer_304_until_they_change() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "hi.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    let first = server
        .launch(pid, "hi.yml", &local_hosts(1), json!({}))
        .await?;
    server.wait_finished(first).await?;
    // (status, ETag, body)
    let get = async |path: &str, tag: Option<&str>| -> anyhow::Result<(u16, String, String)> {
        let mut req = server.http.get(server.url(path)).bearer_auth(TOKEN);
        if let Some(tag) = tag {
            req = req.header("If-None-Match", tag);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .with_context(|| format!("GET {path} -> {status} has no ETag"))?;
        Ok((status, etag, resp.text().await?))
    };
    let list = "/api/v1/runs?limit=10";
    let (status, list_tag, body) = get(list, None).await?;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body)?;
    assert_eq!(page["runs"][0]["id"], first, "{page}");
    assert_eq!(get(list, None).await?.1, list_tag, "same page, same tag");
    assert_eq!(
        get(list, Some(&list_tag)).await?,
        (304, list_tag.clone(), String::new())
    );
    assert_eq!(get(list, Some("\"something-else\"")).await?.0, 200);
    let first_path = format!("/api/v1/runs/{first}");
    let (status, first_tag, body) = get(&first_path, None).await?;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        server.get(&first_path).await?
    );
    assert_eq!(get(&first_path, Some(&first_tag)).await?.0, 304);

    let second = server
        .launch(pid, "hi.yml", &local_hosts(1), json!({}))
        .await?;
    let second_path = format!("/api/v1/runs/{second}");
    let (_, second_tag, body) = get(&second_path, None).await?;
    let (status, newer, body_list) = get(list, Some(&list_tag)).await?;
    assert_eq!(status, 200, "a new run changes the page: {body_list}");
    assert_ne!(newer, list_tag);
    let page: Value = serde_json::from_str(&body_list)?;
    assert_eq!(page["runs"][0]["id"], second, "{page}");
    assert_eq!(
        get(&first_path, Some(&first_tag)).await?.0,
        304,
        "another run's changes leave this one's tag"
    );
    let done = server.wait_finished(second).await?;
    assert_ne!(
        serde_json::from_str::<Value>(&body)?,
        done,
        "it was not done yet"
    );
    let (status, _, body) = get(&second_path, Some(&second_tag)).await?;
    assert_eq!(status, 200, "the run finished since");
    assert_eq!(serde_json::from_str::<Value>(&body)?, done);
    Ok(())
}

/// Admission at create: with a free slot and nothing queued, a run is stored already running
/// (the POST answers it so, `started_at` set: it never was queued); with the one slot taken,
/// the next run queues as before and starts when the slot frees.
#[tokio::test]
async fn a_run_starts_at_create_when_a_slot_is_free_and_queues_when_none_is() -> anyhow::Result<()>
{
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let proj = project_dir(&[(
        "hold.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.wait_for:\n        path: \"{{ gate }}\"\n",
    )])?;
    let gate = tempfile::tempdir()?;
    let gate_file = gate.path().join("open");
    let pid = server.project(proj.path()).await?;
    let body = json!({
        "project": pid,
        "playbook": "hold.yml",
        "hosts": local_hosts(1),
        "extra_vars": {"gate": gate_file.display().to_string()},
    });

    let first = server.post("/api/v1/runs", &body).await?;
    assert_eq!(first["status"], "running", "{first}");
    assert!(first["started_at"].is_string(), "{first}");
    let first_id = first["id"].as_i64().context("id")?;

    let second = server.post("/api/v1/runs", &body).await?;
    assert_eq!(
        second["status"], "queued",
        "the only slot is taken: {second}"
    );
    assert!(second["started_at"].is_null(), "{second}");
    let second_id = second["id"].as_i64().context("id")?;

    std::fs::write(&gate_file, "")?;
    let a = server.wait_finished(first_id).await?;
    let b = server.wait_finished(second_id).await?;
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("successful"), &json!("successful"))
    );
    let t = |run: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(run[k].as_str().unwrap_or_default())
    };
    assert!(t(&a, "finished_at")? <= t(&b, "started_at")?, "{a}\n{b}");
    Ok(())
}
