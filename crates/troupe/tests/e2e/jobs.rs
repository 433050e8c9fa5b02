//! RedRunner jobs and units, templates, relaunch and resume: end to end over HTTP with real
//! ansible-playbook.

use crate::helpers::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/redrunner")
}

fn times(
    run: &Value,
) -> anyhow::Result<(
    chrono::DateTime<chrono::FixedOffset>,
    chrono::DateTime<chrono::FixedOffset>,
)> {
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(run[k].as_str().unwrap_or_default());
    Ok((t("started_at")?, t("finished_at")?))
}

/// Launches the RedRunner example's `backup-each.yml` on this machine for job tag `tag`; the
/// units in `fail_units` fail their backup.
async fn backup_each(
    server: &Server,
    project: i64,
    tag: &str,
    backup_dir: &Path,
    fail_units: Value,
) -> anyhow::Result<i64> {
    server
        .launch(
            project,
            "backup-each.yml",
            "localhost ansible_connection=local\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n",
            json!({"extra_vars": {
                "troupe_api": server.base, "troupe_api_token": TOKEN, "job_tag": tag,
                "backup_dir": backup_dir, "fail_units": fail_units
            }}),
        )
        .await
}

#[tokio::test]
async fn the_redrunner_example_backs_up_every_unit_in_parallel_through_troupe() -> anyhow::Result<()>
{
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 6,
        ..Default::default()
    })?;
    let example = std::fs::canonicalize(example_dir())?;
    let pid = server.project(&example).await?;
    let backups = tempfile::tempdir()?;
    let id = backup_each(&server, pid, "nightly", backups.path(), json!(["db"])).await?;
    let outer = server.wait_finished(id).await?;
    // db's unit failed, so its host failed in the second play: the playbook fails as a whole.
    assert_eq!(outer["status"], "failed", "{outer}");
    assert_eq!(outer["summary"]["frontend"]["failed"], 0);
    assert_eq!(outer["summary"]["db"]["failed"], 1);

    let job = server.get("/api/v1/jobs?tag=nightly&latest=true").await?;
    let view = server.get(&format!("/api/v1/jobs/{}", job["id"])).await?;
    assert_eq!(view["status"], "failed", "{view}");
    let mut spans = Vec::new();
    for unit in view["units"].as_array().into_iter().flatten() {
        let name = unit["name"].as_str().unwrap_or_default();
        let run = &unit["runs"][0];
        assert_eq!(run["playbook"], format!("backup-{name}.yml"));
        assert_eq!(run["job_id"], job["id"]);
        assert_eq!(run["unit"], name);
        let expected = if name == "db" { "failed" } else { "successful" };
        assert_eq!(unit["status"], expected, "{unit}");
        assert_eq!(
            backups.path().join(format!("{name}.bak")).exists(),
            name != "db"
        );
        spans.push(times(run)?);
    }
    assert_eq!(spans.len(), 3);
    // Each unit's run takes 2 s or more; they ran at the same time, not one after another.
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "unit runs did not overlap: {spans:?}");

    // Running it again selects the same (latest) job; its units get a second run each.
    let again = backup_each(&server, pid, "nightly", backups.path(), json!([])).await?;
    assert_eq!(server.wait_finished(again).await?["status"], "successful");
    let latest = server.get("/api/v1/jobs?tag=nightly&latest=true").await?;
    assert_eq!(latest["id"], job["id"]);
    let view = server.get(&format!("/api/v1/jobs/{}", job["id"])).await?;
    assert_eq!(view["status"], "successful");
    assert!(
        view["units"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|u| u["runs"].as_array().map(Vec::len) == Some(2))
    );
    // The API token never reached the runs' events or output.
    for run in [id, again] {
        let events = serde_json::to_string(&server.events(run).await?)?;
        assert!(
            !events.contains(TOKEN),
            "token leaked into events of run {run}"
        );
        assert!(
            !server
                .text(&format!("/api/v1/runs/{run}/stdout"))
                .await?
                .contains(TOKEN)
        );
    }
    Ok(())
}

