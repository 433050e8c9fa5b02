//! The conformance suite: what every [`Store`] must do, checked the same way on every backend.
//!
//! Each case is a plain `async fn` taking a fresh, empty store. A backend's
//! `tests/conformance.rs` runs them all with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn run(name: &str, case: troupe_store::conformance::CaseFn) {
//!     let store = /* a fresh store for `name` */;
//!     case(&store).await;
//! }
//! troupe_store::conformance_tests!(run);
//! ```
//!
//! Cases panic (assert) on failure. They live in one module per aggregate, as the store's
//! traits do (`catalog`, `runs`, `claims`, `events`, `output`, `jobs`, `inbound`, `tokens`,
//! and `flows`, `executions`, `schedules` for the flow traits, `retention`); this file holds the one list
//! of every case, the helpers several modules share, and the backend's own case
//! ([`backend_basics`]). Races (claims, slots, fires, approvals) run each caller on a thread of
//! its own, so a backend meets them as it meets several replicas.

use crate::{
    Concurrency, EventRecordFilter, Gate, Ingested, Lease, NewEventRecord, NewTokenRecord,
    OutputChunk, Page, Proposal, RunFilter, RunOutcome, RunVersion, Start, Store, StoreError,
    Stream,
};
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use troupe_core::inbound::{
    ConcurrencyPolicy, EventRecord, EventStatus, GateKind, RuleOutcome, RuleResult,
};
use troupe_core::inventory::{InventoryContent, InventoryFormat, NewInventory};
use troupe_core::job::{Job, NewJob, Unit, UnitSource};
use troupe_core::project::{NewProject, PlaybookRef, Project, ProjectSource, ProjectSync};
use troupe_core::run::{
    CancelMode, HostStats, Labels, NewRun, Origin, Run, RunOptions, RunSummary, SliceOf,
};
use troupe_core::template::NewTemplate;
use troupe_core::worker::TokenRole;
use troupe_core::{Event, RunStatus};

mod audit;
mod catalog;
mod claims;
mod credentials;
mod events;
mod executions;
mod flows;
mod inbound;
mod jobs;
mod leases;
mod notifications;
mod output;
mod pansible;
mod retention;
mod runs;
mod schedules;
mod sealed;
mod tokens;
mod workers;

pub use audit::*;
pub use catalog::*;
pub use claims::*;
pub use credentials::*;
pub use events::*;
pub use executions::*;
pub use flows::*;
pub use inbound::*;
pub use jobs::*;
pub use leases::*;
pub use notifications::*;
pub use output::*;
pub use pansible::*;
pub use retention::*;
pub use runs::*;
pub use schedules::*;
pub use sealed::*;
pub use tokens::*;
pub use workers::*;

