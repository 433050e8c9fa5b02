//! Live streams: exact, gapless and resumable, whatever the timing.

use crate::helpers::*;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// 4 hosts x 500 loop items: more than 2,000 events.
const MANY: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: count
      ansible.builtin.debug:
        msg: "item {{ item }}"
      loop: "{{ range(0, 500) | list }}"
"#;

/// What one subscriber saw: event counters in order, and the end message.
#[derive(Debug, Default)]
struct Seen {
    counters: Vec<i64>,
    end: Option<Value>,
    lagged: Option<Value>,
}

async fn collect_ws(server: &Server, run: i64, after: i64) -> anyhow::Result<Seen> {
    let url = format!(
        "{}/api/v1/runs/{run}/events/ws?after={after}",
        server.base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut seen = Seen::default();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("event") => seen
                .counters
                .push(v["event"]["counter"].as_i64().unwrap_or(-1)),
            Some("end") => {
                seen.end = Some(v);
                break;
            }
            Some("lagged") => {
                seen.lagged = Some(v);
                break;
            }
            other => anyhow::bail!("unexpected message type {other:?}"),
        }
    }
    Ok(seen)
}

async fn collect_sse(
    server: &Server,
    run: i64,
    after: i64,
    token_in_query: Option<&str>,
) -> anyhow::Result<Seen> {
    let mut req = match token_in_query {
        Some(t) => server.http.get(server.url(&format!(
            "/api/v1/runs/{run}/events/sse?after={after}&access_token={t}"
        ))),
        None => server
            .http
            .get(server.url(&format!("/api/v1/runs/{run}/events/sse?after={after}")))
            .bearer_auth(TOKEN),
    };
    req = req.header("accept", "text/event-stream");
    let resp = req.send().await?;
    anyhow::ensure!(resp.status() == 200, "SSE answered {}", resp.status());
    let mut stream = resp.bytes_stream().eventsource();
    let mut seen = Seen::default();
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let v: Value = serde_json::from_str(&msg.data)?;
        match msg.event.as_str() {
            "event" => {
                let c = v["event"]["counter"].as_i64().unwrap_or(-1);
                assert_eq!(msg.id, c.to_string(), "SSE id is the counter");
                seen.counters.push(c);
            }
            "end" => {
                seen.end = Some(v);
                break;
            }
            "lagged" => {
                seen.lagged = Some(v);
                break;
            }
            other => anyhow::bail!("unexpected SSE event {other:?}"),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_subscribers_joining_at_random_moments_each_get_exactly_their_events()
-> anyhow::Result<()> {
    let server = std::sync::Arc::new(serve()?);
    let proj = project_dir(&[("many.yml", MANY)])?;
    let pid = server.project(proj.path()).await?;
    let run = server
        .launch(pid, "many.yml", &local_hosts(4), json!({}))
        .await?;

    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let server = std::sync::Arc::clone(&server);
        let delay_ms: u64 = rand::random_range(0..6000);
        let after: i64 = if i % 3 == 0 {
            0
        } else {
            rand::random_range(0..1500)
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let seen = if i % 2 == 0 {
                collect_ws(&server, run, after).await
            } else {
                collect_sse(&server, run, after, None).await
            };
            (i, after, delay_ms, seen)
        }));
    }
    let finished = server.wait_finished(run).await?;
    assert_eq!(finished["status"], "successful", "{finished}");
    let total = finished["event_count"].as_i64().unwrap_or(0);
    assert!(total >= 2000, "the run produced {total} events");
    for t in tasks {
        let (i, after, delay_ms, seen) = t.await?;
        let seen = seen?;
        assert!(
            seen.lagged.is_none(),
            "subscriber {i} lagged: {:?}",
            seen.lagged
        );
        let end = seen
            .end
            .ok_or_else(|| anyhow::anyhow!("subscriber {i} got no end message"))?;
        assert_eq!(end["status"], "successful");
        assert_eq!(end["last_counter"], total);
        let expected: Vec<i64> = ((after + 1)..=total).collect();
        assert!(
            seen.counters == expected,
            "subscriber {i} (after={after}, joined at {delay_ms} ms) got {} events, first {:?}, expected {}..={total}",
            seen.counters.len(),
            seen.counters.first(),
            after + 1
        );
    }
    Ok(())
}

