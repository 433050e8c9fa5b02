//! 10: scale-out over remote workers (`troupe worker`), on one server with the embedded pool
//! as the reference:
//! - a 100-host run split in two slices, executed by one worker pinned to CPU 0 (capacity 1:
//!   the slices one after the other) and by two workers pinned to CPU 0 and CPU 1 (one slice
//!   each), interleaved;
//! - the events of a synthetic run on a remote worker stored per second at the server, next to
//!   the same run on the embedded pool (the store's own rate, the ceiling);
//! - the claim latency of an idle, long-polling worker: `created_at` -> `started_at`.

use super::{SYNTHETIC_PLAYBOOK, local_hosts, write_files};
use crate::ctx::{Ctx, on_path};
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::{Server, ServerOpts, ms_between};
use crate::stats::{Summary, percentile};
use anyhow::{Context, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_testkit::RemoteWorker;
use troupe_wire::runs::{CreateRun, Run, RunStatus};

const PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n    - ansible.builtin.debug:\n        msg: \"hello {{ inventory_hostname }}\"\n";

/// The embedded pool's label: runs meant for it require it, and no remote worker has it.
const EMBEDDED: &str = "embedded";
/// Both pinned workers have it: a run requiring it spreads over the two.
const FLEET: &str = "fleet";
/// Only the worker pinned to CPU 0 has it.
const SOLO: &str = "solo";
/// The unpinned worker running the synthetic producer (event bursts, claim latency).
const BURST: &str = "burst";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "10 scaleout";
    let hosts = if ctx.quick { 20 } else { 100 };
    let events: u64 = if ctx.quick { 20_000 } else { 100_000 };
    let claims = if ctx.quick { 50 } else { 200 };
    let reps = ctx.reps;

    let project = ctx.dir("scaleout-project")?;
    write_files(
        &project,
        &[("split.yml", PLAY), ("burst.yml", SYNTHETIC_PLAYBOOK)],
    )?;
    let producer = crate::producer::write_wrapper(ctx.tmp.path(), &ctx.exe)?;
    // The embedded pool runs the synthetic producer and requires its own label, so the remote
    // workers (which also take runs requiring no label) never take its runs, and it takes
    // none of theirs (a split parent is coordinated by the server whatever its labels).
    let server = Server::start_with_env(
        &ServerOpts {
            troupe: ctx.troupe.clone(),
            data_dir: ctx.dir("scaleout-data")?,
            database_url: None,
            max_concurrent_runs: 4,
            ansible_playbook: Some(producer.clone()),
        },
        &[("TROUPE_WORKER_LABELS", "[embedded]")],
    )?;
    let pid = server.project(&project).await?;
    let token = server
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(&json!({"name": "bench-workers", "role": "worker"})),
        )
        .await?;
    let token = match token {
        (201 | 200, v) => v["token"]
            .as_str()
            .context("the token answer has no token")?
            .to_owned(),
        (status, v) => bail!("POST /api/v1/tokens -> {status}: {v}"),
    };
    let url = format!("http://{}", server.addr);
    let quiet = [("TROUPE_LOG", "warn")];

    // The workers of the split: one on CPU 0, one on CPU 1 (`taskset` before exec, so every
    // thread and every ansible process they start stay there).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinning = match (&ctx.ansible_playbook, on_path("taskset")) {
        (None, _) => Err("ansible-playbook is not on PATH"),
        (_, None) => Err("taskset not found"),
        (Some(_), Some(_)) if cpus < 2 => Err("fewer than 2 CPUs"),
        (Some(ansible), Some(taskset)) => Ok((ansible.clone(), taskset)),
    };
    let mut pinned: Vec<RemoteWorker> = Vec::new();
    if let Ok((ansible, taskset)) = &pinning {
        let ansible = ansible.display().to_string();
        for (cpu, labels) in [(0, &[FLEET, SOLO][..]), (1, &[FLEET][..])] {
            let exe = pinned_troupe(ctx.tmp.path(), taskset, cpu, &ctx.troupe)?;
            pinned.push(RemoteWorker::start(
                &exe,
                &url,
                &token,
                labels,
                1,
                &ctx.dir(&format!("scaleout-worker-cpu{cpu}"))?,
                &[quiet[0], ("TROUPE_ANSIBLE_PLAYBOOK", &ansible)],
            )?);
        }
    }
    let producer_path = producer.display().to_string();
    let burst = RemoteWorker::start(
        &ctx.troupe,
        &url,
        &token,
        &[BURST],
        1,
        &ctx.dir("scaleout-worker-burst")?,
        &[quiet[0], ("TROUPE_ANSIBLE_PLAYBOOK", &producer_path)],
    )?;
    let result = measure(
        ctx,
        &Setup {
            title,
            server: &server,
            project: pid,
            hosts,
            events,
            claims,
            reps,
            split: pinning.map(|_| ()),
            workers: pinned.len() + 1,
        },
    )
    .await;
    if result.is_err() {
        for w in &pinned {
            println!("    --- pinned worker log ---\n{}", tail(&w.log()));
        }
        println!("    --- burst worker log ---\n{}", tail(&burst.log()));
    }
    for w in pinned {
        w.stop(Duration::from_secs(10))?;
    }
    burst.stop(Duration::from_secs(10))?;
    server.stop()?;
    result
}

