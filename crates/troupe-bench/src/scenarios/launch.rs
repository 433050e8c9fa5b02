//! 2: POST -> exec latency with one run at a time and with 1,000 queued at once; runs accepted
//! per second.

use super::{SYNTHETIC_PLAYBOOK, write_files};
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::server::{Server, ServerOpts, launch_time, ms_between, time_field};
use crate::stats::{Summary, percentile};
use anyhow::{Context, bail};
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

/// A run of the burst: its id, when its POST was sent and when it was answered.
type Sent = (i64, chrono::DateTime<Utc>, chrono::DateTime<Utc>);

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "2 launch";
    let project = ctx.dir("launch-project")?;
    write_files(&project, &[("noop.yml", SYNTHETIC_PLAYBOOK)])?;
    let noop = crate::producer::write_noop(ctx.tmp.path())?;
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("launch-data")?,
        database_url: None,
        max_concurrent_runs: 1000,
        ansible_playbook: Some(noop),
    })?;
    let pid = server.project(&project).await?;
    let body = json!({"project": pid, "playbook": "noop.yml", "hosts": "localhost\n"});

    // One at a time.
    let singles = if ctx.quick { 10 } else { 50 };
    let mut lat = Vec::new();
    let mut exact = true;
    for _ in 0..=singles {
        let t0 = Utc::now();
        let id = server.launch(&body).await?;
        let run = server
            .wait_finished(id, Duration::from_millis(5), Duration::from_secs(60))
            .await?;
        let (t, is_launch) =
            launch_time(&run).with_context(|| format!("run {id} has no start time: {run}"))?;
        exact &= is_launch;
        lat.push(ms_between(t0, t));
    }
    lat.remove(0); // the first spawn warms the spawner thread
    let which = if exact {
        "POST -> launched_at"
    } else {
        "POST -> started_at: the server does not report launched_at yet (claim, not exec)"
    };
    let s1 = Summary::of(&lat).context("no samples")?;
    ctx.push(Metric::value(title, "p50 ms, 1 queued", s1.median).note(which));
    ctx.push(
        Metric::value(title, "p99 ms, 1 queued", s1.p99)
            .target(Target::AtMost(20.0))
            .spread_text(format!("max {:.1} (n={})", s1.max, s1.n)),
    );

    // A burst.
    let burst = if ctx.quick { 100 } else { 1000 };
    let cpu_before = server.cpu_ms()?;
    let switches_before = server.context_switches()?;
    let t_burst = Instant::now();
    let results: Vec<anyhow::Result<Sent>> = futures_util::stream::iter(0..burst)
        .map(|_| {
            let server = &server;
            let body = &body;
            async move {
                let t0 = Utc::now();
                let id = server.launch(body).await?;
                Ok((id, t0, Utc::now()))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let accept_s = t_burst.elapsed().as_secs_f64();
    let mut sent = Vec::new();
    for r in results {
        sent.push(r?);
    }
    let mut lat_b = Vec::new();
    // Where the time goes: the POST's own answer, created -> claimed, claimed -> exec'd.
    let (mut answered, mut claimed, mut execd) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_ok = 0;
    let mut last_launch: Option<chrono::DateTime<Utc>> = None;
    for (id, t0, t_answer) in &sent {
        let run = server
            .wait_finished(*id, Duration::from_millis(20), Duration::from_secs(300))
            .await?;
        if run["status"] != "successful" {
            not_ok += 1;
        }
        if let Some((t, _)) = launch_time(&run) {
            lat_b.push(ms_between(*t0, t));
            last_launch = last_launch.max(Some(t));
        }
        answered.push(ms_between(*t0, *t_answer));
        if let (Some(created), Some(started), Some(launched)) = (
            time_field(&run, "created_at"),
            time_field(&run, "started_at"),
            time_field(&run, "launched_at"),
        ) {
            claimed.push(ms_between(created, started));
            execd.push(ms_between(started, launched));
        }
    }
    if lat_b.is_empty() {
        bail!("no run of the burst reported a start time");
    }
    // Every run of the burst has ended (and its process was waited for).
    let cpu_after = server.cpu_ms()?;
    let switches_after = server.context_switches()?;
    let label = format!("{burst} queued");
    ctx.push(Metric::value(
        title,
        &format!("p50 ms, {label}"),
        percentile(&lat_b, 50.0).unwrap_or(f64::NAN),
    ));
    ctx.push(
        Metric::value(
            title,
            &format!("p99 ms, {label}"),
            percentile(&lat_b, 99.0).unwrap_or(f64::NAN),
        )
        .target(Target::AtMost(20.0))
        .note(if not_ok > 0 {
            format!("{not_ok} runs did not succeed")
        } else {
            String::new()
        }),
    );
    for (what, samples, how) in [
        ("POST answered", &answered, "request sent -> 201 received"),
        ("created -> claimed", &claimed, "created_at -> started_at"),
        ("claimed -> exec'd", &execd, "started_at -> launched_at"),
    ] {
        if let Some(s) = Summary::of(samples) {
            ctx.push(
                Metric::value(title, &format!("{what} p50 ms, {label}"), s.median)
                    .note(format!("p99 {:.1} ms; {how}", s.p99)),
            );
        }
    }
    ctx.push(
        Metric::value(title, "runs accepted/s", burst as f64 / accept_s)
            .note(format!("{burst} POSTs, 16 in flight")),
    );
    // The rate the burst was drained at: from the first POST sent to the last exec.
    if let (Some(first), Some(last)) = (sent.iter().map(|s| s.1).min(), last_launch) {
        let seconds = ms_between(first, last) / 1000.0;
        ctx.push(
            Metric::value(title, "runs launched/s", lat_b.len() as f64 / seconds).note(format!(
                "first POST -> last exec: {seconds:.2} s for {} runs",
                lat_b.len()
            )),
        );
    }
    let per_run = |a: f64, b: f64| (b - a) / burst as f64;
    ctx.push(
        Metric::value(
            title,
            "troupe CPU ms per run",
            per_run(cpu_before.own, cpu_after.own),
        )
        .note(format!(
            "the server's threads over the burst; its runs' processes: {:.2} ms each",
            per_run(cpu_before.children, cpu_after.children)
        )),
    );
    // Threads that ended during the burst are missing from the second count, so this can
    // only err low; threads started during it count from zero.
    let switches: u64 = switches_after
        .iter()
        .map(|(tid, n)| n.saturating_sub(switches_before.get(tid).copied().unwrap_or(0)))
        .sum();
    ctx.push(
        Metric::value(
            title,
            "troupe context switches per run",
            switches as f64 / burst as f64,
        )
        .note(
            "its threads' voluntary + involuntary switches over the burst: trips between threads",
        ),
    );
    ctx.details.insert(
        "launch".into(),
        json!({"exact_launched_at": exact, "single_ms": lat, "burst_ms": lat_b,
            "burst_answered_ms": answered, "burst_claimed_ms": claimed, "burst_execd_ms": execd, "burst": burst, "accept_seconds": accept_s,
            "cpu_ms_before": [cpu_before.own, cpu_before.children],
            "cpu_ms_after": [cpu_after.own, cpu_after.children],
            "context_switches": switches}),
    );
    server.stop()?;
    Ok(())
}
