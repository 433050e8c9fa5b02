//! Event-driven runs through the real binary: webhooks, rules, gates, concurrency policies,
//! the directory and timer sources, and `troupe loop`.

use crate::helpers::*;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Writes the vars a run sees to `<out_dir>/<routing key>-<tag>.json`.
const RECORD: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ troupe_event.routing_key }}-{{ tag | default('x') }}.json"
        content: "{{ {'msg': msg | default(none), 'n': n | default(none), 'payload': payload | default(none), 'static': static | default(none), 'rule': troupe_event.rule, 'source': troupe_event.source} | to_json }}"
"#;

const SLOW: &str =
    "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n";

fn event_project() -> anyhow::Result<Proj> {
    named_project(&[
        ("playbooks/deploy.web.yml", RECORD),
        ("playbooks/deploy.db.yml", RECORD),
        ("org/example/prod/foo.yml", RECORD),
        ("record.yml", RECORD),
        ("slow.yml", SLOW),
    ])
}

/// POSTs a webhook body with extra headers (no API token); (status, body).
pub(crate) async fn hook(
    server: &Server,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> anyhow::Result<(u16, Value)> {
    let mut req = server
        .http
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// `sha256=<hex>` HMAC of `body` under `key`, computed here with openssl-free Python so the
/// test does not share troupe's code.
pub(crate) fn github_signature(key: &str, body: &[u8]) -> anyhow::Result<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; k=sys.argv[1].encode(); b=sys.stdin.buffer.read(); print('sha256='+hmac.new(k,b,hashlib.sha256).hexdigest())",
            key,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut stdin) = c.stdin.take() {
                stdin.write_all(body)?;
            }
            c.wait_with_output()
        })?;
    anyhow::ensure!(out.status.success(), "python3 hmac failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
async fn webhook_runs_the_playbook_the_key_names_with_the_payload_as_vars() -> anyhow::Result<()> {
    let proj = event_project()?;
    let out = tempfile::tempdir()?;
    let server = serve_with(with_project(proj.path()))?;
    let rules = format!(
        r#"
sources:
  hook: {{type: webhook, secret: "hmac-key", max_body_bytes: 2048}}
  gh: {{type: webhook, token: "tok-123", routing_key: {{header: X-GitHub-Event}}}}
  ptr: {{type: webhook, token: "tok-456", routing_key: {{pointer: /kind}}}}
rules:
  - name: deploy
    routing_keys: ["deploy.*"]
    action:
      project: {project}
      playbooks_dir: playbooks
      vars: {{out_dir: "{out}", static: yes}}
"#,
        project = project_name(proj.path()),
        out = out.path().display()
    );
    let shown = server.apply_rules(&rules).await?;
    // Literal secrets are never shown back.
    assert!(!shown.to_string().contains("hmac-key"), "{shown}");
    assert!(!shown.to_string().contains("tok-123"), "{shown}");
    assert_eq!(shown["sources"]["hook"]["type"], "webhook");

    // A signed event: the routing key names playbooks/deploy.web.yml, the payload is vars.
    let body = br#"{"msg": "hello", "n": 3, "tag": "a"}"#;
    let sig = github_signature("hmac-key", body)?;
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/hook/deploy.web",
        body,
        &[("x-hub-signature-256", sig.clone())],
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["event"]["status"], "accepted", "{v}");
    assert_eq!(v["event"]["payload"]["msg"], "hello");
    let run_id = v["event"]["run_ids"][0].as_i64().context("run id")?;
    let run = server.wait_finished(run_id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["event_id"], v["event"]["id"]);
    assert_eq!(run["playbook"], "playbooks/deploy.web.yml");
    assert_eq!(run["labels"]["troupe/rule"], "deploy");
    let seen = read_json(&out.path().join("deploy.web-a.json"))?;
    assert_eq!(seen["msg"], "hello");
    assert_eq!(seen["n"], 3);
    assert_eq!(seen["static"], true);
    assert_eq!(seen["rule"], "deploy");
    assert_eq!(seen["source"], "hook");

    // Bad signature: 401, and nothing is recorded.
    let before = server.event_records("").await?.len();
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/hook/deploy.web",
        body,
        &[("x-hub-signature-256", "sha256=00".into())],
    )
    .await?;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    let (s, _) = hook(
        &server,
        "/api/v1/hooks/hook/deploy.web",
        br#"{"msg": "tampered", "n": 3, "tag": "a"}"#,
        &[("x-hub-signature-256", sig)],
    )
    .await?;
    assert_eq!(s, 401);
    let (s, _) = hook(&server, "/api/v1/hooks/hook/deploy.web", body, &[]).await?;
    assert_eq!(s, 401);
    assert_eq!(server.event_records("").await?.len(), before);

    // Oversize body: 413 with a JSON error.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(4096));
    let sig = github_signature("hmac-key", big.as_bytes())?;
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/hook/deploy.web",
        big.as_bytes(),
        &[("x-hub-signature-256", sig)],
    )
    .await?;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");

    // Unknown source: 404.
    let (s, _) = hook(&server, "/api/v1/hooks/nope/deploy.web", b"{}", &[]).await?;
    assert_eq!(s, 404);

    // A key outside the allow-list runs nothing and is recorded as unmatched.
    let body = br#"{"tag": "b"}"#;
    let sig = github_signature("hmac-key", body)?;
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/hook/backup.web",
        body,
        &[("x-hub-signature-256", sig)],
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["event"]["status"], "unmatched");
    assert_eq!(v["event"]["run_ids"], json!([]));
    assert!(
        v["event"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("backup.web"),
        "{v}"
    );
    let unmatched = server.event_records("status=unmatched").await?;
    assert_eq!(unmatched.len(), 1);
    assert_eq!(unmatched[0]["routing_key"], "backup.web");

    // Routing key from a header (token auth), with a sender's delivery id: a retry is a duplicate.
    let body = br#"{"tag": "gh"}"#;
    let headers = [
        ("x-troupe-token", "tok-123".to_owned()),
        ("x-github-event", "deploy.db".to_owned()),
        ("x-github-delivery", "d-1".to_owned()),
    ];
    let (s, v) = hook(&server, "/api/v1/hooks/gh", body, &headers).await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["event"]["routing_key"], "deploy.db");
    assert_eq!(v["duplicate"], false);
    let first = v["event"]["id"].clone();
    let (s, v) = hook(&server, "/api/v1/hooks/gh", body, &headers).await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["event"]["id"], first);
    assert_eq!(server.event_records("source=gh").await?.len(), 1);
    let run = server
        .wait_finished(v["event"]["run_ids"][0].as_i64().context("run")?)
        .await?;
    assert_eq!(run["status"], "successful");
    assert!(out.path().join("deploy.db-gh.json").exists());

    // Routing key from a JSON pointer; a token in Authorization works too.
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/ptr",
        br#"{"kind": "deploy.web", "tag": "ptr"}"#,
        &[("authorization", "Bearer tok-456".to_owned())],
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["event"]["routing_key"], "deploy.web");
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/ptr",
        br#"{"tag": "none"}"#,
        &[("x-troupe-token", "tok-456".to_owned())],
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "missing_routing_key");

    // A malformed payload is recorded as rejected, with the reason.
    let (s, v) = hook(
        &server,
        "/api/v1/hooks/gh",
        b"{not json",
        &[
            ("x-troupe-token", "tok-123".to_owned()),
            ("x-github-event", "deploy.web".to_owned()),
        ],
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["event"]["status"], "rejected");
    assert!(
        v["event"]["reason"].as_str().unwrap_or("").contains("JSON"),
        "{v}"
    );

    // The record is readable by id, and the list filters by routing key.
    let id = v["event"]["id"].as_i64().context("id")?;
    let rec = server.get(&format!("/api/v1/events/{id}")).await?;
    assert_eq!(rec["status"], "rejected");
    assert_eq!(rec["payload"], "{not json");
    let by_key = server.event_records("routing_key=deploy.web").await?;
    assert!(by_key.iter().all(|e| e["routing_key"] == "deploy.web"));
    assert_eq!(by_key.len(), 3, "{by_key:?}");
    let (s, v) = server
        .call(reqwest::Method::GET, "/api/v1/events?status=bogus", None)
        .await?;
    assert_eq!(s, 400, "{v}");
    let (s, _) = server
        .call(reqwest::Method::GET, "/api/v1/events/999999", None)
        .await?;
    assert_eq!(s, 404);
    let sources = server.get("/api/v1/sources").await?;
    assert_eq!(sources["gh"]["delivered"], 3, "{sources}");
    // The events API needs a token.
    let resp = server.http.get(server.url("/api/v1/events")).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    Ok(())
}