/// Large events, to fill every buffer between the server and a client that stops reading.
const BIG: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: big
      ansible.builtin.debug:
        msg: "{{ 'x' * 30000 }} {{ item }}"
      loop: "{{ range(0, 300) | list }}"
"#;

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_with_a_cursor_and_resumes_to_the_full_set()
-> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        extra_env: vec![("TROUPE_STREAM_BUFFER_EVENTS".into(), "16".into())],
        ..Default::default()
    })?;
    let proj = project_dir(&[("big.yml", BIG)])?;
    let pid = server.project(proj.path()).await?;
    let run = server
        .launch(pid, "big.yml", &local_hosts(2), json!({}))
        .await?;
    server
        .wait_run(run, Duration::from_secs(60), |s| s == "running")
        .await?;

    // A WebSocket client with a tiny receive buffer that reads nothing for a while.
    let addr = server
        .base
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()?;
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let tcp = sock.connect(addr).await?;
    let url = format!("ws://{addr}/api/v1/runs/{run}/events/ws?after=0");
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    server.wait_finished(run).await?;

    let mut counters = Vec::new();
    let mut resume_after = None;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("event") => counters.push(v["event"]["counter"].as_i64().unwrap_or(-1)),
            Some("lagged") => {
                resume_after = v["resume_after"].as_i64();
                break;
            }
            Some("end") => anyhow::bail!(
                "the slow subscriber was never cut off ({} events)",
                counters.len()
            ),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let resume_after =
        resume_after.ok_or_else(|| anyhow::anyhow!("stream closed without a lagged message"))?;
    // The cut-off is counted where Prometheus sees it.
    let metrics = server.text("/metrics").await?;
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))?;
    let lagged = scrape
        .samples
        .iter()
        .find(|s| s.metric == "troupe_stream_lagged_disconnects_total")
        .map(|s| s.value.clone());
    assert!(
        matches!(lagged, Some(prometheus_parse::Value::Untyped(n) | prometheus_parse::Value::Counter(n)) if n >= 1.0),
        "troupe_stream_lagged_disconnects_total: {lagged:?}"
    );
    assert_eq!(
        counters.last().copied().unwrap_or(0),
        resume_after,
        "the cursor is the last event delivered"
    );
    let rest = collect_sse(&server, run, resume_after, None).await?;
    assert!(rest.end.is_some(), "resumed stream ended normally");
    counters.extend(rest.counters);
    let total = server.get(&format!("/api/v1/runs/{run}")).await?["event_count"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        counters,
        (1..=total).collect::<Vec<_>>(),
        "cut-off plus resume gives every event once"
    );
    Ok(())
}

#[tokio::test]
async fn stream_tokens_in_the_query_work_only_on_stream_routes() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "one.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    let run = server
        .launch(pid, "one.yml", &local_hosts(1), json!({}))
        .await?;
    server.wait_finished(run).await?;
    let issued = server.post("/api/v1/stream-tokens", &json!({})).await?;
    let token = issued["token"].as_str().unwrap_or_default().to_owned();
    let seen = collect_sse(&server, run, 0, Some(&token)).await?;
    assert!(seen.end.is_some() && !seen.counters.is_empty());
    // Not a general API token, and a made-up one is refused.
    let r = server
        .http
        .get(server.url(&format!("/api/v1/runs/{run}?access_token={token}")))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .get(server.url(&format!(
            "/api/v1/runs/{run}/events/sse?access_token=trp_forged"
        )))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    // SSE resumes from Last-Event-ID like a browser's EventSource.
    let resp = server
        .http
        .get(server.url(&format!("/api/v1/runs/{run}/events/sse")))
        .bearer_auth(TOKEN)
        .header("last-event-id", "2")
        .send()
        .await?;
    let mut stream = resp.bytes_stream().eventsource();
    let first = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("empty stream"))??;
    assert_eq!(first.id, "3");
    // A stream of a run that does not exist is a 404 before any upgrade.
    let (code, _) = server
        .call(reqwest::Method::GET, "/api/v1/runs/999/events/sse", None)
        .await?;
    assert_eq!(code, 404);
    Ok(())
}