struct Setup<'a> {
    title: &'a str,
    server: &'a Server,
    project: i64,
    hosts: usize,
    events: u64,
    claims: usize,
    reps: usize,
    /// Why the split over pinned workers cannot be measured, if it cannot.
    split: Result<(), &'static str>,
    /// Remote workers started.
    workers: usize,
}

async fn measure(ctx: &mut Ctx, s: &Setup<'_>) -> anyhow::Result<()> {
    wait_workers(s.server, s.workers).await?;
    let mut details = serde_json::Map::new();
    match s.split {
        Ok(()) => split(ctx, s, &mut details).await?,
        Err(why) => ctx.push(Metric::skipped(
            &format!("{} (split over pinned workers)", s.title),
            why,
        )),
    }
    throughput(ctx, s, &mut details).await?;
    claim_latency(ctx, s, &mut details).await?;
    ctx.details.insert("scaleout".into(), details.into());
    Ok(())
}

/// (a) one worker on CPU 0 runs both slices, one after the other; (b) two workers, on CPU 0
/// and CPU 1, one slice each. Interleaved, the order alternating, after a small warm-up run.
async fn split(
    ctx: &mut Ctx,
    s: &Setup<'_>,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let body = |label: &str, hosts: usize| {
        let mut b = CreateRun::new(s.project, "split.yml");
        b.hosts = Some(local_hosts(hosts));
        b.slices = Some(2);
        b.worker_labels = vec![label.to_owned()];
        b
    };
    println!(
        "  split: {} hosts in 2 slices, warm-up, then {} × (1 worker on CPU 0, 2 workers on CPUs 0 and 1)",
        s.hosts, s.reps
    );
    // Warm-up, 4 hosts: each worker fetches and unpacks the project bundle once.
    wall_ms(s.server, &body(FLEET, 4)).await?;
    wall_ms(s.server, &body(SOLO, 4)).await?;
    let (one, two) = (body(SOLO, s.hosts), body(FLEET, s.hosts));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for rep in 1..=s.reps {
        let order = if rep % 2 == 1 { [0, 1] } else { [1, 0] };
        let (mut ta, mut tb) = (0.0, 0.0);
        for which in order {
            sync_disks();
            if which == 0 {
                ta = wall_ms(s.server, &one).await?;
            } else {
                tb = wall_ms(s.server, &two).await?;
            }
        }
        println!(
            "    rep {rep}: 1 worker {ta:.0} ms, 2 workers {tb:.0} ms, ratio {:.3}",
            tb / ta
        );
        a.push(ta);
        b.push(tb);
    }
    let scen = format!("{} ({} hosts, 2 slices, pinned)", s.title, s.hosts);
    let sum = |v: &[f64]| Summary::of(v).context("no samples");
    ctx.push(
        Metric::summary(&scen, "1 worker (CPU 0) s", &sum(&a)?.scaled(0.001))
            .note("capacity 1: the slices one after the other; created_at -> finished_at"),
    );
    ctx.push(
        Metric::summary(&scen, "2 workers (CPUs 0, 1) s", &sum(&b)?.scaled(0.001))
            .note("capacity 1 each: a slice each"),
    );
    let ratios: Vec<f64> = b.iter().zip(&a).map(|(b, a)| b / a).collect();
    ctx.push(
        Metric::summary(&scen, "2 workers / 1 worker", &sum(&ratios)?)
            .target(Target::AtMost(0.55))
            .note("median of per-repetition ratios; the server (unpinned) shares both CPUs"),
    );
    details.insert(
        "split".into(),
        json!({"hosts": s.hosts, "one_worker_ms": a, "two_workers_ms": b}),
    );
    Ok(())
}