#[tokio::test]
async fn throttle_dedupe_and_concurrency_policies() -> anyhow::Result<()> {
    let proj = event_project()?;
    let out = tempfile::tempdir()?;
    let server = serve_with(with_project(proj.path()))?;
    let project = project_name(proj.path());
    let out = out.path().display();
    server
        .apply_rules(&format!(
            r#"
sources:
  hook: {{type: webhook}}
rules:
  - name: throttled
    routing_keys: throttle
    action: {{project: {project}, playbook: record.yml, vars: {{out_dir: "{out}"}}}}
    throttle: {{once_within: 1h, group_by: [payload.host]}}
  - name: deduped
    routing_keys: dedupe
    action: {{project: {project}, playbook: record.yml, vars: {{out_dir: "{out}"}}}}
    dedupe: {{key: payload.id, within: 1h}}
  - name: skipper
    routing_keys: skip
    action: {{project: {project}, playbook: slow.yml}}
    concurrency: skip
  - name: canceler
    routing_keys: cancel
    action: {{project: {project}, playbook: slow.yml}}
    concurrency: cancel
  - name: queuer
    routing_keys: queue
    action: {{project: {project}, playbook: slow.yml}}
"#
        ))
        .await?;
    let publish = |key: &'static str, body: Value| {
        let server = &server;
        async move {
            let (s, v) = server
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/hooks/hook/{key}"),
                    Some(&body),
                )
                .await?;
            anyhow::ensure!(s == 202, "{s}: {v}");
            Ok::<Value, anyhow::Error>(v["event"].clone())
        }
    };
    let rule_result = |e: &Value| e["rules"][0]["result"].as_str().unwrap_or("").to_owned();

    // throttle: one run per host per hour.
    let a1 = publish("throttle", json!({"host": "a", "tag": "a1"})).await?;
    let a2 = publish("throttle", json!({"host": "a", "tag": "a2"})).await?;
    let b1 = publish("throttle", json!({"host": "b", "tag": "b1"})).await?;
    assert_eq!(rule_result(&a1), "started", "{a1}");
    assert_eq!(rule_result(&a2), "gated", "{a2}");
    assert_eq!(a2["status"], "skipped");
    assert_eq!(a2["rules"][0]["gate"], "throttle");
    assert_eq!(a2["rules"][0]["by_event"], a1["id"]);
    assert_eq!(rule_result(&b1), "started", "{b1}");

    // dedupe: one run per id.
    let d1 = publish("dedupe", json!({"id": 7, "tag": "d1"})).await?;
    let d2 = publish("dedupe", json!({"id": 7, "tag": "d2"})).await?;
    let d3 = publish("dedupe", json!({"id": 8, "tag": "d3"})).await?;
    assert_eq!(rule_result(&d1), "started");
    assert_eq!(rule_result(&d2), "gated");
    assert_eq!(d2["rules"][0]["gate"], "dedupe");
    assert_eq!(rule_result(&d3), "started");
    // An event without the id cannot be deduplicated: the rule fails, visibly.
    let d4 = publish("dedupe", json!({"tag": "d4"})).await?;
    assert_eq!(d4["status"], "failed", "{d4}");
    assert!(
        d4["rules"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("payload.id")
    );

    // skip: the second event starts nothing while the first run is active.
    let s1 = publish("skip", json!({})).await?;
    let s1_run = s1["run_ids"][0].as_i64().context("run")?;
    let s2 = publish("skip", json!({})).await?;
    assert_eq!(rule_result(&s2), "skipped", "{s2}");
    assert_eq!(s2["rules"][0]["active_run"], s1_run);
    server
        .post(
            &format!("/api/v1/runs/{s1_run}/cancel"),
            &json!({"mode": "force"}),
        )
        .await?;
    server.wait_finished(s1_run).await?;
    let s3 = publish("skip", json!({})).await?;
    assert_eq!(rule_result(&s3), "started", "{s3}");

    // cancel: the newer event's run displaces the older one.
    let c1 = publish("cancel", json!({})).await?;
    let c1_run = c1["run_ids"][0].as_i64().context("run")?;
    server
        .wait_run(c1_run, Duration::from_secs(60), |s| s == "running")
        .await?;
    let c2 = publish("cancel", json!({})).await?;
    assert_eq!(rule_result(&c2), "started", "{c2}");
    assert_eq!(c2["rules"][0]["canceled"], json!([c1_run]));
    let old = server.wait_finished(c1_run).await?;
    assert_eq!(old["status"], "canceled", "{old}");

    // queue (the default): both run.
    let q1 = publish("queue", json!({})).await?;
    let q2 = publish("queue", json!({})).await?;
    assert_eq!(rule_result(&q1), "started");
    assert_eq!(rule_result(&q2), "started");

    // Clean up the slow runs.
    for e in [&s3, &c2, &q1, &q2] {
        let id = e["run_ids"][0].as_i64().context("run")?;
        let _ = server
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/runs/{id}/cancel"),
                Some(&json!({"mode": "force"})),
            )
            .await?;
    }
    for tag in ["a1", "b1", "d1", "d3"] {
        let file = out.to_string();
        let name = if tag.starts_with('d') {
            "dedupe"
        } else {
            "throttle"
        };
        wait_file(
            &Path::new(&file).join(format!("{name}-{tag}.json")),
            Duration::from_secs(60),
        )
        .await?;
    }
    for tag in ["a2", "d2"] {
        let name = if tag.starts_with('d') {
            "dedupe"
        } else {
            "throttle"
        };
        assert!(
            !Path::new(&out.to_string())
                .join(format!("{name}-{tag}.json"))
                .exists()
        );
    }
    Ok(())
}

