//! The invariants, as the API and `/proc` show them.

use crate::load::{Ledger, SOURCE};
use crate::report::PhaseReport;
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use troupe_testkit::Api;
use troupe_testkit::procs::processes_of_runs_under;
use troupe_wire::events::EventList;
use troupe_wire::health::Health;
use troupe_wire::runs::{Run, RunList, RunStatus};

/// Every run whose status is in `statuses` (comma-separated; every run when empty).
pub async fn runs(api: &Api, statuses: &str) -> anyhow::Result<Vec<Run>> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let mut path = "/api/v1/runs?limit=500".to_owned();
        if !statuses.is_empty() {
            path.push_str(&format!("&status={statuses}"));
        }
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: RunList =
            serde_json::from_value(api.get(&path).await?).context("a page of runs")?;
        out.extend(page.runs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Whether `/readyz` says the store answers.
pub async fn ready(api: &Api) -> bool {
    match api.get("/readyz").await {
        Ok(v) => serde_json::from_value::<Health>(v).is_ok_and(|h| h.status == "ready"),
        Err(_) => false,
    }
}

/// Waits until no run is `queued` or `running`; those still there when the queue stopped
/// moving for `stall` (or `limit` passed).
pub async fn drain(api: &Api, stall: Duration, limit: Duration) -> anyhow::Result<Vec<Run>> {
    let start = Instant::now();
    let mut last_change = Instant::now();
    let mut last = usize::MAX;
    loop {
        let pending = runs(api, "queued,running").await?;
        if pending.is_empty() || last_change.elapsed() > stall || start.elapsed() > limit {
            return Ok(pending);
        }
        if pending.len() != last {
            last = pending.len();
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Live processes of runs under `data_dir/runs` that are still there after `grace`, among
/// `pids` (or all of them when `pids` is `None`).
pub async fn processes_left(data_dir: &Path, pids: Option<&[i32]>, grace: Duration) -> Vec<i32> {
    let runs_dir = data_dir.join("runs");
    let start = Instant::now();
    loop {
        let mut left = processes_of_runs_under(&runs_dir);
        if let Some(pids) = pids {
            left.retain(|p| pids.contains(p));
        }
        if left.is_empty() || start.elapsed() > grace {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The end of a phase, first: the queue drains (no run stuck `queued` or `running` once
/// nothing has moved for two minutes, within `limit`).
pub async fn drained(api: &Api, limit: Duration, report: &mut PhaseReport) -> anyhow::Result<()> {
    let stuck = drain(api, Duration::from_secs(120), limit).await?;
    report.expect(stuck.is_empty(), || {
        format!(
            "the queue did not drain: {} runs still queued/running",
            stuck.len()
        )
    });
    Ok(())
}

/// The end of a phase, then: every acknowledged event and created run is kept, and no process
/// of a run is left under `data_dir`.
pub async fn accounted(
    api: &Api,
    data_dir: &Path,
    ledger: &Ledger,
    report: &mut PhaseReport,
) -> anyhow::Result<()> {
    let kept = kept(api, ledger).await?;
    report.absorb(&kept, ledger);
    let left = processes_left(data_dir, None, Duration::from_secs(10)).await;
    report.orphans = left.len();
    report.expect(left.is_empty(), || {
        format!("processes of runs left after every run ended: {left:?}")
    });
    Ok(())
}

/// What the server kept of what it acknowledged.
#[derive(Debug, Default)]
pub struct Kept {
    /// Acknowledged deliveries whose record is stored.
    pub events_stored: usize,
    /// Acknowledged deliveries with no record.
    pub events_lost: Vec<String>,
    /// Every record of the source (acknowledged or not).
    pub events_recorded: usize,
    /// Runs by final status.
    pub by_status: BTreeMap<String, usize>,
    /// Runs the server created that are gone.
    pub runs_lost: Vec<i64>,
    /// Runs still `queued` or `running`.
    pub stuck: Vec<i64>,
    /// Runs that ended `error` without saying why.
    pub unexplained: Vec<i64>,
}

/// Compares what the server has with what it acknowledged.
pub async fn kept(api: &Api, ledger: &Ledger) -> anyhow::Result<Kept> {
    let mut k = Kept::default();
    let mut delivered = BTreeSet::new();
    let mut cursor: Option<i64> = None;
    loop {
        let mut path = format!("/api/v1/events?limit=500&source={SOURCE}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: EventList =
            serde_json::from_value(api.get(&path).await?).context("a page of events")?;
        k.events_recorded += page.events.len();
        delivered.extend(page.events.into_iter().filter_map(|e| e.delivery_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for id in ledger.acked_events.keys() {
        if delivered.contains(id) {
            k.events_stored += 1;
        } else {
            k.events_lost.push(id.clone());
        }
    }
    let all: BTreeMap<i64, Run> = runs(api, "")
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    k.runs_lost = ledger
        .runs
        .iter()
        .filter(|id| !all.contains_key(id))
        .copied()
        .collect();
    for run in all.values() {
        *k.by_status.entry(run.status.to_string()).or_default() += 1;
        match run.status {
            RunStatus::Queued | RunStatus::Running => k.stuck.push(run.id),
            RunStatus::Error if run.status_reason.as_deref().is_none_or(str::is_empty) => {
                k.unexplained.push(run.id);
            }
            _ => {}
        }
    }
    Ok(k)
}

/// `PRAGMA integrity_check` of a SQLite file, through the Python ansible runs on (troupe has
/// no SQLite shell to lean on): `ok`, or what it found.
pub fn integrity(db: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print('; '.join(r[0] for r in c.execute('PRAGMA integrity_check')))",
        ])
        .arg(db)
        .output()
        .context("running python3 for PRAGMA integrity_check")?;
    if !out.status.success() {
        anyhow::bail!(
            "integrity_check of {} failed: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
