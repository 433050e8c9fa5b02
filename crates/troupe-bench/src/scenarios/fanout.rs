//! 4: 100 WebSocket subscribers on a run emitting at a pace troupe can store (below the
//! sustained ingest rate of scenario 3, so the latency is fan-out, not an ingest backlog):
//! delivered fraction and created -> receipt latency.

use super::synthetic_server;
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::TOKEN;
use crate::stats::percentile;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    events: u64,
    out_of_order: u64,
    lagged: bool,
    ended: bool,
    latencies_ms: Vec<f64>,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "4 fanout";
    let subscribers = 100;
    let events: u64 = if ctx.quick { 2_000 } else { 20_000 };
    // Well under the ≈ 50–80k events/s SQLite ingest of scenario 3 on this machine, with 100
    // subscribers' clients sharing the same two cores.
    let rate: u64 = 10_000;
    let (server, pid) = synthetic_server(ctx, "fanout", 4).await?;
    // In a directory of this repetition's: a gate left open by the last one would not hold.
    let gate = ctx.dir("fanout-gate")?.join("open");
    let mut body = run_api::on_localhost(pid, "bench.yml");
    body.extra_vars = Some(json!({"bench_events": events, "bench_gate": gate, "bench_rate": rate}));
    let id = run_api::launch(&server, &body).await?;

    let url = format!("ws://{}/api/v1/runs/{id}/events/ws?after=0", server.addr);
    let mut conns = Vec::new();
    for _ in 0..subscribers {
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("Bearer {TOKEN}").parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .context("WebSocket connect")?;
        conns.push(ws);
    }
    let mut tasks = Vec::new();
    for ws in conns {
        tasks.push(tokio::spawn(subscriber(ws)));
    }
    // The server subscribes right after the upgrade; give it a moment, then open the gate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&gate, b"go")?;

    let mut seen = Vec::new();
    for t in tasks {
        seen.push(tokio::time::timeout(Duration::from_secs(600), t).await??);
    }
    let run = run_api::wait_finished(
        &server,
        id,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await?;
    server.stop()?;
    if u64::try_from(run.event_count) != Ok(events) {
        bail!("run {id} stored {} events of {events}", run.event_count);
    }
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let lagged = seen.iter().filter(|s| s.lagged).count();
    let unended = seen.iter().filter(|s| !s.ended).count();
    let disorder: u64 = seen.iter().map(|s| s.out_of_order).sum();
    let all: Vec<f64> = seen.into_iter().flat_map(|s| s.latencies_ms).collect();
    let fraction = delivered as f64 / (events * subscribers) as f64 * 100.0;
    let mut note = format!("{subscribers} subscribers × {events} events at {rate} events/s");
    if lagged > 0 {
        note.push_str(&format!("; {lagged} got `lagged`"));
    }
    if unended > 0 {
        note.push_str(&format!("; {unended} saw no `end`"));
    }
    if disorder > 0 {
        note.push_str(&format!("; {disorder} out-of-order events"));
    }
    ctx.push(
        Metric::value(title, "delivered %", fraction)
            .target(Target::AtLeast(100.0))
            .note(note),
    );
    ctx.push(Metric::value(
        title,
        "latency p50 ms",
        percentile(&all, 50.0).unwrap_or(f64::NAN),
    ));
    ctx.push(
        Metric::value(
            title,
            "latency p99 ms",
            percentile(&all, 99.0).unwrap_or(f64::NAN),
        )
        .target(Target::AtMost(100.0))
        .note("event `created` (producer) -> received by the client"),
    );
    ctx.details.insert(
        "fanout".into(),
        json!({"subscribers": subscribers, "events": events, "delivered": delivered, "lagged": lagged,
               "p50_ms": percentile(&all, 50.0), "p90_ms": percentile(&all, 90.0),
               "p99_ms": percentile(&all, 99.0), "max_ms": percentile(&all, 100.0)}),
    );
    Ok(())
}

async fn subscriber(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Seen {
    let mut seen = Seen::default();
    let mut last = 0i64;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let now = chrono::Utc::now();
        let t = text.as_str();
        // Only the two fields needed, without parsing the whole event (the harness shares the
        // machine with troupe).
        if t.starts_with(r#"{"type":"event""#) || t.contains(r#""type":"event""#) {
            let counter = field(t, "\"counter\":").and_then(|c| {
                c.split(|ch: char| !ch.is_ascii_digit())
                    .next()?
                    .parse::<i64>()
                    .ok()
            });
            let Some(counter) = counter else { continue };
            if counter <= last {
                continue; // a duplicate would not count twice
            }
            if counter != last + 1 {
                seen.out_of_order += 1;
            }
            last = counter;
            seen.events += 1;
            if let Some(created) = field(t, "\"created\":\"")
                .and_then(|c| c.split('"').next())
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            {
                let us = (now - created.with_timezone(&chrono::Utc))
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                seen.latencies_ms.push(us as f64 / 1000.0);
            }
        } else if t.contains(r#""type":"end""#) {
            seen.ended = true;
            break;
        } else if t.contains(r#""type":"lagged""#) {
            seen.lagged = true;
            break;
        }
    }
    seen
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.find(key).map(|i| &text[i + key.len()..])
}
