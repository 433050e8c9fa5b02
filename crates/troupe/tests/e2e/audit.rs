//! The audit log end to end, on SQLite and (when TROUPE_TEST_DATABASE_URL is set) PostgreSQL:
//! definitions made, runs launched through the API, a template and an event rule, a cancel, a
//! delete, a viewer's refused attempt and an unknown token's; then `GET /api/v1/audit` as the
//! admin shows each with its actor, action, target, status and client address; a viewer is
//! refused it; its filters and paging work; and no credential's secret is anywhere in the
//! store.

use crate::helpers::*;
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use troupe_wire::audit::{AuditEntry, AuditList};

const OK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";
const SLOW: &str =
    "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n";
const SECRET: &str = "audit-e2e-become-password-4f1d";
const AGENT: &str = "audit-e2e/1.0";

#[tokio::test]
async fn the_audit_log_records_who_did_what_on_sqlite() -> anyhow::Result<()> {
    let server = serve()?;
    let entries = scenario(&server).await?;
    // Every byte the SQLite store keeps (database, WAL) is free of the secret.
    for file in files_under(&server.data_dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} holds the credential's secret",
            file.display()
        );
    }
    assert!(!entries.contains(SECRET));

    // The CLI: a table, and the API's JSON with --json; filters passed on.
    let cli = |args: &[&str]| -> anyhow::Result<(bool, String, String)> {
        let out = std::process::Command::new(troupe_bin())
            .arg("audit")
            .args(args)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, out, err) = cli(&["--action", "credential.", "--since", "1h", "--json"])?;
    assert!(ok, "{err}");
    let list: AuditList = serde_json::from_str(&out)?;
    let actions: Vec<&str> = list.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["credential.delete", "credential.create"], "{out}");
    let (ok, out, err) = cli(&["--actor", "watcher"])?;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one entry: {out}");
    assert!(
        lines[1].contains("token:") && lines[1].contains("(watcher)") && lines[1].contains("403"),
        "{out}"
    );
    let (ok, _, err) = cli(&["--since", "yesterday"])?;
    assert!(!ok && err.contains("RFC 3339"), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_on_postgres() -> anyhow::Result<()> {
    let Some(url) = crate::postgres::fresh_database().await? else {
        return Ok(());
    };
    let server = serve_with(ServerOpts {
        database_url: Some(url.clone()),
        ..Default::default()
    })?;
    scenario(&server).await?;
    let table = psql(&url, "SELECT string_agg(audit::text, E'\\n') FROM audit")?;
    assert!(table.contains("credential.create"), "{table}");
    assert!(!table.contains(SECRET), "{table}");
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// (status, body) of `method path` with `token` (none: no Authorization header).
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = server
        .http
        .request(method, server.url(path))
        .header("user-agent", AGENT);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn created(server: &Server, path: &str, body: Value) -> anyhow::Result<Value> {
    let (s, v) = call(server, Method::POST, path, Some(TOKEN), Some(&body)).await?;
    anyhow::ensure!((200..300).contains(&s), "POST {path} -> {s}: {v}");
    Ok(v)
}

fn id(v: &Value) -> anyhow::Result<i64> {
    v["id"].as_i64().with_context(|| format!("no id in {v}"))
}

async fn audit(server: &Server, query: &str) -> anyhow::Result<AuditList> {
    Ok(serde_json::from_value(
        server.get(&format!("/api/v1/audit?{query}")).await?,
    )?)
}

/// The one entry of `action` on `target` (`kind:id`).
fn find<'a>(list: &'a [AuditEntry], action: &str, target: &str) -> anyhow::Result<&'a AuditEntry> {
    let found: Vec<&AuditEntry> = list
        .iter()
        .filter(|e| {
            e.action == action
                && format!(
                    "{}:{}",
                    e.target_kind.as_deref().unwrap_or(""),
                    e.target_id.as_deref().unwrap_or("")
                ) == target
        })
        .collect();
    anyhow::ensure!(
        found.len() == 1,
        "{} entries of {action} on {target} in {list:#?}",
        found.len()
    );
    Ok(found[0])
}

/// Checks an entry made through the API by the harness's admin token.
fn by_admin(e: &AuditEntry, method: &str, route: &str, status: i32) {
    assert!(e.actor.starts_with("token:"), "{e:?}");
    assert_eq!(e.token_name.as_deref(), Some("admin"), "{e:?}");
    assert_eq!(e.role.as_deref(), Some("admin"), "{e:?}");
    assert_eq!(e.method.as_deref(), Some(method), "{e:?}");
    assert_eq!(e.route.as_deref(), Some(route), "{e:?}");
    assert_eq!(e.status, Some(status), "{e:?}");
    assert!(
        e.client_addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{e:?}"
    );
    assert_eq!(e.user_agent.as_deref(), Some(AGENT), "{e:?}");
}