#[tokio::test]
async fn jobs_units_and_actions_over_the_api() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 4,
        ..Default::default()
    })?;
    let ok = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n        dest: \"{{ out }}/{{ troupe_unit }}-{{ troupe_action }}\"\n        content: \"{{ troupe_job_id }}\"\n";
    // One data_dir spelled project/, one spelled projects/ (the seed's), one project.
    let d1 = project_dir(&[("project/deploy-web.yml", ok)])?;
    let d2 = project_dir(&[("projects/deploy-api.yml", ok)])?;
    let p3 = project_dir(&[("deploy-worker.yml", ok)])?;
    let out = tempfile::tempdir()?;
    let p3id = server.project(p3.path()).await?;

    let job = server
        .post(
            "/api/v1/jobs",
            &json!({"tag": "release", "units": ["web", "api", "worker", "cron"]}),
        )
        .await?;
    let jid = job["id"].as_i64().unwrap_or_default();
    let second = server
        .post("/api/v1/jobs", &json!({"tag": "release", "units": ["web"]}))
        .await?;
    assert_ne!(second["id"], job["id"], "jobs may share a tag");
    assert_eq!(
        server.get("/api/v1/jobs?tag=release&latest=true").await?["id"],
        second["id"]
    );
    let (code, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/jobs?tag=none&latest=true",
            None,
        )
        .await?;
    assert_eq!(code, 404);

    let put = |unit: &str, body: Value| {
        let path = format!("/api/v1/jobs/{jid}/units/{unit}");
        let server = &server;
        async move { server.call(reqwest::Method::PUT, &path, Some(&body)).await }
    };
    assert_eq!(put("web", json!({"data_dir": d1.path()})).await?.0, 200);
    assert_eq!(put("api", json!({"data_dir": d2.path()})).await?.0, 200);
    assert_eq!(put("worker", json!({"project": p3id})).await?.0, 200);
    let (code, body) = put("nope", json!({"project": p3id})).await?;
    assert_eq!(code, 404, "{body}");
    let (code, body) = put("web", json!({"data_dir": out.path()})).await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("invalid_data_dir"))
    );

    // One unit at a time.
    let run = server
        .post(
            &format!("/api/v1/jobs/{jid}/units/web/actions"),
            &json!({"action": "deploy", "extra_vars": {"out": out.path()}}),
        )
        .await?;
    assert_eq!(
        server
            .wait_finished(run["id"].as_i64().unwrap_or_default())
            .await?["status"],
        "successful"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("web-deploy"))?,
        jid.to_string()
    );

    // Every unit at once: cron has no playbooks, which is its error alone.
    let (code, result) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{jid}/actions"),
            Some(&json!({"action": "deploy", "extra_vars": {"out": out.path()}})),
        )
        .await?;
    assert_eq!(code, 201, "{result}");
    assert_eq!(result["runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(result["errors"][0]["unit"], "cron");
    assert_eq!(result["errors"][0]["code"], "unit_without_playbooks");
    for r in result["runs"].as_array().into_iter().flatten() {
        assert_eq!(
            server
                .wait_finished(r["id"].as_i64().unwrap_or_default())
                .await?["status"],
            "successful"
        );
    }
    for unit in ["api", "worker"] {
        assert!(out.path().join(format!("{unit}-deploy")).exists());
    }
    // A missing playbook is a clear error for that unit.
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{jid}/units/web/actions"),
            Some(&json!({"action": "rollback"})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("playbook_not_found")),
        "{body}"
    );
    let (code, _) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{jid}/actions"),
            Some(&json!({"action": "../x"})),
        )
        .await?;
    assert_eq!(code, 422);

    // Units as a dynamic inventory that a plain ansible-playbook reads.
    let inv = server.get(&format!("/api/v1/jobs/{jid}/inventory")).await?;
    assert_eq!(
        inv["units"]["hosts"],
        json!(["web", "api", "worker", "cron"])
    );
    assert_eq!(inv["_meta"]["hostvars"]["api"]["troupe_job_id"], jid);
    let script = out.path().join("inv.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat <<'JSON'\n{inv}\nJSON\n"))?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let listed = std::process::Command::new("ansible-inventory")
        .args(["--list", "-i"])
        .arg(&script)
        .output()?;
    let listed: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(
        listed["_meta"]["hostvars"]["worker"]["troupe_unit"],
        "worker"
    );

    // The job view and the CLI.
    let view = server.get(&format!("/api/v1/jobs/{jid}")).await?;
    assert_eq!(
        view["status"], "successful",
        "cron never ran: idle units do not fail the job"
    );
    let out_cli = std::process::Command::new(troupe_bin())
        .args(["jobs", "show", &jid.to_string()])
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    let shown = String::from_utf8(out_cli.stdout)?;
    assert!(
        shown.contains("cron") && shown.contains("idle") && shown.contains("deploy-web.yml"),
        "{shown}"
    );
    let out_cli = std::process::Command::new(troupe_bin())
        .args(["jobs", "create", "--tag", "cli", "a", "b", "--json"])
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    let created: Value = serde_json::from_slice(&out_cli.stdout)?;
    let out_cli = std::process::Command::new(troupe_bin())
        .args(["jobs", "latest", "cli", "--json"])
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    let latest: Value = serde_json::from_slice(&out_cli.stdout)?;
    assert_eq!(latest["id"], created["id"]);
    Ok(())
}

