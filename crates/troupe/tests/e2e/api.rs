//! The API's contract for bad input and auth: clear 4xx answers, never a 500, nothing lost.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn every_route_but_health_needs_a_token() -> anyhow::Result<()> {
    let server = serve()?;
    let http = troupe_http::client()?;
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
    let issued = server
        .post("/api/v1/tokens", &json!({"name": "ci"}))
        .await?;
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
    let server = serve()?;
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

/// A request the API must refuse: the status and error code it answers with, and what else
/// the error must say.
struct Refused {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    also: Also,
}

/// What a refusal's error says besides its code (its message is never empty).
enum Also {
    Nothing,
    /// `error.field` names the offending field.
    Field(&'static str),
    /// `error.message` contains this.
    Says(&'static str),
}

impl Refused {
    fn new(
        method: Method,
        path: &'static str,
        body: Option<Value>,
        answer: (u16, &'static str),
    ) -> Self {
        Refused {
            method,
            path,
            body,
            status: answer.0,
            code: answer.1,
            also: Also::Nothing,
        }
    }

    fn post(path: &'static str, body: Value, answer: (u16, &'static str)) -> Self {
        Self::new(Method::POST, path, Some(body), answer)
    }

    fn get(path: &'static str, answer: (u16, &'static str)) -> Self {
        Self::new(Method::GET, path, None, answer)
    }

    fn and(self, also: Also) -> Self {
        Refused { also, ..self }
    }
}

/// Sends every request of `cases` in order and checks each answer.
async fn expect_refused(server: &Server, cases: &[Refused]) -> anyhow::Result<()> {
    for case in cases {
        let Refused {
            method,
            path,
            body,
            status,
            code,
            also,
        } = case;
        let (s, v) = server.call(method.clone(), path, body.as_ref()).await?;
        assert_eq!(s, *status, "{method} {path} {body:?} -> {v}");
        assert_eq!(v["error"]["code"], *code, "{method} {path} {body:?} -> {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        match also {
            Also::Nothing => {}
            Also::Field(field) => assert_eq!(v["error"]["field"], *field, "{v}"),
            Also::Says(text) => assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text)),
                "{v}"
            ),
        }
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_nothing_is_lost() -> anyhow::Result<()> {
    let server = serve()?;
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
    // A good run's body with `changes` applied (null removes a field).
    let run = |changes: Value| {
        let mut b = json!({"project": pid, "playbook": "site.yml", "hosts": hosts});
        if let (Some(b), Some(e)) = (b.as_object_mut(), changes.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        b
    };
    let r = "/api/v1/runs";
    let unprocessable = |code| (422, code);
    expect_refused(
        &server,
        &[
            Refused::post(
                r,
                run(json!({"project": 9999})),
                unprocessable("unknown_project"),
            ),
            Refused::post(
                r,
                run(json!({"project": "nope"})),
                unprocessable("unknown_project"),
            ),
            Refused::post(
                r,
                run(json!({"hosts": null, "inventory": 9999})),
                unprocessable("unknown_inventory"),
            ),
            // Leaving the inventory out means ansible's own; an empty one is a mistake.
            Refused::post(
                r,
                run(json!({"hosts": "  \n"})),
                unprocessable("invalid_inventory"),
            )
            .and(Also::Field("hosts")),
            Refused::post(
                r,
                run(json!({"playbook": "../x.yml"})),
                unprocessable("invalid_playbook"),
            )
            .and(Also::Field("playbook")),
            Refused::post(
                r,
                run(json!({"playbook": "/etc/passwd.yml"})),
                unprocessable("invalid_playbook"),
            ),
            Refused::post(
                r,
                run(json!({"playbook": "escape.yml"})),
                unprocessable("invalid_playbook"),
            ),
            Refused::post(
                r,
                run(json!({"playbook": "missing.yml"})),
                unprocessable("playbook_not_found"),
            ),
            Refused::post(
                r,
                run(json!({"extra_vars": [1, 2]})),
                unprocessable("invalid_extra_vars"),
            )
            .and(Also::Field("extra_vars")),
            Refused::post(
                r,
                run(json!({"extra_vars": "a=1"})),
                unprocessable("invalid_extra_vars"),
            ),
            Refused::post(r, run(json!({"bogus": 1})), unprocessable("invalid_body"))
                .and(Also::Says("bogus")),
            Refused::post(
                r,
                run(json!({"verbosity": 9})),
                unprocessable("invalid_field"),
            ),
            Refused::post(r, run(json!({"forks": 0})), unprocessable("invalid_field")),
            Refused::post(
                r,
                run(json!({"limit": "--become"})),
                unprocessable("invalid_field"),
            ),
            Refused::post(
                r,
                run(json!({"hosts": "[web\nh1\n", "hosts_format": "ini"})),
                unprocessable("invalid_inventory"),
            )
            .and(Also::Says("line 1")),
        ],
    )
    .await?;

    // Inventories: malformed YAML names the line and column.
    let inv = "/api/v1/inventories";
    expect_refused(
        &server,
        &[
            Refused::post(
                inv,
                json!({"name": "bad", "format": "yaml", "hosts": "all:\n  hosts:\n    a: [\n"}),
                unprocessable("invalid_inventory"),
            )
            .and(Also::Says("line")),
            Refused::post(
                inv,
                json!({"name": "bad", "format": "toml", "hosts": "a"}),
                unprocessable("invalid_body"),
            ),
            Refused::post(
                inv,
                json!({"name": "bad", "format": "ini", "hosts": "[g]\nh x\n"}),
                unprocessable("invalid_inventory"),
            ),
        ],
    )
    .await?;
    server
        .post(
            inv,
            &json!({"name": "good", "format": "ini", "hosts": "h1\n"}),
        )
        .await?;
    expect_refused(
        &server,
        &[Refused::post(
            inv,
            json!({"name": "good", "format": "ini", "hosts": "h2\n"}),
            (409, "conflict"),
        )],
    )
    .await?;

    // Projects.
    let pr = "/api/v1/projects";
    expect_refused(
        &server,
        &[
            Refused::post(
                pr,
                json!({"name": "x", "source": {"type": "dir", "path": "relative"}}),
                unprocessable("invalid_source"),
            ),
            Refused::post(
                pr,
                json!({"name": "x", "source": {"type": "dir", "path": "/nonexistent/dir"}}),
                unprocessable("invalid_source"),
            ),
            Refused::post(
                pr,
                json!({"name": "bad name", "source": {"type": "dir", "path": "/tmp"}}),
                unprocessable("invalid_name"),
            ),
            Refused::post(
                pr,
                json!({"name": "x", "source": {"type": "svn", "path": "/tmp"}}),
                unprocessable("invalid_body"),
            ),
        ],
    )
    .await?;

    // Malformed JSON, wrong content type, oversize body, bad path and query values.
    let raw = troupe_http::client()?;
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
    expect_refused(
        &server,
        &[
            Refused::get("/api/v1/runs/abc", (400, "invalid_path")),
            Refused::get("/api/v1/runs/424242", (404, "not_found")),
            Refused::get("/api/v1/runs?status=done", (400, "invalid_query")),
            Refused::get("/api/v1/runs?limit=0", (400, "invalid_query")),
            Refused::new(
                Method::POST,
                "/api/v1/runs/424242/cancel",
                None,
                (404, "not_found"),
            ),
            Refused::post(
                "/api/v1/runs/1/cancel",
                json!({"mode": "gentle"}),
                (422, "invalid_body"),
            ),
        ],
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
    let server = serve()?;
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