/// A synthetic run of `events` events on the remote worker and on the embedded pool,
/// interleaved; events/s = events / (`launched_at` -> `finished_at`), the finish being
/// reported after the last batch is stored.
async fn throughput(
    ctx: &mut Ctx,
    s: &Setup<'_>,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let body = |label: &str, events: u64| {
        let mut b = run_api::on_localhost(s.project, "burst.yml");
        b.extra_vars = Some(json!({"bench_events": events}));
        b.worker_labels = vec![label.to_owned()];
        b
    };
    println!(
        "  events: {} events a run, warm-up, then {} × (remote worker, embedded pool)",
        s.events, s.reps
    );
    let (mut remote, mut embedded) = (Vec::new(), Vec::new());
    for rep in 0..=s.reps {
        let n = if rep == 0 { 1_000 } else { s.events };
        let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        let (mut r, mut e) = (0.0, 0.0);
        for which in order {
            let label = if which == 0 { BURST } else { EMBEDDED };
            let run = finished(s.server, &body(label, n), Duration::from_millis(50)).await?;
            if u64::try_from(run.event_count) != Ok(n) {
                bail!(
                    "run {} ({label}) stored {} events of {n}",
                    run.id,
                    run.event_count
                );
            }
            let (Some((start, _)), Some(end)) = (run_api::launch_time(&run), run.finished_at)
            else {
                bail!("run {} has no start/finish time", run.id);
            };
            let rate = n as f64 / (ms_between(start, end) / 1000.0);
            if which == 0 {
                r = rate;
            } else {
                e = rate;
            }
        }
        if rep == 0 {
            continue;
        }
        println!("    rep {rep}: remote {r:.0} events/s, embedded {e:.0} events/s");
        remote.push(r);
        embedded.push(e);
    }
    let scen = format!("{} (events from a remote worker)", s.title);
    let sum = |v: &[f64]| Summary::of(v).context("no samples");
    ctx.push(
        Metric::summary(&scen, "remote events/s", &sum(&remote)?)
            .target(Target::AtLeast(30_000.0))
            .note(format!(
                "{} synthetic events a run, launched_at -> finished_at at the server",
                s.events
            )),
    );
    ctx.push(
        Metric::summary(&scen, "embedded events/s", &sum(&embedded)?)
            .note("the same run on the embedded pool, same server (SQLite): the ceiling"),
    );
    let ratios: Vec<f64> = remote.iter().zip(&embedded).map(|(r, e)| r / e).collect();
    ctx.push(
        Metric::summary(&scen, "remote / embedded", &sum(&ratios)?)
            .note("median of per-repetition ratios"),
    );
    details.insert(
        "events".into(),
        json!({"events_per_run": s.events, "remote_events_per_s": remote,
            "embedded_events_per_s": embedded}),
    );
    Ok(())
}

/// Runs created one at a time while the worker waits in its long-poll claim; latency is the
/// server's `created_at` -> `started_at` (the claim).
async fn claim_latency(
    ctx: &mut Ctx,
    s: &Setup<'_>,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let mut body = run_api::on_localhost(s.project, "burst.yml");
    body.extra_vars = Some(json!({"bench_events": 3}));
    body.worker_labels = vec![BURST.to_owned()];
    println!("  claims: {} runs one at a time, the worker idle", s.claims);
    let mut claimed = Vec::with_capacity(s.claims);
    let mut launched = Vec::with_capacity(s.claims);
    for _ in 0..s.claims {
        let run = finished(s.server, &body, Duration::from_millis(10)).await?;
        let Some(started) = run.started_at else {
            bail!("run {} has no started_at", run.id);
        };
        claimed.push(ms_between(run.created_at, started));
        if let Some(l) = run.launched_at {
            launched.push(ms_between(run.created_at, l));
        }
        // Back in its long-poll before the next run is created.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scen = format!("{} (claim by an idle worker)", s.title);
    let pct = |v: &[f64], p| percentile(v, p).unwrap_or(f64::NAN);
    ctx.push(
        Metric::value(&scen, "created -> claimed p50 ms", pct(&claimed, 50.0)).spread_text(
            format!("max {:.1} (n={})", pct(&claimed, 100.0), claimed.len()),
        ),
    );
    ctx.push(
        Metric::value(&scen, "created -> claimed p99 ms", pct(&claimed, 99.0))
            .target(Target::AtMost(20.0))
            .note("created_at -> started_at, both the server's; runs one at a time"),
    );
    ctx.push(
        Metric::value(&scen, "created -> exec'd p50 ms", pct(&launched, 50.0)).note(format!(
            "p99 {:.1} ms; created_at -> launched_at: claim, plan, bundle (held), exec",
            pct(&launched, 99.0)
        )),
    );
    details.insert(
        "claims".into(),
        json!({"claimed_ms": claimed, "launched_ms": launched}),
    );
    Ok(())
}

/// A wrapper script that runs `troupe` pinned to `cpu`.
fn pinned_troupe(dir: &Path, taskset: &Path, cpu: usize, troupe: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("troupe-on-cpu{cpu}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec '{}' -c {cpu} '{}' \"$@\"\n",
            taskset.display(),
            troupe.display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Waits until `n` remote workers are registered and active.
async fn wait_workers(server: &Server, n: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = server.get("/api/v1/workers").await?;
        let active = list["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["kind"] == "remote" && w["status"] == "active")
            .count();
        if active >= n {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{active} of {n} remote workers registered after 60 s: {list}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Launches a run and waits until it finished successfully.
async fn finished(server: &Server, body: &CreateRun, poll: Duration) -> anyhow::Result<Run> {
    let id = run_api::launch(server, body).await?;
    let run = run_api::wait_finished(server, id, poll, Duration::from_secs(600)).await?;
    if run.status != RunStatus::Successful {
        bail!(
            "run {id} ended {}: {}",
            run.status,
            run.status_reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(run)
}

/// A run's wall time in ms, from troupe's `created_at` to its `finished_at`.
async fn wall_ms(server: &Server, body: &CreateRun) -> anyhow::Result<f64> {
    let run = finished(server, body, Duration::from_millis(500)).await?;
    let f = run
        .finished_at
        .context("a finished run without finished_at")?;
    Ok(ms_between(run.created_at, f))
}

fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
