//! `GET /metrics`: scraped as Prometheus would, parsed with a Prometheus text-format parser,
//! and checked against the runs, events and streams this test made.

use crate::helpers::*;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

const FAIL: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.fail:
        msg: broken
"#;

const SLOW: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: started
    - ansible.builtin.command: sleep 120
"#;

/// One scrape, parsed.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn of(server: &Server) -> anyhow::Result<Scrape> {
        let resp = server
            .http
            .get(server.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "/metrics answered {}", resp.status());
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(kind.starts_with("text/plain"), "content type {kind}");
        let text = resp.text().await?;
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Ok(Scrape(prometheus_parse::Scrape::parse(lines)?))
    }

    /// The sample `metric` carrying `labels`.
    fn sample(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&prometheus_parse::Value> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| &s.value)
    }

    /// The value of a counter, gauge or untyped sample.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.sample(metric, labels)? {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        }
    }

    /// The number of observations of a histogram (its `+Inf` bucket).
    fn observations(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.sample(metric, labels)? {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        }
    }

    fn runs(&self, status: &str) -> Option<f64> {
        self.value("troupe_runs", &[("status", status)])
    }
}

#[tokio::test]
async fn metrics_count_the_runs_events_and_streams_made() -> anyhow::Result<()> {
    // One slot: a slow run holds it, so the next run waits queued.
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let proj = project_dir(&[("ok.yml", HELLO), ("fail.yml", FAIL), ("slow.yml", SLOW)])?;
    let project = server.project(proj.path()).await?;
    server
        .apply_rules("sources:\n  hook: {type: webhook}\n")
        .await?;

    // Nothing yet: every status is there, at 0.
    let s = Scrape::of(&server).await?;
    for status in [
        "queued",
        "running",
        "successful",
        "failed",
        "canceled",
        "timeout",
        "error",
    ] {
        assert_eq!(s.runs(status), Some(0.0), "troupe_runs{{status={status}}}");
    }
    assert_eq!(
        s.value("troupe_processes", &[("kind", "ansible")]),
        Some(0.0)
    );
    assert_eq!(
        s.value(
            "troupe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    let ok = server
        .launch(project, "ok.yml", &local_hosts(2), json!({}))
        .await?;
    assert_eq!(server.wait_finished(ok).await?["status"], "successful");
    let failed = server
        .launch(project, "fail.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(server.wait_finished(failed).await?["status"], "failed");

    // A run in flight, one queued behind it, and a live stream following the first.
    let slow = server
        .launch(project, "slow.yml", &local_hosts(1), json!({}))
        .await?;
    let mut follow = server
        .http
        .get(server.url(&format!("/api/v1/runs/{slow}/events/sse")))
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await?
        .bytes_stream()
        .eventsource();
    // The first event is there once ansible is running (its process is alive).
    let first = tokio::time::timeout(Duration::from_secs(60), follow.next()).await?;
    anyhow::ensure!(
        first.as_ref().is_some_and(|e| e.is_ok()),
        "no first event: {first:?}"
    );
    let queued = server
        .launch(project, "ok.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(
        server.get(&format!("/api/v1/runs/{queued}")).await?["status"],
        "queued"
    );
    let s = Scrape::of(&server).await?;
    assert_eq!(s.runs("running"), Some(1.0));
    assert_eq!(s.runs("queued"), Some(1.0));
    assert_eq!(s.value("troupe_runs_queued", &[]), Some(1.0));
    assert_eq!(s.runs("successful"), Some(1.0));
    assert_eq!(s.runs("failed"), Some(1.0));
    assert_eq!(
        s.value("troupe_processes", &[("kind", "ansible")]),
        Some(1.0),
        "the slow run's ansible-playbook"
    );
    assert_eq!(s.value("troupe_stream_subscribers", &[]), Some(1.0));

    // Canceled: the slow run; then the queued one gets the slot and ends.
    server
        .post(
            &format!("/api/v1/runs/{slow}/cancel"),
            &json!({"mode": "force"}),
        )
        .await?;
    assert_eq!(server.wait_finished(slow).await?["status"], "canceled");
    assert_eq!(server.wait_finished(queued).await?["status"], "successful");
    drop(follow);

    // Events from a source: one recorded, one whose payload is not JSON (recorded rejected).
    let hook = |body: &'static str| {
        server
            .http
            .post(server.url("/api/v1/hooks/hook/metrics.test"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert!(hook(r#"{"n": 1}"#).await?.status().is_success());
    assert!(hook(r#"{"n": "#).await?.status().is_success());

    let runs = [ok, failed, slow, queued];
    let mut stored = 0;
    for id in runs {
        stored += server.get(&format!("/api/v1/runs/{id}")).await?["event_count"]
            .as_i64()
            .unwrap_or(-1);
    }
    assert!(stored > 0);
    // The stream's end is noticed when its connection closes.
    wait_until("the stream to close", Duration::from_secs(10), || async {
        Ok(Scrape::of(&server)
            .await?
            .value("troupe_stream_subscribers", &[])
            == Some(0.0))
    })
    .await?;
    let s = Scrape::of(&server).await?;
    assert_eq!(s.runs("successful"), Some(2.0));
    assert_eq!(s.runs("failed"), Some(1.0));
    assert_eq!(s.runs("canceled"), Some(1.0));
    assert_eq!(s.runs("queued"), Some(0.0));
    assert_eq!(s.runs("running"), Some(0.0));
    for (status, n) in [("successful", 2.0), ("failed", 1.0), ("canceled", 1.0)] {
        assert_eq!(
            s.value("troupe_runs_finished_total", &[("status", status)]),
            Some(n),
            "{status}"
        );
    }
    assert_eq!(
        s.value("troupe_events_stored_total", &[]),
        Some(stored as f64),
        "every event of the four runs, as the runs count them"
    );
    assert_eq!(
        s.value("troupe_processes", &[("kind", "ansible")]),
        Some(0.0)
    );
    // Four runs were created, claimed and exec'd.
    assert_eq!(s.observations("troupe_run_launch_seconds", &[]), Some(4.0));
    assert_eq!(
        s.observations("troupe_run_queue_wait_seconds", &[]),
        Some(4.0)
    );
    assert_eq!(
        s.observations("troupe_store_operation_seconds", &[("op", "create_run")]),
        Some(4.0)
    );
    assert!(
        s.observations("troupe_store_operation_seconds", &[("op", "event_batch")])
            .is_some_and(|n| n >= 4.0)
    );
    assert!(
        s.observations("troupe_store_operation_seconds", &[("op", "claim")])
            .is_some_and(|n| n >= 4.0)
    );
    assert_eq!(
        s.value("troupe_source_deliveries_total", &[("source", "hook")]),
        Some(1.0)
    );
    assert_eq!(
        s.value("troupe_source_errors_total", &[("source", "hook")]),
        Some(1.0)
    );
    assert_eq!(
        s.value("troupe_stream_lagged_disconnects_total", &[]),
        Some(0.0)
    );

    // Like every route but health: a token is needed, any reading role will do.
    let anon = server.http.get(server.url("/metrics")).send().await?;
    assert_eq!(anon.status().as_u16(), 401);
    let body: serde_json::Value = anon.json().await?;
    assert!(body["error"]["message"].is_string(), "{body}");
    let viewer = server
        .post(
            "/api/v1/tokens",
            &json!({"name": "scraper", "role": "viewer"}),
        )
        .await?;
    let viewer = viewer["token"].as_str().unwrap_or_default();
    let scraped = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(viewer)
        .send()
        .await?;
    assert_eq!(scraped.status().as_u16(), 200);
    Ok(())
}
