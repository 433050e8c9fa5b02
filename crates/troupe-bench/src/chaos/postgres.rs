//! Phase 2: a server on a private PostgreSQL cluster with runs in flight and webhook
//! deliveries coming; the cluster stops (`-m fast`) for a while and comes back.

use crate::check;
use crate::cluster::Cluster;
use crate::load::{Ledger, Load, lock};
use crate::report::PhaseReport;
use crate::setup::{Target, prepare, works};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs the phase in `tmp`.
pub async fn run(
    troupe: &Path,
    tmp: &Path,
    seed: u64,
    pg_bin: Option<PathBuf>,
    outage: Duration,
) -> anyhow::Result<PhaseReport> {
    let t0 = Instant::now();
    let mut report = PhaseReport::new("postgres, outage");
    report.rounds = 1;
    let cluster = Cluster::init(pg_bin, &tmp.join("cluster"))?;
    cluster.start()?;
    let target = Target {
        troupe: troupe.to_owned(),
        data_dir: tmp.join("pg-data"),
        database_url: Some(cluster.url()),
    };
    std::fs::create_dir_all(&target.data_dir)?;
    let mut server = target.start()?;
    let project = prepare(&server, &tmp.join("pg-project")).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(
        &server,
        project,
        "slow.yml",
        Duration::from_millis(700),
        seed,
        &ledger,
    );
    // The outage must find ansible running.
    troupe_testkit::wait::wait_until("runs to be running", Duration::from_secs(120), || async {
        Ok(check::runs(&server, "running")
            .await?
            .iter()
            .any(|r| r.launched_at.is_some()))
    })
    .await?;
    let running = check::runs(&server, "running").await?.len();
    cluster.stop()?;
    let down = Instant::now();
    let (mut unready, mut slowest) = (0, Duration::ZERO);
    while down.elapsed() < outage {
        let asked = Instant::now();
        if !check::ready(&server).await {
            unready += 1;
        }
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.start()?;
    report.note(format!(
        "PostgreSQL stopped for {:.1} s with {running} runs running; /readyz said not ready {unready} times of {}",
        down.elapsed().as_secs_f64(),
        outage.as_secs()
    ));
    report.expect(unready > 0, || {
        "/readyz never said the store was gone".to_owned()
    });
    // A probe that hangs is taken for a dead process (Kubernetes gives it 1 s by default).
    report.expect(slowest < Duration::from_secs(5), || {
        format!(
            "/readyz took {:.1} s to answer while PostgreSQL was down",
            slowest.as_secs_f64()
        )
    });
    let back = Instant::now();
    let ready = troupe_testkit::wait::wait_until("readiness", Duration::from_secs(60), || async {
        Ok(check::ready(&server).await)
    })
    .await;
    report.expect(ready.is_ok(), || {
        "the server was not ready 60 s after PostgreSQL came back".to_owned()
    });
    report.note(format!(
        "ready again {:.1} s after PostgreSQL came back",
        back.elapsed().as_secs_f64()
    ));
    // Traffic goes on a little after the outage, then stops.
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.stop().await;
    if let Some(status) = server.exited() {
        report.expect(false, || {
            format!(
                "the server exited during the outage ({status})\n{}",
                server.log()
            )
        });
        server = target.start()?;
    }
    check::drained(&server, Duration::from_secs(900), &mut report).await?;
    if let Err(e) = works(&server, project).await {
        report.expect(false, || format!("after the outage: {e:#}"));
    }
    let ledger = std::mem::take(&mut *lock(&ledger));
    check::accounted(&server, &target.data_dir, &ledger, &mut report).await?;
    server.stop(Duration::from_secs(30))?;
    // The server must start cleanly on the store it recovered.
    match target.start() {
        Ok(s) => s.stop(Duration::from_secs(30))?,
        Err(e) => report.expect(false, || format!("the server did not start again: {e:#}")),
    }
    drop(cluster);
    report.time = t0.elapsed();
    Ok(report)
}
