//! 9: flows. (1) One execution of a 10-step flow of `shell: true` steps: troupe's own overhead
//! per step, the execution's wall time (`created_at` -> `finished_at`, both recorded by troupe)
//! less the same 10 commands run bare in sequence (`/bin/sh -c true`, pipes on stdout and
//! stderr, as a shell step runs them), over 10. (2) 100 executions of a 2-step flow started at
//! once: the time until all have finished, and the mean time of one.

use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::server::{Server, ServerOpts, ms_between};
use crate::stats::{Summary, median};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use troupe_wire::flows::{Execution, ExecutionList, ExecutionStatus, PutFlow, StartExecution};

/// The per-step target of the flows issue.
const TARGET_MS: f64 = 5.0;
const STEPS: usize = 10;
const COMMAND: &str = "true";
const BURST: usize = 100;

fn flow_of(name: &str, steps: usize) -> String {
    let mut doc = format!("name: {name}\nsteps:\n");
    for i in 1..=steps {
        doc.push_str(&format!(
            "  - id: s{i}\n    shell: {{command: \"{COMMAND}\"}}\n"
        ));
    }
    doc
}

async fn put_flow(server: &Server, document: String) -> anyhow::Result<()> {
    let body = serde_json::to_value(PutFlow { document })?;
    let (status, answer) = server
        .call(reqwest::Method::POST, "/api/v1/flows", Some(&body))
        .await?;
    if status != 201 {
        bail!("POST /api/v1/flows -> {status}: {answer}");
    }
    Ok(())
}

/// Starts an execution; its record as created.
async fn start(server: &Server, flow: &str, body: &Value) -> anyhow::Result<Execution> {
    let (status, answer) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/flows/{flow}/executions"),
            Some(body),
        )
        .await?;
    if status != 201 {
        bail!("starting {flow} -> {status}: {answer}");
    }
    serde_json::from_value(answer).context("the answer is not an execution")
}

async fn get(server: &Server, id: i64) -> anyhow::Result<Execution> {
    // The view flattens the execution next to its steps; only the execution is read.
    serde_json::from_value(server.get(&format!("/api/v1/executions/{id}")).await?)
        .context("the answer is not an execution")
}

