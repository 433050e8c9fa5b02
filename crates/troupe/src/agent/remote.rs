//! The worker's backend: a troupe server over HTTP. Claims long-poll the server; a run's
//! plan and project bundle are fetched when it starts (a bundle already held, by digest, is
//! not fetched again); every report goes through the on-disk outbox.

use super::outbox::{Outbox, Report};
use crate::client::{ApiFailure, Client};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use troupe_core::Event;
use troupe_core::run::Run;
use troupe_store::{Lease, OutputChunk, RunOutcome, StoreError, StoreResult, Stream};
use troupe_wire::workers::{
    ClaimRuns, ClaimedRuns, FinishRun, Goodbye, Heartbeat, HeartbeatAnswer, LaunchPlan, Launched,
    LeaseAnswer, OutputPiece, OutputStream, RenewLease, RunBatch,
};
use troupe_worker::{Backend, Finished, Prepared};

/// A batch of events and output goes to the server in reports of about this size at most
/// (one item bigger than this goes alone), well under the server's `max_worker_body_bytes`
/// (64 MiB by default, and at least twice `max_event_bytes`), even with the JSON escapes of
/// ansible's colours. The server stores batches idempotently, so parts are as good as one.
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;
/// What an event or output piece takes in a report beside its text.
const ITEM_OVERHEAD: usize = 512;

/// Consecutive ranges of items, each of at most `max` bytes in all (an item bigger than `max`
/// alone), covering every item in order. No items, one empty range (a report is still sent).
fn parts_by_size(sizes: impl Iterator<Item = usize>, max: usize) -> Vec<std::ops::Range<usize>> {
    let mut parts = Vec::new();
    let (mut start, mut bytes, mut n) = (0, 0usize, 0);
    for size in sizes {
        if n > start && bytes + size > max {
            parts.push(start..n);
            (start, bytes) = (n, 0);
        }
        bytes += size;
        n += 1;
    }
    parts.push(start..n);
    parts
}

/// How long one claim waits at the server for work.
const CLAIM_WAIT: Duration = Duration::from_secs(20);

/// A server, seen from a worker.
pub struct RemoteBackend {
    pub(crate) client: Client,
    pub(crate) outbox: Arc<Outbox>,
    /// Unpacked project bundles, one directory per SHA-256.
    pub(crate) bundles_dir: PathBuf,
    /// Serializes unpacking, so two runs of one project unpack it once.
    pub(crate) unpacking: tokio::sync::Mutex<()>,
    /// The id the server gave this start of the worker.
    pub(crate) worker_id: std::sync::OnceLock<String>,
}