#[tokio::test]
async fn templates_launch_with_only_the_overrides_they_allow() -> anyhow::Result<()> {
    let server = serve()?;
    let play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n        dest: \"{{ out }}/{{ inventory_hostname }}-{{ color }}\"\n        content: x\n";
    let proj = project_dir(&[("paint.yml", play)])?;
    let out = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "two", "format": "ini", "hosts": local_hosts(2)}),
        )
        .await?;
    let t = server
        .post(
            "/api/v1/templates",
            &json!({
                "name": "paint", "project": pid, "playbook": "paint.yml", "inventory": "two",
                "defaults": {"extra_vars": {"out": out.path(), "color": "red"}, "forks": 2},
                "allow_overrides": ["extra_vars", "limit"], "labels": {"kind": "paint"}
            }),
        )
        .await?;
    let tid = t["id"].as_i64().unwrap_or_default();
    let run = server
        .post(
            &format!("/api/v1/templates/{tid}/launch"),
            &json!({"extra_vars": {"color": "blue"}, "limit": "h1"}),
        )
        .await?;
    let run = server
        .wait_finished(run["id"].as_i64().unwrap_or_default())
        .await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["template_id"], tid);
    assert_eq!(run["labels"]["kind"], "paint");
    assert_eq!(run["options"]["forks"], 2);
    assert!(
        out.path().join("h1-blue").exists(),
        "override merged over the defaults"
    );
    assert!(
        !out.path().join("h2-blue").exists(),
        "limit override applied"
    );
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/templates/{tid}/launch"),
            Some(&json!({"check": true})),
        )
        .await?;
    assert_eq!(
        (
            code,
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (422, Some("override_not_allowed"), Some("check"))
    );
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/templates/{tid}/launch"),
            Some(&json!({"bogus": 1})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("invalid_body"))
    );
    let (code, _) = server
        .call(reqwest::Method::POST, "/api/v1/templates", Some(&json!({"name": "bad", "project": pid, "playbook": "paint.yml", "inventory": "two", "allow_overrides": ["playbook"]})))
        .await?;
    assert_eq!(code, 422);
    let (code, _) = server
        .call(reqwest::Method::POST, "/api/v1/templates", Some(&json!({"name": "paint", "project": pid, "playbook": "paint.yml", "inventory": "two"})))
        .await?;
    assert_eq!(code, 409);
    Ok(())
}