/// One case: runs against the store it is given and panics on failure.
pub type CaseFn = for<'a> fn(&'a dyn Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Calls `$callback!($($pre)* ; case, case, ...)` with the name of every case: the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_names {
    ($callback:ident ! ( $($pre:tt)* )) => {
        $crate::$callback!($($pre)* ;
            backend_basics,
            projects_round_trip,
            project_name_conflict,
            inventories_round_trip,
            inventory_name_conflict,
            create_run_round_trip,
            create_run_missing_references,
            run_ids_increase,
            runs_counted_by_status,
            list_runs_filters,
            list_runs_pagination,
            run_versions_follow_every_change,
            claim_oldest_first,
            concurrent_claims_never_share,
            batch_claims_take_the_oldest_in_order,
            create_run_claimed_only_when_nothing_waits,
            create_run_claimed_stores_what_create_run_stores,
            create_run_claimed_races_claims,
            renew_lease_held_and_lost,
            finish_run_rules,
            cancel_queued_run,
            cancel_running_run,
            cancel_finished_or_missing,
            fail_runs_of_workers_by_prefix,
            expire_leases_by_time,
            unlaunched_runs_of_dead_workers_are_requeued,
            events_round_trip_and_paging,
            events_batches_are_idempotent,
            events_large_batch,
            events_for_missing_run,
            events_and_output_in_one_batch,
            host_failures_filter,
            output_streams,
            nul_characters_do_not_break_writes,
            tokens_round_trip,
            token_roles_round_trip,
            token_scopes_expiry_and_revocation,
            workers_register_heartbeat_drain,
            claims_follow_worker_labels_and_splits,
            claims_take_job_runs_apart,
            credentials_round_trip,
            sealed_texts_listed_and_replaced,
            git_secrets_move_once,
            audit_round_trip_and_filters,
            audit_paging_and_pruning,
            project_sync_round_trip,
            update_inventory_bumps_revision,
            delete_inventory_rules,
            jobs_round_trip,
            latest_job_and_list_jobs,
            set_unit_source_rules,
            templates_round_trip,
            run_links_round_trip,
            slices_link_to_their_parent,
            create_run_missing_links,
            list_runs_by_job_unit_relaunch,
            mark_launched_rules,
            inbound_unmatched_is_recorded,
            inbound_proposals_start_runs,
            inbound_delivery_duplicates,
            inbound_redelivery_window,
            inbound_failed_proposals,
            inbound_flow_proposals_start_executions,
            inbound_throttle_gate,
            inbound_dedupe_gate_and_gate_order,
            inbound_concurrency_skip,
            inbound_concurrency_cancel,
            inbound_list_filters_and_paging,
            inbound_prune,
            inbound_concurrent_ingests,
            inbound_runs_are_admitted_while_slots_last,
            rules_doc_revisions,
            flow_versions_round_trip,
            concurrent_flow_puts,
            executions_round_trip,
            list_executions_filters_and_paging,
            claim_execution_rules,
            renew_executions_returns_owned,
            unclaimed_executions_listing,
            execution_status_moves,
            cancel_queued_and_running_executions,
            resume_execution_rules,
            steps_round_trip_and_order,
            approvals_only_while_waiting,
            slots_limits_and_atomicity,
            racing_slot_acquires,
            racing_execution_claims,
            schedules_round_trip,
            due_schedules_and_fires,
            racing_fire_claims,
            notifications_round_trip,
            notification_claims_and_outcomes,
            racing_notification_claims,
            source_leases_round_trip,
            racing_source_lease_acquires,
            retention_by_age_in_batches,
            retention_keeps_the_newest_per_project,
            retention_spares_what_is_still_needed,
            retention_unlinks_relaunches,
            pansible_playbooks_round_trip,
            pansible_apps_and_links,
        );
    };
}

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `$runner(case_name, case).await`, where `$runner` is an
/// `async fn(&str, CaseFn)` that builds a fresh store, runs the case on it and cleans up.
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`).
#[macro_export]
macro_rules! conformance_tests {
    ($runner:path) => {
        $crate::__conformance_case_names!(__conformance_tests_expand!($runner));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_expand {
    ($runner:path ; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $runner(
                    stringify!($name),
                    |store| ::std::boxed::Box::pin($crate::conformance::$name(store)),
                )
                .await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases_const {
    (; $($name:ident),* $(,)?) => {
        /// Every case with its name, for runners that want to loop instead of using
        /// [`conformance_tests!`](crate::conformance_tests).
        pub const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($name), |store| Box::pin($name(store)))),*
        ];
    };
}

__conformance_case_names!(__conformance_cases_const!());

/// `t` cut to whole microseconds: the precision every backend keeps.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range")
}

fn assert_recent(t: DateTime<Utc>, what: &str) {
    let age = Utc::now() - t;
    assert!(
        age > ChronoDuration::seconds(-5) && age < ChronoDuration::seconds(60),
        "{what} = {t} is not about now"
    );
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound { what: w, .. }) => assert_eq!(w, what, "NotFound names {what}"),
        other => panic!("expected NotFound({what}), got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) -> String {
    match r {
        Err(StoreError::Conflict(msg)) => {
            assert!(
                msg.contains(needle),
                "conflict message {msg:?} should mention {needle:?}"
            );
            msg
        }
        other => panic!("expected Conflict mentioning {needle:?}, got {other:?}"),
    }
}

async fn project(store: &dyn Store, name: &str) -> Project {
    store
        .create_project(&NewProject {
            name: name.into(),
            source: ProjectSource::Dir {
                path: format!("/srv/{name}"),
            },
        })
        .await
        .expect("create project")
}

fn inline_inventory() -> InventoryContent {
    InventoryContent {
        format: InventoryFormat::Ini,
        hosts: "[web]\nweb1\nweb2\n".into(),
        vars: None,
    }
}

fn new_run(project_id: i64) -> NewRun {
    NewRun {
        project_id,
        playbook: PlaybookRef::parse("site.yml").expect("valid playbook"),
        inventory_id: None,
        inventory: inline_inventory(),
        options: RunOptions::default(),
        labels: Labels::new(),
        tag: None,
        origin: Origin::Api,
        notify: Vec::new(),
    }
}

async fn queued_runs(store: &dyn Store, project_id: i64, n: usize) -> Vec<Run> {
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        runs.push(
            store
                .create_run(&new_run(project_id))
                .await
                .expect("create run"),
        );
    }
    runs
}

/// A run claimed by `worker`, with a long lease, whose ansible-playbook started.
async fn launched_run(store: &dyn Store, project_id: i64, worker: &str) -> Run {
    let run = running_run(store, project_id, worker).await;
    store
        .mark_launched(run.id, worker, Utc::now(), None)
        .await
        .expect("mark launched");
    store.get_run(run.id).await.expect("get")
}

/// A run claimed by `worker`, with a long lease.
async fn running_run(store: &dyn Store, project_id: i64, worker: &str) -> Run {
    let run = store
        .create_run(&new_run(project_id))
        .await
        .expect("create run");
    let claimed = store
        .claim_run(worker, Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("a queued run to claim");
    assert_eq!(claimed.id, run.id, "claimed the run just created");
    claimed
}

fn event(counter: i64, name: &str, data: serde_json::Value) -> Event {
    Event {
        counter,
        uuid: format!("uuid-{counter}"),
        event: name.into(),
        parent_uuid: (counter > 1).then(|| format!("uuid-{}", counter - 1)),
        created: micros(Utc::now()),
        stdout: format!("line {counter}\n"),
        start_line: counter - 1,
        end_line: counter,
        event_data: data.into(),
    }
}

fn chunk(stream: Stream, seq: i64, text: &str) -> OutputChunk {
    OutputChunk {
        stream,
        seq,
        text: text.into(),
    }
}

fn events(range: std::ops::RangeInclusive<i64>) -> Vec<Event> {
    range
        .map(|c| {
            event(
                c,
                "runner_on_ok",
                json!({"host": format!("h{c}"), "task": "t"}),
            )
        })
        .collect()
}

fn ok_outcome() -> RunOutcome {
    RunOutcome {
        status: RunStatus::Successful,
        rc: Some(0),
        reason: None,
        summary: RunSummary::new(),
    }
}

/// Every run stored (up to 1,000), newest first.
async fn all_runs(store: &dyn Store) -> Vec<Run> {
    store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 1000,
            },
        )
        .await
        .expect("list runs")
}

fn ids(runs: &[Run]) -> Vec<i64> {
    runs.iter().map(|r| r.id).collect()
}

fn new_inventory(name: &str) -> NewInventory {
    NewInventory {
        name: name.into(),
        env: Some("prod".into()),
        version: Some("v3".into()),
        format: InventoryFormat::Yaml,
        hosts: "all:\n  hosts:\n    a:\n    b:\n".into(),
        vars: Some("all:\n  x: 1\n".into()),
    }
}

/// Runs futures concurrently on the current task (no `'static` bound, so they may borrow).
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Runs `call(0)` .. `call(n - 1)` at once, each on a thread of its own, all let go together:
/// they share the store as replicas share a database, so their races are real ones (the
/// backend sees `n` callers at the same moment, not one after the other). On a runtime with
/// one thread, the calls are polled together on this task instead.
async fn race<T, Fut>(n: usize, call: impl Fn(usize) -> Fut + Sync) -> Vec<T>
where
    T: Send,
    Fut: Future<Output = T> + Send,
{
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return futures_join_all((0..n).map(&call)).await;
    }
    let start = std::sync::Barrier::new(n);
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let racers: Vec<_> = (0..n)
                .map(|i| {
                    let (call, start, handle) = (&call, &start, &handle);
                    scope.spawn(move || {
                        start.wait();
                        handle.block_on(call(i))
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    })
}

/// A time with nanoseconds, which every backend keeps to the microsecond.
fn precise_time() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 123_456_789)
        .single()
        .expect("valid time")
}

