//! Limits with clear answers: oversize bodies get a JSON 413 naming the limit on every route
//! (the worker protocol with its own, larger limit), webhook sources a rate (429 with
//! `Retry-After`, the event not stored), tokens a number of live streams (429 before the
//! stream starts, freed when one closes), and an event too big to keep whole is kept cut,
//! visibly, without breaking its run, from the embedded pool and from a remote worker alike.

use crate::helpers::*;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite;
use troupe_testkit::RemoteWorker;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A token of `role` issued through the API.
async fn token(server: &Server, name: &str, role: &str) -> anyhow::Result<String> {
    let t = server
        .post("/api/v1/tokens", &json!({"name": name, "role": role}))
        .await?;
    t["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

/// Sends `body` with `method` to `path` with `token`; chunked (no `Content-Length`) when
/// `chunked`. Returns the status, the content type and the body as JSON (or a string).
async fn send(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
    chunked: bool,
) -> anyhow::Result<(u16, String, Value)> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())?;
    let body = if chunked {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(1024).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    } else {
        reqwest::Body::from(body)
    };
    let resp = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await?;
    Ok((
        status,
        ctype,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A JSON body of about `n` bytes.
fn body_of(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"name": "x".repeat(n)})).unwrap_or_default()
}

fn assert_413(what: &str, status: u16, ctype: &str, v: &Value, setting: &str) {
    assert_eq!(status, 413, "{what}: {v}");
    assert!(ctype.starts_with("application/json"), "{what}: {ctype}");
    assert_eq!(v["error"]["code"], "body_too_large", "{what}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(setting), "{what}: {msg}");
}

#[tokio::test]
async fn every_route_answers_an_oversize_body_with_a_json_413() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        extra_env: env(&[
            ("TROUPE_MAX_BODY_BYTES", "4096"),
            ("TROUPE_MAX_EVENT_BYTES", "65536"),
            ("TROUPE_MAX_WORKER_BODY_BYTES", "262144"),
        ]),
        ..ServerOpts::default()
    })?;
    server
        .apply_rules("sources:\n  hook: {type: webhook, max_body_bytes: 100000}\n")
        .await?;
    let worker = token(&server, "w", "worker").await?;
    let doc = server.get("/api/v1/openapi.json").await?;
    let paths = doc["paths"].as_object().context("paths")?;
    let mut checked = 0;
    for (pattern, ops) in paths {
        for method in ["post", "put"] {
            if ops.get(method).is_none() {
                continue;
            }
            let path = pattern
                .replace("{id}", "1")
                .replace("{source}", "hook")
                .replace("{routing_key}", "a.b")
                .replace("{name}", "f")
                .replace("{unit}", "u")
                .replace("{step}", "s");
            assert!(
                !path.contains('{'),
                "a parameter this test does not fill: {path}"
            );
            let is_worker = pattern.starts_with("/api/v1/worker/");
            let tok = if is_worker { worker.as_str() } else { TOKEN };
            let (limit, setting) = if is_worker {
                (262_144, "max_worker_body_bytes")
            } else {
                (4096, "max_body_bytes")
            };
            let what = format!("{method} {path}");
            // Said up front: refused before anything is read.
            let (s, ctype, v) =
                send(&server, method, &path, tok, body_of(limit + 10), false).await?;
            assert_413(&what, s, &ctype, &v, setting);
            // Under the limit: whatever the route says, it is not 413 (and is JSON).
            let (s, ctype, v) = send(&server, method, &path, tok, body_of(1000), false).await?;
            assert_ne!(s, 413, "{what}: {v}");
            assert!(
                ctype.starts_with("application/json") || s < 300,
                "{what}: {s} {v}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} routes take a body");

    // Not said up front (chunked): found out while the route reads it, whatever reads it
    // (a JSON body, an optional one, raw bytes; the worker protocol's own limit).
    for (method, path, tok, limit, setting) in [
        ("post", "/api/v1/runs", TOKEN, 4096, "max_body_bytes"),
        (
            "post",
            "/api/v1/runs/1/cancel",
            TOKEN,
            4096,
            "max_body_bytes",
        ),
        ("put", "/api/v1/rules", TOKEN, 4096, "max_body_bytes"),
        (
            "post",
            "/api/v1/hooks/hook/a.b",
            TOKEN,
            4096,
            "max_body_bytes",
        ),
        (
            "post",
            "/api/v1/hooks/hook/a.b",
            "not-a-token",
            4096,
            "max_body_bytes",
        ),
        (
            "post",
            "/api/v1/worker/runs/1/batches",
            worker.as_str(),
            262_144,
            "max_worker_body_bytes",
        ),
    ] {
        let (s, ctype, v) = send(&server, method, path, tok, body_of(limit + 10), true).await?;
        assert_413(&format!("{method} {path} chunked"), s, &ctype, &v, setting);
    }

    // A worker batch over the API's limit but under the worker protocol's goes through to
    // the handler (there is no run 1: 404).
    let (s, _, v) = send(
        &server,
        "post",
        "/api/v1/worker/runs/1/batches",
        &worker,
        serde_json::to_vec(&json!({"worker_id": "n-1", "events": [], "output": [
            {"stream": "stdout", "seq": 1, "text": "y".repeat(100_000)}]}))?,
        false,
    )
    .await?;
    assert_eq!(s, 404, "{v}");

    // A webhook body over its source's own limit (under the server's) names the source's.
    let rules = "sources:\n  small: {type: webhook, max_body_bytes: 100}\n";
    server.apply_rules(rules).await?;
    let (s, _, v) = send(
        &server,
        "post",
        "/api/v1/hooks/small/a.b",
        TOKEN,
        body_of(1000),
        false,
    )
    .await?;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    assert!(server.event_records("source=small").await?.is_empty());
    Ok(())
}

/// POSTs `n` events to `path` at once with the API token; (accepted, refused) and every
/// refusal checked.
async fn burst(server: &Server, path: &str, n: usize) -> anyhow::Result<(usize, usize)> {
    let sends = (0..n).map(|i| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(TOKEN)
            .json(&json!({"i": i}))
            .send()
    });
    let mut accepted = 0;
    let mut refused = 0;
    for resp in futures_util::future::join_all(sends).await {
        let resp = resp?;
        match resp.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let retry: u64 = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .context("429 without Retry-After")?;
                assert!(retry >= 1);
                let v: Value = resp.json().await?;
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(msg.contains("not stored"), "{msg}");
                refused += 1;
            }
            other => anyhow::bail!("{path}: unexpected {other}: {}", resp.text().await?),
        }
    }
    Ok((accepted, refused))
}