const STEPS: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: step one
      ansible.builtin.shell: "echo one >> {{ out }}/{{ inventory_hostname }}.log"
    - name: step two
      ansible.builtin.shell: "echo two >> {{ out }}/{{ inventory_hostname }}.log; sleep {{ pause | default(0) }}"
    - name: step three
      ansible.builtin.shell: "echo three >> {{ out }}/{{ inventory_hostname }}.log"
      failed_when: inventory_hostname in (broken | default([]))
    - name: step four
      ansible.builtin.shell: "echo four >> {{ out }}/{{ inventory_hostname }}.log"
"#;

fn log_of(dir: &std::path::Path, host: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{host}.log")))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn relaunch_failed_hosts_from_the_failed_task() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("steps.yml", STEPS)])?;
    let out = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(
            pid,
            "steps.yml",
            &local_hosts(3),
            json!({"extra_vars": {"out": out.path(), "broken": ["h2"]}}),
        )
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "failed");
    assert_eq!(log_of(out.path(), "h2"), "one two three");
    assert_eq!(log_of(out.path(), "h1"), "one two three four");

    // Only the failed host, starting at the task that failed (h2 is fixed meanwhile: the
    // relaunch keeps the run's extra vars, so fix it through the file system instead).
    let relaunch = server
        .post(
            &format!("/api/v1/runs/{id}/relaunch"),
            &json!({"hosts": "failed", "from": "failed_task"}),
        )
        .await?;
    assert_eq!(relaunch["relaunch_of"], id);
    assert_eq!(relaunch["options"]["limit"], "h2");
    assert_eq!(relaunch["options"]["start_at_task"], "step three");
    let r2 = server
        .wait_finished(relaunch["id"].as_i64().unwrap_or_default())
        .await?;
    assert_eq!(r2["status"], "failed", "still broken: same extra vars");
    assert_eq!(
        log_of(out.path(), "h2"),
        "one two three three",
        "resumed at step three, on h2 only"
    );
    assert_eq!(log_of(out.path(), "h1"), "one two three four");
    assert_eq!(
        r2["summary"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["h2".to_string()])
    );

    let listed = server
        .get(&format!("/api/v1/runs?relaunch_of={id}"))
        .await?;
    assert_eq!(listed["runs"][0]["id"], relaunch["id"]);
    // All hosts from the start is a plain rerun.
    let all = server
        .post(&format!("/api/v1/runs/{id}/relaunch"), &json!({}))
        .await?;
    assert!(all["options"]["limit"].is_null() && all["options"]["start_at_task"].is_null());
    server
        .wait_finished(all["id"].as_i64().unwrap_or_default())
        .await?;
    // Nothing unreachable to relaunch; and a running run cannot be relaunched.
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{id}/relaunch"),
            Some(&json!({"hosts": "unreachable"})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("no_hosts_to_relaunch"))
    );

    // Unreachable hosts only: an ssh host nobody answers for, next to a local one.
    let hosts = "[all]\nh1 ansible_connection=local\ngone ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n";
    let id = server
        .launch(
            pid,
            "steps.yml",
            hosts,
            json!({"extra_vars": {"out": out.path()}}),
        )
        .await?;
    assert_eq!(
        server.wait_finished(id).await?["summary"]["gone"]["unreachable"],
        1
    );
    let again = server
        .post(
            &format!("/api/v1/runs/{id}/relaunch"),
            &json!({"hosts": "unreachable", "from": "failed_task"}),
        )
        .await?;
    assert_eq!(again["options"]["limit"], "gone");
    assert_eq!(
        again["options"]["start_at_task"], "step one",
        "it was unreachable at the first task"
    );
    server
        .wait_finished(again["id"].as_i64().unwrap_or_default())
        .await?;
    // A run still going cannot be relaunched.
    let running = server
        .launch(
            pid,
            "steps.yml",
            &local_hosts(1),
            json!({"extra_vars": {"out": out.path(), "pause": 30}}),
        )
        .await?;
    server
        .wait_run(running, Duration::from_secs(60), |s| s == "running")
        .await?;
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{running}/relaunch"),
            None,
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("run_not_finished"))
    );
    server
        .post(
            &format!("/api/v1/runs/{running}/cancel"),
            &json!({"mode": "force"}),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_gracefully_canceled_run_resumes_at_the_task_it_stopped_before() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("steps.yml", STEPS)])?;
    let out = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(
            pid,
            "steps.yml",
            &local_hosts(2),
            json!({"extra_vars": {"out": out.path(), "pause": 3}}),
        )
        .await?;
    // Cancel while step two sleeps.
    let start = std::time::Instant::now();
    while !log_of(out.path(), "h1").contains("two") || !log_of(out.path(), "h2").contains("two") {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "step two never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            &json!({"mode": "graceful"}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "canceled", "{run}");
    assert_eq!(log_of(out.path(), "h1"), "one two");

    let resumed = server
        .post(
            &format!("/api/v1/runs/{id}/relaunch"),
            &json!({"from": "failed_task"}),
        )
        .await?;
    assert_eq!(resumed["options"]["start_at_task"], "step three");
    let r = server
        .wait_finished(resumed["id"].as_i64().unwrap_or_default())
        .await?;
    assert_eq!(r["status"], "successful", "{r}");
    for h in ["h1", "h2"] {
        assert_eq!(
            log_of(out.path(), h),
            "one two three four",
            "{h} resumed where it stopped"
        );
    }
    Ok(())
}