fn new_job(tag: &str, units: &[&str], project_id: Option<i64>) -> NewJob {
    NewJob {
        tag: tag.into(),
        units: units.iter().map(|u| (*u).to_owned()).collect(),
        project_id,
    }
}

fn new_template(name: &str, project_id: i64, inventory_id: i64) -> NewTemplate {
    let mut labels = Labels::new();
    labels.insert("team".into(), "ops".into());
    NewTemplate {
        name: name.into(),
        project_id,
        playbook: "plays/site.yml".into(),
        inventory_id,
        defaults: RunOptions {
            extra_vars: json!({"env": "prod", "n": [1, 2]})
                .as_object()
                .expect("object")
                .clone(),
            limit: Some("web".into()),
            check: true,
            forks: Some(5),
            start_at_task: Some("deploy the app".into()),
            ..Default::default()
        },
        allow_overrides: vec!["limit".into(), "extra_vars".into()],
        labels,
        notify: Vec::new(),
    }
}

/// A relaunch of `of`, which was started by `original`.
fn relaunch(of: i64, original: Origin) -> Origin {
    Origin::Relaunch {
        of,
        original: Box::new(original),
    }
}

/// `secs` seconds after [`precise_time`].
fn at(secs: i64) -> DateTime<Utc> {
    precise_time() + ChronoDuration::seconds(secs)
}

/// The store names its backend, answers pings and reports a version.
pub async fn backend_basics(store: &dyn Store) {
    assert!(matches!(store.backend(), "sqlite" | "postgres"));
    store.ping().await.expect("ping");
    let v = store.server_version().await.expect("version");
    assert!(!v.trim().is_empty());
    assert!(store.list_projects().await.expect("list").is_empty());
    assert!(store.list_inventories().await.expect("list").is_empty());
    assert!(store.list_tokens().await.expect("list").is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_case_is_listed_once() {
        let names: BTreeSet<&str> = CASES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), CASES.len());
        assert!(CASES.len() >= 25);
    }
}
