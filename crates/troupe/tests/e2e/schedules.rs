//! Schedules end to end: per-second cron schedules firing a flow and a playbook against the
//! real binary, one start per fire (also with two replicas on one PostgreSQL database), fires
//! missed while troupe was down, refusals, and the CLI.

use crate::helpers::*;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use troupe_testkit::Api;
use troupe_wire::flows::{Execution, ExecutionList, ExecutionStatus, ExecutionView};
use troupe_wire::runs::{Run, RunList};
use troupe_wire::schedules::ScheduleView;

/// Stores a flow document.
async fn put_flow(api: &Api, yaml: &str) -> anyhow::Result<()> {
    api.post("/api/v1/flows", &json!({"document": yaml}))
        .await
        .map(|_| ())
}

/// Creates a schedule, expecting 201.
async fn create(api: &Api, body: Value) -> anyhow::Result<ScheduleView> {
    let (status, answer) = api
        .call(reqwest::Method::POST, "/api/v1/schedules", Some(&body))
        .await?;
    anyhow::ensure!(status == 201, "creating {body} answered {status}: {answer}");
    Ok(serde_json::from_value(answer)?)
}

async fn schedule(api: &Api, id: i64) -> anyhow::Result<ScheduleView> {
    Ok(serde_json::from_value(
        api.get(&format!("/api/v1/schedules/{id}")).await?,
    )?)
}

async fn delete(api: &Api, id: i64) -> anyhow::Result<u16> {
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/schedules/{id}"),
            None,
        )
        .await?;
    Ok(status)
}

/// Every execution of `flow`, newest first.
async fn executions(api: &Api, flow: &str) -> anyhow::Result<Vec<Execution>> {
    let list: ExecutionList = serde_json::from_value(
        api.get(&format!("/api/v1/executions?flow={flow}&limit=500"))
            .await?,
    )?;
    Ok(list.executions)
}

/// Every run a schedule started (they carry its name as the `troupe.schedule` label).
async fn runs_of(api: &Api, name: &str) -> anyhow::Result<Vec<Run>> {
    let list: RunList = serde_json::from_value(
        api.get(&format!(
            "/api/v1/runs?label=troupe.schedule%3D{name}&limit=500"
        ))
        .await?,
    )?;
    Ok(list.runs)
}

/// The fire time a scheduled run was told of (its `troupe_schedule.fire_at` extra var).
fn fire_at(run: &Run) -> Option<DateTime<Utc>> {
    run.options
        .extra_vars
        .get("troupe_schedule")?
        .get("fire_at")?
        .as_str()?
        .parse()
        .ok()
}

const TICKER: &str = r#"
name: ticker
inputs:
  who: {type: string, required: true}
steps:
  - id: say
    shell: {command: "echo hello {{ inputs.who }} from {{ execution.started_by }}"}
"#;

#[tokio::test]
async fn a_per_second_schedule_starts_the_flow_at_each_fire_until_deleted() -> anyhow::Result<()> {
    let server = serve()?;
    put_flow(&server, TICKER).await?;
    let created = create(
        &server,
        json!({"name": "every-second", "cron": "* * * * * *",
            "target": {"kind": "flow", "flow": "ticker", "inputs": {"who": "cron"}}}),
    )
    .await?;
    let id = created.schedule.id;
    // The next five fires, a second apart, from the next one on.
    assert_eq!(created.next_fires.len(), 5, "{created:?}");
    assert_eq!(created.next_fires[0], created.schedule.next_fire_at);
    for pair in created.next_fires.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "{created:?}"
        );
    }
    assert_eq!(created.schedule.last_result, None);

    wait_until("three fires", Duration::from_secs(60), || async {
        Ok(executions(&server, "ticker").await?.len() >= 3)
    })
    .await?;
    let shown = schedule(&server, id).await?;
    let last = shown.schedule.last_result.clone().unwrap_or_default();
    let last_id: i64 = last
        .strip_prefix("execution:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("last_result {last:?}\n{}", server.log()))?;
    assert!(shown.schedule.last_fire_at.is_some(), "{shown:?}");
    assert!(shown.schedule.next_fire_at > shown.schedule.last_fire_at.unwrap_or_default());

    assert_eq!(delete(&server, id).await?, 204);
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/schedules/{id}"),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    // A fire claimed just before the delete may still start; after that, nothing does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_delete = executions(&server, "ticker").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = executions(&server, "ticker").await?;
    assert_eq!(later.len(), after_delete.len(), "fires after the delete");

    assert!(
        later.iter().any(|e| e.id == last_id),
        "{last_id} not in {later:?}"
    );
    let started_by = format!("schedule:{id}");
    for e in &later {
        assert_eq!(e.started_by, started_by, "{e:?}");
        assert_eq!(e.inputs.get("who"), Some(&json!("cron")));
    }
    // The execution ran its shell step with the schedule's inputs.
    let done = wait_execution(&server, last_id).await?;
    let ran: ExecutionView =
        serde_json::from_value(server.get(&format!("/api/v1/executions/{last_id}")).await?)?;
    assert_eq!(
        done,
        ExecutionStatus::Successful,
        "{ran:?}\n{}",
        server.log()
    );
    assert_eq!(
        ran.steps.first().map(|s| &s.result["stdout"]),
        Some(&json!(format!("hello cron from {started_by}\n")))
    );
    Ok(())
}