/// The CLI's `troupe jobs ...` against `server`: its exit code, stdout and stderr.
fn jobs_cli(server: &Server, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = std::process::Command::new(troupe_bin())
        .arg("jobs")
        .args(args)
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[tokio::test]
async fn actions_with_dashes_posted_as_playbook_file_names_on_relative_data_dirs()
-> anyhow::Result<()> {
    let play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n        dest: \"{{ out }}/{{ troupe_unit }}\"\n        content: \"{{ troupe_action }}\"\n";
    // The base holds a data_dir per unit; a directory beside it is outside it.
    let root = tempfile::tempdir()?;
    let base = root.path().join("base");
    for (dir, file) in [
        ("front-end", "project/hot-restart-front-end.yml"),
        ("db", "projects/hot-restart-db.yml"),
        ("outside", "project/hot-restart-db.yml"),
    ] {
        let at = if dir == "outside" {
            root.path().join(dir)
        } else {
            base.join(dir)
        };
        std::fs::create_dir_all(at.join(file).parent().unwrap_or(&at))?;
        std::fs::write(at.join(file), play)?;
    }
    std::os::unix::fs::symlink(root.path().join("outside"), base.join("sneaky"))?;
    let server = serve_with(ServerOpts {
        extra_env: vec![(
            "TROUPE_UNIT_DATA_DIR_BASE".to_owned(),
            base.display().to_string(),
        )],
        ..Default::default()
    })?;
    let out = tempfile::tempdir()?;

    let job = server
        .post(
            "/api/v1/jobs",
            &json!({"tag": "ops", "units": ["front-end", "db"]}),
        )
        .await?;
    let jid = job["id"].as_i64().unwrap_or_default().to_string();
    // PUT of a unit from the CLI, with a data_dir relative to the base.
    let (code, said, err) = jobs_cli(&server, &["set-unit", &jid, "front-end", "front-end"])?;
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("data_dir front-end"), "{said}");
    let (code, said, err) = jobs_cli(&server, &["set-unit", &jid, "db", "./db", "--json"])?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&said)?["source"]["data_dir"],
        "./db"
    );
    // Relative data_dirs stay inside the base.
    for escape in ["../outside", "sneaky", "front-end/../../outside"] {
        let (code, _, err) = jobs_cli(&server, &["set-unit", &jid, "db", escape])?;
        assert_ne!(code, 0, "{escape} was accepted");
        assert!(err.contains("unit_data_dir_base"), "{escape}: {err}");
    }
    let (code, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{jid}/units/db"),
            Some(&json!({"data_dir": "../outside"})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("invalid_data_dir")),
        "{body}"
    );

    // The seed's form: the playbook's file name posted to the unit. The action ("hot-restart")
    // and the unit ("front-end") both contain '-'.
    let run = server
        .post(
            &format!("/api/v1/jobs/{jid}/units/front-end/actions"),
            &json!({"action": "hot-restart-front-end.yml", "extra_vars": {"out": out.path()}}),
        )
        .await?;
    assert_eq!(run["playbook"], "hot-restart-front-end.yml");
    let done = server
        .wait_finished(run["id"].as_i64().unwrap_or_default())
        .await?;
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("front-end"))?,
        "hot-restart"
    );
    // `<action>-each.yml` on the job: every unit's `<action>-<unit>.yml`.
    let (code, result) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{jid}/actions"),
            Some(&json!({"action": "hot-restart-each.yml", "extra_vars": {"out": out.path()}})),
        )
        .await?;
    assert_eq!(code, 201, "{result}");
    let mut played: Vec<String> = Vec::new();
    for r in result["runs"].as_array().into_iter().flatten() {
        played.push(r["playbook"].as_str().unwrap_or_default().to_owned());
        let done = server
            .wait_finished(r["id"].as_i64().unwrap_or_default())
            .await?;
        assert_eq!(done["status"], "successful", "{done}");
    }
    assert_eq!(played, ["hot-restart-front-end.yml", "hot-restart-db.yml"]);
    assert_eq!(
        std::fs::read_to_string(out.path().join("db"))?,
        "hot-restart"
    );
    // The same through the CLI, by action name.
    let (code, said, err) = jobs_cli(&server, &["action", &jid, "hot-restart", "--unit", "db"])?;
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("hot-restart-db.yml"), "{said}");

    // Another unit's playbook, or a name that is no action, is refused.
    for (path, action) in [
        ("units/front-end/actions", "hot-restart-db.yml"),
        ("units/front-end/actions", "-front-end.yml"),
        ("actions", "hot-restart-front-end.yml"),
        ("actions", "-x"),
    ] {
        let (code, body) = server
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{jid}/{path}"),
                Some(&json!({"action": action})),
            )
            .await?;
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (422, Some("invalid_action")),
            "{path} {action}: {body}"
        );
    }
    // "each" names every unit, so no unit may be called that.
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/jobs",
            Some(&json!({"tag": "ops", "units": ["each"]})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("invalid_unit"))
    );
    Ok(())
}

