//! The API's contract for bad input and auth: clear 4xx answers, never a 500, nothing lost.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn every_route_but_health_needs_a_token() -> anyhow::Result<()> {
    let server = Server::start()?;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let r = http.get(server.url(path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in [
        "/api/v1/runs",
        "/api/v1/projects",
        "/api/v1/inventories",
        "/api/v1/openapi.json",
        "/api/v1/runs/1",
        "/api/v1/nope",
    ] {
        let r = http.get(server.url(path)).send().await?;
        assert_eq!(r.status(), 401, "{path} without a token");
        let body: Value = r.json().await?;
        assert_eq!(body["error"]["code"], "unauthorized");
        let r = http
            .get(server.url(path))
            .bearer_auth("trp_wrong")
            .send()
            .await?;
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    // A token issued through the API works; its secret is shown once.
    let issued = server.post("/api/v1/tokens", json!({"name": "ci"})).await?;
    let token = issued["token"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("trp_"));
    let r = http
        .get(server.url("/api/v1/runs"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    // The admin token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data_dir.join("admin-token"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !server.log().contains(TOKEN),
        "the admin token never reaches the log"
    );
    Ok(())
}

#[tokio::test]
async fn openapi_document_lists_the_routes() -> anyhow::Result<()> {
    let server = Server::start()?;
    let doc = server.get("/api/v1/openapi.json").await?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    for p in [
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/events",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/projects",
        "/api/v1/inventories",
        "/api/v1/projects/{id}/playbooks",
        "/api/v1/runs/{id}/hosts",
        "/api/v1/runs/{id}/stdout",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    Ok(())
}

/// Sends `body` to `path` and checks the status and error code.
async fn expect(
    server: &Server,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &str,
) -> anyhow::Result<Value> {
    let (s, v) = server.call(method.clone(), path, body.clone()).await?;
    assert_eq!(s, status, "{method} {path} {body:?} -> {v}");
    assert_eq!(v["error"]["code"], code, "{method} {path} {body:?} -> {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    Ok(v)
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_nothing_is_lost() -> anyhow::Result<()> {
    let server = Server::start()?;
    let outside = tempfile::tempdir()?;
    std::fs::write(
        outside.path().join("evil.yml"),
        "- hosts: all\n  tasks: []\n",
    )?;
    let proj = project_dir(&[(
        "site.yml",
        "- hosts: all\n  gather_facts: false\n  tasks: []\n",
    )])?;
    std::os::unix::fs::symlink(
        outside.path().join("evil.yml"),
        proj.path().join("escape.yml"),
    )?;
    let pid = server.project(proj.path()).await?;
    let hosts = local_hosts(1);
    let run = |extra: Value| {
        let mut b = json!({"project": pid, "playbook": "site.yml", "hosts": hosts});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        Some(b)
    };
    let post = Method::POST;
    let r = "/api/v1/runs";
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"project": 9999})),
        422,
        "unknown_project",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"project": "nope"})),
        422,
        "unknown_project",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"hosts": null, "inventory": 9999})),
        422,
        "unknown_inventory",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"hosts": null})),
        422,
        "missing_inventory",
    )
    .await?;
    let v = expect(
        &server,
        post.clone(),
        r,
        run(json!({"playbook": "../x.yml"})),
        422,
        "invalid_playbook",
    )
    .await?;
    assert_eq!(v["error"]["field"], "playbook");
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"playbook": "/etc/passwd.yml"})),
        422,
        "invalid_playbook",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"playbook": "escape.yml"})),
        422,
        "invalid_playbook",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"playbook": "missing.yml"})),
        422,
        "playbook_not_found",
    )
    .await?;
    let v = expect(
        &server,
        post.clone(),
        r,
        run(json!({"extra_vars": [1, 2]})),
        422,
        "invalid_extra_vars",
    )
    .await?;
    assert_eq!(v["error"]["field"], "extra_vars");
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"extra_vars": "a=1"})),
        422,
        "invalid_extra_vars",
    )
    .await?;
    let v = expect(
        &server,
        post.clone(),
        r,
        run(json!({"bogus": 1})),
        422,
        "invalid_body",
    )
    .await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bogus")),
        "{v}"
    );
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"verbosity": 9})),
        422,
        "invalid_field",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"forks": 0})),
        422,
        "invalid_field",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        r,
        run(json!({"limit": "--become"})),
        422,
        "invalid_field",
    )
    .await?;
    let v = expect(
        &server,
        post.clone(),
        r,
        run(json!({"hosts": "[web\nh1\n", "hosts_format": "ini"})),
        422,
        "invalid_inventory",
    )
    .await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 1")),
        "{v}"
    );

    // Inventories: malformed YAML names the line and column.
    let inv = "/api/v1/inventories";
    let v = expect(
        &server,
        post.clone(),
        inv,
        Some(json!({"name": "bad", "format": "yaml", "hosts": "all:\n  hosts:\n    a: [\n"})),
        422,
        "invalid_inventory",
    )
    .await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line")),
        "{v}"
    );
    expect(
        &server,
        post.clone(),
        inv,
        Some(json!({"name": "bad", "format": "toml", "hosts": "a"})),
        422,
        "invalid_body",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        inv,
        Some(json!({"name": "bad", "format": "ini", "hosts": "[g]\nh x\n"})),
        422,
        "invalid_inventory",
    )
    .await?;
    server
        .post(
            inv,
            json!({"name": "good", "format": "ini", "hosts": "h1\n"}),
        )
        .await?;
    expect(
        &server,
        post.clone(),
        inv,
        Some(json!({"name": "good", "format": "ini", "hosts": "h2\n"})),
        409,
        "conflict",
    )
    .await?;

    // Projects.
    let pr = "/api/v1/projects";
    expect(
        &server,
        post.clone(),
        pr,
        Some(json!({"name": "x", "source": {"type": "dir", "path": "relative"}})),
        422,
        "invalid_source",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        pr,
        Some(json!({"name": "x", "source": {"type": "dir", "path": "/nonexistent/dir"}})),
        422,
        "invalid_source",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        pr,
        Some(json!({"name": "bad name", "source": {"type": "dir", "path": "/tmp"}})),
        422,
        "invalid_name",
    )
    .await?;
    expect(
        &server,
        post.clone(),
        pr,
        Some(json!({"name": "x", "source": {"type": "svn", "path": "/tmp"}})),
        422,
        "invalid_body",
    )
    .await?;

    // Malformed JSON, wrong content type, oversize body, bad path and query values.
    let raw = reqwest::Client::new();
    let resp = raw
        .post(server.url(r))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await?["error"]["code"],
        "malformed_json"
    );
    let resp = raw
        .post(server.url(r))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status(), 415);
    let big = "x".repeat(9 * 1024 * 1024);
    let resp = raw
        .post(server.url(r))
        .bearer_auth(TOKEN)
        .json(&json!({"project": pid, "playbook": "site.yml", "hosts": big}))
        .send()
        .await?;
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await?["error"]["code"],
        "body_too_large"
    );
    expect(
        &server,
        Method::GET,
        "/api/v1/runs/abc",
        None,
        400,
        "invalid_path",
    )
    .await?;
    expect(
        &server,
        Method::GET,
        "/api/v1/runs/424242",
        None,
        404,
        "not_found",
    )
    .await?;
    expect(
        &server,
        Method::GET,
        "/api/v1/runs?status=done",
        None,
        400,
        "invalid_query",
    )
    .await?;
    expect(
        &server,
        Method::GET,
        "/api/v1/runs?limit=0",
        None,
        400,
        "invalid_query",
    )
    .await?;
    expect(
        &server,
        Method::POST,
        "/api/v1/runs/424242/cancel",
        None,
        404,
        "not_found",
    )
    .await?;
    expect(
        &server,
        Method::POST,
        "/api/v1/runs/1/cancel",
        Some(json!({"mode": "gentle"})),
        422,
        "invalid_body",
    )
    .await?;

    // Nothing already stored was lost, and a good run still works.
    let id = server.launch(pid, "site.yml", &hosts, json!({})).await?;
    assert_eq!(server.wait_finished(id).await?["status"], "successful");
    assert_eq!(
        server.get("/api/v1/inventories?name=good").await?["inventories"][0]["hosts"],
        "h1\n"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
    Ok(())
}

#[tokio::test]
async fn projects_list_their_playbooks() -> anyhow::Result<()> {
    let server = Server::start()?;
    let proj = project_dir(&[
        ("site.yml", "- hosts: all\n  tasks: []\n"),
        ("deploy/web.yaml", "- import_playbook: ../site.yml\n"),
        ("roles/r/tasks/main.yml", "- name: t\n  debug: msg=x\n"),
        ("group_vars/all.yml", "a: 1\n"),
        ("notes.yml", "just: data\n"),
    ])?;
    let pid = server.project(proj.path()).await?;
    let v = server
        .get(&format!("/api/v1/projects/{pid}/playbooks"))
        .await?;
    assert_eq!(v["playbooks"], json!(["deploy/web.yaml", "site.yml"]));
    let p = server.get(&format!("/api/v1/projects/{pid}")).await?;
    assert_eq!(p["source"]["type"], "dir");
    Ok(())
}