#[tokio::test]
async fn rules_api_validates_and_guards_revisions() -> anyhow::Result<()> {
    let server = serve()?;
    let empty = server.get("/api/v1/rules").await?;
    assert_eq!(empty["revision"], 0);
    let (s, v) = server.put_rules("rules:\n  - name: a\n    routing_keys: [\"x..y\"]\n    when: \"payload.x ==\"\n    action: {playbook: a.yml}\n",
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_rules");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("rules[0].routing_keys[0]") && msg.contains("rules[0].when[0]"),
        "{msg}"
    );
    let (s, v) = server.put_rules("sources:\n  s: {type: kafka}\n").await?;
    assert_eq!(s, 422, "{v}");
    let (s, v) = server
        .put_rules("sources:\n  t: {type: timer, cron: \"* * *\", routing_key: k}\n")
        .await?;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cron"),
        "{v}"
    );

    let v = server
        .apply_rules("sources:\n  h: {type: webhook}\n")
        .await?;
    assert_eq!(v["revision"], 1);
    // A stale revision is refused; nothing changes.
    let resp = server
        .http
        .put(server.url("/api/v1/rules?revision=0"))
        .bearer_auth(TOKEN)
        .body("sources:\n  h2: {type: webhook}\n")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 409);
    let now = server.get("/api/v1/rules").await?;
    assert_eq!(now["revision"], 1);
    assert!(
        now["sources"].get("h").is_some() && now["sources"].get("h2").is_none(),
        "{now}"
    );
    let resp = server
        .http
        .put(server.url("/api/v1/rules"))
        .bearer_auth(TOKEN)
        .header("if-match", "1")
        .body("sources:\n  h2: {type: webhook}\n")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let now = server.get("/api/v1/rules").await?;
    assert_eq!(now["revision"], 2);
    assert_eq!(now["in_force_revision"], 2);
    assert!(now["sources"].get("h2").is_some(), "{now}");
    // Without a token: 401.
    let resp = server
        .http
        .put(server.url("/api/v1/rules"))
        .body("")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    Ok(())
}