#[tokio::test]
async fn relative_data_dirs_need_a_base() -> anyhow::Result<()> {
    let server = serve()?;
    let job = server
        .post("/api/v1/jobs", &json!({"tag": "t", "units": ["web"]}))
        .await?;
    let (code, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{}/units/web", job["id"]),
            Some(&json!({"data_dir": "web"})),
        )
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("invalid_data_dir"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unit_data_dir_base")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_jobs_fan_out_is_not_held_back_by_the_global_run_limit() -> anyhow::Result<()> {
    // One slot for runs: the RedRunner example holds it while it waits for its units' runs,
    // which must all start anyway, at once.
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let example = std::fs::canonicalize(example_dir())?;
    let pid = server.project(&example).await?;
    let backups = tempfile::tempdir()?;
    let id = backup_each(&server, pid, "solo", backups.path(), json!([])).await?;
    let outer = server.wait_finished(id).await?;
    assert_eq!(outer["status"], "successful", "{outer}");
    let job = server.get("/api/v1/jobs?tag=solo&latest=true").await?;
    let view = server.get(&format!("/api/v1/jobs/{}", job["id"])).await?;
    let mut spans = Vec::new();
    for unit in view["units"].as_array().into_iter().flatten() {
        spans.push(times(&unit["runs"][0])?);
    }
    assert_eq!(spans.len(), 3);
    let all_overlap = spans
        .iter()
        .all(|a| spans.iter().all(|b| a.0 < b.1 && b.0 < a.1));
    assert!(all_overlap, "the units did not all run at once: {spans:?}");

    // A limit of its own for jobs, when set: one unit at a time, while other runs still get
    // their slot.
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        extra_env: vec![("TROUPE_MAX_CONCURRENT_JOB_RUNS".into(), "1".into())],
        ..Default::default()
    })?;
    let slow =
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 1\n";
    let proj = project_dir(&[("go-a.yml", slow), ("go-b.yml", slow), ("plain.yml", slow)])?;
    let pid = server.project(proj.path()).await?;
    let job = server
        .post(
            "/api/v1/jobs",
            &json!({"tag": "one", "units": ["a", "b"], "project": pid}),
        )
        .await?;
    let result = server
        .post(
            &format!("/api/v1/jobs/{}/actions", job["id"]),
            &json!({"action": "go"}),
        )
        .await?;
    let plain = server
        .launch(pid, "plain.yml", &local_hosts(1), json!({}))
        .await?;
    let mut spans = Vec::new();
    for r in result["runs"].as_array().into_iter().flatten() {
        let done = server
            .wait_finished(r["id"].as_i64().unwrap_or_default())
            .await?;
        assert_eq!(done["status"], "successful", "{done}");
        spans.push(times(&done)?);
    }
    let (a, b) = (spans[0], spans[1]);
    assert!(a.1 <= b.0 || b.1 <= a.0, "two unit runs at once: {spans:?}");
    let plain = times(&server.wait_finished(plain).await?)?;
    assert!(
        spans.iter().any(|s| s.0 < plain.1 && plain.0 < s.1),
        "the plain run waited for the job's runs: {plain:?} {spans:?}"
    );
    Ok(())
}

