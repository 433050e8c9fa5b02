//! Notifications end to end: templates, rules and flows telling a webhook or Slack (a receiver
//! this test starts) that a run or an execution ended; `on` filters; retries; restarts;
//! targets never shown.

use crate::helpers::*;
use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe_testkit::Api;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    /// Per path: how many more POSTs are answered 503.
    failures: HashMap<String, usize>,
}

/// A stand-in for webhooks and Slack: records every POST under `/any/path`, answering 503
/// while a path has failures left, 200 after.
#[derive(Clone, Default)]
struct Receiver {
    inner: Arc<Mutex<Inner>>,
    port: u16,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let r = Receiver {
            port: listener.local_addr()?.port(),
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(r)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn fail_next(&self, path: &str, n: usize) {
        if let Ok(mut i) = self.inner.lock() {
            i.failures.insert(format!("/{path}"), n);
        }
    }

    fn got(&self, path: &str) -> Vec<Got> {
        let path = format!("/{path}");
        self.inner
            .lock()
            .map(|i| i.got.iter().filter(|g| g.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

async fn receive(
    State(r): State<Receiver>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let path = format!("/{path}");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Ok(mut i) = r.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    i.got.push(Got {
        path: path.clone(),
        headers,
        body,
    });
    match i.failures.get_mut(&path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::OK,
    }
}

const OK_PLAY: &str =
    "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: fine}\n";
const FAIL_PLAY: &str =
    "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail: {msg: broken}\n";

/// A run's notifications once none is pending any more.
async fn settled(api: &Api, path: &str) -> anyhow::Result<Vec<Value>> {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = api.get(path).await?;
        let list = last["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.is_empty() && list.iter().all(|n| n["state"] != "pending") {
            return Ok(list);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{path} stayed pending: {last}")
}

/// Creates a template of `playbook` on inventory `local` with `notify`; its id.
async fn template(
    api: &Api,
    name: &str,
    pid: i64,
    playbook: &str,
    notify: Value,
) -> anyhow::Result<i64> {
    let t = api
        .post(
            "/api/v1/templates",
            &json!({"name": name, "project": pid, "playbook": playbook, "inventory": "local",
                    "notify": notify}),
        )
        .await?;
    t["id"].as_i64().with_context(|| format!("no id in {t}"))
}

async fn launch(api: &Api, tid: i64) -> anyhow::Result<Value> {
    let run = api
        .post(&format!("/api/v1/templates/{tid}/launch"), &json!({}))
        .await?;
    api.wait_finished(
        run["id"]
            .as_i64()
            .with_context(|| format!("no id in {run}"))?,
    )
    .await
}

#[tokio::test]
async fn a_template_run_tells_each_target_once_on_the_ends_it_asks_for() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let server = serve()?;
    let proj = named_project(&[("ok.yml", OK_PLAY), ("fail.yml", FAIL_PLAY)])?;
    let pid = server.project(proj.path()).await?;
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "local", "format": "ini", "hosts": local_hosts(1)}),
        )
        .await?;
    let notify = json!([
        {"webhook": rx.url("hook/all?token=s3cr3t-query"), "headers": {"X-Token": "t0ken-value"}},
        {"webhook": rx.url("hook/failed-only"), "on": ["failed"]},
        {"slack": rx.url("services/T0/B0/s3cr3t-slack"), "text": "{{ run.playbook }} {{ status }} ({{ link }})"},
        {"slack": rx.url("services/T0/B0/default"), "on": "success"},
    ]);
    let ok = template(&server, "ok-t", pid, "ok.yml", notify).await?;

    // Shown: scheme and host, header names; never the path, query or header values.
    let shown = server.get(&format!("/api/v1/templates/{ok}")).await?;
    let text = shown.to_string();
    for secret in ["s3cr3t", "t0ken-value", "services/T0"] {
        assert!(!text.contains(secret), "{secret} shown: {shown}");
    }
    let host = format!("http://127.0.0.1:{}", rx.port);
    assert_eq!(shown["notify"][0]["url"], host.as_str(), "{shown}");
    assert_eq!(shown["notify"][0]["kind"], "webhook");
    assert_eq!(shown["notify"][0]["headers"], json!(["X-Token"]));
    assert_eq!(shown["notify"][2]["kind"], "slack");
    assert_eq!(shown["notify"][1]["on"], json!(["failed"]));

    let run = launch(&server, ok).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let id = run["id"].as_i64().unwrap_or_default();
    let list = settled(&server, &format!("/api/v1/runs/{id}/notifications")).await?;
    let states: Vec<&str> = list
        .iter()
        .map(|n| n["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["sent", "skipped", "sent", "sent"], "{list:?}");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[1]["attempts"], 0);
    assert!(!json!(list).to_string().contains("s3cr3t"));

    let hook = rx.got("hook/all");
    assert_eq!(hook.len(), 1, "{hook:?}");
    let body = &hook[0].body;
    assert_eq!(hook[0].headers["x-token"], "t0ken-value");
    assert_eq!(body["kind"], "run");
    assert_eq!(body["status"], "successful");
    assert_eq!(body["link"], format!("/api/v1/runs/{id}"));
    assert_eq!(body["run"]["id"], id);
    assert_eq!(body["run"]["rc"], 0);
    assert_eq!(body["run"]["playbook"], "ok.yml");
    let project = server.get(&format!("/api/v1/projects/{pid}")).await?;
    assert_eq!(body["run"]["project"], project["name"]);
    assert_eq!(body["run"]["template"], "ok-t");
    assert_eq!(body["run"]["hosts"]["h1"]["ok"], 1, "{body}");
    assert_eq!(body["run"]["hosts"]["h1"]["failed"], 0, "{body}");
    assert!(body["run"]["finished_at"].is_string(), "{body}");
    assert!(rx.got("hook/failed-only").is_empty(), "not for a success");
    let slack = rx.got("services/T0/B0/s3cr3t-slack");
    assert_eq!(slack.len(), 1);
    assert_eq!(
        slack[0].body,
        json!({"text": format!("ok.yml successful (/api/v1/runs/{id})")})
    );
    let default = rx.got("services/T0/B0/default");
    let line = default[0].body["text"].as_str().unwrap_or_default();
    assert!(
        line.contains(&format!("run {id}")) && line.contains("successful") && line.contains("ok-t"),
        "{line}"
    );

    // A failed run: the `on: [failed]` target hears of it, with the run's rc.
    let fail = template(
        &server,
        "fail-t",
        pid,
        "fail.yml",
        json!([{"webhook": rx.url("hook/failed-only"), "on": ["failed"]},
               {"webhook": rx.url("hook/on-success"), "on": "success"}]),
    )
    .await?;
    let run = launch(&server, fail).await?;
    assert_eq!(run["status"], "failed", "{run}");
    let fid = run["id"].as_i64().unwrap_or_default();
    let list = settled(&server, &format!("/api/v1/runs/{fid}/notifications")).await?;
    assert_eq!(list[0]["state"], "sent", "{list:?}");
    assert_eq!(list[1]["state"], "skipped", "{list:?}");
    let failed = rx.got("hook/failed-only");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].body["status"], "failed");
    assert_eq!(failed[0].body["run"]["id"], fid);
    assert_eq!(failed[0].body["run"]["rc"], 2);
    assert_eq!(failed[0].body["run"]["hosts"]["h1"]["failed"], 1);
    assert!(rx.got("hook/on-success").is_empty());

    // Still once each, after the notifier has looked again a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.got("hook/all").len(), 1);
    assert_eq!(rx.got("hook/failed-only").len(), 1);

    // Bad targets: 422 naming the field; nothing is stored.
    for (notify, field) in [
        (json!([{"slack": "hooks.slack.com/x"}]), "notify[0].slack"),
        (
            json!([{"webhook": rx.url("a"), "slack": rx.url("b")}]),
            "notify[0]",
        ),
        (
            json!([{"webhook": rx.url("a"), "on": ["sometimes"]}]),
            "notify[0].on",
        ),
        (
            json!([{"slack": rx.url("a"), "headers": {"A": "b"}}]),
            "notify[0].headers",
        ),
        (json!([{"webhook": 3}]), ""),
    ] {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/templates",
                Some(&json!({"name": "bad", "project": pid, "playbook": "ok.yml",
                             "inventory": "local", "notify": notify})),
            )
            .await?;
        assert!((400..500).contains(&status), "{status} {body}");
        if !field.is_empty() {
            assert_eq!(status, 422, "{body}");
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    assert_eq!(
        server.get("/api/v1/templates").await?["templates"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/runs/99999/notifications",
            None,
        )
        .await?;
    assert_eq!(status, 404);
    assert!(
        !server.log().contains("s3cr3t"),
        "a secret URL reached the log"
    );
    Ok(())
}

#[tokio::test]
async fn a_rule_launched_run_notifies_and_the_rules_hide_the_target() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let proj = named_project(&[("ok.yml", OK_PLAY)])?;
    let server = serve_with(with_project(proj.path()))?;
    let rules = format!(
        r#"
sources:
  hook: {{type: webhook, token: "tok-1"}}
rules:
  - name: deploy
    routing_keys: [deploy]
    action:
      project: {project}
      playbook: ok.yml
      notify:
        - {{webhook: "{url}", headers: {{Authorization: "Bearer hdr-s3cr3t"}}}}
"#,
        project = project_name(proj.path()),
        url = rx.url("rule/s3cr3t-path")
    );
    let shown = server.apply_rules(&rules).await?;
    assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
    let resp = server
        .http
        .post(server.url("/api/v1/hooks/hook/deploy"))
        .bearer_auth("tok-1")
        .json(&json!({"n": 1}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    assert_eq!(status, 202, "{v}");
    let run_id = v["event"]["run_ids"][0].as_i64().context("run id")?;
    let run = server.wait_finished(run_id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let list = settled(&server, &format!("/api/v1/runs/{run_id}/notifications")).await?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "sent", "{list:?}");
    let got = rx.got("rule/s3cr3t-path");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].headers["authorization"], "Bearer hdr-s3cr3t");
    assert_eq!(got[0].body["run"]["id"], run_id);
    assert_eq!(got[0].body["run"]["labels"]["troupe/rule"], "deploy");
    assert_eq!(got[0].body["run"]["template"], Value::Null);

    // A bad target is refused with the rule's place.
    let (status, body) = server
        .put_rules(&rules.replace(&rx.url("rule/s3cr3t-path"), "ftp://x/y"))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("rules[0].action.notify[0].webhook"),
        "{body}"
    );
    assert!(!server.log().contains("s3cr3t"));
    Ok(())
}

#[tokio::test]
async fn a_flow_execution_end_posts_and_a_failing_receiver_gets_it_after_a_retry()
-> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.fail_next("flaky", 1);
    let server = serve()?;
    let flow = format!(
        r#"
name: breaks
inputs:
  hook: {{type: string, required: true, secret: true}}
steps:
  - id: fine
    log: "starting"
  - id: boom
    shell: {{command: "exit 4"}}
notify:
  - {{webhook: "{{{{ inputs.hook }}}}", on: [failed]}}
  - {{webhook: "{never}", on: success}}
"#,
        never = rx.url("never")
    );
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/flows",
            Some(&json!({"document": flow})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let started = server
        .post(
            "/api/v1/flows/breaks/executions",
            &json!({"inputs": {"hook": rx.url("flaky")}}),
        )
        .await?;
    let id = started["id"].as_i64().context("execution id")?;
    let list = settled(&server, &format!("/api/v1/executions/{id}/notifications")).await?;
    assert_eq!(list[0]["state"], "sent", "{list:?}\n{}", server.log());
    assert_eq!(list[0]["attempts"], 2, "a 503, then a success: {list:?}");
    assert!(
        list[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{list:?}"
    );
    assert_eq!(list[1]["state"], "skipped");
    // The secret input the URL was rendered from is not shown.
    assert!(!json!(list).to_string().contains("/flaky"), "{list:?}");
    let got = rx.got("flaky");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, got[1].body, "the retry sends the same");
    let body = &got[1].body;
    assert_eq!(body["kind"], "execution");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["link"], format!("/api/v1/executions/{id}"));
    assert_eq!(body["execution"]["id"], id);
    assert_eq!(body["execution"]["flow"], "breaks");
    assert_eq!(body["execution"]["failed_step"], "steps/boom");
    assert!(
        body["execution"]["error"]
            .as_str()
            .is_some_and(|e| e.contains('4')),
        "{body}"
    );
    assert!(rx.got("never").is_empty());
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/executions/99999/notifications",
            None,
        )
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_restart_sends_what_was_pending() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    // Down for longer than the first server lives: every attempt it makes fails.
    rx.fail_next("later", 1000);
    let data = tempfile::tempdir()?;
    let proj = named_project(&[("ok.yml", OK_PLAY)])?;
    let opts = || ServerOpts {
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    let pid = server.project(proj.path()).await?;
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "local", "format": "ini", "hosts": local_hosts(1)}),
        )
        .await?;
    let tid = template(
        &server,
        "later",
        pid,
        "ok.yml",
        json!([{"webhook": rx.url("later")}]),
    )
    .await?;
    let run = launch(&server, tid).await?;
    let id = run["id"].as_i64().unwrap_or_default();
    wait_until("a first attempt fails", Duration::from_secs(30), || async {
        Ok(!rx.got("later").is_empty())
    })
    .await?;
    server.terminate()?;
    let tried = rx.got("later").len();
    rx.fail_next("later", 0);
    let server = serve_with(opts())?;
    let list = settled(&server, &format!("/api/v1/runs/{id}/notifications")).await?;
    assert_eq!(list[0]["state"], "sent", "{list:?}\n{}", server.log());
    let got = rx.got("later");
    assert_eq!(got.len(), tried + 1, "{got:?}");
    assert_eq!(got[tried].body["run"]["id"], id);
    Ok(())
}
