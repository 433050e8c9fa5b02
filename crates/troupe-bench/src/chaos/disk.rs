//! Phase 3: the data directory on a small tmpfs; it fills up while runs and webhook
//! deliveries flow, stays full for a while, and is freed.

use crate::check;
use crate::load::{Ledger, Load, lock};
use crate::report::PhaseReport;
use crate::setup::{Target, prepare, works};
use anyhow::Context;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size of the file system the data directory lives on.
const SIZE: &str = "48m";

/// Runs the phase in `tmp`; skipped (with the reason) where no file system can be mounted.
pub async fn run(
    troupe: &Path,
    tmp: &Path,
    seed: u64,
    full_for: Duration,
) -> anyhow::Result<PhaseReport> {
    let t0 = Instant::now();
    let mut report = PhaseReport::new("disk full (tmpfs)");
    report.rounds = 1;
    let mnt = tmp.join("small-fs");
    std::fs::create_dir_all(&mnt)?;
    if let Err(e) = mount(&mnt) {
        report.skipped = Some(format!("{e:#}"));
        report.note(format!("skipped: {e:#}"));
        return Ok(report);
    }
    let _unmount = Unmount(mnt.clone());
    let target = Target {
        troupe: troupe.to_owned(),
        data_dir: mnt.join("data"),
        database_url: None,
    };
    std::fs::create_dir_all(&target.data_dir)?;
    let mut server = target.start()?;
    let project = prepare(&server, &tmp.join("disk-project")).await?;
    let before = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(
        &server,
        project,
        "slow.yml",
        Duration::from_millis(700),
        seed,
        &before,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;

    // Full: a file takes every block left, and the traffic goes on.
    let filler = mnt.join("filler");
    let filled = tokio::task::spawn_blocking({
        let filler = filler.clone();
        move || fill(&filler)
    })
    .await??;
    report.note(format!(
        "the file system is full ({} MiB of filler)",
        filled >> 20
    ));
    let during = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(
        &server,
        project,
        "slow.yml",
        Duration::from_millis(700),
        seed ^ 1,
        &during,
    );
    let full = Instant::now();
    let mut exited = None;
    while full.elapsed() < full_for && exited.is_none() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        exited = server.exited();
    }
    load.stop().await;
    {
        let d = lock(&during);
        report.note(format!(
            "while full: {} deliveries acknowledged, {} refused {:?}, {} without answer, {} runs created",
            d.acked_events.len(),
            d.unacked_events,
            d.refused,
            d.no_answer,
            d.runs.len()
        ));
    }
    report.expect(exited.is_none(), || {
        format!(
            "the server exited while the disk was full ({exited:?})\n{}",
            server.log()
        )
    });
    let running = check::runs(&server, "running")
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    report.note(format!("{running} runs running as space came back"));

    std::fs::remove_file(&filler).context("freeing the file system")?;
    let freed = Instant::now();
    let mut recovered = Err(anyhow::anyhow!("not tried"));
    for _ in 0..3 {
        recovered = works(&server, project).await;
        if recovered.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if let Err(e) = recovered {
        report.expect(false, || {
            format!("did not work again with space back: {e:#}")
        });
        report.note("one clean restart".to_owned());
        server.stop(Duration::from_secs(30))?;
        server = target.start()?;
        if let Err(e) = works(&server, project).await {
            report.expect(false, || format!("not working even after a restart: {e:#}"));
        }
    } else {
        report.note(format!(
            "works again without a restart, {:.1} s after space came back",
            freed.elapsed().as_secs_f64()
        ));
    }
    let after = Arc::new(Mutex::new(Ledger::default()));
    let load = Load::start(
        &server,
        project,
        "slow.yml",
        Duration::from_millis(700),
        seed ^ 2,
        &after,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;

    check::drained(&server, Duration::from_secs(900), &mut report).await?;
    let mut ledger = Ledger::default();
    for part in [&before, &during, &after] {
        ledger.absorb(std::mem::take(&mut *lock(part)));
    }
    check::accounted(&server, &target.data_dir, &ledger, &mut report).await?;
    server.stop(Duration::from_secs(30))?;
    let integrity = check::integrity(&target.data_dir.join("troupe.db"))?;
    report.expect(integrity == "ok", || {
        format!("integrity_check: {integrity}")
    });
    match target.start() {
        Ok(s) => s.stop(Duration::from_secs(30))?,
        Err(e) => report.expect(false, || format!("the server did not start again: {e:#}")),
    }
    report.time = t0.elapsed();
    Ok(report)
}

fn mount(dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("mounting a tmpfs needs root");
    }
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
        .arg(dir)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        anyhow::bail!(
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes zeros to `path` until the file system refuses; the bytes written.
fn fill(path: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(n),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Unmounts the file system when the phase ends, however it ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