#[tokio::test]
async fn directory_and_timer_sources_from_a_rules_file() -> anyhow::Result<()> {
    let proj = event_project()?;
    let out = tempfile::tempdir()?;
    let drop = tempfile::tempdir()?;
    let rules_dir = tempfile::tempdir()?;
    let rules_file = rules_dir.path().join("rules.yml");
    std::fs::write(
        &rules_file,
        format!(
            r#"
sources:
  inbox: {{type: directory, path: "{drop}", poll_ms: 100}}
  tick: {{type: timer, cron: "* * * * * *", routing_key: deploy.db, payload: {{msg: tick, tag: tick}}}}
rules:
  - name: dropped
    sources: inbox
    routing_keys: ["deploy.*"]
    action: {{project: {project}, playbooks_dir: playbooks, vars: {{out_dir: "{out}"}}}}
  - name: ticks
    sources: tick
    routing_keys: all
    action: {{project: {project}, playbooks_dir: playbooks, vars: {{out_dir: "{out}"}}}}
    throttle: {{once_within: 1h}}
"#,
            drop = drop.path().display(),
            project = project_name(proj.path()),
            out = out.path().display()
        ),
    )?;
    let server = serve_with(ServerOpts {
        extra_args: vec![
            "--project".into(),
            proj.path().display().to_string(),
            "--rules".into(),
            rules_file.display().to_string(),
        ],
        ..Default::default()
    })?;
    // A YAML file and a JSON file with an `@` suffix; a temp file is left alone.
    std::fs::write(
        drop.path().join("deploy.web.yml"),
        "msg: from yaml\ntag: yml\n",
    )?;
    std::fs::write(
        drop.path().join("deploy.web@2.json"),
        r#"{"msg": "from json", "tag": "j"}"#,
    )?;
    std::fs::write(drop.path().join("broken.json"), "{nope")?;
    std::fs::write(drop.path().join(".deploy.web.json.tmp"), "{}")?;
    let y = match read_json_when(&out.path().join("deploy.web-yml.json")).await {
        Ok(y) => y,
        Err(e) => anyhow::bail!("{e}\nruns: {}", server.get("/api/v1/runs").await?),
    };
    assert_eq!(y["msg"], "from yaml");
    assert_eq!(y["source"], "inbox");
    let j = read_json_when(&out.path().join("deploy.web-j.json")).await?;
    assert_eq!(j["msg"], "from json");
    wait_until("files moved", Duration::from_secs(30), || async {
        let done = std::fs::read_dir(drop.path().join("done"))?.count();
        let failed = std::fs::read_dir(drop.path().join("failed"))?.count();
        Ok(done == 2 && failed == 1)
    })
    .await?;
    assert!(drop.path().join(".deploy.web.json.tmp").exists());
    let rejected = server.event_records("source=inbox&status=rejected").await?;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["routing_key"], "broken");

    // The timer ticks every second; the throttle lets one run through.
    let t = read_json_when(&out.path().join("deploy.db-tick.json")).await?;
    assert_eq!(t["msg"], "tick");
    assert_eq!(t["source"], "tick");
    wait_until("several ticks", Duration::from_secs(30), || async {
        Ok(server.event_records("source=tick").await?.len() >= 3)
    })
    .await?;
    let ticks = server.event_records("source=tick").await?;
    let started = ticks.iter().filter(|e| e["status"] == "accepted").count();
    assert_eq!(started, 1, "{ticks:?}");
    let ids: std::collections::BTreeSet<_> =
        ticks.iter().map(|e| e["delivery_id"].to_string()).collect();
    assert_eq!(ids.len(), ticks.len(), "every tick is its own delivery");
    let sources = server.get("/api/v1/sources").await?;
    assert_eq!(sources["inbox"]["state"], "connected", "{sources}");
    assert_eq!(sources["tick"]["type"], "timer");
    Ok(())
}