/// Polls an execution until it has finished; it must have succeeded.
async fn finished(server: &Server, id: i64) -> anyhow::Result<Execution> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let e = get(server, id).await?;
        if e.status.is_finished() {
            if e.status != ExecutionStatus::Successful {
                bail!("execution {id} ended {:?}: {:?}", e.status, e.error);
            }
            return Ok(e);
        }
        if Instant::now() > deadline {
            bail!("execution {id} did not finish in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wall_ms(e: &Execution) -> anyhow::Result<f64> {
    let end = e.finished_at.context("no finished_at")?;
    Ok(ms_between(e.created_at, end))
}

/// The same commands, bare: `/bin/sh -c true` `n` times in sequence, output piped and read;
/// milliseconds.
async fn bare_ms(n: usize) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            let out = Command::new("/bin/sh")
                .args(["-c", COMMAND])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()?;
            if !out.status.success() {
                bail!("/bin/sh -c {COMMAND} failed: {}", out.status);
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    })
    .await?
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("flows-data")?,
        database_url: None,
        max_concurrent_runs: 4,
        ansible_playbook: None,
    })?;
    put_flow(&server, flow_of("ten", STEPS)).await?;
    put_flow(&server, flow_of("small", 2)).await?;
    let body = serde_json::to_value(StartExecution::default())?;

    // (1) Sequential executions of the 10-step flow, each next to a bare run of its commands,
    // taking turns on which goes first.
    let samples = if ctx.quick { 3 } else { 10 };
    let warm = start(&server, "ten", &body).await?;
    finished(&server, warm.id).await?;
    bare_ms(STEPS).await?;
    let (mut walls, mut bares, mut per_step) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples {
        let mut bare = 0.0;
        if i % 2 == 0 {
            bare = bare_ms(STEPS).await?;
        }
        let e = start(&server, "ten", &body).await?;
        let wall = wall_ms(&finished(&server, e.id).await?)?;
        if i % 2 == 1 {
            bare = bare_ms(STEPS).await?;
        }
        walls.push(wall);
        bares.push(bare);
        per_step.push((wall - bare) / STEPS as f64);
    }
    let title = "9 flows (10 shell steps)";
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    ctx.push(
        Metric::value(title, "execution wall ms", nan(median(&walls))).note(format!(
            "median of {samples} executions one after another, created_at -> finished_at"
        )),
    );
    ctx.push(
        Metric::value(title, "bare commands ms", nan(median(&bares))).note(format!(
            "{STEPS} × /bin/sh -c {COMMAND} in sequence, next to each execution"
        )),
    );
    let per_step_summary = Summary::of(&per_step);
    ctx.push(
        Metric::value(title, "troupe overhead per step ms", nan(median(&per_step)))
            .target(Target::AtMost(TARGET_MS))
            .note(format!(
                "median of (wall − bare) / {STEPS}{}",
                per_step_summary
                    .map(|s| format!("; samples {}", s.spread()))
                    .unwrap_or_default()
            )),
    );

    // (2) 100 executions of a 2-step flow, all started at once.
    let t0 = Instant::now();
    let sent_at = chrono::Utc::now();
    let starts =
        futures_util::future::join_all((0..BURST).map(|_| start(&server, "small", &body))).await;
    let answered_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut ids = Vec::with_capacity(BURST);
    for s in starts {
        ids.push(s?.id);
    }
    let done = all_finished(&server, "small", &ids).await?;
    let last = done
        .iter()
        .filter_map(|e| e.finished_at)
        .max()
        .context("no execution finished")?;
    let all_ms = ms_between(sent_at, last);
    let each: Vec<f64> = done.iter().map(wall_ms).collect::<anyhow::Result<_>>()?;
    let mean = each.iter().sum::<f64>() / each.len() as f64;
    let title = "9 flows (100 at once, 2 steps)";
    ctx.push(
        Metric::value(title, "all finished s", all_ms / 1000.0).note(format!(
            "{BURST} POSTs sent together (all answered in {answered_ms:.0} ms) -> the last finished_at"
        )),
    );
    ctx.push(
        Metric::value(title, "per execution mean ms", mean).note(format!(
            "created_at -> finished_at; p50 {:.0} ms, max {:.0} ms",
            nan(median(&each)),
            each.iter().copied().fold(f64::NAN, f64::max)
        )),
    );
    ctx.details.insert(
        "flows".into(),
        json!({
            "steps": STEPS,
            "command": COMMAND,
            "wall_ms": walls,
            "bare_ms": bares,
            "overhead_per_step_ms": per_step,
            "burst": BURST,
            "burst_answered_ms": answered_ms,
            "burst_all_finished_ms": all_ms,
            "burst_each_ms": each,
        }),
    );
    server.stop()?;
    Ok(())
}

/// Polls the flow's executions until every one of `ids` has finished (each must succeed).
async fn all_finished(server: &Server, flow: &str, ids: &[i64]) -> anyhow::Result<Vec<Execution>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list: ExecutionList = serde_json::from_value(
            server
                .get(&format!("/api/v1/executions?flow={flow}&limit=500"))
                .await?,
        )
        .context("the answer is not a list of executions")?;
        let ours: Vec<Execution> = list
            .executions
            .into_iter()
            .filter(|e| ids.contains(&e.id))
            .collect();
        if ours.len() == ids.len() && ours.iter().all(|e| e.status.is_finished()) {
            if let Some(bad) = ours
                .iter()
                .find(|e| e.status != ExecutionStatus::Successful)
            {
                bail!(
                    "execution {} ended {:?}: {:?}",
                    bad.id,
                    bad.status,
                    bad.error
                );
            }
            return Ok(ours);
        }
        if Instant::now() > deadline {
            bail!("the {} executions did not all finish in 600 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
