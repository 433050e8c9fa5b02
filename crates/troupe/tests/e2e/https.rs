//! HTTPS into troupe: `troupe serve` with a certificate from a private CA (`tls_cert_file`,
//! `tls_key_file`) answers the API, the CLI and remote workers that trust the CA, refuses
//! those that do not and plain HTTP, shuts down as gracefully as over HTTP, and will not start
//! on a certificate and key it cannot use.

use crate::helpers::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use troupe_testkit::RemoteWorker;
use troupe_testkit::tls::{PrivateCa, ServerTls};

const PLAY: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "hello from {{ inventory_hostname }}"
"#;

/// Marks that it started, then waits for the file named by `release`.
const WAITS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ started }}"
        content: "started"
    - ansible.builtin.wait_for:
        path: "{{ release }}"
        timeout: 120
    - ansible.builtin.debug:
        msg: "released"
"#;

/// Options for an HTTPS server with `tls`, registering `proj` when given.
fn https_opts(tls: &ServerTls, proj: Option<&Path>) -> ServerOpts {
    let base = proj.map_or_else(ServerOpts::default, with_project);
    ServerOpts {
        tls: Some(tls.clone()),
        ..base
    }
}

#[tokio::test]
async fn the_api_answers_over_https_to_clients_that_trust_its_ca() -> anyhow::Result<()> {
    let ca = PrivateCa::new()?;
    let tls = ca.localhost()?;
    let proj = project_dir(&[("site.yml", PLAY)])?;
    let server = serve_with(https_opts(&tls, None))?;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    assert!(
        server
            .log()
            .contains(&format!("listening on https://{}", server.addr)),
        "{}",
        server.log()
    );

    // The harness's client trusts the CA: the API works, runs included.
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(pid, "site.yml", &local_hosts(1), json!({}))
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    // By name as well as by address: the certificate names both.
    let by_name = server
        .http
        .get(format!("https://localhost:{}/healthz", server.addr.port()))
        .send()
        .await?;
    assert!(by_name.status().is_success(), "{}", by_name.status());

    // A client with the system's CAs only refuses the certificate.
    let untrusting = troupe_http::client()?;
    let e = untrusting
        .get(server.url("/api/v1/runs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect_err("an unknown CA is refused");
    // Every cause: what the TLS layer said is among them.
    let text = troupe_http::describe(&e);
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = troupe_http::client()?
        .get(format!("http://{}/api/v1/runs", server.addr))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A certificate for another name is refused even by a client trusting the CA.
    let other = ca.issue(&["elsewhere.example"])?;
    let wrong = serve_with(https_opts(&other, None))?;
    let e = wrong
        .get("/api/v1/runs")
        .await
        .expect_err("a certificate for another name is refused");
    assert!(
        format!("{e:#}").to_lowercase().contains("certificate"),
        "{e:#}"
    );
    Ok(())
}

/// `troupe ...` against `server` with its token, from an empty directory and with no CA from
/// the environment.
fn troupe_cli(dir: &Path) -> Command {
    let mut c = Command::new(troupe_bin());
    c.current_dir(dir)
        .env("TROUPE_TOKEN", TOKEN)
        .env_remove("TROUPE_SERVER")
        .env_remove("TROUPE_CA_FILE")
        .env_remove("TROUPE_CONFIG");
    c
}

#[tokio::test]
async fn the_cli_reaches_an_https_server_with_its_ca_file() -> anyhow::Result<()> {
    let ca = PrivateCa::new()?;
    let tls = ca.localhost()?;
    let proj = project_dir(&[("site.yml", PLAY)])?;
    let server = serve_with(https_opts(&tls, None))?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(pid, "site.yml", &local_hosts(1), json!({}))
        .await?;
    server.wait_finished(id).await?;
    let cwd = tempfile::tempdir()?;

    let out = troupe_cli(cwd.path())
        .args([
            "runs",
            "list",
            "--json",
            "--server",
            &server.base,
            "--ca-file",
        ])
        .arg(&ca.ca_file)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let runs: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(runs[0]["id"], id, "{runs}");
    assert_eq!(runs[0]["status"], "successful", "{runs}");

    // The same through TROUPE_CA_FILE.
    let out = troupe_cli(cwd.path())
        .args(["runs", "show", &id.to_string(), "--server", &server.base])
        .env("TROUPE_CA_FILE", &ca.ca_file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA: a non-zero exit that says the certificate is the problem.
    let out = troupe_cli(cwd.path())
        .args(["runs", "list", "--server", &server.base])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not reach the troupe server")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_remote_worker_runs_a_playbook_over_https() -> anyhow::Result<()> {
    let ca = PrivateCa::new()?;
    let tls = ca.localhost()?;
    let proj = named_project(&[("site.yml", PLAY)])?;
    let server = serve_with(https_opts(&tls, Some(proj.path())))?;
    let t = server
        .post("/api/v1/tokens", &json!({"name": "w", "role": "worker"}))
        .await?;
    let token = t["token"].as_str().unwrap_or_default().to_owned();
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let ca_file = ca.ca_file.display().to_string();

    // One that does not trust the CA cannot register: it says why.
    let lost_dir = tempfile::tempdir()?;
    let lost = RemoteWorker::start(
        Path::new(troupe_bin()),
        &url,
        &token,
        &["tls"],
        1,
        lost_dir.path(),
        &[],
    )?;
    wait_until(
        "the untrusting worker to report the certificate",
        Duration::from_secs(60),
        || {
            let log = lost.log();
            async move {
                Ok(
                    log.contains("could not register")
                        && log.to_lowercase().contains("certificate"),
                )
            }
        },
    )
    .await?;
    drop(lost);

    let wdir = tempfile::tempdir()?;
    let worker = RemoteWorker::start(
        Path::new(troupe_bin()),
        &url,
        &token,
        &["tls"],
        1,
        wdir.path(),
        &[("TROUPE_CA_FILE", &ca_file)],
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let remote_id = loop {
        let list = server.get("/api/v1/workers").await?;
        let active = list["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["kind"] == "remote" && w["status"] == "active")
            .find_map(|w| w["id"].as_str().map(str::to_owned));
        if let Some(id) = active {
            break id;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the worker did not register: {list}\n--- worker ---\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Only the remote worker has the label: the run goes to it, over HTTPS both ways.
    let id = server
        .create_run(&json!({
            "project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(2), "worker_labels": ["tls"]}))
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(
        run["status"],
        "successful",
        "{run}\n--- worker ---\n{}",
        worker.log()
    );
    assert_eq!(run["worker_id"].as_str(), Some(remote_id.as_str()), "{run}");
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert!(stdout.contains("hello from h2"), "{stdout}");
    assert!(!server.events(id).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn shutdown_over_https_lets_runs_in_flight_finish() -> anyhow::Result<()> {
    let ca = PrivateCa::new()?;
    let tls = ca.localhost()?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let proj = project_dir(&[("waits.yml", WAITS)])?;
    let mut server = serve_with(ServerOpts {
        data_dir: Some(data.clone()),
        ..https_opts(&tls, None)
    })?;
    let pid = server.project(proj.path()).await?;
    let started = tmp.path().join("started");
    let release = tmp.path().join("release");
    let id = server
        .launch(
            pid,
            "waits.yml",
            &local_hosts(1),
            json!({"extra_vars": {"started": started.display().to_string(),
                                  "release": release.display().to_string()}}),
        )
        .await?;
    wait_file(&started, Duration::from_secs(60)).await?;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.pid())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    // The API keeps answering over HTTPS while the run has its grace.
    wait_until("the shutdown to begin", Duration::from_secs(30), || async {
        Ok(server.log().contains("shutting down"))
    })
    .await?;
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(run["status"], "running", "{run}");
    std::fs::write(&release, "go")?;
    let status = server.terminate()?;
    assert!(status.success(), "{status:?}\n{}", server.log());
    drop(server);

    let server = serve_with(ServerOpts {
        data_dir: Some(data),
        ..https_opts(&tls, None)
    })?;
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert!(stdout.contains("released"), "{stdout}");
    Ok(())
}

#[tokio::test]
async fn serve_refuses_a_tls_configuration_it_cannot_use() -> anyhow::Result<()> {
    let ca = PrivateCa::new()?;
    let good = ca.localhost()?;
    let other = ca.localhost()?;
    let dir = ca.dir();
    let open_key = dir.join("open.key");
    std::fs::copy(&good.key_file, &open_key)?;
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644))?;
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n")?;
    let not_key = dir.join("not.key");
    std::fs::write(&not_key, "not a key\n")?;
    std::fs::set_permissions(&not_key, std::fs::Permissions::from_mode(0o600))?;
    let missing = dir.join("missing.pem");
    let s = |p: &Path| p.display().to_string();

    // (cert, key, what stderr must say)
    let cases: Vec<(Option<String>, Option<String>, Vec<String>)> = vec![
        (
            Some(s(&good.cert_file)),
            None,
            vec!["tls_cert_file is set but tls_key_file is not".into()],
        ),
        (
            None,
            Some(s(&good.key_file)),
            vec!["tls_key_file is set but tls_cert_file is not".into()],
        ),
        (
            Some(s(&missing)),
            Some(s(&good.key_file)),
            vec![format!(
                "could not read the TLS certificate file {}",
                s(&missing)
            )],
        ),
        (
            Some(s(&good.cert_file)),
            Some(s(&missing)),
            vec![format!("could not read the TLS key file {}", s(&missing))],
        ),
        (
            Some(s(&good.cert_file)),
            Some(s(&open_key)),
            vec![
                format!("the TLS key file {} may be read by others", s(&open_key)),
                "chmod 600".into(),
            ],
        ),
        (
            Some(s(&not_pem)),
            Some(s(&good.key_file)),
            vec![format!(
                "the TLS certificate file {} holds no PEM certificate",
                s(&not_pem)
            )],
        ),
        (
            Some(s(&good.cert_file)),
            Some(s(&not_key)),
            vec![format!(
                "the TLS key file {} holds no PEM private key",
                s(&not_key)
            )],
        ),
        (
            Some(s(&good.cert_file)),
            Some(s(&other.key_file)),
            vec![format!(
                "the TLS key {} does not match the certificate {}",
                s(&other.key_file),
                s(&good.cert_file)
            )],
        ),
    ];
    for (cert, key, expected) in cases {
        let data = tempfile::tempdir()?;
        let mut cmd = tokio::process::Command::new(troupe_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("TROUPE_ADMIN_TOKEN", TOKEN)
            .env_remove("TROUPE_TLS_CERT_FILE")
            .env_remove("TROUPE_TLS_KEY_FILE")
            .env_remove("TROUPE_CONFIG")
            .kill_on_drop(true);
        if let Some(c) = &cert {
            cmd.env("TROUPE_TLS_CERT_FILE", c);
        }
        if let Some(k) = &key {
            cmd.env("TROUPE_TLS_KEY_FILE", k);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| anyhow::anyhow!("serve with {cert:?} {key:?} did not stop"))??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cert:?} {key:?}: {stderr}");
        for e in &expected {
            assert!(stderr.contains(e.as_str()), "{cert:?} {key:?}: {stderr}");
        }
        // Refused before it listened or wrote anything: not even the admin token.
        assert!(!data.path().join("admin-token").exists(), "{stderr}");
    }

    // And the good pair serves.
    let server = serve_with(https_opts(&good, None))?;
    server.get("/api/v1/runs").await?;
    Ok(())
}
