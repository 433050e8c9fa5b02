//! Token roles, project scopes, expiry and revocation: every route of the OpenAPI document
//! called with a token of each role, checked against a statement of the policy written here
//! independently of the server's table; scoped tokens that see only their projects; tokens that
//! expire and are revoked; `troupe token create|list|revoke`.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const OK: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "hello from {{ inventory_hostname }}"
"#;

const ROLES: [&str; 5] = ["viewer", "worker", "webhook", "operator", "admin"];

/// The routes besides reads that an operator may call, as docs/security.md states them.
const OPERATOR_ACTIONS: &[(&str, &str)] = &[
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/runs/{id}/cancel"),
    ("POST", "/api/v1/runs/{id}/relaunch"),
    ("POST", "/api/v1/templates/{id}/launch"),
    ("POST", "/api/v1/projects/{id}/sync"),
    ("POST", "/api/v1/flows/{name}/executions"),
    ("POST", "/api/v1/executions/{id}/resume"),
    ("POST", "/api/v1/executions/{id}/cancel"),
    ("POST", "/api/v1/executions/{id}/approvals/{step}"),
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/{id}/actions"),
    ("PUT", "/api/v1/jobs/{id}/units/{unit}"),
    ("POST", "/api/v1/jobs/{id}/units/{unit}/actions"),
    ("POST", "/api/v1/stream-tokens"),
    ("POST", "/pansible/api/v1/job"),
];