/// Does everything the log should record; checks the log; answers the whole log's JSON.
async fn scenario(server: &Server) -> anyhow::Result<String> {
    let proj = named_project(&[("ok.yml", OK), ("slow.yml", SLOW)])?;
    let project = created(
        server,
        "/api/v1/projects",
        json!({"name": "audited", "source": {"type": "dir", "path": proj.path()}}),
    )
    .await?;
    let pid = id(&project)?;
    let inventory = created(
        server,
        "/api/v1/inventories",
        json!({"name": "here", "format": "ini", "hosts": local_hosts(1)}),
    )
    .await?;
    let template = created(
        server,
        "/api/v1/templates",
        json!({"name": "hello", "project": pid, "playbook": "ok.yml", "inventory": "here"}),
    )
    .await?;
    let tid = id(&template)?;
    let credential = created(
        server,
        "/api/v1/credentials",
        json!({"name": "root-pw", "kind": "become", "password": SECRET}),
    )
    .await?;
    let cid = id(&credential)?;
    let viewer = created(
        server,
        "/api/v1/tokens",
        json!({"name": "watcher", "role": "viewer"}),
    )
    .await?;
    let vid = id(&viewer)?;
    let viewer_token = viewer["token"].as_str().context("token")?.to_owned();

    // Runs: through the API, a template, an event rule.
    let run = created(
        server,
        "/api/v1/runs",
        json!({"project": pid, "playbook": "ok.yml", "inventory": "here"}),
    )
    .await?;
    let run = id(&run)?;
    let launched = created(
        server,
        &format!("/api/v1/templates/{tid}/launch"),
        json!({}),
    )
    .await?;
    let launched = id(&launched)?;
    server
        .apply_rules(
            "sources:\n  hook: {type: webhook}\nrules:\n  - name: hooked\n    routing_keys: go\n    action: {project: audited, playbook: ok.yml}\n",
        )
        .await?;
    created(server, "/api/v1/hooks/hook/go", json!({"n": 1})).await?;

    // A cancel and a delete.
    let slow = created(
        server,
        "/api/v1/runs",
        json!({"project": pid, "playbook": "slow.yml", "inventory": "here"}),
    )
    .await?;
    let slow = id(&slow)?;
    let (s, v) = call(
        server,
        Method::POST,
        &format!("/api/v1/runs/{slow}/cancel"),
        Some(TOKEN),
        Some(&json!({})),
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    let (s, v) = call(
        server,
        Method::DELETE,
        &format!("/api/v1/credentials/{cid}"),
        Some(TOKEN),
        None,
    )
    .await?;
    assert_eq!(s, 204, "{v}");

    // Refused: a viewer launching, an unknown token, a viewer reading the log.
    let body = json!({"project": pid, "playbook": "ok.yml", "inventory": "here"});
    let (s, v) = call(
        server,
        Method::POST,
        "/api/v1/runs",
        Some(&viewer_token),
        Some(&body),
    )
    .await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        server,
        Method::POST,
        "/api/v1/runs",
        Some("trp_nope"),
        Some(&body),
    )
    .await?;
    assert_eq!(s, 401, "{v}");
    let (s, v) = call(
        server,
        Method::GET,
        "/api/v1/audit",
        Some(&viewer_token),
        None,
    )
    .await?;
    assert_eq!(s, 403, "{v}");

    // The rule's run is recorded once the event is stored.
    wait_until(
        "the rule's run in the audit log",
        Duration::from_secs(30),
        || async { Ok(!audit(server, "actor=rule:hooked").await?.entries.is_empty()) },
    )
    .await?;

    let log = audit(server, "limit=500").await?;
    let all = &log.entries;
    assert!(log.next_cursor.is_none());
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert!(
        all.iter().all(|e| e.method.as_deref() != Some("GET")),
        "reads are not recorded: {all:#?}"
    );

    let e = find(all, "project.create", &format!("project:{pid}"))?;
    by_admin(e, "POST", "/api/v1/projects", 201);
    assert_eq!(e.target_name.as_deref(), Some("audited"));
    let e = find(
        all,
        "inventory.create",
        &format!("inventory:{}", id(&inventory)?),
    )?;
    by_admin(e, "POST", "/api/v1/inventories", 201);
    let e = find(all, "template.create", &format!("template:{tid}"))?;
    by_admin(e, "POST", "/api/v1/templates", 201);
    let e = find(all, "credential.create", &format!("credential:{cid}"))?;
    by_admin(e, "POST", "/api/v1/credentials", 201);
    assert_eq!(e.target_name.as_deref(), Some("root-pw"));
    assert_eq!(e.detail, json!({"kind": "become"}), "ids and names only");
    let e = find(all, "token.create", &format!("token:{vid}"))?;
    by_admin(e, "POST", "/api/v1/tokens", 201);
    assert_eq!(e.detail["role"], "viewer");

    let e = find(all, "run.launch", &format!("run:{run}"))?;
    by_admin(e, "POST", "/api/v1/runs", 201);
    assert_eq!(e.target_name.as_deref(), Some("ok.yml"));
    assert_eq!(e.detail["project"], pid);
    let e = find(all, "template.launch", &format!("run:{launched}"))?;
    by_admin(e, "POST", "/api/v1/templates/{id}/launch", 201);
    assert_eq!(e.detail["template"], tid, "{e:?}");
    let rules: Vec<&AuditEntry> = all.iter().filter(|e| e.action == "rules.update").collect();
    assert_eq!(rules.len(), 1, "{all:#?}");
    assert_eq!(
        (rules[0].status, rules[0].route.as_deref()),
        (Some(200), Some("/api/v1/rules"))
    );
    let e = find(all, "event.publish", "source:hook")?;
    by_admin(e, "POST", "/api/v1/hooks/{source}/{routing_key}", 202);

    let rule = all
        .iter()
        .find(|e| e.actor == "rule:hooked")
        .context("the rule's run")?;
    assert_eq!(rule.action, "run.launch");
    assert_eq!(rule.target_kind.as_deref(), Some("run"));
    assert_eq!(rule.target_name.as_deref(), Some("ok.yml"));
    assert_eq!(
        (rule.status, rule.method.as_deref(), rule.token_id),
        (None, None, None)
    );
    assert!(rule.detail["event"].is_i64(), "{rule:?}");

    let e = find(all, "run.cancel", &format!("run:{slow}"))?;
    by_admin(e, "POST", "/api/v1/runs/{id}/cancel", 202);
    let e = find(all, "credential.delete", &format!("credential:{cid}"))?;
    by_admin(e, "DELETE", "/api/v1/credentials/{id}", 204);

    let refused: Vec<&AuditEntry> = all
        .iter()
        .filter(|e| e.action == "run.launch" && e.status == Some(403))
        .collect();
    assert_eq!(refused.len(), 1, "{all:#?}");
    let e = refused[0];
    assert_eq!(e.actor, format!("token:{vid}"));
    assert_eq!(
        (e.token_name.as_deref(), e.role.as_deref()),
        (Some("watcher"), Some("viewer"))
    );
    assert!(
        e.client_addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let unknown = all
        .iter()
        .find(|e| e.status == Some(401))
        .context("the unknown token's attempt")?;
    assert_eq!(
        (
            unknown.actor.as_str(),
            unknown.action.as_str(),
            unknown.token_id
        ),
        ("anonymous", "run.launch", None)
    );

    // Filters.
    let actions = |l: AuditList| l.entries.into_iter().map(|e| e.action).collect::<Vec<_>>();
    assert_eq!(
        actions(audit(server, "actor=watcher").await?),
        ["run.launch"]
    );
    assert_eq!(
        actions(audit(server, &format!("actor=token:{vid}")).await?),
        ["run.launch"]
    );
    assert_eq!(
        actions(audit(server, "action=credential.").await?),
        ["credential.delete", "credential.create"]
    );
    assert_eq!(
        actions(audit(server, &format!("target=run:{slow}")).await?),
        ["run.cancel", "run.launch"]
    );
    let newest = &all[0];
    let since = newest
        .at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let from_newest = audit(server, &format!("since={}", urlencode(&since))).await?;
    assert!(
        from_newest.entries.iter().all(|e| e.at >= newest.at) && !from_newest.entries.is_empty()
    );
    let until = audit(server, &format!("until={}", urlencode(&since))).await?;
    assert!(until.entries.iter().all(|e| e.at < newest.at));
    assert_eq!(until.entries.len() + from_newest.entries.len(), all.len());
    // Paging.
    let first = audit(server, "limit=2").await?;
    let cursor = first.next_cursor.context("a next page")?;
    let second = audit(server, &format!("limit=2&cursor={cursor}")).await?;
    assert_eq!(
        first
            .entries
            .iter()
            .chain(&second.entries)
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        all.iter().take(4).map(|e| e.id).collect::<Vec<_>>()
    );
    // Bad queries are 400s that say what is wrong.
    let (s, v) = call(
        server,
        Method::GET,
        "/api/v1/audit?limit=0",
        Some(TOKEN),
        None,
    )
    .await?;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (400, Some("invalid_query"), Some("limit")),
        "{v}"
    );
    let (s, v) = call(
        server,
        Method::GET,
        "/api/v1/audit?since=yesterday",
        Some(TOKEN),
        None,
    )
    .await?;
    assert_eq!(s, 400, "{v}");
    Ok(serde_json::to_string(&log)?)
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
