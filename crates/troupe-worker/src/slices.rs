//! Split runs: one run's hosts partitioned into slices, each executed by its own
//! ansible-playbook (a child run) in parallel within the concurrency limit. The parent run
//! gathers its slices' events (renumbered into one gapless sequence, each saying its slice),
//! per-host summary, status and stdout; cancelling the parent cancels every slice.

use crate::execute::{apply, error_outcome};
use crate::pool::{Control, WorkerPool};
use crate::status::CancelCause;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use troupe_core::run::{CancelMode, Origin, Run, RunOptions, RunSummary, SliceOf};
use troupe_core::slice::partition;
use troupe_core::{Event, RunStatus};
use troupe_launch::playbooks::resolve_playbook;
use troupe_launch::{LaunchRequest, Launcher};
use troupe_store::{Lease, OutputChunk, RunOutcome, Store, Stream};

/// How often the parent gathers its slices' new events.
const GATHER_INTERVAL: Duration = Duration::from_millis(200);
/// Events read per slice per gathering round.
const GATHER_PAGE: i64 = 1000;

/// One slice as the parent follows it.
struct SliceState {
    run_id: i64,
    /// Last counter of this slice copied into the parent.
    cursor: i64,
    finished: Option<Run>,
}

impl WorkerPool {
    /// Executes a split run: queue one child run per slice, give the slot back, then gather.
    pub(crate) async fn run_sliced(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        run: &Run,
        mut control: mpsc::UnboundedReceiver<Control>,
        slot: OwnedSemaphorePermit,
    ) -> Option<RunOutcome> {
        let Some(slicing) = run.options.slicing() else {
            return Some(error_outcome("not a split run".into()));
        };
        // The parent's tree is held while it follows its slices.
        let (spec, commit, _tree, redactor) = match self.prepare(run).await {
            Ok(prepared) => prepared,
            Err(reason) => return Some(error_outcome(reason)),
        };
        // Checked here too, so a playbook that went away fails the run once, not every slice.
        if let Err(e) = resolve_playbook(&spec.project_dir, &spec.playbook).await {
            return Some(error_outcome(e.to_string()));
        }
        let hosts = match troupe_ansible::list_hosts(
            &spec.ansible,
            &spec.project_dir,
            &spec.inventory,
            run.options.limit.as_deref(),
            &self.cfg.runs_dir,
        )
        .await
        {
            Ok(h) => h,
            Err(e) => {
                return Some(error_outcome(format!(
                    "could not list the run's hosts: {}",
                    redactor.redact_str(&e.to_string())
                )));
            }
        };
        // No host at all: one slice with the run's own limit, so ansible reports it as it
        // would without slicing (never an empty slice, never a failure of troupe's making).
        let groups: Vec<Option<Vec<String>>> = if hosts.is_empty() {
            vec![None]
        } else {
            partition(&hosts, slicing).into_iter().map(Some).collect()
        };
        let count = i32::try_from(groups.len()).unwrap_or(i32::MAX);
        let inventory = spec.inventory.clone();
        // Slices are launched like any run (announced to this pool, which claims them once
        // the parent has given its slot back).
        let launcher = Launcher::new(
            Arc::clone(store),
            self.cfg.projects_dir.clone(),
            Arc::clone(self) as Arc<dyn troupe_launch::Queue>,
        );
        let mut slices = Vec::new();
        for (i, group) in groups.into_iter().enumerate() {
            let options = RunOptions {
                limit: group
                    .map(|hosts| hosts.join(","))
                    .or_else(|| run.options.limit.clone()),
                slices: None,
                slice_size: None,
                ..run.options.clone()
            };
            let origin = Origin::Slice {
                of: SliceOf {
                    parent_id: run.id,
                    slice: i32::try_from(i + 1).unwrap_or(i32::MAX),
                    count,
                },
                original: Box::new(Origin::of_run(run)),
            };
            let request = LaunchRequest::again(run, inventory.clone(), options);
            match launcher.launch(request, origin).await {
                Ok(child) => {
                    slices.push(SliceState {
                        run_id: child.id,
                        cursor: 0,
                        finished: None,
                    });
                }
                Err(e) => {
                    // Slices already queued are canceled so nothing runs half-split.
                    for s in &slices {
                        let _ = store.request_cancel(s.run_id, CancelMode::Force).await;
                    }
                    return Some(error_outcome(format!(
                        "could not queue slice {}: {e}",
                        i + 1
                    )));
                }
            }
        }
        if let Err(e) = store
            .mark_launched(
                run.id,
                &self.worker_id,
                chrono::Utc::now(),
                commit.as_deref(),
            )
            .await
        {
            tracing::warn!(run = run.id, error = %e, "could not record the split run's launch");
        }
        tracing::info!(
            run = run.id,
            slices = slices.len(),
            hosts = hosts.len(),
            "split run queued its slices"
        );
        // The slices need the slots; the parent only gathers.
        drop(slot);
        self.wake();
        self.gather(store, run, slices, &mut control).await
    }

