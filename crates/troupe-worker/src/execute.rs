//! Executing one claimed run: launch, drain, renew, cancel, record.

use crate::backend::Finished;
use crate::batch::{BATCH_BACKLOG_MAX, Batcher, UNWATCHED_FLUSH};
use crate::git::CommitTree;
use crate::live::RunChange;
use crate::pool::{Control, WorkerPool};
use crate::status::{CancelCause, decide_status};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use troupe_ansible::{AnsibleError, LaunchSpec, Launcher, Output, Process};
use troupe_core::RunStatus;
use troupe_core::redact::Redactor;
use troupe_core::run::LauncherKind;
use troupe_core::run::{CancelMode, Run, RunSummary};
use troupe_store::{Lease, RunOutcome};
use troupe_telemetry::{RunSpan, Stage, Telemetry};

impl WorkerPool {
    /// Executes a run this pool has claimed and records how it ended. `slot` is the run's
    /// share of the concurrency limit: held while ansible runs, released early by a split
    /// run once its slices are queued (they need the slots).
    pub(crate) async fn execute(self: &Arc<Self>, run: Run, slot: OwnedSemaphorePermit) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut active) = self.active.lock() {
            active.insert(run.id, tx);
        }
        let claimed_at = run.started_at.unwrap_or_else(Utc::now);
        self.cfg
            .telemetry
            .metrics
            .run_claimed(since(run.created_at, claimed_at));
        let mut timeline = Timeline::default();
        let outcome = if run.slice.is_none() && run.options.slicing().is_some() {
            match self.store.clone() {
                Some(store) => self.run_sliced(&store, &run, rx, slot).await,
                None => Some(error_outcome(
                    "a split run is coordinated by a troupe server, not by a remote worker".into(),
                )),
            }
        } else {
            let outcome = self.run_to_end(&run, rx, &mut timeline).await;
            drop(slot);
            outcome
        };
        if let Ok(mut active) = self.active.lock() {
            active.remove(&run.id);
        }
        if let Some(outcome) = outcome {
            let (status, rc) = (outcome.status, outcome.rc);
            self.record(&run, outcome).await;
            if self.cfg.telemetry.tracing() {
                timeline.trace(&self.cfg.telemetry, &run, claimed_at, status, rc);
            }
        }
    }

    /// Writes the outcome, retrying while the store is unavailable.
    pub(crate) async fn record(&self, claimed: &Run, outcome: RunOutcome) {
        let run_id = claimed.id;
        let mut delay = Duration::from_millis(100);
        for _ in 0..30 {
            match self.backend.finish(run_id, &self.worker_id, &outcome).await {
                Ok(Finished::Recorded(Some(run))) => {
                    tracing::info!(run = run_id, status = %run.status, rc = ?run.rc, "run finished");
                    self.cfg.telemetry.metrics.run_finished(run.status);
                    self.hub.publish_change(RunChange::status_of(&run));
                    self.hub.publish_finished(run_id, run.status);
                    return;
                }
                Ok(Finished::Recorded(None)) => {
                    tracing::info!(run = run_id, status = %outcome.status, rc = ?outcome.rc, "run finished");
                    self.cfg.telemetry.metrics.run_finished(outcome.status);
                    return;
                }
                Ok(Finished::NotOurs(msg)) => {
                    tracing::warn!(run = run_id, %msg, "run was no longer ours to finish");
                    return;
                }
                Err(e) => {
                    tracing::warn!(run = run_id, error = %e, "could not record run outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(
            run = run_id,
            "gave up recording the run's outcome; its lease will expire"
        );
    }

    /// Runs the process to its end. `None` when the lease was lost: someone else owns the
    /// run's record now.
    async fn run_to_end(
        self: &Arc<Self>,
        run: &Run,
        mut control: mpsc::UnboundedReceiver<Control>,
        timeline: &mut Timeline,
    ) -> Option<RunOutcome> {
        // `_tree` is held until the run ends: no sync prunes the files under it meanwhile.
        let (spec, commit, _tree, redactor) = match self.prepare(run).await {
            Ok(prepared) => prepared,
            Err(reason) => return Some(error_outcome(reason)),
        };
        let (process, mut outputs) = match Process::spawn(spec).await {
            Ok(p) => p,
            Err(AnsibleError::Playbook(e)) => {
                return Some(error_outcome(
                    redactor.redact_str(&e.to_string()).into_owned(),
                ));
            }
            Err(e) => {
                return Some(error_outcome(format!(
                    "could not start ansible-playbook: {}",
                    redactor.redact_str(&e.to_string())
                )));
            }
        };
        // Counted alive until it has been waited for.
        let alive = self.cfg.telemetry.metrics.ansible_process();
        let launched_at = Utc::now();
        timeline.launched = Some(launched_at);
        self.cfg
            .telemetry
            .metrics
            .run_launched(since(run.created_at, launched_at));
        let mut cause: Option<CancelCause> = None;
        match self
            .backend
            .mark_launched(run.id, &self.worker_id, launched_at, commit.as_deref())
            .await
        {
            Ok(()) => {}
            // No longer ours (the lease ran out while the run was prepared, and the run was
            // queued again or failed): stop at once, someone else owns it now.
            Err(troupe_store::StoreError::Conflict(msg)) => {
                tracing::warn!(run = run.id, %msg, "the run was taken away before it started; stopping it");
                apply(CancelCause::LeaseLost, Some(&process), &mut cause);
            }
            // The run goes on: only its launch time and commit are missing from the record.
            Err(e) => tracing::warn!(run = run.id, error = %e, "could not record the run's launch"),
        }
        tracing::info!(run = run.id, pid = process.pid(), playbook = %run.playbook, "run started");

        let mut batcher = Batcher::new(run.id, Arc::clone(&self.hub))
            .redacting(redactor.clone())
            .counted(Arc::clone(&self.cfg.telemetry));
        let mut summary_announced = false;
        let mut flush_tick = tokio::time::interval(self.cfg.flush_interval);
        let mut renew_tick = tokio::time::interval(self.cfg.lease / 3);
        renew_tick.reset();

        loop {
            tokio::select! {
                out = outputs.recv() => match out {
                    Some(out) => {
                        if timeline.first_event.is_none() && matches!(out, Output::Event(_)) {
                            timeline.first_event = Some(Utc::now());
                        }
                        if batcher.push(out) {
                            // Under a backlog, take what is already waiting into the same
                            // transaction: batches grow with the rate, commits do not.
                            while batcher.len() < BATCH_BACKLOG_MAX {
                                match outputs.try_recv() {
                                    Ok(out) => {
                                        batcher.push(out);
                                    }
                                    Err(_) => break,
                                }
                            }
                            batcher.flush(self.backend.as_ref()).await;
                        }
                        if !summary_announced && let Some(summary) = batcher.summary().cloned() {
                            // Announced once the stats event is stored, not before.
                            batcher.flush(self.backend.as_ref()).await;
                            summary_announced = true;
                            self.hub.publish_change(RunChange::SummaryUpdated {
                                run_id: run.id,
                                project_id: run.project_id,
                                tag: run.tag.clone(),
                                labels: run.labels.clone(),
                                summary,
                                at: chrono::Utc::now(),
                            });
                        }
                    }
                    None => break,
                },
                _ = flush_tick.tick() => {
                    let wait = if self.backend.eager() {
                        self.cfg.flush_interval
                    } else {
                        UNWATCHED_FLUSH.max(self.cfg.flush_interval)
                    };
                    if batcher.due(wait) {
                        batcher.flush(self.backend.as_ref()).await;
                    }
                }
                _ = renew_tick.tick() => {
                    match self.backend.renew(run.id, &self.worker_id, self.cfg.lease).await {
                        Ok(Lease::Held { cancel_requested: Some(mode) }) => {
                            apply(CancelCause::Requested(mode), Some(&process), &mut cause);
                        }
                        Ok(Lease::Held { cancel_requested: None }) => {}
                        Ok(Lease::Lost) => apply(CancelCause::LeaseLost, Some(&process), &mut cause),
                        Err(e) => tracing::warn!(run = run.id, error = %e, "could not renew lease"),
                    }
                }
                Some(Control::Cancel(c)) = control.recv() => apply(c, Some(&process), &mut cause),
            }
        }
        let exit = process.wait().await;
        drop(alive);
        timeline.exited = Some(Utc::now());
        batcher.flush(self.backend.as_ref()).await;
        if cause == Some(CancelCause::LeaseLost) {
            return None;
        }
        let (status, reason) = decide_status(&exit, run.options.timeout_s, cause);
        let reason = reason.map(|r| redactor.redact_str(&r).into_owned());
        let summary: RunSummary = batcher.summary().cloned().unwrap_or_default();
        Some(RunOutcome {
            status,
            rc: exit.rc,
            reason,
            summary,
        })
    }

    /// Everything a launch needs, as it is at execution time. Also returns the commit a git
    /// project's files are at, and the commit tree they are in (held against pruning until
    /// dropped: keep it until the run ends). The playbook is checked again by
    /// [`Process::spawn`], which refuses one that is no longer a file inside the project.
    /// The redactor holds the run's secrets (credentials' values, secret extra vars): what
    /// the run produces goes through it before it is stored.
    pub(crate) async fn prepare(
        &self,
        run: &Run,
    ) -> Result<(LaunchSpec, Option<String>, Option<CommitTree>, Redactor), String> {
        let prepared = self.backend.prepare(run).await?;
        let redactor = prepared.redactor();
        let mut options = run.options.clone();
        if let Some(vars) = prepared.extra_vars {
            options.extra_vars = vars;
        }
        let spec = LaunchSpec {
            ansible: self.cfg.ansible.clone(),
            project_dir: prepared.project_dir,
            playbook: run.playbook.clone(),
            inventory: prepared.inventory,
            options,
            runs_dir: self.cfg.runs_dir.clone(),
            run_key: run.id.to_string(),
            limits: self.cfg.limits,
            grace: self.cfg.grace,
            credentials: prepared.credentials,
            launcher: match run.options.launcher.unwrap_or(self.cfg.launcher) {
                LauncherKind::Exec => Launcher::Exec,
                LauncherKind::Warm => Launcher::Warm(Arc::clone(&self.cfg.warm)),
            },
        };
        Ok((spec, prepared.commit, prepared.tree, redactor))
    }
}

/// When the parts of a run's life happened on this worker, for its trace.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// ansible-playbook was exec'd.
    launched: Option<DateTime<Utc>>,
    /// Its first event arrived.
    first_event: Option<DateTime<Utc>>,
    /// It exited.
    exited: Option<DateTime<Utc>>,
}

impl Timeline {
    /// Records the run's spans: the root (creation to now, its end), and those of the parts
    /// that happened.
    fn trace(
        &self,
        telemetry: &Telemetry,
        run: &Run,
        claimed_at: DateTime<Utc>,
        status: RunStatus,
        rc: Option<i32>,
    ) {
        let now = Utc::now();
        let ended = |span: RunSpan| {
            let span = span.text("troupe.run.status", status.as_str());
            let span = match rc {
                Some(rc) => span.int("troupe.run.rc", i64::from(rc)),
                None => span,
            };
            match status {
                RunStatus::Successful | RunStatus::Canceled => span,
                _ => span.failed(status.as_str()),
            }
        };
        telemetry.span(ended(RunSpan::new(run, Stage::Run, run.created_at, now)));
        telemetry.span(
            RunSpan::new(run, Stage::Claim, run.created_at, claimed_at)
                .text("troupe.worker.id", run.worker_id.as_deref().unwrap_or("")),
        );
        if let Some(launched) = self.launched {
            telemetry.span(RunSpan::new(run, Stage::Spawn, claimed_at, launched));
            if let Some(first) = self.first_event {
                telemetry.span(RunSpan::new(run, Stage::FirstEvent, launched, first));
            }
        }
        let exited = self.exited.or(self.launched).unwrap_or(claimed_at);
        telemetry.span(ended(RunSpan::new(run, Stage::End, exited, now)));
    }
}

/// How long after `from` `to` came (zero if before: clocks of different machines).
fn since(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

pub(crate) fn error_outcome(reason: String) -> RunOutcome {
    RunOutcome {
        status: RunStatus::Error,
        rc: None,
        reason: Some(reason),
        summary: RunSummary::new(),
    }
}

/// Passes an escalation on to the process.
pub(crate) fn apply(new: CancelCause, process: Option<&Process>, cause: &mut Option<CancelCause>) {
    if stronger(new, *cause) {
        if let Some(p) = process {
            p.cancel(mode_of(new));
        }
        *cause = Some(new);
    }
}

fn mode_of(cause: CancelCause) -> CancelMode {
    match cause {
        CancelCause::Requested(mode) => mode,
        CancelCause::Shutdown | CancelCause::LeaseLost => CancelMode::Force,
    }
}

/// Whether `new` should replace what was already asked: only escalations are applied (a
/// graceful request never softens a force, a timeout or a shutdown).
fn stronger(new: CancelCause, current: Option<CancelCause>) -> bool {
    let rank = |c: CancelCause| match c {
        CancelCause::Requested(CancelMode::Graceful) => 1,
        CancelCause::Requested(CancelMode::Force) => 2,
        CancelCause::Shutdown => 3,
        CancelCause::LeaseLost => 4,
    };
    current.is_none_or(|c| rank(new) > rank(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_only_escalate() {
        let g = CancelCause::Requested(CancelMode::Graceful);
        let f = CancelCause::Requested(CancelMode::Force);
        assert!(stronger(g, None));
        assert!(stronger(f, Some(g)));
        assert!(!stronger(g, Some(f)));
        assert!(!stronger(g, Some(g)));
        assert!(stronger(CancelCause::Shutdown, Some(f)));
        assert!(!stronger(f, Some(CancelCause::LeaseLost)));
    }
}