const REPEATED: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: step
      ansible.builtin.shell: "echo first >> {{ out }}/{{ inventory_hostname }}.log"
    - name: step
      ansible.builtin.shell: "echo second >> {{ out }}/{{ inventory_hostname }}.log; test ! -e {{ out }}/broken-second"
    - name: last
      ansible.builtin.shell: "echo last >> {{ out }}/{{ inventory_hostname }}.log"
    - ansible.builtin.import_role:
        name: r
- ansible.builtin.import_playbook: other.yml
"#;

const ROLE_STEP: &str = r#"
- name: step
  ansible.builtin.shell: "echo role >> {{ out }}/{{ inventory_hostname }}.log; test ! -e {{ out }}/broken-role"
"#;

const OTHER: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: step
      ansible.builtin.shell: "echo other >> {{ out }}/{{ inventory_hostname }}.log"
"#;

const INCLUDING: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: step
      ansible.builtin.shell: "echo first >> {{ out }}/{{ inventory_hostname }}.log"
    - ansible.builtin.include_tasks: included.yml
"#;

const INCLUDED: &str = r#"
- name: step
  ansible.builtin.shell: "echo inc1 >> {{ out }}/{{ inventory_hostname }}.log"
- name: step
  ansible.builtin.shell: "echo inc2 >> {{ out }}/{{ inventory_hostname }}.log; test ! -e {{ out }}/broken-inc"
"#;

