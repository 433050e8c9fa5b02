//! The same server on PostgreSQL (when TROUPE_TEST_DATABASE_URL names a server).

use crate::helpers::*;
use serde_json::json;

/// A fresh database on the test server, or None when no server is configured.
pub(crate) async fn fresh_database() -> anyhow::Result<Option<String>> {
    let Ok(url) = std::env::var("TROUPE_TEST_DATABASE_URL") else {
        eprintln!("TROUPE_TEST_DATABASE_URL is not set: PostgreSQL end-to-end test skipped");
        return Ok(None);
    };
    let name = format!("troupe_e2e_{}", uuid::Uuid::new_v4().simple());
    psql(&url, &format!("CREATE DATABASE {name}"))?;
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    Ok(Some(format!("{base}/{name}")))
}

#[tokio::test]
async fn runs_work_end_to_end_on_postgres() -> anyhow::Result<()> {
    let Some(url) = fresh_database().await? else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data.clone()),
        database_url: Some(url.clone()),
        ..Default::default()
    };
    let mut server = serve_with(opts())?;
    let ready = server.get("/readyz").await?;
    assert_eq!(ready["store"], "postgres");
    let proj = project_dir(&[
        (
            "site.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: \"true\"\n    - ansible.builtin.fail:\n        msg: h2 down\n      when: inventory_hostname == 'h2'\n",
        ),
        (
            "slow.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n",
        ),
    ])?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(pid, "site.yml", &local_hosts(2), json!({}))
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "failed", "{run}");
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    let recap = parse_recap(&stdout);
    assert_eq!(
        run["summary"]["h1"]["changed"].as_i64(),
        recap["h1"].get("changed").copied()
    );
    assert_eq!(run["summary"]["h2"]["failed"], 1);
    let events = server.events(id).await?;
    assert_eq!(
        events.len() as i64,
        run["event_count"].as_i64().unwrap_or(-1)
    );

    // A crash mid-run is recovered the same way on PostgreSQL.
    let slow = server
        .launch(pid, "slow.yml", &local_hosts(1), json!({}))
        .await?;
    // Once ansible runs: a run whose ansible never started would be queued again instead.
    wait_until(
        "ansible to start",
        std::time::Duration::from_secs(60),
        || async {
            Ok(server.get(&format!("/api/v1/runs/{slow}")).await?["launched_at"].is_string())
        },
    )
    .await?;
    server.kill9();
    let server = serve_with(opts())?;
    let run = server.get(&format!("/api/v1/runs/{slow}")).await?;
    assert_eq!(run["status"], "error", "{run}");
    Ok(())
}
