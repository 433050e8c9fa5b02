//! The command line: `troupe run` behaves like ansible-playbook, `troupe runs` inspects.

use crate::helpers::*;
use serde_json::Value;
use std::process::Command;

fn troupe(server: &Server, dir: &std::path::Path) -> Command {
    let mut c = Command::new(troupe_bin());
    c.current_dir(dir)
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN);
    c
}

#[tokio::test]
async fn troupe_run_prints_ansible_output_and_exits_with_its_code() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[
        (
            "ok.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: say\n      ansible.builtin.debug:\n        msg: \"{{ greeting }}\"\n",
        ),
        (
            "bad.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: nope\n",
        ),
        ("hosts.ini", &local_hosts(2)),
    ])?;
    let out = troupe(&server, proj.path())
        .args([
            "run",
            "ok.yml",
            "-i",
            "hosts.ini",
            "-e",
            "greeting=hello-from-cli",
        ])
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello-from-cli"), "{stdout}");
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no colours when stdout is not a terminal"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\r'),
        "no progress line in pipes"
    );

    // What the CLI printed is exactly the run's stored stdout.
    let runs = server.get("/api/v1/runs?limit=1").await?;
    let id = runs["runs"][0]["id"].as_i64().unwrap_or_default();
    let stored = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert_eq!(stdout, stored);

    // A second run reuses the registered project and inventory.
    let out = troupe(&server, proj.path())
        .args(["run", "bad.yml", "-i", "hosts.ini"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a failed host exits 2 like ansible-playbook"
    );
    assert_eq!(
        server.get("/api/v1/projects").await?["projects"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        server.get("/api/v1/inventories").await?["inventories"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Inline host lists work too.
    let out = troupe(&server, proj.path())
        .args([
            "run",
            "ok.yml",
            "-i",
            "localhost,",
            "-e",
            "{\"greeting\": \"json\", \"ansible_connection\": \"local\"}",
        ])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // runs list / show / logs.
    let out = troupe(&server, proj.path())
        .args(["runs", "list", "--json"])
        .output()?;
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert_eq!(listed[1]["status"], "failed");
    let out = troupe(&server, proj.path())
        .args(["runs", "show", &id.to_string()])
        .output()?;
    let shown = String::from_utf8(out.stdout)?;
    assert!(
        shown.contains("successful") && shown.contains("h1") && shown.contains("h2"),
        "{shown}"
    );
    let out = troupe(&server, proj.path())
        .args(["runs", "logs", &id.to_string()])
        .output()?;
    assert_eq!(String::from_utf8(out.stdout)?, stored);
    Ok(())
}

#[tokio::test]
async fn cli_errors_are_clear() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[("ok.yml", "- hosts: all\n  tasks: []\n")])?;
    // (arguments, token, what the error says): each fails with exit code 1.
    let cases: [(&[&str], &str, &str); 3] = [
        (&["run", "missing.yml", "-i", "h,"], TOKEN, "missing.yml"),
        (&["runs", "cancel", "999"], TOKEN, "not found"),
        (&["runs", "list"], "trp_bad", "invalid token"),
    ];
    for (args, token, says) in cases {
        let out = troupe(&server, proj.path())
            .env("TROUPE_TOKEN", token)
            .args(args)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn detach_cancel_and_tokens_from_the_cli() -> anyhow::Result<()> {
    let server = serve()?;
    let proj = project_dir(&[
        (
            "slow.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n",
        ),
        ("hosts.ini", &local_hosts(1)),
    ])?;
    let out = troupe(&server, proj.path())
        .args(["run", "slow.yml", "-i", "hosts.ini", "--detach"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: i64 = String::from_utf8(out.stdout)?.trim().parse()?;
    server
        .wait_run(id, std::time::Duration::from_secs(60), |s| s == "running")
        .await?;
    let out = troupe(&server, proj.path())
        .args(["runs", "cancel", &id.to_string(), "--force"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "canceled");
    // Following a finished run replays it and exits with its code (99: interrupted).
    let out = troupe(&server, proj.path())
        .args(["runs", "follow", &id.to_string()])
        .output()?;
    assert_eq!(out.status.code(), Some(99));

    let out = troupe(&server, proj.path())
        .args(["token", "create", "robot"])
        .output()?;
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(token.starts_with("trp_"), "{token}");
    let out = troupe(&server, proj.path())
        .env("TROUPE_TOKEN", &token)
        .args(["runs", "hosts", &id.to_string(), "--json"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the new token works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts: Value = serde_json::from_slice(&out.stdout)?;
    assert!(hosts.is_object());
    Ok(())
}

/// `troupe setup` installs the pinned ansible-core into the data dir when no ansible-playbook
/// is on the PATH, and `troupe doctor` then reports it.
#[tokio::test]
async fn setup_bootstraps_ansible_and_doctor_reports_it() -> anyhow::Result<()> {
    let path = std::env::var("PATH").unwrap_or_default();
    let without_ansible: Vec<&str> = path
        .split(':')
        .filter(|d| !std::path::Path::new(d).join("ansible-playbook").exists())
        .collect();
    let path = without_ansible.join(":");
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let out = Command::new(troupe_bin())
        .args(["--data-dir"])
        .arg(&data)
        .arg("doctor")
        .env("PATH", &path)
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "no ansible yet: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(troupe_bin())
        .args(["--data-dir"])
        .arg(&data)
        .arg("setup")
        .env("PATH", &path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2.19.14"), "{stdout}");
    assert!(data.join("venv/bin/ansible-playbook").exists());
    let out = Command::new(troupe_bin())
        .args(["--data-dir"])
        .arg(&data)
        .arg("doctor")
        .env("PATH", &path)
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("2.19.14") && report.contains("python") && report.contains("sqlite"),
        "{report}"
    );
    Ok(())
}

/// Two `troupe serve` on one SQLite file would both run what is queued and each keep a stale
/// runs list: the second is refused, naming the file; `troupe doctor` still reports the store.
#[tokio::test]
async fn a_second_serve_on_the_same_data_dir_is_refused() -> anyhow::Result<()> {
    let server = serve()?;
    let second = tokio::process::Command::new(troupe_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .env("TROUPE_ADMIN_TOKEN", TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), second)
        .await
        .map_err(|_| anyhow::anyhow!("the second serve did not stop"))??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("in use by another troupe process")
            && stderr.contains(&server.data_dir.join("troupe.db").display().to_string()),
        "{stderr}"
    );
    let out = Command::new(troupe_bin())
        .args(["--data-dir"])
        .arg(&server.data_dir)
        .arg("doctor")
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("open in a running troupe"), "{report}");
    // The first one is unharmed.
    server.get("/api/v1/runs").await?;
    Ok(())
}