    /// Follows the slices to their end, copying their events into the parent.
    async fn gather(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        run: &Run,
        mut slices: Vec<SliceState>,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Option<RunOutcome> {
        let mut next_counter = run.event_count;
        let mut cause: Option<CancelCause> = None;
        let mut renew = tokio::time::interval(self.cfg.lease / 3);
        renew.reset();
        let mut tick = tokio::time::interval(GATHER_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = renew.tick() => match store.renew_lease(run.id, &self.worker_id, self.cfg.lease).await {
                    Ok(Lease::Held { cancel_requested: Some(mode) }) => {
                        self.cancel_slices(store, &slices, CancelCause::Requested(mode), &mut cause).await;
                    }
                    Ok(Lease::Held { cancel_requested: None }) => {}
                    Ok(Lease::Lost) => return None,
                    Err(e) => tracing::warn!(run = run.id, error = %e, "could not renew lease"),
                },
                Some(Control::Cancel(c)) = control.recv() => self.cancel_slices(store, &slices, c, &mut cause).await,
            }
            let mut all_done = true;
            for (i, s) in slices.iter_mut().enumerate() {
                // Read the status first: once finished, every event of the slice is stored.
                if s.finished.is_none() {
                    match store.get_run(s.run_id).await {
                        Ok(r) if r.status.is_finished() => s.finished = Some(r),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(run = run.id, error = %e, "could not read a slice")
                        }
                    }
                }
                loop {
                    let page = match store.list_events(s.run_id, s.cursor, GATHER_PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(run = run.id, error = %e, "could not read a slice's events");
                            break;
                        }
                    };
                    let Some(last) = page.last().map(|e| e.counter) else {
                        break;
                    };
                    let n = page.len();
                    let renumbered: Vec<Event> = page
                        .into_iter()
                        .map(|mut e| {
                            next_counter += 1;
                            e.counter = next_counter;
                            let mut data = e.event_data.to_value();
                            if let Some(fields) = data.as_object_mut() {
                                fields.insert("troupe_slice".into(), (i + 1).into());
                                fields.insert("troupe_slice_run".into(), s.run_id.into());
                                e.event_data = data.into();
                            }
                            e
                        })
                        .collect();
                    self.store_events(store, run.id, renumbered).await;
                    s.cursor = last;
                    if (n as i64) < GATHER_PAGE {
                        break;
                    }
                }
                all_done &= s.finished.is_some();
            }
            if all_done {
                break;
            }
        }
        self.copy_output(store, run.id, &slices).await;
        Some(outcome(&slices, cause))
    }

    async fn cancel_slices(
        &self,
        store: &Arc<dyn Store>,
        slices: &[SliceState],
        new: CancelCause,
        cause: &mut Option<CancelCause>,
    ) {
        let before = *cause;
        // The parent has no process: `apply` only records the escalation.
        apply(new, None, cause);
        if *cause == before {
            return;
        }
        let mode = match new {
            CancelCause::Requested(m) => m,
            _ => CancelMode::Force,
        };
        for s in slices.iter().filter(|s| s.finished.is_none()) {
            match store.request_cancel(s.run_id, mode).await {
                Ok(r) if r.status == RunStatus::Running => {
                    self.cancel(s.run_id, mode);
                }
                Ok(_) | Err(troupe_store::StoreError::Conflict(_)) => {}
                Err(e) => tracing::warn!(slice = s.run_id, error = %e, "could not cancel a slice"),
            }
        }
    }

    /// Stores (retrying) and publishes events of the parent.
    async fn store_events(&self, store: &Arc<dyn Store>, run_id: i64, events: Vec<Event>) {
        let mut delay = Duration::from_millis(50);
        while let Err(e) = store.append_events(run_id, &events).await {
            tracing::warn!(run = run_id, error = %e, "could not store gathered events; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.hub.publish_events(run_id, &events);
    }

    /// The parent's stdout and stderr: each slice's, in slice order, under a header.
    async fn copy_output(&self, store: &Arc<dyn Store>, run_id: i64, slices: &[SliceState]) {
        let mut chunks = Vec::new();
        let total = slices.len();
        for (i, s) in slices.iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let text = store
                    .read_output(s.run_id, stream)
                    .await
                    .unwrap_or_default();
                if text.is_empty() && stream == Stream::Stderr {
                    continue;
                }
                let limit = s
                    .finished
                    .as_ref()
                    .and_then(|r| r.options.limit.clone())
                    .unwrap_or_default();
                let header = format!(
                    "=== slice {}/{total} (run {}; hosts {limit}) ===\n",
                    i + 1,
                    s.run_id
                );
                chunks.push(OutputChunk {
                    stream,
                    seq: i64::try_from(chunks.len() + 1).unwrap_or(i64::MAX),
                    text: header + &text,
                });
            }
        }
        if let Err(e) = store.append_output(run_id, &chunks).await {
            tracing::warn!(run = run_id, error = %e, "could not store the split run's output");
        }
    }
}

/// The parent's outcome from its slices'.
fn outcome(slices: &[SliceState], cause: Option<CancelCause>) -> RunOutcome {
    let finished: Vec<&Run> = slices.iter().filter_map(|s| s.finished.as_ref()).collect();
    let mut summary = RunSummary::new();
    for r in &finished {
        summary.extend(r.summary.clone());
    }
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in &finished {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let has = |s: RunStatus| finished.iter().any(|r| r.status == s);
    let status = match cause {
        Some(CancelCause::Requested(_) | CancelCause::Shutdown) => RunStatus::Canceled,
        _ if has(RunStatus::Error) => RunStatus::Error,
        _ if has(RunStatus::Timeout) => RunStatus::Timeout,
        _ if has(RunStatus::Failed) => RunStatus::Failed,
        _ if has(RunStatus::Canceled) => RunStatus::Canceled,
        _ => RunStatus::Successful,
    };
    let rc = finished.iter().filter_map(|r| r.rc).max();
    let detail = counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    RunOutcome {
        status,
        rc,
        reason: Some(format!("{} slices: {detail}", slices.len())),
        summary,
    }
}