#[tokio::test]
async fn webhook_sources_are_rate_limited_and_refused_events_are_not_stored() -> anyhow::Result<()>
{
    let server = serve_with(ServerOpts {
        extra_env: env(&[
            ("TROUPE_WEBHOOK_RATE_PER_SECOND", "0.5"),
            ("TROUPE_WEBHOOK_RATE_BURST", "4"),
        ]),
        ..ServerOpts::default()
    })?;
    let rules = r#"
sources:
  slow: {type: webhook, rate: {per_second: 0.2, burst: 3}}
  dflt: {type: webhook}
  free: {type: webhook, rate: {per_second: 0}}
"#;
    server.apply_rules(rules).await?;

    // Far more than the rate allows in the time the burst takes.
    let (accepted, refused) = burst(&server, "/api/v1/hooks/slow/k", 40).await?;
    assert!(accepted >= 3, "the burst is accepted: {accepted}");
    assert!(
        refused > 0 && accepted + refused == 40,
        "{accepted} + {refused}"
    );
    assert_eq!(server.event_records("source=slow").await?.len(), accepted);

    // The server's default applies to a source that sets none; per source.
    let (accepted, refused) = burst(&server, "/api/v1/hooks/dflt/k", 40).await?;
    assert!(accepted >= 4 && refused > 0, "{accepted} + {refused}");
    assert_eq!(server.event_records("source=dflt").await?.len(), accepted);

    // `per_second: 0` is no limit.
    let (accepted, refused) = burst(&server, "/api/v1/hooks/free/k", 40).await?;
    assert_eq!((accepted, refused), (40, 0));
    assert_eq!(server.event_records("source=free").await?.len(), 40);

    // A rate that makes no sense is refused with the rules.
    let (s, v) = server
        .put_rules("sources:\n  bad: {type: webhook, rate: {per_second: -1}}\n")
        .await?;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("rate"), "{v}");
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the changes stream over WebSocket with `token` (a bearer, or a stream token in the
/// query); the refusal's status and JSON body when it is refused.
async fn open_ws(
    server: &Server,
    token: &str,
    bearer: bool,
) -> anyhow::Result<Result<Ws, (u16, Value)>> {
    let mut url = format!(
        "{}/api/v1/stream/ws",
        server.base.replace("http://", "ws://")
    );
    if !bearer {
        url.push_str(&format!("?access_token={token}"));
    }
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url)?;
    if bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().clone().unwrap_or_default();
            Ok(Err((
                status,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the changes stream as SSE with `token`; the response (its body not read).
async fn open_sse(server: &Server, token: &str) -> anyhow::Result<reqwest::Response> {
    Ok(server
        .http
        .get(server.url("/api/v1/stream/sse"))
        .bearer_auth(token)
        .send()
        .await?)
}

fn assert_429(what: &str, refused: Result<Ws, (u16, Value)>) {
    match refused {
        Ok(_) => panic!("{what}: the stream was accepted"),
        Err((status, v)) => {
            assert_eq!(status, 429, "{what}: {v}");
            assert_eq!(v["error"]["code"], "too_many_streams", "{what}: {v}");
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains("max_streams_per_token"), "{what}: {msg}");
        }
    }
}

#[tokio::test]
async fn a_token_may_have_so_many_live_streams_open() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        extra_env: env(&[("TROUPE_MAX_STREAMS_PER_TOKEN", "3")]),
        ..ServerOpts::default()
    })?;
    let mut first = open_ws(&server, TOKEN, true)
        .await?
        .map_err(|(s, v)| anyhow::anyhow!("{s} {v}"))?;
    let _second = open_ws(&server, TOKEN, true)
        .await?
        .map_err(|(s, v)| anyhow::anyhow!("{s} {v}"))?;
    let third = open_sse(&server, TOKEN).await?;
    assert_eq!(third.status().as_u16(), 200);

    // The next one, of either kind, is refused before it starts.
    assert_429("a fourth WebSocket", open_ws(&server, TOKEN, true).await?);
    let sse = open_sse(&server, TOKEN).await?;
    assert_eq!(sse.status().as_u16(), 429);
    let v: Value = sse.json().await?;
    assert_eq!(v["error"]["code"], "too_many_streams", "{v}");
    // A stream token counts among the streams of the token that issued it.
    let st = server.post("/api/v1/stream-tokens", &json!({})).await?;
    let st = st["token"].as_str().context("stream token")?;
    assert_429("a stream token's", open_ws(&server, st, false).await?);
    // Another token has its own count.
    let viewer = token(&server, "v", "viewer").await?;
    let other = open_ws(&server, &viewer, true).await?;
    assert!(other.is_ok(), "another token's stream");

    // Once one closes, another is accepted.
    first.send(tungstenite::Message::Close(None)).await?;
    while first.next().await.is_some() {}
    drop(first);
    // The server sees the close a moment later: try until it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let _again = loop {
        match open_ws(&server, TOKEN, true).await? {
            Ok(ws) => break ws,
            Err((429, _)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((s, v)) => anyhow::bail!("no stream accepted after one closed: {s} {v}"),
        }
    };
    assert_429("a fourth again", open_ws(&server, TOKEN, true).await?);
    drop(third);
    Ok(())
}