async fn read_json_when(path: &Path) -> anyhow::Result<Value> {
    let text = wait_file(path, Duration::from_secs(60)).await?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
async fn cli_publishes_lists_and_checks_rules() -> anyhow::Result<()> {
    let proj = event_project()?;
    let out = tempfile::tempdir()?;
    let server = serve_with(with_project(proj.path()))?;
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        format!(
            "sources:\n  hook: {{type: webhook}}\nrules:\n  - name: deploy\n    routing_keys: [\"deploy.#\"]\n    when: \"payload.env == 'prod'\"\n    action: {{project: {}, playbooks_dir: playbooks, vars: {{out_dir: \"{}\"}}}}\n",
            project_name(proj.path()),
            out.path().display()
        ),
    )?;
    let troupe = |args: &[&str]| {
        std::process::Command::new(troupe_bin())
            .args(args)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .output()
    };
    let check = troupe(&["rules", "check", rules.to_str().context("path")?])?;
    assert!(check.status.success(), "{check:?}");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("valid") && text.contains("payload.env == 'prod'"),
        "{text}"
    );
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "rules:\n  - name: x\n    routing_keys: all\n    action: {}\n",
    )?;
    let check = troupe(&["rules", "check", bad.to_str().context("path")?])?;
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("rules[0].action"),
        "{check:?}"
    );

    let applied = troupe(&["rules", "apply", rules.to_str().context("path")?])?;
    assert!(applied.status.success(), "{applied:?}");
    let data = dir.path().join("payload.json");
    std::fs::write(&data, r#"{"env": "prod", "msg": "via cli", "tag": "cli"}"#)?;
    let published = troupe(&[
        "events",
        "publish",
        "--source",
        "hook",
        "--routing-key",
        "deploy.web",
        "--data",
        &format!("@{}", data.display()),
    ])?;
    assert!(published.status.success(), "{published:?}");
    let text = String::from_utf8_lossy(&published.stdout);
    assert!(
        text.contains("accepted") && text.contains("started run"),
        "{text}"
    );
    let seen = read_json_when(&out.path().join("deploy.web-cli.json")).await?;
    assert_eq!(seen["msg"], "via cli");
    let staging = troupe(&[
        "events",
        "publish",
        "--source",
        "hook",
        "--routing-key",
        "deploy.web",
        "--data",
        r#"{"env": "staging"}"#,
    ])?;
    assert!(
        String::from_utf8_lossy(&staging.stdout).contains("unmatched"),
        "{staging:?}"
    );
    let bad_json = troupe(&[
        "events",
        "publish",
        "--source",
        "hook",
        "--routing-key",
        "k",
        "--data",
        "{x",
    ])?;
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad_json.stderr).contains("not valid JSON"),
        "{bad_json:?}"
    );
    let listed = troupe(&["events", "list", "--status", "unmatched"])?;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("conditions are false"), "{text}");
    Ok(())
}