/// Whether `role` may call `method path`, stated from the roles' definitions (not from the
/// server's table, which this checks).
fn allowed(method: &str, path: &str, role: &str) -> bool {
    if path.starts_with("/api/v1/worker/") {
        return role == "worker";
    }
    if path.starts_with("/api/v1/hooks/") {
        return matches!(role, "admin" | "operator" | "webhook");
    }
    // Tokens and the audit log are the admin's alone.
    let tokens = path.starts_with("/api/v1/tokens") || path == "/api/v1/audit";
    match role {
        "admin" => true,
        "operator" => (method == "GET" && !tokens) || OPERATOR_ACTIONS.contains(&(method, path)),
        "viewer" => {
            (method == "GET" && !tokens) || (method == "POST" && path == "/api/v1/stream-tokens")
        }
        _ => false,
    }
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = server
        .http
        .request(method, server.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(60));
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    // Streams never end: their status is all that is read.
    let streaming = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let body = if streaming {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    Ok((status, body))
}

/// A token of `role` issued through the API, with more fields of the request in `extra`;
/// (id, secret).
async fn token(
    server: &Server,
    name: &str,
    role: &str,
    extra: Value,
) -> anyhow::Result<(i64, String)> {
    let mut body = json!({"name": name, "role": role});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let t = server.post("/api/v1/tokens", &body).await?;
    assert_eq!(t["role"], role, "{t}");
    Ok((
        t["id"].as_i64().unwrap_or_default(),
        t["token"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// A project, an inventory, a template and a finished run; their ids.
struct Fixture {
    project: i64,
    inventory: i64,
    template: i64,
    run: i64,
}

async fn fixture(server: &Server, dir: &std::path::Path, tag: &str) -> anyhow::Result<Fixture> {
    let project = server.project(dir).await?;
    let inv = server
        .post(
            "/api/v1/inventories",
            &json!({"name": format!("inv{tag}"), "format": "ini", "hosts": local_hosts(1)}),
        )
        .await?;
    let inventory = inv["id"].as_i64().unwrap_or_default();
    let tpl = server
        .post(
            "/api/v1/templates",
            &json!({"name": format!("tpl{tag}"), "project": project, "playbook": "ok.yml",
                "inventory": inventory}),
        )
        .await?;
    let template = tpl["id"].as_i64().unwrap_or_default();
    let run = server
        .launch(project, "ok.yml", &local_hosts(1), json!({}))
        .await?;
    let done = server.wait_finished(run).await?;
    assert_eq!(done["status"], "successful", "{done}");
    Ok(Fixture {
        project,
        inventory,
        template,
        run,
    })
}

#[tokio::test]
async fn matrix() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("ok.yml", OK)])?;
    let f = fixture(&server, proj.path(), "m").await?;
    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role, token(&server, role, role, json!({})).await?.1));
    }
    // DELETE /api/v1/tokens/{id} revokes this one (admin is the last role to call it).
    let (spare, _) = token(&server, "spare", "viewer", json!({})).await?;

    let doc = server.get("/api/v1/openapi.json").await?;
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut routes: Vec<(String, String)> = vec![("GET".into(), "/api/v1/openapi.json".into())];
    for (path, item) in &paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    // Every route, the webhooks' included, and the document itself.
    assert!(
        routes.len() > 80 && routes.iter().any(|(_, p)| p.starts_with("/api/v1/hooks/")),
        "{} routes: {routes:?}",
        routes.len()
    );

    let mut failures = Vec::new();
    let mut calls = 0;
    for (method, pattern) in &routes {
        let id = if pattern.starts_with("/api/v1/runs/") {
            f.run
        } else if pattern.starts_with("/api/v1/projects/") {
            f.project
        } else if pattern.starts_with("/api/v1/templates/") {
            f.template
        } else if pattern.starts_with("/api/v1/inventories/") {
            f.inventory
        } else if pattern.starts_with("/api/v1/tokens/") {
            spare
        } else {
            1
        };
        let path = pattern
            .replace("{id}", &id.to_string())
            .replace("{source}", "nosuchsource")
            .replace("{routing_key}", "some.key")
            .replace("{name}", "nosuchflow")
            .replace("{unit}", "u1")
            .replace("{step}", "s1")
            .replace("{uuid}", "00000000-0000-4000-8000-000000000000");
        let m = Method::from_bytes(method.as_bytes())?;
        let body = json!({});
        let body = (m == Method::POST || m == Method::PUT).then_some(&body);
        for (role, secret) in &tokens {
            let (status, answer) = call(&server, m.clone(), &path, secret, body).await?;
            calls += 1;
            let denied = status == 401 || status == 403;
            if allowed(method, pattern, role) == denied {
                failures.push(format!(
                    "{method} {path} as {role}: {status} {answer} (expected {})",
                    if denied { "allowed" } else { "denied" }
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls disagree with the policy:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Without a token, or with one that is not ours: 401 everywhere but health.
    let anon = server
        .http
        .get(server.url("/api/v1/runs"))
        .send()
        .await?
        .status();
    assert_eq!(anon.as_u16(), 401);
    let (s, v) = call(&server, Method::GET, "/api/v1/runs", "trp_nope", None).await?;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["message"], "invalid token", "{v}");
    Ok(())
}

#[tokio::test]
async fn project_scoped_tokens_see_and_act_on_their_projects_only() -> anyhow::Result<()> {
    let server = serve()?;
    let pa = named_project(&[("ok.yml", OK)])?;
    let pb = named_project(&[("ok.yml", OK)])?;
    let a = fixture(&server, pa.path(), "a").await?;
    let b = fixture(&server, pb.path(), "b").await?;
    let a_name = server
        .get(&format!("/api/v1/projects/{}", a.project))
        .await?["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Scoped by name; stored and shown as the id.
    let t = server
        .post(
            "/api/v1/tokens",
            &json!({"name": "ops-a", "role": "operator", "projects": [a_name]}),
        )
        .await?;
    assert_eq!(t["projects"], json!([a.project]), "{t}");
    let op = t["token"].as_str().unwrap_or_default().to_owned();
    let get = |path: String| {
        let op = op.clone();
        let server = &server;
        async move { call(server, Method::GET, &path, &op, None).await }
    };

    // Lists keep to project A.
    let (s, runs) = get("/api/v1/runs".into()).await?;
    assert_eq!(s, 200, "{runs}");
    let ids: Vec<i64> = runs["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![a.run], "{runs}");
    let (_, runs) = get(format!("/api/v1/runs?project={}", b.project)).await?;
    assert_eq!(runs["runs"], json!([]), "{runs}");
    let (_, projects) = get("/api/v1/projects".into()).await?;
    let ids: Vec<i64> = projects["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![a.project], "{projects}");
    let (_, templates) = get("/api/v1/templates".into()).await?;
    let ids: Vec<i64> = templates["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![a.template], "{templates}");

    // Another project's things answer exactly as things that do not exist.
    let (s, missing) = get("/api/v1/runs/999999".into()).await?;
    assert_eq!(s, 404, "{missing}");
    for path in [
        format!("/api/v1/runs/{}", b.run),
        format!("/api/v1/runs/{}/stdout", b.run),
        format!("/api/v1/runs/{}/events", b.run),
        format!("/api/v1/templates/{}", b.template),
        format!("/api/v1/projects/{}", b.project),
        format!("/api/v1/projects/{}/playbooks", b.project),
    ] {
        let (s, v) = get(path.clone()).await?;
        assert_eq!(s, 404, "{path}: {v}");
        assert_eq!(v["error"]["code"], missing["error"]["code"], "{path}: {v}");
    }
    for path in [
        format!("/api/v1/runs/{}/cancel", b.run),
        format!("/api/v1/runs/{}/relaunch", b.run),
        format!("/api/v1/templates/{}/launch", b.template),
        format!("/api/v1/projects/{}/sync", b.project),
    ] {
        let (s, v) = call(&server, Method::POST, &path, &op, Some(&json!({}))).await?;
        assert_eq!(s, 404, "{path}: {v}");
    }
    // Its own project's things work.
    let (s, v) = get(format!("/api/v1/runs/{}", a.run)).await?;
    assert_eq!((s, &v["id"]), (200, &json!(a.run)), "{v}");
    let (s, v) = get(format!("/api/v1/runs/{}/stdout", a.run)).await?;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &server,
        Method::POST,
        &format!("/api/v1/templates/{}/launch", a.template),
        &op,
        Some(&json!({})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let launched = v["id"].as_i64().unwrap_or_default();
    assert_eq!(
        server.wait_finished(launched).await?["status"],
        "successful"
    );

    // Launching: its project yes, another one is "no such project".
    let run_in =
        |project: i64| json!({"project": project, "playbook": "ok.yml", "hosts": local_hosts(1)});
    let (s, v) = call(
        &server,
        Method::POST,
        "/api/v1/runs",
        &op,
        Some(&run_in(b.project)),
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "unknown_project", "{v}");
    let (s, v) = call(
        &server,
        Method::POST,
        "/api/v1/runs",
        &op,
        Some(&run_in(a.project)),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let own = v["id"].as_i64().unwrap_or_default();
    assert_eq!(server.wait_finished(own).await?["status"], "successful");

    // Routes that span projects are refused to a scoped token.
    for path in [
        "/api/v1/events",
        "/api/v1/executions",
        "/api/v1/jobs",
        "/api/v1/workers",
    ] {
        let (s, v) = get(path.into()).await?;
        assert_eq!(s, 403, "{path}: {v}");
    }
    let (s, v) = call(&server, Method::POST, "/api/v1/stream-tokens", &op, None).await?;
    assert_eq!(s, 403, "{v}");
    // Inventories are not tied to a project.
    let (s, v) = get(format!("/api/v1/inventories/{}", b.inventory)).await?;
    assert_eq!(s, 200, "{v}");

    // Scopes are checked when issued.
    for (body, field) in [
        (
            json!({"name": "w", "role": "worker", "projects": [a.project]}),
            "projects",
        ),
        (
            json!({"name": "h", "role": "webhook", "projects": [a.project]}),
            "projects",
        ),
        (
            json!({"name": "v", "role": "viewer", "projects": ["nosuchproject"]}),
            "projects",
        ),
    ] {
        let (s, v) = server
            .call(Method::POST, "/api/v1/tokens", Some(&body))
            .await?;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    Ok(())
}

#[tokio::test]
async fn tokens_expire_and_are_revoked_and_the_last_admin_stays() -> anyhow::Result<()> {
    let server = serve()?;
    // Expiry: refused once past it, with its own message.
    let (_, short) = token(&server, "short", "viewer", json!({"expires_in_s": 1})).await?;
    let (long_id, long) = token(&server, "long", "viewer", json!({"expires_in_s": 3600})).await?;
    wait_until("the 1 s token to expire", Duration::from_secs(30), || {
        let server = &server;
        let short = short.clone();
        async move {
            let (s, v) = call(server, Method::GET, "/api/v1/runs", &short, None).await?;
            Ok::<bool, anyhow::Error>(s == 401 && v["error"]["message"] == "token expired")
        }
    })
    .await?;
    let (s, v) = call(&server, Method::GET, "/api/v1/runs", &long, None).await?;
    assert_eq!(s, 200, "{v}");
    let list = server.get("/api/v1/tokens").await?;
    let listed = |id: i64| {
        list["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == id)
            .cloned()
    };
    let l = listed(long_id).expect("listed");
    assert!(l["expires_at"].is_string() && l["expired"] == false, "{l}");
    assert!(
        !list.to_string().contains(&long) && l.get("hash").is_none() && l.get("token").is_none(),
        "no secret nor hash listed: {l}"
    );
    for body in [
        json!({"name": "x", "expires_in_s": 0}),
        json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "expires_in_s": 60, "expires_at": "2999-01-01T00:00:00Z"}),
        json!({"name": "x", "role": "superuser"}),
    ] {
        let (s, v) = server
            .call(Method::POST, "/api/v1/tokens", Some(&body))
            .await?;
        assert!(s == 422 || s == 400, "{body}: {s} {v}");
    }

    // Revocation: at once, and once.
    let (op_id, op) = token(&server, "ops", "operator", json!({})).await?;
    let (s, _) = call(&server, Method::GET, "/api/v1/runs", &op, None).await?;
    assert_eq!(s, 200);
    let (s, v) = server
        .call(Method::DELETE, &format!("/api/v1/tokens/{op_id}"), None)
        .await?;
    assert_eq!(s, 204, "{v}");
    let (s, v) = call(&server, Method::GET, "/api/v1/runs", &op, None).await?;
    assert_eq!(s, 401, "{v}");
    let (s, v) = server
        .call(Method::DELETE, &format!("/api/v1/tokens/{op_id}"), None)
        .await?;
    assert_eq!(s, 404, "{v}");
    let list = server.get("/api/v1/tokens").await?;
    assert!(
        !list["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["id"] == op_id),
        "{list}"
    );

    // The harness's admin token is the only unscoped admin one: it cannot be revoked; with a
    // second one, the second can.
    let admin_id = list["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["role"] == "admin")
        .and_then(|t| t["id"].as_i64())
        .expect("the admin token");
    let (s, v) = server
        .call(Method::DELETE, &format!("/api/v1/tokens/{admin_id}"), None)
        .await?;
    assert_eq!(s, 409, "{v}");
    let (second, _) = token(&server, "admin2", "admin", json!({})).await?;
    let (s, v) = server
        .call(Method::DELETE, &format!("/api/v1/tokens/{second}"), None)
        .await?;
    assert_eq!(s, 204, "{v}");
    let (s, v) = server
        .call(Method::DELETE, &format!("/api/v1/tokens/{admin_id}"), None)
        .await?;
    assert_eq!(s, 409, "{v}");
    let (s, _) = server.call(Method::GET, "/api/v1/runs", None).await?;
    assert_eq!(s, 200, "the admin token still works");
    Ok(())
}

#[tokio::test]
async fn webhook_tokens_deliver_events_and_nothing_else() -> anyhow::Result<()> {
    let server = serve()?;
    server
        .apply_rules("sources:\n  signed: {type: webhook, secret: \"hmac-key\"}\n")
        .await?;
    let (_, hook) = token(&server, "hook", "webhook", json!({})).await?;
    let (_, viewer) = token(&server, "view", "viewer", json!({})).await?;
    let path = "/api/v1/hooks/signed/deploy.web";
    let body = json!({"x": 1});
    let (s, v) = call(&server, Method::POST, path, &hook, Some(&body)).await?;
    assert_eq!(s, 202, "{v}");
    let (s, v) = call(&server, Method::POST, path, &viewer, Some(&body)).await?;
    assert_eq!(s, 403, "{v}");
    // Neither a token nor the source's signature.
    let s = server
        .http
        .post(server.url(path))
        .json(&body)
        .send()
        .await?
        .status();
    assert_eq!(s.as_u16(), 401);
    for (m, p) in [
        (Method::GET, "/api/v1/events"),
        (Method::GET, "/api/v1/runs"),
    ] {
        let (s, v) = call(&server, m, p, &hook, None).await?;
        assert_eq!(s, 403, "{p}: {v}");
    }
    let events = server.event_records("").await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["routing_key"], "deploy.web", "{events:?}");
    Ok(())
}

fn cli(server: &Server, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(troupe_bin())
        .args(["token"])
        .args(args)
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn token_cli_creates_lists_and_revokes() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("ok.yml", OK)])?;
    let pid = server.project(proj.path()).await?;
    let (code, out, err) = cli(
        &server,
        &[
            "create",
            "dash",
            "--role",
            "viewer",
            "--project",
            &pid.to_string(),
            "--expires",
            "30d",
        ],
    )?;
    assert_eq!(code, 0, "{out}{err}");
    let secret = out.trim().to_owned();
    assert!(secret.starts_with("trp_"), "{out}");
    let (s, _) = call(&server, Method::GET, "/api/v1/runs", &secret, None).await?;
    assert_eq!(s, 200);
    let (s, _) = call(
        &server,
        Method::POST,
        "/api/v1/runs",
        &secret,
        Some(&json!({})),
    )
    .await?;
    assert_eq!(s, 403, "a viewer cannot launch");

    let (code, out, err) = cli(&server, &["list", "--json"])?;
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out)?;
    let dash = list["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "dash")
        .cloned()
        .expect("dash listed");
    assert_eq!(dash["role"], "viewer");
    assert_eq!(dash["projects"], json!([pid]));
    let expires = chrono::DateTime::parse_from_rfc3339(dash["expires_at"].as_str().unwrap_or(""))?;
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "{dash}");
    let (code, out, _) = cli(&server, &["list"])?;
    assert_eq!(code, 0);
    assert!(out.contains("dash") && out.contains("viewer"), "{out}");
    assert!(!out.contains(&secret), "{out}");

    let id = dash["id"].as_i64().unwrap_or_default().to_string();
    let (code, out, err) = cli(&server, &["revoke", &id])?;
    assert_eq!(code, 0, "{out}{err}");
    let (s, _) = call(&server, Method::GET, "/api/v1/runs", &secret, None).await?;
    assert_eq!(s, 401);
    // The last admin token, and bad input: a message and a non-zero exit.
    let admin = list["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["role"] == "admin")
        .and_then(|t| t["id"].as_i64())
        .unwrap_or_default()
        .to_string();
    let (code, out, err) = cli(&server, &["revoke", &admin])?;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("last admin"), "{err}");
    for args in [
        &["create", "x", "--role", "root"][..],
        &["create", "x", "--expires", "3y"][..],
        &["create", "x", "--project", "nosuchproject"][..],
    ] {
        let (code, out, err) = cli(&server, args)?;
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    Ok(())
}
