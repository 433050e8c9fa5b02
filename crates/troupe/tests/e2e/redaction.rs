//! Redaction end to end: secrets are planted (an `env` credential's value, an extra var
//! `db_password` with quotes and a backslash in it, a webhook payload field `password`),
//! playbooks print them every way they can (debug msg and var, `to_json`, a command's stdout,
//! a failing command's stderr and `cmd`, a failing module's message, at verbosity 3), then,
//! with the server (and the remote worker) stopped, every byte of the data dirs (the SQLite
//! database and its WAL included) and the logs are searched: no secret is there, raw or
//! JSON-escaped. The runs themselves saw the real values.

use crate::helpers::*;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_testkit::RemoteWorker;

const LEAK: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: the run really has the secrets
      ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        content: "{{ {'env': lookup('env', 'E2E_TOKEN'), 'var': db_password} | to_json }}"
    - ansible.builtin.debug:
        msg: "the password is {{ db_password }} and the token {{ lookup('env', 'E2E_TOKEN') }}"
    - ansible.builtin.debug:
        var: db_password
    - ansible.builtin.debug:
        msg: "{{ {'nested': db_password, 'token': lookup('env', 'E2E_TOKEN')} | to_json }}"
    - ansible.builtin.command:
        argv: [echo, "{{ db_password }}", "{{ lookup('env', 'E2E_TOKEN') }}"]
      changed_when: false
      no_log: false
    - ansible.builtin.command:
        argv: [sh, -c, 'echo "$0 $1" >&2; exit 3', "{{ db_password }}", "{{ lookup('env', 'E2E_TOKEN') }}"]
      no_log: false
      ignore_errors: true
    - ansible.builtin.debug:
        msg: "encoded {{ db_password | b64encode }} {{ lookup('env', 'E2E_TOKEN') | b64encode }}"
    - ansible.builtin.shell: "printf '%s\\n' {{ db_password | quote }} | base64; printf '%s\\n' {{ lookup('env', 'E2E_TOKEN') | quote }} | base64"
      changed_when: false
    - ansible.builtin.fail:
        msg: "failing with {{ db_password }} / {{ lookup('env', 'E2E_TOKEN') }}"
"#;

/// A template's secret default, printed.
const DEFAULTED: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out_dir }}/defaulted.json"
        content: "{{ {'api_token': api_token} | to_json }}"
    - ansible.builtin.debug:
        msg: "the default token is {{ api_token }}"
"#;

const HOOKED: &str = r#"- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out_dir }}/hook.json"
        content: "{{ {'password': password} | to_json }}"
    - ansible.builtin.debug:
        msg: "the hook said {{ password }}"
    - ansible.builtin.debug:
        var: troupe_event
"#;

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
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

/// The forms a secret must not be found in: as it is, JSON-escaped, base64 (alone and as
/// `echo | base64` prints it) and shell-quoted.
fn forms(secrets: &[&str]) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for s in secrets {
        out.push((*s).to_owned());
        let json = serde_json::to_string(s).unwrap_or_default();
        out.push(json[1..json.len() - 1].to_owned());
        out.push(b64.encode(s));
        out.push(b64.encode(format!("{s}\n")));
        // Shell-quoted (Python's shlex.quote), as a `| quote`d command line shows it.
        let shell = s.replace('\'', r#"'"'"'"#);
        let shell_json = serde_json::to_string(&shell).unwrap_or_default();
        out.push(shell_json[1..shell_json.len() - 1].to_owned());
        out.push(shell);
    }
    out.dedup();
    out
}

/// Files under `dir` holding any of `needles` (every byte searched), with the needle found.
fn holding(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files_under(dir) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                hits.push(format!("{} holds {n:?}", f.display()));
            }
        }
    }
    hits
}

async fn env_credential(server: &Server, name: &str, token: &str) -> anyhow::Result<()> {
    let (status, answer) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/credentials",
            Some(&json!({"name": name, "kind": "env", "vars": {"E2E_TOKEN": token}})),
        )
        .await?;
    anyhow::ensure!(status == 201, "creating {name} answered {status}: {answer}");
    Ok(())
}