#[tokio::test]
async fn the_changes_stream_reports_runs_matching_its_filter() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[(
        "one.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    )])?;
    let pid = server.project(proj.path()).await?;
    let resp = server
        .http
        .get(server.url("/api/v1/stream/sse?label=team=ops"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    let mut stream = resp.bytes_stream().eventsource();
    let other = server
        .launch(
            pid,
            "one.yml",
            &local_hosts(1),
            json!({"labels": {"team": "dev"}}),
        )
        .await?;
    let run = server
        .launch(
            pid,
            "one.yml",
            &local_hosts(1),
            json!({"labels": {"team": "ops"}}),
        )
        .await?;
    let mut kinds = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
        let msg = msg?;
        let v: Value = serde_json::from_str(&msg.data)?;
        assert_eq!(v["run_id"], run, "only the ops run: {v}");
        assert_ne!(v["run_id"], other);
        kinds.push(format!(
            "{}:{}",
            msg.event,
            v["status"].as_str().unwrap_or("")
        ));
        if msg.event == "status_changed" && v["status"] == "successful" {
            break;
        }
    }
    assert_eq!(
        kinds,
        vec![
            "run_created:",
            "status_changed:running",
            "summary_updated:",
            "status_changed:successful"
        ]
    );
    Ok(())
}

/// A TCP proxy whose connections can be cut, to drop a client's connection mid-stream.
struct Proxy {
    addr: std::net::SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let c2 = std::sync::Arc::clone(&conns);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut c) = c2.lock() {
                    c.push(task.abort_handle());
                }
            }
        });
        Ok(Proxy { addr, conns })
    }

    /// Drops every connection open now.
    fn cut(&self) -> usize {
        let Ok(mut c) = self.conns.lock() else {
            return 0;
        };
        let n = c.len();
        for h in c.drain(..) {
            h.abort();
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troupe_runs_follow_resumes_after_a_dropped_connection_with_exact_output()
-> anyhow::Result<()> {
    let server = serve()?;
    let play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: slowly\n      ansible.builtin.debug:\n        msg: \"step {{ item }}\"\n      loop: \"{{ range(0, 40) | list }}\"\n      loop_control:\n        pause: 0.15\n    - ansible.builtin.fail:\n        msg: end with a failure\n      when: inventory_hostname == 'h2'\n";
    let proj = project_dir(&[("slow.yml", play)])?;
    let pid = server.project(proj.path()).await?;
    let run = server
        .launch(pid, "slow.yml", &local_hosts(2), json!({}))
        .await?;
    let upstream = server.base.trim_start_matches("http://").parse()?;
    let proxy = Proxy::start(upstream).await?;

    let child = tokio::process::Command::new(troupe_bin())
        .args(["runs", "follow", &run.to_string()])
        .env("TROUPE_SERVER", format!("http://{}", proxy.addr))
        .env("TROUPE_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut cuts = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cuts += proxy.cut();
    }
    let out = child.wait_with_output().await?;
    assert!(cuts >= 2, "the follower's connection was cut {cuts} times");
    let printed = String::from_utf8(out.stdout)?;
    let stored = server.text(&format!("/api/v1/runs/{run}/stdout")).await?;
    assert_eq!(
        printed,
        stored,
        "output after reconnects equals the run's stdout\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "the exit code is ansible-playbook's"
    );
    Ok(())
}