#[tokio::test]
async fn troupe_loop_runs_loopabull_configs_with_both_translators() -> anyhow::Result<()> {
    for (plugin, key, file) in [
        ("rkname", "deploy.web", "deploy.web.yml"),
        (
            "rkdirectory",
            "org.example.prod.foo",
            "org/example/prod/foo.yml",
        ),
    ] {
        let out = tempfile::tempdir()?;
        let playbooks = named_project(&[(file, RECORD)])?;
        let dir = tempfile::tempdir()?;
        // An ansible.cfg that sets a variable-free option we can observe: the retry files dir.
        std::fs::write(
            dir.path().join("ansible.cfg"),
            "[defaults]\nretry_files_enabled = False\n",
        )?;
        let config = dir.path().join("loopabull.yml");
        std::fs::write(
            &config,
            format!(
                "routing_keys:\n  - {key}\nplugin: {plugin}\nansible:\n  playbooks_dir: {}\n  cfg_file_path: ansible.cfg\n",
                playbooks.path().display()
            ),
        )?;
        let data = dir.path().join("data");
        let mut cmd = std::process::Command::new(troupe_bin());
        cmd.args(["--data-dir", data.to_str().context("path")?, "loop"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"]);
        let mut server = Server::start_command(cmd, data.clone(), &ServerOpts::default())?;
        let (s, v) = server
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/hooks/loopabull/{key}"),
                Some(&json!({"msg": plugin, "out_dir": out.path(), "tag": "loop"})),
            )
            .await?;
        assert_eq!(s, 202, "{v}");
        assert_eq!(v["event"]["status"], "accepted", "{v}");
        let run = server
            .wait_finished(v["event"]["run_ids"][0].as_i64().context("run")?)
            .await?;
        assert_eq!(run["status"], "successful", "{run}");
        assert_eq!(run["playbook"], file);
        let seen = read_json_when(&out.path().join(format!("{key}-loop.json"))).await?;
        assert_eq!(seen["msg"], plugin);
        // Keys not listed in routing_keys run nothing.
        let (_, v) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/hooks/loopabull/other.key",
                Some(&json!({})),
            )
            .await?;
        assert_eq!(v["event"]["status"], "unmatched", "{v}");
        server.terminate()?;
    }
    Ok(())
}