/// Launches the leaking playbook (verbosity 3) and checks it ended as the playbook says,
/// with the secrets replaced in what the API shows and the real values in the run.
async fn leak_run(
    server: &Server,
    project: &str,
    out: &Path,
    db_password: &str,
    token: &str,
    worker_labels: &[&str],
) -> anyhow::Result<i64> {
    let run = server
        .create_run(&json!({
            "project": project, "playbook": "leak.yml", "hosts": local_hosts(1),
            "verbosity": 3, "credentials": ["leaky"], "worker_labels": worker_labels,
            "extra_vars": {"db_password": db_password, "out_dir": out.display().to_string()},
        }))
        .await?;
    let ended = server.wait_finished(run).await?;
    assert_eq!(ended["status"], "failed", "the fail task fails it: {ended}");
    // The run itself had the real values.
    let seen = read_json(&out.join("h1.json"))?;
    assert_eq!(seen["var"], db_password);
    assert_eq!(seen["env"], token);
    // What is shown says where the secrets were.
    let stdout = server.text(&format!("/api/v1/runs/{run}/stdout")).await?;
    assert!(
        stdout.contains("the password is ******** and the token ********"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failing with ******** / ********"),
        "{stdout}"
    );
    let events = server.events(run).await?;
    let failed = events
        .iter()
        .filter(|e| e["event"] == "runner_on_failed")
        .count();
    assert_eq!(failed, 2, "the command and the fail task failed");
    for e in &events {
        // `event_data` stays valid JSON: the API parses it into an object.
        assert!(e["event_data"].is_object(), "{e}");
    }
    let shown = serde_json::to_string(&events)? + &stdout + &ended.to_string();
    for n in forms(&[db_password, token]) {
        assert!(!shown.contains(&n), "the API shows {n:?}");
    }
    Ok(run)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
async fn planted_secrets_are_nowhere_in_the_data_dir_nor_the_log() -> anyhow::Result<()> {
    let proj = named_project(&[
        ("leak.yml", LEAK),
        ("defaulted.yml", DEFAULTED),
        ("playbooks/leak.hook.yml", HOOKED),
    ])?;
    let server = serve_with(ServerOpts {
        log_filter: "debug".to_owned(),
        ..with_project(proj.path())
    })?;
    let project = project_name(proj.path());
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    // Quotes and a backslash: JSON and Python print it escaped.
    let db_password = format!("pw-{}-\"q'\\b", uuid::Uuid::new_v4().simple());
    let hook_secret = format!("hook-{}", uuid::Uuid::new_v4().simple());
    let default_token = format!("dflt-{}", uuid::Uuid::new_v4().simple());
    env_credential(&server, "leaky", &token).await?;
    let out = tempfile::tempdir()?;

    let run = leak_run(&server, &project, out.path(), &db_password, &token, &[]).await?;
    // The stored options hold the extra var sealed, and the run can be launched again.
    let shown = server.get(&format!("/api/v1/runs/{run}")).await?;
    let stored = shown["options"]["extra_vars"]["db_password"]
        .as_str()
        .unwrap_or_default();
    assert!(stored.starts_with("troupe-sealed:v1:"), "{shown}");
    std::fs::remove_file(out.path().join("h1.json"))?;
    let again = server
        .post(&format!("/api/v1/runs/{run}/relaunch"), &json!({}))
        .await?;
    let again = again["id"].as_i64().context("relaunched id")?;
    assert_eq!(server.wait_finished(again).await?["status"], "failed");
    assert_eq!(read_json(&out.path().join("h1.json"))?["var"], db_password);

    // A template's default that is a secret: stored sealed, opened for its runs.
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "one", "format": "ini", "hosts": local_hosts(1)}),
        )
        .await?;
    let t = server
        .post(
            "/api/v1/templates",
            &json!({
                "name": "defaulted", "project": project, "playbook": "defaulted.yml",
                "inventory": "one",
                "defaults": {"extra_vars": {
                    "api_token": default_token, "out_dir": out.path().display().to_string()
                }},
            }),
        )
        .await?;
    let shown = t["defaults"]["extra_vars"]["api_token"]
        .as_str()
        .unwrap_or_default();
    assert!(shown.starts_with("troupe-sealed:v1:"), "{t}");
    let tid = t["id"].as_i64().context("template id")?;
    let launched = server
        .post(&format!("/api/v1/templates/{tid}/launch"), &json!({}))
        .await?;
    let launched = launched["id"].as_i64().context("run id")?;
    let ended = server.wait_finished(launched).await?;
    assert_eq!(ended["status"], "successful", "{ended}");
    assert_eq!(
        read_json(&out.path().join("defaulted.json"))?["api_token"],
        default_token
    );
    let stdout = server
        .text(&format!("/api/v1/runs/{launched}/stdout"))
        .await?;
    assert!(stdout.contains("the default token is ********"), "{stdout}");

    // An event whose payload has a `password` field: the run gets it, the record does not
    // keep it.
    server
        .apply_rules(&format!(
            r#"
sources:
  hook: {{type: webhook, token: "hook-token"}}
rules:
  - name: leak
    routing_keys: ["leak.*"]
    action:
      project: {project}
      playbooks_dir: playbooks
      vars: {{out_dir: "{out}"}}
"#,
            out = out.path().display()
        ))
        .await?;
    let body = json!({"password": hook_secret, "msg": "hello"}).to_string();
    let resp = server
        .http
        .post(server.url("/api/v1/hooks/hook/leak.hook"))
        .header("content-type", "application/json")
        .header("x-troupe-token", "hook-token")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["event"]["payload"]["password"], "********", "{v}");
    assert_eq!(v["event"]["payload"]["msg"], "hello", "{v}");
    let hooked = v["event"]["run_ids"][0].as_i64().context("run id")?;
    let ended = server.wait_finished(hooked).await?;
    assert_eq!(ended["status"], "successful", "{ended}\n{}", server.log());
    assert_eq!(
        read_json(&out.path().join("hook.json"))?["password"],
        hook_secret
    );
    let stdout = server
        .text(&format!("/api/v1/runs/{hooked}/stdout"))
        .await?;
    assert!(stdout.contains("the hook said ********"), "{stdout}");

    let data_dir = server.data_dir.clone();
    let log = server.log();
    server.stop(Duration::from_secs(30))?;
    let needles = forms(&[&db_password, &token, &hook_secret, &default_token]);
    for n in &needles {
        assert!(!log.contains(n.as_str()), "the log holds {n:?}");
    }
    let hits = holding(&data_dir, &needles);
    assert!(hits.is_empty(), "{hits:#?}");
    Ok(())
}

