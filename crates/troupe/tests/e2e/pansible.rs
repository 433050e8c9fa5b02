//! Pansible's API (`/pansible/api/v1`) end to end, driven with the request bodies Pansible's
//! README prints: an inventory, a playbook from a git repository, an app and its links, a job
//! run by a real ansible-playbook, its per-host result and its progress over WebSocket.

use crate::helpers::*;
use anyhow::Context;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const API: &str = "/pansible/api/v1";

/// A playbook that reaches every host, then fails on `localhost` so the result has a failure.
const SITE: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: reach
      ansible.builtin.ping:
    - name: greet
      ansible.builtin.debug:
        msg: "{{ allkey1 }} {{ wskey1 | default('none') }}"
    - name: fail on localhost
      ansible.builtin.fail:
        msg: localhost fails on purpose
      when: inventory_hostname == 'localhost'
"#;

/// The README's inventory (`localhost:` a key, as Ansible's YAML inventory needs it). Every
/// host runs locally but `one.example.com`, which ssh cannot reach (nothing listens on port
/// 1), as in the README's result.
const HOSTS: &str = "all:
  hosts:
    localhost:
  children:
    webservers:
      hosts:
        foo.example[3:5].com:
    dbservers:
      hosts:
        one.example.com:
          ansible_connection: ssh
          ansible_host: 127.0.0.1
          ansible_port: 1
          ansible_ssh_common_args: -o ConnectTimeout=3
        two.example.com:
";

/// The README's vars, plus how the hosts are reached.
const VARS: &str = "all:
  allkey1: allval1
  allkey2: allval2
  ansible_connection: local
  ansible_python_interpreter: '{{ ansible_playbook_python }}'
webservers:
  wskey1: wsval1
  wskey2: wsval2
";

/// A git repository holding `files`, committed.
fn repo(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    write_files(dir, files)?;
    git(dir, &["init", "-q"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "playbooks"])?;
    Ok(())
}