fn unavailable(e: anyhow::Error) -> StoreError {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) if f.status == reqwest::StatusCode::CONFLICT => {
            StoreError::Conflict(f.message.clone())
        }
        Some(f) if f.status == reqwest::StatusCode::NOT_FOUND => StoreError::NotFound {
            what: "worker or run",
            id: f.message.clone(),
        },
        _ => StoreError::Backend(format!("{e:#}").into()),
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn claim(
        &self,
        worker_id: &str,
        _lease: Duration,
        max: usize,
        _job_runs: troupe_store::JobRuns,
    ) -> StoreResult<Vec<Run>> {
        let claimed: ClaimedRuns = self
            .client
            .post(
                "/api/v1/worker/claim",
                &ClaimRuns {
                    worker_id: worker_id.to_owned(),
                    max: u32::try_from(max).unwrap_or(u32::MAX),
                    wait_ms: u64::try_from(CLAIM_WAIT.as_millis()).unwrap_or(u64::MAX),
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(claimed.runs)
    }

    async fn prepare(&self, run: &Run) -> Result<Prepared, String> {
        let worker = run.worker_id.clone().unwrap_or_default();
        let query = format!("worker_id={}", encode(&worker));
        let plan: LaunchPlan = self
            .client
            .get(&format!("/api/v1/worker/runs/{}/plan?{query}", run.id))
            .await
            .map_err(|e| format!("could not fetch the run's plan from the server: {e:#}"))?;
        let project_dir = self
            .bundle(run.id, &query, &plan.bundle_sha256)
            .await
            .map_err(|e| format!("could not fetch the run's project: {e:#}"))?;
        Ok(Prepared {
            project_dir,
            inventory: plan.inventory,
            credentials: plan.credentials,
            commit: plan.commit,
            tree: None,
            extra_vars: plan.extra_vars,
            secrets: plan.secrets,
        })
    }

    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()> {
        let body = Launched {
            worker_id: worker_id.to_owned(),
            at,
            commit: commit.map(str::to_owned),
        };
        self.push(&Report::Launched { run_id, body }).await
    }

    async fn renew(&self, run_id: i64, worker_id: &str, _lease: Duration) -> StoreResult<Lease> {
        let answer: LeaseAnswer = self
            .client
            .post(
                &format!("/api/v1/worker/runs/{run_id}/lease"),
                &RenewLease {
                    worker_id: worker_id.to_owned(),
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(if answer.held {
            Lease::Held {
                cancel_requested: answer.cancel_requested,
            }
        } else {
            Lease::Lost
        })
    }

    async fn store_batch(
        &self,
        run_id: i64,
        events: &[Event],
        output: &[OutputChunk],
    ) -> StoreResult<()> {
        // The worker id is the run's, which the pool holds; reports carry the node's current
        // incarnation, which is what the server checks (any incarnation of the node).
        let sizes = events
            .iter()
            .map(|e| e.stored_bytes() + ITEM_OVERHEAD)
            .chain(output.iter().map(|c| c.text.len() + ITEM_OVERHEAD));
        for part in parts_by_size(sizes, MAX_REPORT_BYTES) {
            let in_events = part.start.min(events.len())..part.end.min(events.len());
            let in_output =
                part.start.saturating_sub(events.len())..part.end.saturating_sub(events.len());
            let body = RunBatch {
                worker_id: self.worker_id(),
                events: events[in_events].to_vec(),
                output: output[in_output]
                    .iter()
                    .map(|c| OutputPiece {
                        stream: match c.stream {
                            Stream::Stdout => OutputStream::Stdout,
                            Stream::Stderr => OutputStream::Stderr,
                        },
                        seq: c.seq,
                        text: c.text.clone(),
                    })
                    .collect(),
            };
            self.push(&Report::Batch { run_id, body }).await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Finished> {
        let body = FinishRun {
            worker_id: worker_id.to_owned(),
            status: outcome.status,
            rc: outcome.rc,
            reason: outcome.reason.clone(),
            summary: outcome.summary.clone(),
        };
        self.push(&Report::Finish { run_id, body }).await?;
        Ok(Finished::Recorded(None))
    }

    async fn heartbeat(&self, worker_id: &str, active_runs: usize) -> StoreResult<bool> {
        let answer: HeartbeatAnswer = self
            .client
            .post(
                "/api/v1/worker/heartbeat",
                &Heartbeat {
                    worker_id: worker_id.to_owned(),
                    active_runs: u32::try_from(active_runs).unwrap_or(u32::MAX),
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(answer.drain)
    }

    async fn goodbye(&self, worker_id: &str) -> StoreResult<()> {
        if !self.outbox.drained(Duration::from_secs(30)).await {
            tracing::warn!(
                "reports are still waiting for the server; they are sent on the next start"
            );
        }
        self.client
            .post_unread(
                "/api/v1/worker/goodbye",
                &Goodbye {
                    worker_id: worker_id.to_owned(),
                },
            )
            .await
            .map_err(unavailable)
    }

    fn eager(&self) -> bool {
        true
    }
}

impl RemoteBackend {
    fn worker_id(&self) -> String {
        self.worker_id.get().cloned().unwrap_or_default()
    }

    async fn push(&self, report: &Report) -> StoreResult<()> {
        self.outbox
            .push(report)
            .await
            .map_err(|e| StoreError::Backend(format!("could not write the outbox: {e:#}").into()))
    }

    /// The unpacked bundle with this digest, fetched and checked when not held yet.
    async fn bundle(&self, run_id: i64, query: &str, sha256: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "the server named a malformed bundle digest"
        );
        let dir = self.bundles_dir.join(sha256);
        let _one_at_a_time = self.unpacking.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        let bytes = self
            .client
            .get_bytes(&format!(
                "/api/v1/worker/runs/{run_id}/bundle?{query}&sha256={sha256}"
            ))
            .await?;
        let got = hex::encode(Sha256::digest(&bytes));
        anyhow::ensure!(
            got == sha256,
            "the project bundle's SHA-256 is {got}, the plan said {sha256}; refusing it"
        );
        let tmp = self.bundles_dir.join(format!("{sha256}.partial"));
        let target = dir.clone();
        tokio::task::spawn_blocking(move || unpack(&bytes, &tmp, &target))
            .await
            .context("unpacking stopped")??;
        Ok(dir)
    }
}

fn unpack(bytes: &[u8], tmp: &Path, target: &Path) -> anyhow::Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp)?;
    }
    std::fs::create_dir_all(tmp)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive.set_preserve_permissions(true);
    // `unpack` refuses entries that would land outside `tmp` (absolute paths, `..`).
    archive
        .unpack(tmp)
        .with_context(|| format!("could not unpack the project into {}", tmp.display()))?;
    std::fs::rename(tmp, target)?;
    Ok(())
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::parts_by_size;

    #[test]
    fn batches_are_split_by_size_in_order() {
        assert_eq!(parts_by_size([].into_iter(), 10), vec![0..0]);
        assert_eq!(parts_by_size([3, 3, 3].into_iter(), 10), vec![0..3]);
        assert_eq!(
            parts_by_size([6, 6, 6].into_iter(), 10),
            vec![0..1, 1..2, 2..3]
        );
        assert_eq!(
            parts_by_size([2, 30, 2, 2].into_iter(), 10),
            vec![0..1, 1..2, 2..4]
        );
    }
}