const HUGE: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: huge
      ansible.builtin.debug:
        msg: "{{ 'x' * 3000000 }}"
    - name: after
      ansible.builtin.debug:
        msg: still running
"#;

/// Checks a finished run of [`HUGE`]: successful, the huge event kept, cut and marked,
/// within `max` bytes; nothing lost around it.
async fn assert_huge_event_cut(server: &Server, id: i64, max: usize) -> anyhow::Result<()> {
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let events = server.events(id).await?;
    let counters: Vec<i64> = events
        .iter()
        .filter_map(|e| e["counter"].as_i64())
        .collect();
    assert_eq!(
        counters,
        (1..=counters.len() as i64).collect::<Vec<_>>(),
        "every event, no gap"
    );
    let huge = events
        .iter()
        .find(|e| e["event"] == "runner_on_ok" && e["event_data"]["task"] == "huge")
        .context("the huge task's event")?;
    let data = &huge["event_data"];
    assert_eq!(data["_troupe_truncated"], true, "{data}");
    assert!(
        data["_troupe_original_bytes"].as_u64() > Some(3_000_000),
        "{data}"
    );
    assert_eq!(data["res"]["_troupe_truncated"], true, "{data}");
    assert_eq!(data["host"], "h1");
    let stdout = huge["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("cut to fit max_event_bytes"), "marked");
    let stored = stdout.len() + serde_json::to_string(data)?.len();
    assert!(stored <= max, "the event takes {stored} bytes, over {max}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "runner_on_ok" && e["event_data"]["task"] == "after"),
        "the run went on"
    );
    // The run's own stdout keeps what ansible printed (up to max_output_bytes).
    let out = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert!(out.len() > 3_000_000, "stdout has {} bytes", out.len());
    Ok(())
}

#[tokio::test]
async fn an_event_too_big_is_kept_cut_and_marked() -> anyhow::Result<()> {
    let proj = named_project(&[("huge.yml", HUGE)])?;
    let server = serve_with(with_project(proj.path()))?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "huge.yml",
            "hosts": local_hosts(1)}),
        )
        .await?;
    assert_huge_event_cut(&server, id, 1024 * 1024).await
}

#[tokio::test]
async fn a_remote_workers_big_event_and_batch_reach_the_server_bounded() -> anyhow::Result<()> {
    let proj = named_project(&[("huge.yml", HUGE)])?;
    let server = serve_with(ServerOpts {
        extra_env: env(&[
            ("TROUPE_MAX_EVENT_BYTES", "262144"),
            ("TROUPE_MAX_WORKER_BODY_BYTES", "5242880"),
        ]),
        ..with_project(proj.path())
    })?;
    let wtoken = token(&server, "w", "worker").await?;
    let wdir = tempfile::tempdir()?;
    // The worker cuts events at the default 1 MiB; the server's bound (256 KiB) is what is
    // stored. The worker's batches (4 MB of event and output in all) go in parts under the
    // server's 5 MiB limit (a refused batch would leave a gap in the counters).
    let worker = RemoteWorker::start(
        Path::new(troupe_bin()),
        &format!("http://{}", server.addr),
        &wtoken,
        &["remote"],
        1,
        wdir.path(),
        &[],
    )?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "huge.yml",
            "hosts": local_hosts(1), "worker_labels": ["remote"]}),
        )
        .await?;
    let checked = assert_huge_event_cut(&server, id, 262_144).await;
    checked.with_context(|| format!("--- worker ---\n{}", worker.log()))
}
