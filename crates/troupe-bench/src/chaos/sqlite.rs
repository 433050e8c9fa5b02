//! Phase 1: `kill -9` a SQLite server at random moments while runs and webhook bursts flow,
//! restart it each time, and check what it promised.

use crate::check;
use crate::load::{Ledger, Load, lock};
use crate::report::PhaseReport;
use crate::setup::{Target, prepare, works};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs the phase in `tmp`.
pub async fn run(
    troupe: &std::path::Path,
    tmp: &std::path::Path,
    seed: u64,
    rounds: usize,
) -> anyhow::Result<PhaseReport> {
    let t0 = Instant::now();
    let mut report = PhaseReport::new("sqlite, kill -9");
    report.rounds = rounds;
    let mut rng = StdRng::seed_from_u64(seed);
    let target = Target {
        troupe: troupe.to_owned(),
        data_dir: tmp.join("sqlite-data"),
        database_url: None,
    };
    std::fs::create_dir_all(&target.data_dir)?;
    let mut server = target.start()?;
    let project = prepare(&server, &tmp.join("sqlite-project")).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (mut hit_running, mut survived_kill, mut left_after_restart) = (0, 0, 0);
    for round in 1..=rounds {
        // One run per round that only a kill ends, so a process the kill left behind stays
        // to be found rather than ending on its own.
        let long = server
            .launch(
                project,
                "long.yml",
                &troupe_testkit::fixtures::local_hosts(1),
                serde_json::json!({}),
            )
            .await?;
        lock(&ledger).runs.insert(long);
        let load = Load::start(
            &server,
            project,
            "slow.yml",
            Duration::from_millis(rng.random_range(400..1500)),
            rng.random(),
            &ledger,
        );
        let delay = Duration::from_millis(rng.random_range(300..5000));
        tokio::time::sleep(delay).await;
        let running = check::runs(&server, "running")
            .await
            .map(|r| r.len())
            .unwrap_or(0);
        if running > 0 {
            hit_running += 1;
        }
        server.kill9();
        load.stop().await;
        drop(server);
        // What the kill left: ansible dies with troupe (parent-death signal), the rest is the
        // next server's to reap.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let survivors = check::processes_left(&target.data_dir, None, Duration::ZERO).await;
        survived_kill += survivors.len();
        server = match target.start() {
            Ok(s) => s,
            Err(e) => {
                report.expect(false, || {
                    format!("round {round}: the server did not start again: {e:#}")
                });
                return Ok(report);
            }
        };
        report.expect(check::ready(&server).await, || {
            format!("round {round}: not ready after the restart")
        });
        let left =
            check::processes_left(&target.data_dir, Some(&survivors), Duration::from_secs(15))
                .await;
        left_after_restart += left.len();
        println!(
            "  round {round:>2}: killed after {:>4} ms with {running} runs running; {} run processes outlived troupe, {} outlived the restart",
            delay.as_millis(),
            survivors.len(),
            left.len()
        );
        report.expect(left.is_empty(), || {
            format!("round {round}: processes of runs of the killed server still live after the restart: {left:?}")
        });
    }
    report.note(format!(
        "{hit_running} of {rounds} kills hit running runs; {survived_kill} run processes outlived a kill by 1 s, {left_after_restart} the restart after it"
    ));
    // The long runs that are left (queued behind the kills, or started after the last one)
    // would take minutes: a forced cancel ends them, and must leave nothing either.
    for run in check::runs(&server, "queued,running").await? {
        if run.playbook == "long.yml" {
            server
                .post(
                    &format!("/api/v1/runs/{}/cancel", run.id),
                    &serde_json::json!({"mode": "force"}),
                )
                .await?;
        }
    }
    check::drained(&server, Duration::from_secs(1200), &mut report).await?;
    if let Err(e) = works(&server, project).await {
        report.expect(false, || format!("after the last restart: {e:#}"));
    }
    let ledger = std::mem::take(&mut *lock(&ledger));
    check::accounted(&server, &target.data_dir, &ledger, &mut report).await?;
    server.stop(Duration::from_secs(30))?;
    let integrity = check::integrity(&target.data_dir.join("troupe.db"))?;
    report.expect(integrity == "ok", || {
        format!("integrity_check: {integrity}")
    });
    report.time = t0.elapsed();
    Ok(report)
}