#[tokio::test]
async fn a_relaunch_resumes_at_the_failed_task_when_others_share_its_name() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[
        ("repeated.yml", REPEATED),
        ("other.yml", OTHER),
        ("roles/r/tasks/main.yml", ROLE_STEP),
        ("including.yml", INCLUDING),
        ("included.yml", INCLUDED),
    ])?;
    let out = tempfile::tempdir()?;
    let pid = server.project(proj.path()).await?;
    std::fs::write(out.path().join("broken-second"), "")?;
    let id = server
        .launch(
            pid,
            "repeated.yml",
            &local_hosts(1),
            json!({"extra_vars": {"out": out.path()}}),
        )
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "failed");
    assert_eq!(log_of(out.path(), "h1"), "first second");
    // Every task start says where the task is.
    let positions: Vec<Value> = server
        .events(id)
        .await?
        .into_iter()
        .filter(|e| e["event"] == "playbook_on_task_start")
        .map(|e| e["event_data"]["troupe_task_position"].clone())
        .collect();
    assert_eq!(
        positions,
        [
            json!({"play": "repeated.yml:2", "play_n": 1, "task": "repeated.yml:5"}),
            json!({"play": "repeated.yml:2", "play_n": 1, "task": "repeated.yml:7"}),
        ]
    );

    // Resumed at the second "step", not the first: --start-at-task alone would run both.
    let relaunch = |of: i64| {
        let server = &server;
        async move {
            let r = server
                .post(
                    &format!("/api/v1/runs/{of}/relaunch"),
                    &json!({"from": "failed_task"}),
                )
                .await?;
            let done = server
                .wait_finished(r["id"].as_i64().unwrap_or_default())
                .await?;
            anyhow::Ok((r, done))
        }
    };
    let (r2, done) = relaunch(id).await?;
    assert_eq!(r2["options"]["start_at_task"], "step");
    assert_eq!(r2["options"]["start_at_position"]["task"], "repeated.yml:7");
    assert_eq!(done["status"], "failed", "still broken");
    assert_eq!(log_of(out.path(), "h1"), "first second second");

    // Fixed, it goes on, and fails in the role, whose task is called "step" too.
    std::fs::remove_file(out.path().join("broken-second"))?;
    std::fs::write(out.path().join("broken-role"), "")?;
    let r2 = r2["id"].as_i64().unwrap_or_default();
    let (r3, done) = relaunch(r2).await?;
    assert_eq!(done["status"], "failed");
    assert_eq!(
        log_of(out.path(), "h1"),
        "first second second second last role"
    );
    let (r4, done) = relaunch(r3["id"].as_i64().unwrap_or_default()).await?;
    assert_eq!(r4["options"]["start_at_task"], "step");
    assert_eq!(
        r4["options"]["start_at_position"]["task"],
        "roles/r/tasks/main.yml:2"
    );
    assert_eq!(done["status"], "failed");
    assert_eq!(
        log_of(out.path(), "h1"),
        "first second second second last role role",
        "resumed at the role's task"
    );
    // Fixed again: the role's task, then the imported playbook's play, whole.
    std::fs::remove_file(out.path().join("broken-role"))?;
    let (_, done) = relaunch(r4["id"].as_i64().unwrap_or_default()).await?;
    assert_eq!(done["status"], "successful", "{done}");
    assert_eq!(
        log_of(out.path(), "h1"),
        "first second second second last role role role other"
    );
    // A run from the start has no position, and runs everything.
    let again = server
        .post(&format!("/api/v1/runs/{id}/relaunch"), &json!({}))
        .await?;
    assert!(again["options"]["start_at_position"].is_null(), "{again}");
    server
        .wait_finished(again["id"].as_i64().unwrap_or_default())
        .await?;

    // A task a dynamic include brought in resumes at the include, which runs again whole;
    // not at the first "step" of the play.
    std::fs::write(out.path().join("broken-inc"), "")?;
    let id = server
        .launch(
            pid,
            "including.yml",
            &local_hosts(1),
            json!({"extra_vars": {"out": out.path()}}),
        )
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "failed");
    std::fs::remove_file(out.path().join("h1.log"))?;
    let (r, done) = relaunch(id).await?;
    assert_eq!(
        r["options"]["start_at_position"],
        json!({"play": "including.yml:2", "play_n": 1, "task": "including.yml:7"})
    );
    assert_eq!(done["status"], "failed");
    assert_eq!(log_of(out.path(), "h1"), "inc1 inc2");
    Ok(())
}
