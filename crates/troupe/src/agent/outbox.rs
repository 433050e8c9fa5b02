//! The worker's outbox: every report about a run (its launch, its events and output, how it
//! ended) is written to a file in the data dir before it is sent, and the file is removed only
//! once the server acknowledged it. A server that is down, restarted or unreachable, or a
//! worker killed mid-run, loses nothing: whatever is left is sent, in order, when the server
//! answers again (by the same worker after it restarts, too). The server stores batches
//! idempotently, so a report sent twice (the answer was lost) is stored once.

use crate::client::{ApiFailure, Client};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use troupe_wire::workers::{FinishRun, Launched, RunBatch};

/// One report, as kept on disk. (Externally tagged: an event's data is raw JSON, which a
/// buffered, internally tagged enum could not read back.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// ansible-playbook started.
    Launched {
        /// The run.
        run_id: i64,
        /// The report.
        body: Launched,
    },
    /// Events and output.
    Batch {
        /// The run.
        run_id: i64,
        /// The report.
        body: RunBatch,
    },
    /// How the run ended.
    Finish {
        /// The run.
        run_id: i64,
        /// The report.
        body: FinishRun,
    },
}

impl Report {
    fn path(&self) -> String {
        match self {
            Report::Launched { run_id, .. } => format!("/api/v1/worker/runs/{run_id}/launched"),
            Report::Batch { run_id, .. } => format!("/api/v1/worker/runs/{run_id}/batches"),
            Report::Finish { run_id, .. } => format!("/api/v1/worker/runs/{run_id}/finish"),
        }
    }
}

/// Reports waiting for the server, in files named by a sequence number.
pub struct Outbox {
    dir: PathBuf,
    next: AtomicU64,
    wake: Notify,
    /// Told whenever the outbox becomes empty.
    emptied: Notify,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`; reports a previous run of the worker left are
    /// kept and sent first.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Outbox>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create the outbox {}", dir.display()))?;
        // Half-written files of a crash (never renamed into place) are dropped: their report
        // was never acknowledged to the pool either, and is written again... or was never
        // promised. Only renamed files count.
        let mut last = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(n) = name.strip_suffix(".json").and_then(|n| n.parse().ok()) {
                last = last.max(n);
            }
        }
        Ok(Arc::new(Outbox {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(last + 1),
            wake: Notify::new(),
            emptied: Notify::new(),
        }))
    }

    /// Writes a report to disk (synced) and wakes the sender. Once this returns, the report
    /// survives the worker being killed.
    pub async fn push(&self, report: &Report) -> anyhow::Result<()> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let bytes = serde_json::to_vec(report)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_synced(&dir, seq, &bytes))
            .await
            .context("the outbox writer stopped")??;
        self.wake.notify_one();
        Ok(())
    }

    /// Reports waiting, oldest first.
    pub fn pending(&self) -> anyhow::Result<Vec<(u64, PathBuf)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".json").and_then(|n| n.parse().ok()) {
                files.push((n, entry.path()));
            }
        }
        files.sort_unstable_by_key(|(n, _)| *n);
        Ok(files)
    }

    /// Waits until every report written so far was acknowledged, at most `limit`. True when
    /// the outbox is empty.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let waiting = self.emptied.notified();
            if self.pending().map(|p| p.is_empty()).unwrap_or(false) {
                return true;
            }
            self.wake.notify_one();
            tokio::select! {
                () = waiting => {}
                () = tokio::time::sleep_until(deadline) => return false,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Sends reports in order, forever: a report is removed once the server acknowledged it
    /// (or refused it for good: the run is no longer this worker's); on any other failure it
    /// is sent again after a backoff.
    pub async fn send_forever(self: Arc<Self>, client: Client) {
        let mut delay = Duration::from_millis(100);
        loop {
            let pending = match self.pending() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if pending.is_empty() {
                self.emptied.notify_waiters();
                let wake = self.wake.notified();
                // A push between the listing and here has notified already (permit kept).
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            for (_, path) in pending {
                match self.send_one(&client, &path).await {
                    Ok(()) => {
                        delay = Duration::from_millis(100);
                        if let Err(e) = std::fs::remove_file(&path) {
                            tracing::error!(file = %path.display(), error = %e, "could not remove a sent report");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "could not send a report; keeping it");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        break;
                    }
                }
            }
        }
    }

    async fn send_one(&self, client: &Client, path: &Path) -> anyhow::Result<()> {
        let bytes = std::fs::read(path)?;
        let report: Report = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                // Files are renamed into place whole, so this is a bug, not a torn write: the
                // report is set aside (`.bad`), not deleted, and the ones after it go on.
                tracing::error!(file = %path.display(), error = %e, "setting aside an unreadable report");
                std::fs::rename(path, path.with_extension("bad"))?;
                return Err(anyhow::anyhow!("unreadable report set aside"));
            }
        };
        let sent = match &report {
            Report::Launched { body, .. } => client.post_unread(&report.path(), body).await,
            Report::Batch { body, .. } => client.post_unread(&report.path(), body).await,
            Report::Finish { body, .. } => client.post_unread(&report.path(), body).await,
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                // Refused for good (the run is not ours any more, it is gone, the report is
                // malformed): sending it again would be refused again.
                Some(f) if f.status.is_client_error() && f.status.as_u16() != 429 => {
                    tracing::warn!(report = %report.path(), refusal = %f, "the server refused a report; dropping it");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }
}

fn write_synced(dir: &Path, seq: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{seq:020}.tmp"));
    let done = dir.join(format!("{seq:020}.json"));
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("could not write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &done)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path()).expect("open");
        let event: troupe_core::Event = serde_json::from_value(serde_json::json!({
            "counter": 1, "uuid": "u1", "event": "runner_on_ok",
            "created": "2026-12-07T06:00:00Z",
            "event_data": {"host": "web1", "task": "ping", "res": {"ping": "pong"}}
        }))
        .expect("event");
        for i in 1..=3 {
            outbox
                .push(&Report::Batch {
                    run_id: i,
                    body: RunBatch {
                        worker_id: "n/1".into(),
                        events: vec![event.clone()],
                        output: Vec::new(),
                    },
                })
                .await
                .expect("push");
        }
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"{half").expect("tmp");
        drop(outbox);
        let again = Outbox::open(dir.path()).expect("reopen");
        let pending = again.pending().expect("pending");
        let runs: Vec<i64> = pending
            .iter()
            .map(|(_, p)| {
                match serde_json::from_slice::<Report>(&std::fs::read(p).expect("read"))
                    .expect("report")
                {
                    Report::Batch { run_id, body } => {
                        assert_eq!(
                            body.events,
                            std::slice::from_ref(&event),
                            "events read back whole"
                        );
                        run_id
                    }
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect();
        assert_eq!(runs, [1, 2, 3], "kept, in the order written");
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        again
            .push(&Report::Batch {
                run_id: 4,
                body: RunBatch {
                    worker_id: "n/1".into(),
                    events: Vec::new(),
                    output: Vec::new(),
                },
            })
            .await
            .expect("push");
        let last = again.pending().expect("pending").last().map(|(n, _)| *n);
        assert_eq!(last, Some(4), "numbering goes on after the reports kept");
    }
}
