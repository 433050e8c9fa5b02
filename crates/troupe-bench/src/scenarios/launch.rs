//! 2: POST -> exec latency with one run at a time, with 1,000 queued at once, and with 1,000
//! sent at half the rate troupe accepts them; runs accepted per second.

use super::{SYNTHETIC_PLAYBOOK, write_files};
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::{Server, ServerOpts, ms_between};
use crate::stats::{Summary, percentile};
use anyhow::{Context, bail};
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use troupe_wire::runs::RunStatus;

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
    // Serialized once, before any request is timed.
    let body = run_api::body(&run_api::on_localhost(pid, "noop.yml"))?;

    // One at a time.
    let singles = if ctx.quick { 10 } else { 50 };
    let mut lat = Vec::new();
    let mut exact = true;
    for _ in 0..=singles {
        let t0 = Utc::now();
        let id = server.launch(&body).await?;
        let run = run_api::wait_finished(
            &server,
            id,
            Duration::from_millis(5),
            Duration::from_secs(60),
        )
        .await?;
        let (t, is_launch) = run_api::launch_time(&run)
            .with_context(|| format!("run {id} has no start time: {run:?}"))?;
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

    // A burst: 16 POSTs in flight at all times, as fast as troupe answers.
    let burst = if ctx.quick { 100 } else { 1000 };
    let cpu_before = server.cpu_ms()?;
    let switches_before = server.context_switches()?;
    let machine_before = MachineCpu::read()?;
    let t_burst = Instant::now();
    let results: Vec<anyhow::Result<Sent>> = futures_util::stream::iter(0..burst)
        .map(|_| post(&server, &body))
        .buffer_unordered(16)
        .collect()
        .await;
    let accept_s = t_burst.elapsed().as_secs_f64();
    let b = Burst::collect(&server, results).await?;
    // Every run of the burst has ended (and its process was waited for).
    let cpu_after = server.cpu_ms()?;
    let switches_after = server.context_switches()?;
    let busy = machine_before.busy_until(&MachineCpu::read()?);
    let label = format!("{burst} queued");
    ctx.push(Metric::value(
        title,
        &format!("p50 ms, {label}"),
        percentile(&b.latency, 50.0).unwrap_or(f64::NAN),
    ));
    let accepted = burst as f64 / accept_s;
    ctx.push(
        Metric::value(
            title,
            &format!("p99 ms, {label}"),
            percentile(&b.latency, 99.0).unwrap_or(f64::NAN),
        )
        .target(Target::AtMost(20.0))
        .note(format!(
            "the machine's CPUs were {:.0} % busy: with 16 POSTs always in flight a POST \
             waits ≈ 16 / accepted/s ({:.1} ms) before it is even answered{}",
            busy * 100.0,
            16_000.0 / accepted,
            b.failures()
        )),
    );
    for (what, samples, how) in [
        ("POST answered", &b.answered, "request sent -> 201 received"),
        ("created -> claimed", &b.claimed, "created_at -> started_at"),
        ("claimed -> exec'd", &b.execd, "started_at -> launched_at"),
    ] {
        if let Some(s) = Summary::of(samples) {
            ctx.push(
                Metric::value(title, &format!("{what} p50 ms, {label}"), s.median)
                    .note(format!("p99 {:.1} ms; {how}", s.p99)),
            );
        }
    }
    ctx.push(
        Metric::value(title, "runs accepted/s", accepted)
            .note(format!("{burst} POSTs, 16 in flight")),
    );
    // The rate the burst was drained at: from the first POST sent to the last exec.
    if let (Some(first), Some(last)) = (b.first_sent, b.last_launch) {
        let seconds = ms_between(first, last) / 1000.0;
        ctx.push(
            Metric::value(title, "runs launched/s", b.latency.len() as f64 / seconds).note(
                format!(
                    "first POST -> last exec: {seconds:.2} s for {} runs",
                    b.latency.len()
                ),
            ),
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

    // The same number of runs at half the rate troupe just accepted them: what a POST waits
    // for when the machine is not saturated.
    let rate = (accepted / 2.0).clamp(10.0, 5_000.0);
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let posts = (0..burst).map(|i| {
        let (server, body) = (&server, &body);
        async move {
            tokio::time::sleep_until(start + period * i).await;
            post(server, body).await
        }
    });
    let paced = Burst::collect(&server, futures_util::future::join_all(posts).await).await?;
    let paced_label = format!("{burst} paced");
    ctx.push(Metric::value(
        title,
        &format!("p50 ms, {paced_label}"),
        percentile(&paced.latency, 50.0).unwrap_or(f64::NAN),
    ));
    ctx.push(
        Metric::value(
            title,
            &format!("p99 ms, {paced_label}"),
            percentile(&paced.latency, 99.0).unwrap_or(f64::NAN),
        )
        .note(format!(
            "one POST every {:.2} ms ({rate:.0}/s, half the accepted rate above), each sent \
             at its time whatever the others wait for{}",
            1000.0 / rate,
            paced.failures()
        )),
    );
    ctx.details.insert(
        "launch".into(),
        json!({"exact_launched_at": exact, "single_ms": lat, "burst_ms": b.latency,
            "burst_answered_ms": b.answered, "burst_claimed_ms": b.claimed, "burst_execd_ms": b.execd,
            "burst": burst, "accept_seconds": accept_s, "machine_busy": busy,
            "paced_per_s": rate, "paced_ms": paced.latency,
            "cpu_ms_before": [cpu_before.own, cpu_before.children],
            "cpu_ms_after": [cpu_after.own, cpu_after.children],
            "context_switches": switches}),
    );
    server.stop()?;
    Ok(())
}

async fn post(server: &Server, body: &serde_json::Value) -> anyhow::Result<Sent> {
    let t0 = Utc::now();
    let id = server.launch(body).await?;
    Ok((id, t0, Utc::now()))
}

/// What the runs of a burst went through, from their records once all have finished.
#[derive(Default)]
struct Burst {
    /// POST sent -> exec'd, ms.
    latency: Vec<f64>,
    /// POST sent -> answered, ms.
    answered: Vec<f64>,
    /// `created_at` -> `started_at`, ms.
    claimed: Vec<f64>,
    /// `started_at` -> `launched_at`, ms.
    execd: Vec<f64>,
    not_ok: usize,
    first_sent: Option<chrono::DateTime<Utc>>,
    last_launch: Option<chrono::DateTime<Utc>>,
}

impl Burst {
    async fn collect(server: &Server, sent: Vec<anyhow::Result<Sent>>) -> anyhow::Result<Burst> {
        let mut b = Burst::default();
        for s in sent {
            let (id, t0, t_answer) = s?;
            let run = run_api::wait_finished(
                server,
                id,
                Duration::from_millis(20),
                Duration::from_secs(300),
            )
            .await?;
            if run.status != RunStatus::Successful {
                b.not_ok += 1;
            }
            if let Some((t, _)) = run_api::launch_time(&run) {
                b.latency.push(ms_between(t0, t));
                b.last_launch = b.last_launch.max(Some(t));
            }
            b.first_sent = Some(b.first_sent.map_or(t0, |f| f.min(t0)));
            b.answered.push(ms_between(t0, t_answer));
            if let (Some(started), Some(launched)) = (run.started_at, run.launched_at) {
                b.claimed.push(ms_between(run.created_at, started));
                b.execd.push(ms_between(started, launched));
            }
        }
        if b.latency.is_empty() {
            bail!("no run of the burst reported a start time");
        }
        Ok(b)
    }

    /// "; N runs did not succeed", or nothing.
    fn failures(&self) -> String {
        if self.not_ok > 0 {
            format!("; {} runs did not succeed", self.not_ok)
        } else {
            String::new()
        }
    }
}

/// The machine's CPU time counters (`/proc/stat`, all CPUs), in ticks.
struct MachineCpu {
    total: u64,
    idle: u64,
}

impl MachineCpu {
    fn read() -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        // cpu user nice system idle iowait irq softirq steal ...
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("parsing /proc/stat")?;
        Ok(MachineCpu {
            total: ticks.iter().sum(),
            idle: ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0),
        })
    }

    /// The share of CPU time that was not idle from `self` to `later`.
    fn busy_until(&self, later: &MachineCpu) -> f64 {
        let total = later.total.saturating_sub(self.total);
        let idle = later.idle.saturating_sub(self.idle);
        if total == 0 {
            return f64::NAN;
        }
        1.0 - idle as f64 / total as f64
    }
}