/// POST under the Pansible API with the token in `COFFEE_TOKEN`, as Pansible clients send it.
async fn coffee(server: &Server, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let resp = server
        .http
        .post(server.url(&format!("{API}{path}")))
        .header("COFFEE_TOKEN", TOKEN)
        .json(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn created(server: &Server, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, v) = coffee(server, path, body).await?;
    anyhow::ensure!(status == 201, "POST {API}{path} -> {status}: {v}");
    Ok(v)
}

/// Every progress message of a job, until the server closes the socket at its end.
async fn progress(server: &Server, uuid: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!(
        "{}{API}/job/progress/{uuid}",
        server.base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    req.headers_mut().insert("COFFEE_TOKEN", TOKEN.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut seen = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Text(text) => seen.push(serde_json::from_str::<Value>(&text)?),
                Message::Close(_) => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .context("the progress socket did not close when the job ended")??;
    Ok(seen)
}

async fn wait_job(server: &Server, uuid: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job = server.get(&format!("{API}/job/{uuid}")).await?;
        if troupe_testkit::is_finished(job["status"].as_str().unwrap_or_default()) {
            return Ok(job);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "job {uuid} did not end: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_readmes_requests_run_a_job_and_report_it_as_pansible_did() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let git_repo = tmp.path().join("deploy");
    repo(&git_repo, &[("some_playbook.yml", SITE)])?;
    let server = serve()?;

    let inventory = created(
        &server,
        "/inventory",
        &json!({"name": "example_inventory", "env": "alpha", "version": "0.0.1",
            "hosts": HOSTS, "vars": VARS}),
    )
    .await?;
    let inventory_id = inventory["id"].as_i64().context("inventory id")?;
    assert_eq!(
        inventory,
        json!({"id": inventory_id, "name": "example_inventory", "env": "alpha",
            "version": "0.0.1", "hosts": HOSTS, "vars": VARS})
    );
    // It is troupe's inventory of the same id.
    let own = server
        .get(&format!("/api/v1/inventories/{inventory_id}"))
        .await?;
    assert_eq!(
        (own["format"].as_str(), own["host_count"].as_i64()),
        (Some("yaml"), Some(6))
    );

    let url = format!("file://{}", git_repo.display());
    let playbook = created(
        &server,
        "/playbook",
        &json!({"name": "example_playbook", "git_repo": url, "entry": "some_playbook.yml"}),
    )
    .await?;
    let playbook_id = playbook["id"].as_i64().context("playbook id")?;
    assert_eq!(
        playbook,
        json!({"id": playbook_id, "name": "example_playbook", "git_repo": url,
            "entry": "some_playbook.yml"})
    );
    assert_eq!(
        server.get(&format!("{API}/playbook/{playbook_id}")).await?,
        playbook
    );
    // It is a git project of troupe's, cloned.
    let project = server
        .get(&format!("/api/v1/projects/{playbook_id}"))
        .await?;
    assert_eq!(project["source"]["type"], "git", "{project}");
    assert!(project["sync"]["commit"].is_string(), "{project}");

    let app = created(&server, "/app", &json!({"appid": "example_app"})).await?;
    let app_id = app["id"].as_i64().context("app id")?;
    assert_eq!(app["appid"], "example_app");
    let (s, _) = coffee(
        &server,
        "/app/playbook",
        &json!({"app_id": app_id, "playbook_id": playbook_id}),
    )
    .await?;
    assert_eq!(s, 200);
    let (s, linked) = coffee(
        &server,
        "/app/inventory",
        &json!({"app_id": app_id, "inventory_id": inventory_id}),
    )
    .await?;
    assert_eq!(s, 200);
    assert_eq!(
        linked,
        json!({"id": app_id, "appid": "example_app", "playbooks": [playbook_id],
            "inventories": [inventory_id]})
    );
    assert_eq!(server.get(&format!("{API}/app/{app_id}")).await?, linked);

    let job = created(
        &server,
        "/job",
        &json!({"env": "alpha", "playbook_id": playbook_id, "inventory_id": inventory_id}),
    )
    .await?;
    let uuid = job["uuid"].as_str().context("job uuid")?.to_owned();
    assert!(uuid::Uuid::parse_str(&uuid).is_ok(), "{job}");
    assert_eq!(
        (&job["env"], &job["playbook_id"], &job["inventory_id"]),
        (&json!("alpha"), &json!(playbook_id), &json!(inventory_id))
    );
    let run_id = job["id"].as_i64().context("job id")?;

    // Progress, followed from the start until the socket closes at the job's end.
    let messages = progress(&server, &uuid).await?;
    let job = wait_job(&server, &uuid).await?;
    assert_eq!(job["status"], "failed", "{job}");
    let run = server.get(&format!("/api/v1/runs/{run_id}")).await?;
    assert_eq!(run["labels"]["pansible.job"], uuid.as_str());
    assert_eq!(run["playbook"], "some_playbook.yml");

    let result = server.get(&format!("{API}/job/result/{uuid}")).await?;
    let hosts: BTreeSet<&str> = result
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        hosts,
        BTreeSet::from([
            "foo.example3.com",
            "foo.example4.com",
            "foo.example5.com",
            "localhost",
            "one.example.com",
            "two.example.com"
        ]),
        "{result}"
    );
    let local = &result["localhost"];
    assert_eq!(local["stats"]["failed"], 1, "{result}");
    assert_eq!(local["stats"]["unreachable"], false);
    assert_eq!(local["stats"]["target"], "localhost");
    let failures = local["failures"].as_array().context("localhost failures")?;
    assert_eq!(failures.len(), 1, "{result}");
    assert_eq!(failures[0]["stats_id"], local["stats"]["id"]);
    let failure: Value = serde_json::from_str(failures[0]["result"].as_str().unwrap_or("null"))?;
    assert_eq!(failure["msg"], "localhost fails on purpose", "{result}");
    let one = &result["one.example.com"];
    assert_eq!(one["stats"]["unreachable"], true, "{result}");
    assert_eq!(
        one["failures"],
        Value::Null,
        "unreachable is not a failure: {result}"
    );
    let two = &result["two.example.com"];
    assert_eq!(
        (
            &two["failures"],
            &two["stats"]["failed"],
            &two["stats"]["unreachable"]
        ),
        (&Value::Null, &json!(0), &json!(false))
    );
    // One ansible-playbook ran the job: one task id for all, the progress messages' too.
    let task = local["stats"]["run_id"]
        .as_str()
        .context("run_id")?
        .to_owned();
    assert!(uuid::Uuid::parse_str(&task).is_ok(), "{result}");
    let start = local["stats"]["job_start_time"]
        .as_str()
        .unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(start).is_ok()
            && start.ends_with('Z')
            && !start.contains('.'),
        "job_start_time as Pansible printed it: {start}"
    );
    let mut ids = BTreeSet::new();
    for (host, r) in result.as_object().into_iter().flatten() {
        assert_eq!(r["stats"]["run_id"], task.as_str(), "{host}: {result}");
        assert_eq!(r["stats"]["job_start_time"], start, "{host}");
        ids.insert(r["stats"]["id"].as_i64().unwrap_or_default());
    }
    assert_eq!(
        ids.len(),
        6,
        "every host's stats have their own id: {result}"
    );

    // The progress messages: Pansible's fields, one per host result.
    let mut by_kind: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for m in &messages {
        assert_eq!(m["_pansible_job"], uuid.as_str(), "{m}");
        assert_eq!(m["_pansible_task"], task.as_str(), "{m}");
        by_kind
            .entry((
                m["target"].as_str().unwrap_or_default().to_owned(),
                m["type"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default()
            .push(m);
    }
    let unreachable = by_kind
        .get(&("one.example.com".to_owned(), "unreachable".to_owned()))
        .context("an unreachable message for one.example.com")?;
    assert_eq!(
        unreachable[0]["result"]["unreachable"], true,
        "{}",
        unreachable[0]
    );
    let msg = unreachable[0]["result"]["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("ssh") || msg.contains("port 1"), "{msg}");
    let failed = by_kind
        .get(&("localhost".to_owned(), "failed".to_owned()))
        .context("a failed message for localhost")?;
    assert_eq!(failed[0]["result"]["msg"], "localhost fails on purpose");
    let ok = by_kind
        .get(&("foo.example4.com".to_owned(), "ok".to_owned()))
        .context("ok messages for foo.example4.com")?;
    let greeted = ok
        .iter()
        .find(|m| m["task_name"] == "greet")
        .context("greet's message")?;
    assert_eq!(
        greeted["result"]["msg"], "allval1 wsval1",
        "vars reach the hosts"
    );
    assert!(by_kind.contains_key(&("two.example.com".to_owned(), "skipped".to_owned())));
    assert_eq!(
        messages.len(),
        // reach: 5 ok, 1 unreachable; then greet, and the failure or skip, on the 5 reachable.
        6 + 5 + 5,
        "{messages:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn hosts_per_task_from_pansible_yml_splits_a_job_into_tasks() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let git_repo = tmp.path().join("deploy");
    repo(
        &git_repo,
        &[(
            "ping.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
        )],
    )?;
    let config = tmp.path().join("pansible.yml");
    // `port` is overridden by the harness's --listen; unknown keys are reported and ignored.
    std::fs::write(
        &config,
        "port: \":5757\"\nhosts_per_task: 2\ndb_url: mysql://x\n",
    )?;
    let server = serve_with(ServerOpts {
        extra_args: vec!["--pansible-config".into(), config.display().to_string()],
        ..Default::default()
    })?;
    let inventory = created(
        &server,
        "/inventory",
        &json!({"name": "four", "env": "beta", "version": "1",
            "hosts": "all:\n  hosts:\n    h[1:4]:\n",
            "vars": "all:\n  ansible_connection: local\n  ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"}),
    )
    .await?;
    let playbook = created(
        &server,
        "/playbook",
        &json!({"name": "ping", "git_repo": git_repo.display().to_string(), "entry": "ping.yml"}),
    )
    .await?;
    let job = created(
        &server,
        "/job",
        &json!({"env": "beta", "playbook_id": playbook["id"], "inventory_id": inventory["id"]}),
    )
    .await?;
    let uuid = job["uuid"].as_str().context("uuid")?.to_owned();
    let messages = progress(&server, &uuid).await?;
    let job = wait_job(&server, &uuid).await?;
    assert_eq!(job["status"], "successful", "{job}");
    let slices = server
        .get(&format!("/api/v1/runs?parent={}", job["id"]))
        .await?;
    assert_eq!(slices["runs"].as_array().map(Vec::len), Some(2), "{slices}");
    let result = server.get(&format!("{API}/job/result/{uuid}")).await?;
    let mut tasks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (host, r) in result.as_object().into_iter().flatten() {
        assert_eq!(r["failures"], Value::Null);
        tasks
            .entry(r["stats"]["run_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .insert(host.clone());
    }
    assert_eq!(tasks.len(), 2, "two tasks of two hosts: {result}");
    assert!(tasks.values().all(|hosts| hosts.len() == 2), "{tasks:?}");
    assert_eq!(messages.len(), 4, "{messages:#?}");
    for m in &messages {
        let host = m["target"].as_str().unwrap_or_default();
        let task = m["_pansible_task"].as_str().unwrap_or_default();
        assert!(
            tasks.get(task).is_some_and(|h| h.contains(host)),
            "{host}'s progress names the task that ran it: {m} vs {tasks:?}"
        );
    }
    let log = server.log();
    assert!(
        log.contains("db_url") && log.contains("ignored"),
        "pansible.yml keys troupe has no use for are reported: {log}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_at_fault() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let git_repo = tmp.path().join("deploy");
    repo(&git_repo, &[("site.yml", SITE)])?;
    let server = serve()?;
    let inventory = created(
        &server,
        "/inventory",
        &json!({"name": "alpha_hosts", "env": "alpha", "hosts": "all:\n  hosts:\n    h1:\n"}),
    )
    .await?;
    let playbook = created(
        &server,
        "/playbook",
        &json!({"name": "site", "git_repo": git_repo.display().to_string(), "entry": "site.yml"}),
    )
    .await?;
    // Its entry is not in the repository: a job of it is refused, not stored.
    let ghost = created(
        &server,
        "/playbook",
        &json!({"name": "ghost", "git_repo": git_repo.display().to_string(), "entry": "missing.yml"}),
    )
    .await?;
    let app = created(&server, "/app", &json!({"appid": "shop"})).await?;
    let (inv, pb, app) = (&inventory["id"], &playbook["id"], &app["id"]);
    let missing = tmp.path().join("nothing-here").display().to_string();
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        // (path, body, status, code, field)
        (
            "/inventory",
            json!({"name": "x", "hosts": "all: [1"}),
            422,
            "invalid_inventory",
            "hosts",
        ),
        (
            "/inventory",
            json!({"name": "x", "hosts": "all:\n  hosts:\n    h:\n", "vars": "- a\n"}),
            422,
            "invalid_inventory",
            "vars",
        ),
        (
            "/inventory",
            json!({"name": "bad name", "hosts": "all:\n  hosts:\n    h:\n"}),
            422,
            "invalid_name",
            "name",
        ),
        (
            "/inventory",
            json!({"name": "alpha_hosts", "hosts": "all:\n  hosts:\n    h:\n"}),
            409,
            "conflict",
            "",
        ),
        ("/inventory", json!({"name": "x"}), 422, "invalid_body", ""),
        (
            "/inventory",
            json!({"name": "x", "hosts": "all:\n", "owner": "me"}),
            422,
            "invalid_body",
            "",
        ),
        (
            "/playbook",
            json!({"name": "p", "git_repo": missing, "entry": "site.yml"}),
            422,
            "sync_failed",
            "git_repo",
        ),
        (
            "/playbook",
            json!({"name": "p", "git_repo": "-upload-pack=x", "entry": "site.yml"}),
            422,
            "invalid_source",
            "git_repo",
        ),
        (
            "/playbook",
            json!({"name": "p", "git_repo": git_repo.display().to_string(), "entry": "../site.yml"}),
            422,
            "invalid_playbook",
            "entry",
        ),
        (
            "/playbook",
            json!({"name": "site", "git_repo": git_repo.display().to_string(), "entry": "site.yml"}),
            409,
            "conflict",
            "",
        ),
        ("/app", json!({"appid": ""}), 422, "invalid_name", "appid"),
        ("/app", json!({"appid": "shop"}), 409, "conflict", ""),
        (
            "/app/playbook",
            json!({"app_id": 999, "playbook_id": pb}),
            422,
            "unknown_app",
            "app_id",
        ),
        (
            "/app/playbook",
            json!({"app_id": app, "playbook_id": 999}),
            422,
            "unknown_playbook",
            "playbook_id",
        ),
        (
            "/app/inventory",
            json!({"app_id": app, "inventory_id": 999}),
            422,
            "unknown_inventory",
            "inventory_id",
        ),
        (
            "/job",
            json!({"env": "beta", "playbook_id": pb, "inventory_id": inv}),
            422,
            "env_mismatch",
            "env",
        ),
        (
            "/job",
            json!({"env": "", "playbook_id": pb, "inventory_id": inv}),
            422,
            "invalid_field",
            "env",
        ),
        (
            "/job",
            json!({"env": "alpha", "playbook_id": 999, "inventory_id": inv}),
            422,
            "unknown_playbook",
            "playbook_id",
        ),
        (
            "/job",
            json!({"env": "alpha", "playbook_id": pb, "inventory_id": 999}),
            422,
            "unknown_inventory",
            "inventory_id",
        ),
        (
            "/job",
            json!({"env": "alpha", "playbook_id": "site", "inventory_id": inv}),
            422,
            "invalid_body",
            "",
        ),
        (
            "/job",
            json!({"env": "alpha", "playbook_id": ghost["id"], "inventory_id": inv}),
            422,
            "playbook_not_found",
            "playbook_id",
        ),
    ];
    for (path, body, status, code, field) in &cases {
        let (s, v) = coffee(&server, path, body).await?;
        assert_eq!(s, *status, "POST {path} {body} -> {v}");
        assert_eq!(v["error"]["code"], *code, "POST {path} {body} -> {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], *field, "POST {path} {body} -> {v}");
        }
    }
    // Nothing was stored by a refused request.
    let projects = server.get("/api/v1/projects").await?;
    assert_eq!(
        projects["projects"].as_array().map(Vec::len),
        Some(2),
        "{projects}"
    );
    let runs = server.get("/api/v1/runs").await?;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");

    // Unknown jobs, and ids that are no uuid.
    for path in [
        format!("{API}/job/result/{}", uuid::Uuid::new_v4()),
        format!("{API}/job/not-a-uuid"),
        format!("{API}/playbook/999"),
        format!("{API}/app/999"),
        format!("{API}/inventory/999"),
    ] {
        let (s, v) = server.call(Method::GET, &path, None).await?;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }
    // A malformed body is 400.
    let resp = server
        .http
        .post(server.url(&format!("{API}/job")))
        .header("COFFEE_TOKEN", TOKEN)
        .header("content-type", "application/json")
        .body("{\"env\":")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);

    // No token, or a wrong one, in either header: 401; a viewer may read but not run.
    let url = server.url(&format!("{API}/app/{app}"));
    let bare = server.http.get(&url).send().await?;
    assert_eq!(bare.status().as_u16(), 401);
    let wrong = server
        .http
        .get(&url)
        .header("COFFEE_TOKEN", "trp_nope")
        .send()
        .await?;
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized");
    let viewer = server
        .post(
            "/api/v1/tokens",
            &json!({"name": "watcher", "role": "viewer"}),
        )
        .await?;
    let viewer = viewer["token"].as_str().context("viewer token")?;
    let read = server
        .http
        .get(&url)
        .header("COFFEE_TOKEN", viewer)
        .send()
        .await?;
    assert_eq!(read.status().as_u16(), 200);
    let run = server
        .http
        .post(server.url(&format!("{API}/job")))
        .header("COFFEE_TOKEN", viewer)
        .json(&json!({"env": "alpha", "playbook_id": pb, "inventory_id": inv}))
        .send()
        .await?;
    assert_eq!(run.status().as_u16(), 403);
    // A token limited to another project sees neither this playbook nor its jobs.
    let scoped = server
        .post(
            "/api/v1/tokens",
            &json!({"name": "ghost-ops", "role": "operator", "projects": ["ghost"]}),
        )
        .await?;
    let scoped = scoped["token"].as_str().context("scoped token")?;
    let refused = server
        .http
        .post(server.url(&format!("{API}/job")))
        .header("COFFEE_TOKEN", scoped)
        .json(&json!({"env": "alpha", "playbook_id": pb, "inventory_id": inv}))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "unknown_playbook", "{body}");
    let hidden = server
        .http
        .get(server.url(&format!("{API}/playbook/{pb}")))
        .header("COFFEE_TOKEN", scoped)
        .send()
        .await?;
    assert_eq!(hidden.status().as_u16(), 404);
    // The header only counts under the Pansible API.
    let own = server
        .http
        .get(server.url("/api/v1/projects"))
        .header("COFFEE_TOKEN", TOKEN)
        .send()
        .await?;
    assert_eq!(own.status().as_u16(), 401);
    Ok(())
}
