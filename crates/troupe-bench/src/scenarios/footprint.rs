//! 6: RSS of the troupe process idle and with 50 runs in flight.

use super::synthetic_server;
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::run_api;
use anyhow::bail;
use serde_json::json;
use std::time::{Duration, Instant};
use troupe_wire::runs::RunStatus;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "6 footprint";
    let runs = 50;
    let events_each = 1000u64;
    let (server, pid) = synthetic_server(ctx, "footprint", 64).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = server.rss_kib()?;
    // In a directory of this repetition's: a release left by the last one would not hold.
    let hold = ctx.dir("footprint-hold")?.join("release");
    let mut ids = Vec::new();
    for _ in 0..runs {
        let mut body = run_api::on_localhost(pid, "bench.yml");
        body.extra_vars = Some(json!({"bench_events": events_each, "bench_hold": hold}));
        ids.push(run_api::launch(&server, &body).await?);
    }
    // Wait until every run is running and has stored all its events.
    let start = Instant::now();
    loop {
        let mut ready = 0;
        for id in &ids {
            let r = run_api::get(&server, *id).await?;
            if r.status == RunStatus::Running && u64::try_from(r.event_count) == Ok(events_each) {
                ready += 1;
            }
        }
        if ready == runs {
            break;
        }
        if start.elapsed() > Duration::from_secs(180) {
            std::fs::write(&hold, b"go")?;
            bail!("only {ready} of {runs} runs were in flight with their events after 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (busy, _) = server.rss_kib()?;
    std::fs::write(&hold, b"go")?;
    for id in &ids {
        server
            .wait_finished(*id, Duration::from_millis(50), Duration::from_secs(120))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, hwm) = server.rss_kib()?;
    server.stop()?;
    let mib = |k: u64| k as f64 / 1024.0;
    ctx.push(Metric::value(title, "RSS idle MiB", mib(idle)).target(Target::AtMost(30.0)));
    ctx.push(
        Metric::value(title, "RSS, 50 runs in flight MiB", mib(busy))
            .target(Target::AtMost(150.0))
            .note(format!(
                "{runs} synthetic runs, {events_each} events each, held open"
            )),
    );
    ctx.push(
        Metric::value(title, "RSS after they finished MiB", mib(after))
            .note(format!("peak (VmHWM) {:.1} MiB", mib(hwm))),
    );
    ctx.details.insert(
        "footprint".into(),
        json!({"idle_kib": idle, "busy_kib": busy, "after_kib": after, "hwm_kib": hwm}),
    );
    Ok(())
}