#[test]
fn the_examples_are_valid() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rules = root.join("examples/events/rules.yml");
    let out = std::process::Command::new(troupe_bin())
        .args(["rules", "check"])
        .arg(&rules)
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello: events from any source"));
    let text = std::fs::read_to_string(root.join("examples/loopabull/loopabull.yml"))?;
    let cfg = troupe_events::loopabull::LoopConfig::parse(&text).map_err(anyhow::Error::msg)?;
    let compiled =
        troupe_events::Rules::compile(cfg.rules("playbooks").map_err(anyhow::Error::msg)?)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pb = compiled.rules()[0]
        .playbook_for("org.example.hello")
        .map_err(anyhow::Error::msg)?
        .context("a playbook")?;
    assert!(root.join("examples/loopabull/playbooks").join(pb).is_file());
    Ok(())
}

#[tokio::test]
async fn event_records_past_retention_are_pruned() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data.clone()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    server
        .apply_rules("sources:\n  hook: {type: webhook}\nsettings: {retention: 2s}\n")
        .await?;
    let (s, v) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/hooks/hook/a.b",
            Some(&json!({})),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(server.event_records("").await?.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.terminate()?;
    // Retention is applied at start and then hourly; the stored rules come back with it.
    let server = serve_with(opts())?;
    wait_until("old records pruned", Duration::from_secs(20), || async {
        Ok(server.event_records("").await?.is_empty())
    })
    .await?;
    let rules = server.get("/api/v1/rules").await?;
    assert_eq!(rules["revision"], 1);
    assert_eq!(rules["document"]["settings"]["retention"], "2s");
    Ok(())
}
