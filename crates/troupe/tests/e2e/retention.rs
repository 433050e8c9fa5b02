//! Run retention: old runs pruned in the background (with their events and output) and on
//! demand (`POST /api/v1/runs/prune`, `troupe runs prune`), what is still running untouched.

use crate::helpers::*;
use crate::postgres::fresh_database;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hello\n";
/// Runs until the file named by the `gate` extra var exists.
const GATED: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.wait_for:\n        path: \"{{ gate }}\"\n        timeout: 300\n";

/// The status of `GET path`.
async fn status_of(server: &Server, path: &str) -> anyhow::Result<u16> {
    Ok(server.call(reqwest::Method::GET, path, None).await?.0)
}

/// Runs `quick.yml` in `project` `n` times, one after another; their ids once all finished.
async fn quick_runs(server: &Server, project: i64, n: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = server
            .launch(project, "quick.yml", &local_hosts(1), json!({}))
            .await?;
        let run = server.wait_finished(id).await?;
        assert_eq!(run["status"], "successful", "{run}");
        ids.push(id);
    }
    Ok(ids)
}

/// The run, its events, its output: all there (and the events all stored).
async fn assert_whole(server: &Server, id: i64) -> anyhow::Result<()> {
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    let events = server.events(id).await?;
    assert!(!events.is_empty(), "run {id} has events");
    assert_eq!(Some(events.len() as i64), run["event_count"].as_i64());
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    Ok(())
}

/// The run and everything read through it answer 404.
async fn assert_gone(server: &Server, id: i64) -> anyhow::Result<()> {
    for path in ["", "/events", "/stdout", "/stderr", "/hosts", "/artifacts"] {
        let status = status_of(server, &format!("/api/v1/runs/{id}{path}")).await?;
        assert_eq!(status, 404, "GET /api/v1/runs/{id}{path}");
    }
    Ok(())
}

/// Rows of `table` belonging to the runs `ids`, counted in the SQLite file itself.
fn sqlite_rows(db: &Path, table: &str, ids: &[i64]) -> anyhow::Result<i64> {
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let column = if table == "runs" { "id" } else { "run_id" };
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} IN ({list})"
        ))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