#[tokio::test]
async fn a_remote_worker_redacts_before_anything_reaches_its_disk() -> anyhow::Result<()> {
    let proj = named_project(&[("leak.yml", LEAK)])?;
    let server = serve_with(with_project(proj.path()))?;
    let project = project_name(proj.path());
    let t = server
        .post("/api/v1/tokens", &json!({"name": "w", "role": "worker"}))
        .await?;
    let worker_token = t["token"].as_str().unwrap_or_default().to_owned();
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let db_password = format!("pw-{}-\"q'\\b", uuid::Uuid::new_v4().simple());
    env_credential(&server, "leaky", &token).await?;
    let wdir = tempfile::tempdir()?;
    let worker = RemoteWorker::start(
        Path::new(troupe_bin()),
        &format!("http://{}", server.addr),
        &worker_token,
        &["remote"],
        1,
        wdir.path(),
        &[],
    )?;
    let out = tempfile::tempdir()?;
    let run = leak_run(
        &server,
        &project,
        out.path(),
        &db_password,
        &token,
        &["remote"],
    )
    .await?;
    // Only the remote worker has the label the run requires.
    let ran = server.get(&format!("/api/v1/runs/{run}")).await?;
    assert!(ran["worker_id"].is_string(), "{ran}");

    let data_dir = server.data_dir.clone();
    let (log, wlog) = (server.log(), worker.log());
    worker.stop(Duration::from_secs(30))?;
    server.stop(Duration::from_secs(30))?;
    let needles = forms(&[&db_password, &token]);
    for n in &needles {
        assert!(!log.contains(n.as_str()), "the server's log holds {n:?}");
        assert!(!wlog.contains(n.as_str()), "the worker's log holds {n:?}");
    }
    let mut hits = holding(&data_dir, &needles);
    hits.extend(holding(wdir.path(), &needles));
    assert!(hits.is_empty(), "{hits:#?}");
    Ok(())
}
