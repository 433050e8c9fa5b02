//! 12: the web UI on a run of 5,000 events: headless Chromium opens the run page (driven by
//! `ui-tests/bench.mjs` with playwright-core); time from navigation to the page's first paint
//! and to the frame that shows the last event, and the longest task that blocked the page.
//! Reference, in the same run: the same SSE stream read to its end by node alone.

use super::synthetic_server;
use crate::ctx::Ctx;
use crate::report::Metric;
use crate::run_api;
use crate::server::TOKEN;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `bench.mjs` prints.
#[derive(Debug, Deserialize)]
struct PageTimes {
    first_paint_ms: f64,
    last_event_ms: f64,
    longest_task_ms: f64,
    stream_ms: f64,
}

fn ui_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui-tests")
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "12 ui";
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let tests = ui_tests();
    if !tests.join("node_modules/playwright-core").is_dir() || !Path::new(&chromium).exists() {
        ctx.push(Metric::skipped(
            title,
            "needs Chromium and `npm ci` in ui-tests/ (scripts/test and .ci/run install them)",
        ));
        return Ok(());
    }
    let events: u64 = if ctx.quick { 1_000 } else { 5_000 };
    let hosts: u64 = 50;
    let (server, pid) = synthetic_server(ctx, "ui", 2).await?;
    let mut body = run_api::on_localhost(pid, "bench.yml");
    body.extra_vars = Some(json!({"bench_events": events, "bench_hosts": hosts}));
    let id = run_api::launch(&server, &body).await?;
    let run = run_api::wait_finished(
        &server,
        id,
        Duration::from_millis(50),
        Duration::from_secs(120),
    )
    .await?;
    if u64::try_from(run.event_count) != Ok(events) {
        bail!("run {id} stored {} events of {events}", run.event_count);
    }

    let out = tokio::process::Command::new("node")
        .arg("bench.mjs")
        .current_dir(&tests)
        .env("TROUPE_URL", format!("http://{}", server.addr))
        .env("TROUPE_TOKEN", TOKEN)
        .env("RUN_ID", id.to_string())
        .env("EVENTS", events.to_string())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .context("running node ui-tests/bench.mjs")?;
    server.stop()?;
    if !out.status.success() {
        bail!(
            "ui-tests/bench.mjs failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().context("bench.mjs printed nothing")?;
    let t: PageTimes = serde_json::from_str(line).context("reading bench.mjs's answer")?;
    let tasks = (events - 3).div_ceil(hosts + 1);
    ctx.push(
        Metric::value(title, "first paint ms", t.first_paint_ms)
            .note("navigation -> the run page's first frame (app loaded, run fetched)"),
    );
    ctx.push(
        Metric::value(title, "last event shown ms", t.last_event_ms).note(format!(
            "{events} events, {hosts} hosts × {tasks} tasks, replayed from the store over SSE"
        )),
    );
    ctx.push(
        Metric::value(title, "longest blocked ms", t.longest_task_ms)
            .note("the longest task on the page's main thread meanwhile (longtask API)"),
    );
    ctx.push(
        Metric::value(title, "SSE stream read ms", t.stream_ms)
            .note("reference: the same stream read to its end by node, no DOM"),
    );
    ctx.push(
        Metric::value(title, "last event / stream", t.last_event_ms / t.stream_ms)
            .note("what the page adds over reading the stream"),
    );
    ctx.details.insert(
        "12 ui".to_owned(),
        json!({"events": events, "hosts": hosts, "first_paint_ms": t.first_paint_ms,
            "last_event_ms": t.last_event_ms, "longest_task_ms": t.longest_task_ms,
            "stream_ms": t.stream_ms}),
    );
    Ok(())
}
