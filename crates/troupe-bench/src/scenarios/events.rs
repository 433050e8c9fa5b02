//! 8: inbound events: webhook deliveries recorded per second (each answered only once its
//! record is stored), and the delivery latency. The events match a rule whose condition is
//! false, so the whole path runs (parse, rules, condition, one store transaction) but no
//! ansible-playbook does: this measures the event path, not process spawns.

use crate::ctx::Ctx;
use crate::report::Metric;
use crate::server::{Server, ServerOpts};
use crate::stats::percentile;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;
use troupe_wire::events::SourceView;

const RULES: &str = r#"
sources:
  bench: {type: webhook, rate: {per_second: 0}}
rules:
  - name: deploy
    routing_keys: ["deploy.*"]
    when: "payload.branch == 'main'"
    action: {project: bench, playbook: noop.yml}
"#;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "8 events (webhook)";
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("events-data")?,
        database_url: None,
        max_concurrent_runs: 4,
        ansible_playbook: Some(crate::producer::write_noop(ctx.tmp.path())?),
    })?;
    server.put_rules(RULES).await?;
    let total = if ctx.quick { 1_000 } else { 10_000 };
    let in_flight = 32;
    let body = json!({"branch": "feature", "commit": "0123456789abcdef", "author": "bench"});
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<f64>> = futures_util::stream::iter(0..total)
        .map(|i| {
            let server = &server;
            let body = &body;
            async move {
                let start = Instant::now();
                let (status, v) = server
                    .call(
                        reqwest::Method::POST,
                        &format!("/api/v1/hooks/bench/deploy.web{}", i % 8),
                        Some(body),
                    )
                    .await?;
                if status != 202 {
                    bail!("webhook -> {status}: {v}");
                }
                Ok(start.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(results.len());
    for r in results {
        lat.push(r?);
    }
    let sources: BTreeMap<String, SourceView> =
        serde_json::from_value(server.get("/api/v1/sources").await?)
            .context("the sources' states")?;
    let recorded = sources
        .get("bench")
        .map(|s| s.state.delivered)
        .context("delivered count")?;
    ctx.push(
        Metric::value(title, "events recorded/s", total as f64 / secs).note(format!(
            "{total} POSTs, {in_flight} in flight, SQLite; each answered after its record is stored"
        )),
    );
    ctx.push(Metric::value(
        title,
        "delivery p50 ms",
        percentile(&lat, 50.0).unwrap_or(f64::NAN),
    ));
    ctx.push(
        Metric::value(
            title,
            "delivery p99 ms",
            percentile(&lat, 99.0).unwrap_or(f64::NAN),
        )
        .note(format!("{recorded} of {total} recorded")),
    );
    ctx.details.insert(
        "events".into(),
        json!({"total": total, "seconds": secs, "recorded": recorded}),
    );
    server.stop()?;
    Ok(())
}