#[tokio::test]
async fn old_runs_are_pruned_in_the_background_and_running_ones_kept() -> anyhow::Result<()> {
    let gates = tempfile::tempdir()?;
    let gate = gates.path().join("go");
    let proj = project_dir(&[("quick.yml", QUICK), ("gated.yml", GATED)])?;
    let server = serve_with(ServerOpts {
        extra_env: vec![
            ("TROUPE_RUN_RETENTION".into(), "off".into()),
            ("TROUPE_KEEP_RUNS_PER_PROJECT".into(), "2".into()),
            ("TROUPE_RETENTION_INTERVAL_S".into(), "1".into()),
            ("TROUPE_RETENTION_BATCH".into(), "1".into()),
        ],
        ..Default::default()
    })?;
    let a = server.project(proj.path()).await?;
    let b = server.project(proj.path()).await?;
    // The oldest run of a, still running while newer ones push it past the count.
    let gated = server
        .launch(
            a,
            "gated.yml",
            &local_hosts(1),
            json!({"extra_vars": {"gate": gate}}),
        )
        .await?;
    server
        .wait_run(gated, Duration::from_secs(60), |s| s == "running")
        .await?;
    let a_runs = quick_runs(&server, a, 4).await?;
    let b_runs = quick_runs(&server, b, 3).await?;

    let pruned: Vec<i64> = [&a_runs[..2], &b_runs[..1]].concat();
    wait_until(
        "runs beyond the count pruned",
        Duration::from_secs(60),
        || async {
            for id in &pruned {
                if status_of(&server, &format!("/api/v1/runs/{id}")).await? != 404 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    for id in &pruned {
        assert_gone(&server, *id).await?;
    }
    for id in a_runs[2..].iter().chain(&b_runs[1..]) {
        assert_whole(&server, *id).await?;
    }
    let db = server.data_dir.join("troupe.db");
    for table in ["runs", "events", "run_output"] {
        assert_eq!(
            sqlite_rows(&db, table, &pruned)?,
            0,
            "{table} of pruned runs"
        );
    }
    assert!(sqlite_rows(&db, "events", &a_runs[2..])? > 0);
    // Passes went on meanwhile (batches of one); the running run stayed whole.
    let run = server.get(&format!("/api/v1/runs/{gated}")).await?;
    assert_eq!(run["status"], "running", "{run}");
    assert!(!server.events(gated).await?.is_empty());
    assert!(
        server.log().contains("run retention pass"),
        "a line per pass"
    );

    // Once it ends, it is an old finished run like the others (so soon pruned that its end
    // may not be seen).
    std::fs::write(&gate, "go")?;
    wait_until(
        "the released run pruned",
        Duration::from_secs(60),
        || async { Ok(status_of(&server, &format!("/api/v1/runs/{gated}")).await? == 404) },
    )
    .await?;
    let list = server.get("/api/v1/runs?limit=50").await?;
    let listed: Vec<i64> = list["runs"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default();
    let mut kept: Vec<i64> = a_runs[2..].iter().chain(&b_runs[1..]).copied().collect();
    kept.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(listed, kept, "the list holds the kept runs, newest first");
    Ok(())
}

/// `POST /api/v1/runs/prune` as `server` would answer the CLI's body.
async fn prune(server: &Server, body: Value) -> anyhow::Result<(u16, Value)> {
    server
        .call(reqwest::Method::POST, "/api/v1/runs/prune", Some(&body))
        .await
}

/// On-demand pruning: bad requests named, a dry run that counts, a pass that prunes, and the
/// CLI; for admins only. On SQLite, and on PostgreSQL when the test server is configured.
async fn prune_on_demand(database_url: Option<String>) -> anyhow::Result<()> {
    let proj = project_dir(&[("quick.yml", QUICK)])?;
    let server = serve_with(ServerOpts {
        database_url,
        extra_env: vec![("TROUPE_RUN_RETENTION".into(), "off".into())],
        ..Default::default()
    })?;
    let p = server.project(proj.path()).await?;
    let runs = quick_runs(&server, p, 3).await?;

    for (body, field) in [
        (json!({}), "older_than"),
        (json!({"older_than": "soon"}), "older_than"),
        (json!({"keep": 0}), "keep"),
        (json!({"keep": -1}), ""),
        (json!({"keep": 1, "dryrun": true}), ""),
    ] {
        let (status, v) = prune(&server, body.clone()).await?;
        assert!(
            status == 400 || status == 422,
            "{body} answered {status}: {v}"
        );
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{body}: {v}");
        }
    }
    let operator = server
        .post(
            "/api/v1/tokens",
            &json!({"name": "ops", "role": "operator"}),
        )
        .await?;
    let op_token = operator["token"].as_str().unwrap_or_default();
    let status = server
        .http
        .post(server.url("/api/v1/runs/prune"))
        .bearer_auth(op_token)
        .json(&json!({"keep": 1}))
        .send()
        .await?
        .status();
    assert_eq!(status, 403, "operators may not prune");

    let (status, dry) = prune(&server, json!({"keep": 1, "dry_run": true})).await?;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["runs"], 2);
    assert_eq!(dry["dry_run"], true);
    assert_whole(&server, runs[0]).await?;
    let (status, done) = prune(&server, json!({"keep": 1})).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["runs"], 2, "{done}");
    assert!(done["events"].as_u64().unwrap_or(0) > 0, "{done}");
    assert!(done["output_chunks"].as_u64().unwrap_or(0) > 0, "{done}");
    assert_gone(&server, runs[0]).await?;
    assert_gone(&server, runs[1]).await?;
    assert_whole(&server, runs[2]).await?;

    // The CLI: a dry run then a pass by age.
    let cli = |args: &[&str]| {
        std::process::Command::new(troupe_bin())
            .args(args)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .output()
    };
    let out = cli(&["runs", "prune", "--older-than", "0s", "--dry-run"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 runs would be pruned"), "{text}");
    let out = cli(&["runs", "prune", "--older-than", "0s", "--json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["runs"], 1, "{report}");
    assert_gone(&server, runs[2]).await?;
    let out = cli(&["runs", "prune"])?;
    assert!(!out.status.success(), "a prune needs a limit");
    assert_eq!(server.get("/api/v1/runs").await?["runs"], json!([]));
    Ok(())
}

#[tokio::test]
async fn runs_are_pruned_on_demand() -> anyhow::Result<()> {
    prune_on_demand(None).await
}

#[tokio::test]
async fn runs_are_pruned_on_demand_on_postgres() -> anyhow::Result<()> {
    let Some(url) = fresh_database().await? else {
        return Ok(());
    };
    prune_on_demand(Some(url)).await
}