/// An execution's final status.
async fn wait_execution(api: &Api, id: i64) -> anyhow::Result<ExecutionStatus> {
    for _ in 0..600 {
        let e: Execution =
            serde_json::from_value(api.get(&format!("/api/v1/executions/{id}")).await?)?;
        if e.status.is_finished() {
            return Ok(e.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("execution {id} did not end")
}

const FIRE_PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"fired {{ troupe_schedule.name }} at {{ troupe_schedule.fire_at }} {{ color }}\"\n";

/// A project with `fire.yml`, and a stored inventory `local` of one local host, on `api`.
async fn fire_project(api: &Api) -> anyhow::Result<tempfile::TempDir> {
    let proj = project_dir(&[("fire.yml", FIRE_PLAY)])?;
    api.post(
        "/api/v1/projects",
        &json!({"name": "sched", "source": {"type": "dir", "path": proj.path()}}),
    )
    .await?;
    api.post(
        "/api/v1/inventories",
        &json!({"name": "local", "format": "ini", "hosts": local_hosts(1)}),
    )
    .await?;
    Ok(proj)
}

fn playbook_schedule(name: &str, cron: &str) -> Value {
    json!({"name": name, "cron": cron,
        "target": {"kind": "playbook", "project": "sched", "playbook": "fire.yml",
            "inventory": "local", "options": {"extra_vars": {"color": "blue"}}}})
}

/// Each of `runs` is of a different fire, on the schedule's cron (every `step` seconds).
fn one_run_per_fire(runs: &[Run], step: u32) -> anyhow::Result<()> {
    let mut fires = BTreeSet::new();
    for run in runs {
        let at = fire_at(run).ok_or_else(|| anyhow::anyhow!("no fire time in {run:?}"))?;
        assert_eq!(at.second() % step, 0, "{at} is not on the cron");
        assert_eq!(at.nanosecond(), 0, "{at}");
        assert!(fires.insert(at), "two runs for the fire at {at}");
    }
    Ok(())
}

#[tokio::test]
async fn a_playbook_schedule_starts_one_run_per_fire() -> anyhow::Result<()> {
    let server = serve()?;
    let _proj = fire_project(&server).await?;
    let created = create(&server, playbook_schedule("pb", "*/2 * * * * *")).await?;
    wait_until("two scheduled runs", Duration::from_secs(60), || async {
        Ok(runs_of(&server, "pb").await?.len() >= 2)
    })
    .await?;
    let shown = schedule(&server, created.schedule.id).await?;
    assert_eq!(delete(&server, created.schedule.id).await?, 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = runs_of(&server, "pb").await?;
    one_run_per_fire(&runs, 2)?;
    let last = shown.schedule.last_result.clone().unwrap_or_default();
    let last_run: i64 = last
        .strip_prefix("run:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("last_result {last:?}"))?;
    assert!(
        runs.iter().any(|r| r.id == last_run),
        "{last_run}: {runs:?}"
    );
    // The run fired at the schedule's last fire is the one it links.
    let linked = runs.iter().find(|r| r.id == last_run);
    assert_eq!(linked.and_then(fire_at), shown.schedule.last_fire_at);
    let run = server.wait_finished(last_run).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let stdout = server
        .text(&format!("/api/v1/runs/{last_run}/stdout"))
        .await?;
    assert!(stdout.contains("fired pb at"), "{stdout}");
    assert!(stdout.contains(" blue"), "{stdout}");
    Ok(())
}

/// Two replicas on one PostgreSQL database both scan the same per-second schedule: every fire
/// starts one run, whichever replica claimed it.
#[tokio::test]
async fn two_replicas_never_fire_the_same_time_twice() -> anyhow::Result<()> {
    let Some(url) = crate::postgres::fresh_database().await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let opts = |dir: &str| ServerOpts {
        data_dir: Some(tmp.path().join(dir)),
        database_url: Some(url.clone()),
        ..Default::default()
    };
    let a = serve_with(opts("a"))?;
    let b = serve_with(opts("b"))?;
    let _proj = fire_project(&a).await?;
    let created = create(&b, playbook_schedule("both", "* * * * * *")).await?;
    wait_until("four scheduled runs", Duration::from_secs(60), || async {
        Ok(runs_of(&a, "both").await?.len() >= 4)
    })
    .await?;
    assert_eq!(delete(&a, created.schedule.id).await?, 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = runs_of(&a, "both").await?;
    one_run_per_fire(&runs, 1).map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", a.log(), b.log()))?;
    Ok(())
}

const TICK: &str = "name: NAME\nsteps:\n  - log: tick\n";

/// Fires that came due while troupe was stopped: `once` fires once on start, `skip` starts
/// nothing; both then wait for their next time.
#[tokio::test]
async fn fires_missed_while_down_follow_each_schedules_policy() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let opts = || ServerOpts {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    put_flow(&server, &TICK.replace("NAME", "tick-once")).await?;
    put_flow(&server, &TICK.replace("NAME", "tick-skip")).await?;
    // Once a day, a few seconds from now: the server is down by then.
    let at = (Utc::now() + chrono::Duration::seconds(6)).with_nanosecond(0);
    let at = at.ok_or_else(|| anyhow::anyhow!("no such time"))?;
    let cron = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    let once = create(
        &server,
        json!({"name": "once", "cron": cron, "missed": "once",
            "target": {"kind": "flow", "flow": "tick-once"}}),
    )
    .await?;
    let skip = create(
        &server,
        json!({"name": "skip", "cron": cron,
            "target": {"kind": "flow", "flow": "tick-skip"}}),
    )
    .await?;
    assert_eq!(once.schedule.next_fire_at, at);
    assert_eq!(skip.schedule.missed.as_str(), "skip", "skip is the default");
    server.terminate()?;
    anyhow::ensure!(
        Utc::now() < at,
        "the server took too long to stop: the fire was not missed"
    );
    // Past the fire and past the grace (2 s) a starting troupe allows a late fire.
    let wait = (at + chrono::Duration::seconds(3) - Utc::now()).to_std()?;
    tokio::time::sleep(wait).await;
    let server = serve_with(opts())?;
    wait_until(
        "the missed fires are handled",
        Duration::from_secs(30),
        || async {
            let a = schedule(&server, once.schedule.id).await?;
            let b = schedule(&server, skip.schedule.id).await?;
            Ok(a.schedule.last_result.is_some() && b.schedule.last_result.is_some())
        },
    )
    .await?;
    let tomorrow = at + chrono::Duration::days(1);
    let a = schedule(&server, once.schedule.id).await?;
    let started = executions(&server, "tick-once").await?;
    assert_eq!(started.len(), 1, "{started:?}\n{}", server.log());
    assert_eq!(
        a.schedule.last_result,
        Some(format!("execution:{}", started[0].id))
    );
    assert_eq!(a.schedule.last_fire_at, Some(at));
    assert_eq!(a.schedule.next_fire_at, tomorrow);
    let b = schedule(&server, skip.schedule.id).await?;
    assert!(
        b.schedule
            .last_result
            .as_deref()
            .is_some_and(|r| r.starts_with("skipped: missed")),
        "{b:?}"
    );
    assert_eq!(executions(&server, "tick-skip").await?.len(), 0);
    assert_eq!(b.schedule.next_fire_at, tomorrow);
    assert_eq!(b.next_fires.first(), Some(&tomorrow));
    Ok(())
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field() -> anyhow::Result<()> {
    let server = serve()?;
    let _proj = fire_project(&server).await?;
    put_flow(&server, TICKER).await?;
    put_flow(
        &server,
        "name: secretive\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - log: hi\n",
    )
    .await?;
    let flow = |inputs: Value| json!({"kind": "flow", "flow": "ticker", "inputs": inputs});
    let ok_target = flow(json!({"who": "x"}));
    let with = |cron: &str, tz: &str, target: Value| json!({"name": "s", "cron": cron, "timezone": tz, "target": target});
    let cases = [
        (with("61 * * * *", "UTC", ok_target.clone()), "cron"),
        (with("every day", "UTC", ok_target.clone()), "cron"),
        (with("0 0 0 1 1 * 2030", "UTC", ok_target.clone()), "cron"),
        (with("0 0 31 2 *", "UTC", ok_target.clone()), "cron"),
        (
            with("* * * * *", "Mars/Olympus", ok_target.clone()),
            "timezone",
        ),
        (
            with("* * * * *", "UTC", json!({"kind": "lambda", "fn": "x"})),
            "target",
        ),
        (
            with("* * * * *", "UTC", json!({"kind": "flow", "flow": "nope"})),
            "target.flow",
        ),
        (
            with("* * * * *", "UTC", flow(json!({}))),
            "target.inputs.who",
        ),
        (
            with("* * * * *", "UTC", flow(json!({"who": "x", "extra": 1}))),
            "target.inputs.extra",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "flow", "flow": "secretive", "inputs": {"token": "s3cr3t"}}),
            ),
            "target.inputs.token",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "template", "template": "nope"}),
            ),
            "target.template",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "playbook", "project": "nope", "playbook": "fire.yml", "inventory": "local"}),
            ),
            "target.project",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "playbook", "project": "sched", "playbook": "missing.yml", "inventory": "local"}),
            ),
            "target.playbook",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "playbook", "project": "sched", "playbook": "fire.yml", "inventory": "nope"}),
            ),
            "target.inventory",
        ),
        (
            with(
                "* * * * *",
                "UTC",
                json!({"kind": "playbook", "project": "sched", "playbook": "fire.yml", "inventory": "local", "options": {"colour": "red"}}),
            ),
            "target.options.colour",
        ),
        (
            json!({"name": "no spaces", "cron": "* * * * *", "target": ok_target}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = server
            .call(reqwest::Method::POST, "/api/v1/schedules", Some(&body))
            .await?;
        assert_eq!(status, 422, "{body} -> {answer}");
        let named = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(
            named.starts_with(field),
            "{body}: field {named:?}, want {field:?}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("s3cr3t"), "{answer}");
    }
    // Nothing refused was stored; a good one is, once per name.
    assert_eq!(
        server.get("/api/v1/schedules").await?["schedules"],
        json!([])
    );
    let good =
        json!({"name": "s", "cron": "0 3 * * *", "timezone": "Europe/Paris", "target": ok_target});
    create(&server, good.clone()).await?;
    let (status, answer) = server
        .call(reqwest::Method::POST, "/api/v1/schedules", Some(&good))
        .await?;
    assert_eq!(status, 409, "{answer}");
    for (method, path, want) in [
        (reqwest::Method::GET, "/api/v1/schedules/999", 404),
        (reqwest::Method::DELETE, "/api/v1/schedules/999", 404),
        (reqwest::Method::GET, "/api/v1/schedules/abc", 400),
    ] {
        let (status, answer) = server.call(method, path, None).await?;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let unauthenticated = troupe_http::client()?
        .get(server.url("/api/v1/schedules"))
        .send()
        .await?;
    assert_eq!(unauthenticated.status(), 401);
    Ok(())
}

#[tokio::test]
async fn schedules_from_the_cli() -> anyhow::Result<()> {
    let server = serve()?;
    put_flow(&server, TICKER).await?;
    let troupe = |args: &[&str]| {
        std::process::Command::new(troupe_bin())
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .args(args)
            .output()
    };
    let out = troupe(&[
        "schedules",
        "create",
        "--name",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--missed",
        "once",
        "--flow",
        "ticker",
        "-i",
        "who=cli",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("nightly: 0 2 * * * (Europe/Paris)"),
        "{stdout}"
    );
    let list: Vec<ScheduleView> =
        serde_json::from_value(server.get("/api/v1/schedules").await?["schedules"].clone())?;
    assert_eq!(list.len(), 1);
    let view = &list[0];
    assert_eq!(view.schedule.missed.as_str(), "once");
    // 02:00 in Paris is 01:00 or 00:00 UTC.
    assert!(
        matches!(view.schedule.next_fire_at.hour(), 0 | 1),
        "{view:?}"
    );
    assert_eq!(view.next_fires.len(), 5);

    let out = troupe(&["schedules", "list"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("nightly") && stdout.contains("flow ticker"),
        "{stdout}"
    );

    // Refusals: the server's (a bad cron) and the command line's (no target).
    let out = troupe(&[
        "schedules",
        "create",
        "--name",
        "bad",
        "--cron",
        "61 * * * *",
        "--flow",
        "ticker",
        "-i",
        "who=x",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("field cron"), "{stderr}");
    let out = troupe(&[
        "schedules",
        "create",
        "--name",
        "bad",
        "--cron",
        "* * * * *",
    ])?;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--flow NAME"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = troupe(&["schedules", "delete", "nightly"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.get("/api/v1/schedules").await?["schedules"],
        json!([])
    );
    let out = troupe(&["schedules", "delete", "nightly"])?;
    assert_ne!(out.status.code(), Some(0));
    Ok(())
}
