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
//! Cases panic (assert) on failure.

use crate::{
    Concurrency, EventRecordFilter, Gate, Ingested, Lease, NewEventRecord, OutputChunk, Page,
    Proposal, RunFilter, RunOutcome, RunVersion, Store, StoreError, Stream,
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
    CancelMode, HostStats, Labels, NewRun, Origin, Run, RunOptions, RunSummary,
};
use troupe_core::template::NewTemplate;
use troupe_core::{Event, RunStatus};

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
            list_runs_filters,
            list_runs_pagination,
            run_versions_follow_every_change,
            claim_oldest_first,
            concurrent_claims_never_share,
            batch_claims_take_the_oldest_in_order,
            renew_lease_held_and_lost,
            finish_run_rules,
            cancel_queued_run,
            cancel_running_run,
            cancel_finished_or_missing,
            fail_runs_of_workers_by_prefix,
            expire_leases_by_time,
            events_round_trip_and_paging,
            events_batches_are_idempotent,
            events_large_batch,
            events_for_missing_run,
            events_and_output_in_one_batch,
            host_failures_filter,
            output_streams,
            nul_characters_do_not_break_writes,
            tokens_round_trip,
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
            inbound_throttle_gate,
            inbound_dedupe_gate_and_gate_order,
            inbound_concurrency_skip,
            inbound_concurrency_cancel,
            inbound_list_filters_and_paging,
            inbound_prune,
            inbound_concurrent_ingests,
            rules_doc_revisions,
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

// ---------------------------------------------------------------------------------------------
// Helpers

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

fn ids(runs: &[Run]) -> Vec<i64> {
    runs.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases

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

/// Projects are stored, found by id and name, and listed by id.
pub async fn projects_round_trip(store: &dyn Store) {
    let b = project(store, "b-proj").await;
    let a = project(store, "a-proj").await;
    assert!(a.id > b.id);
    assert_eq!(b.name, "b-proj");
    assert_eq!(
        b.source,
        ProjectSource::Dir {
            path: "/srv/b-proj".into()
        }
    );
    assert_recent(b.created_at, "created_at");
    assert_eq!(store.get_project(b.id).await.expect("get"), b);
    assert_eq!(
        store.find_project("a-proj").await.expect("find"),
        Some(a.clone())
    );
    assert_eq!(store.find_project("nope").await.expect("find"), None);
    assert_eq!(
        store.list_projects().await.expect("list"),
        vec![b, a.clone()]
    );
    assert_not_found(store.get_project(a.id + 100).await, "project");
}

/// A taken project name is a conflict that names it, and nothing is stored.
pub async fn project_name_conflict(store: &dyn Store) {
    project(store, "dup").await;
    let again = store
        .create_project(&NewProject {
            name: "dup".into(),
            source: ProjectSource::Dir {
                path: "/elsewhere".into(),
            },
        })
        .await;
    assert_conflict(again, "\"dup\"");
    assert_eq!(store.list_projects().await.expect("list").len(), 1);
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

/// Inventories keep every field, are found by id and name, and listed by id.
pub async fn inventories_round_trip(store: &dyn Store) {
    let new = new_inventory("inv-1");
    let inv = store.create_inventory(&new, 2).await.expect("create");
    assert_eq!(inv.name, "inv-1");
    assert_eq!(inv.env.as_deref(), Some("prod"));
    assert_eq!(inv.version.as_deref(), Some("v3"));
    assert_eq!(inv.content, new.content());
    assert_eq!(inv.host_count, 2);
    assert_recent(inv.created_at, "created_at");
    let bare = NewInventory {
        name: "inv-0".into(),
        env: None,
        version: None,
        format: InventoryFormat::Ini,
        hosts: "h1\n".into(),
        vars: None,
    };
    let inv2 = store.create_inventory(&bare, 1).await.expect("create");
    assert!(inv2.id > inv.id);
    assert_eq!(inv2.env, None);
    assert_eq!(inv2.content.vars, None);
    assert_eq!(store.get_inventory(inv.id).await.expect("get"), inv);
    assert_eq!(
        store.find_inventory("inv-0").await.expect("find"),
        Some(inv2.clone())
    );
    assert_eq!(store.find_inventory("zzz").await.expect("find"), None);
    assert_eq!(
        store.list_inventories().await.expect("list"),
        vec![inv.clone(), inv2]
    );
    assert_not_found(store.get_inventory(inv.id + 100).await, "inventory");
}

/// A taken inventory name is a conflict that names it.
pub async fn inventory_name_conflict(store: &dyn Store) {
    store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("create");
    assert_conflict(
        store.create_inventory(&new_inventory("inv"), 2).await,
        "\"inv\"",
    );
    assert_eq!(store.list_inventories().await.expect("list").len(), 1);
}

/// A new run is queued and keeps its options, labels, tag and inventory exactly.
pub async fn create_run_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let options = RunOptions {
        extra_vars:
            json!({"a": 1, "nested": {"list": [1, "two", null, 3.5], "t": true}, "s": "é\"'"})
                .as_object()
                .expect("object")
                .clone(),
        limit: Some("web:!db".into()),
        tags: vec!["x".into(), "y".into()],
        skip_tags: vec!["z".into()],
        check: true,
        diff: true,
        forks: Some(7),
        verbosity: 3,
        timeout_s: Some(90),
        start_at_task: Some("second task".into()),
        // Options added later (slicing...) round-trip through the same JSON column.
        ..Default::default()
    };
    let mut labels = Labels::new();
    labels.insert("team".into(), "ops".into());
    labels.insert("ticket".into(), "".into());
    let new = NewRun {
        project_id: p.id,
        playbook: PlaybookRef::parse("plays/site.yml").expect("valid"),
        inventory_id: Some(inv.id),
        inventory: inv.content.clone(),
        options: options.clone(),
        labels: labels.clone(),
        tag: Some("nightly".into()),
        origin: Origin::Api,
    };
    let run = store.create_run(&new).await.expect("create run");
    assert_eq!(run.project_id, p.id);
    assert_eq!(run.playbook, "plays/site.yml");
    assert_eq!(run.inventory_id, Some(inv.id));
    assert_eq!(run.options, options);
    assert_eq!(run.labels, labels);
    assert_eq!(run.tag.as_deref(), Some("nightly"));
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.status_reason, None);
    assert_eq!(run.rc, None);
    assert_recent(run.created_at, "created_at");
    assert_eq!(run.started_at, None);
    assert_eq!(run.finished_at, None);
    assert_eq!(run.worker_id, None);
    assert_eq!(run.cancel_requested, None);
    assert!(run.summary.is_empty());
    assert_eq!(run.event_count, 0);
    assert_eq!(store.get_run(run.id).await.expect("get"), run);
    assert_eq!(
        store.get_run_inventory(run.id).await.expect("inventory"),
        inv.content
    );
    assert_eq!(
        store.get_run_launch(run.id).await.expect("launch"),
        (p.clone(), inv.content.clone())
    );

    // An inline inventory (no stored one) is kept too.
    let inline = store.create_run(&new_run(p.id)).await.expect("create run");
    assert_eq!(inline.inventory_id, None);
    assert!(inline.labels.is_empty());
    assert_eq!(inline.options, RunOptions::default());
    assert_eq!(
        store.get_run_inventory(inline.id).await.expect("inventory"),
        inline_inventory()
    );
    assert_not_found(store.get_run(inline.id + 100).await, "run");
    assert_not_found(store.get_run_inventory(inline.id + 100).await, "run");
    // The project as it is when the run starts, not as it was when the run was asked for.
    let synced = ProjectSync {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        synced_at: Some(Utc::now()),
        error: None,
        requirements_error: None,
    };
    let p_now = store.set_project_sync(p.id, &synced).await.expect("sync");
    assert_eq!(
        store.get_run_launch(inline.id).await.expect("launch"),
        (p_now, inline_inventory())
    );
    assert_not_found(store.get_run_launch(inline.id + 100).await, "run");
}

/// A run needs an existing project and (when given) inventory; nothing is stored otherwise.
pub async fn create_run_missing_references(store: &dyn Store) {
    let p = project(store, "p").await;
    assert_not_found(store.create_run(&new_run(p.id + 1)).await, "project");
    let mut new = new_run(p.id);
    new.inventory_id = Some(4242);
    new.labels.insert("k".into(), "v".into());
    assert_not_found(store.create_run(&new).await, "inventory");
    // Without labels too (one statement on SQLite, where the foreign keys do the checking),
    // and for every other reference a run can hold.
    new.labels.clear();
    assert_not_found(store.create_run(&new).await, "inventory");
    let refer = |set: &dyn Fn(&mut NewRun)| {
        let mut new = new_run(p.id);
        set(&mut new);
        new
    };
    let relaunch = refer(&|n| n.origin = relaunch(4243, Origin::Api));
    assert_not_found(store.create_run(&relaunch).await, "run");
    let template = refer(&|n| n.origin = Origin::Template { template_id: 4244 });
    assert_not_found(store.create_run(&template).await, "template");
    let slice = refer(&|n| {
        n.origin = Origin::Slice {
            of: troupe_core::run::SliceOf {
                parent_id: 4245,
                slice: 1,
                count: 2,
            },
            original: Box::new(Origin::Api),
        }
    });
    assert_not_found(store.create_run(&slice).await, "run");
    let all = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert!(all.is_empty(), "no run stored: {all:?}");
}

/// Ids increase with creation, across projects.
pub async fn run_ids_increase(store: &dyn Store) {
    let p1 = project(store, "p1").await;
    let p2 = project(store, "p2").await;
    let mut last = 0;
    for i in 0..10 {
        let run = store
            .create_run(&new_run(if i % 2 == 0 { p1.id } else { p2.id }))
            .await
            .expect("create");
        assert!(run.id > last, "{} after {last}", run.id);
        last = run.id;
    }
}

/// Listing filters by status (any of), project, tag and label, newest first.
pub async fn list_runs_filters(store: &dyn Store) {
    let p1 = project(store, "p1").await;
    let p2 = project(store, "p2").await;
    let mk = |project_id: i64, tag: Option<&str>, labels: &[(&str, &str)]| {
        let mut n = new_run(project_id);
        n.tag = tag.map(str::to_owned);
        n.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        n
    };
    let r1 = store
        .create_run(&mk(p1.id, Some("a"), &[("team", "ops")]))
        .await
        .expect("r1");
    let r2 = store
        .create_run(&mk(p1.id, Some("b"), &[("team", "dev"), ("x", "1")]))
        .await
        .expect("r2");
    let r3 = store
        .create_run(&mk(p2.id, Some("a"), &[]))
        .await
        .expect("r3");
    let r4 = store
        .create_run(&mk(p2.id, None, &[("team", "ops"), ("x", "2")]))
        .await
        .expect("r4");
    let r5 = store
        .create_run(&mk(p1.id, None, &[("teams", "ops")]))
        .await
        .expect("r5");
    // r1 -> running, r2 -> successful, r3 -> canceled; r4, r5 stay queued.
    let c = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("r1");
    assert_eq!(c.id, r1.id);
    let c = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("r2");
    assert_eq!(c.id, r2.id);
    store
        .finish_run(r2.id, "w", &ok_outcome())
        .await
        .expect("finish");
    store
        .request_cancel(r3.id, CancelMode::Graceful)
        .await
        .expect("cancel");

    let all = Page {
        before: None,
        limit: 100,
    };
    let list = |f: RunFilter| async move { ids(&store.list_runs(&f, all).await.expect("list")) };

    assert_eq!(
        list(RunFilter::default()).await,
        vec![r5.id, r4.id, r3.id, r2.id, r1.id]
    );
    let st = |s: &[RunStatus]| RunFilter {
        statuses: s.to_vec(),
        ..Default::default()
    };
    assert_eq!(list(st(&[RunStatus::Queued])).await, vec![r5.id, r4.id]);
    assert_eq!(
        list(st(&[
            RunStatus::Running,
            RunStatus::Successful,
            RunStatus::Canceled
        ]))
        .await,
        vec![r3.id, r2.id, r1.id]
    );
    assert_eq!(list(st(&[RunStatus::Error])).await, Vec::<i64>::new());
    let pf = RunFilter {
        project_id: Some(p2.id),
        ..Default::default()
    };
    assert_eq!(list(pf).await, vec![r4.id, r3.id]);
    let tf = RunFilter {
        tag: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(list(tf).await, vec![r3.id, r1.id]);
    let lk = RunFilter {
        label: Some(("team".into(), None)),
        ..Default::default()
    };
    assert_eq!(list(lk).await, vec![r4.id, r2.id, r1.id]);
    let lkv = RunFilter {
        label: Some(("team".into(), Some("ops".into()))),
        ..Default::default()
    };
    assert_eq!(list(lkv).await, vec![r4.id, r1.id]);
    let none = RunFilter {
        label: Some(("team".into(), Some("op%".into()))),
        ..Default::default()
    };
    assert_eq!(list(none).await, Vec::<i64>::new());
    let combo = RunFilter {
        statuses: vec![RunStatus::Queued, RunStatus::Running],
        project_id: Some(p2.id),
        label: Some(("x".into(), Some("2".into()))),
        tag: None,
        ..Default::default()
    };
    assert_eq!(list(combo).await, vec![r4.id]);
    let combo2 = RunFilter {
        project_id: Some(p1.id),
        tag: Some("a".into()),
        label: Some(("team".into(), None)),
        ..Default::default()
    };
    assert_eq!(list(combo2).await, vec![r1.id]);
    // Listed runs carry their labels.
    let listed = store
        .list_runs(&RunFilter::default(), all)
        .await
        .expect("list");
    let r2_listed = listed.iter().find(|r| r.id == r2.id).expect("r2 listed");
    assert_eq!(r2_listed.labels.get("x").map(String::as_str), Some("1"));
    assert_eq!(r2_listed.status, RunStatus::Successful);
}

/// `list_run_versions` lists what `list_runs` lists; every kind of change to a run moves its
/// version up; `get_runs` returns the same runs as `get_run`, with their versions.
pub async fn run_versions_follow_every_change(store: &dyn Store) {
    let p = project(store, "p").await;
    let runs = queued_runs(store, p.id, 4).await;
    let version_of = async |id: i64| -> i64 {
        let found = store.get_runs(&[id]).await.expect("get_runs");
        assert_eq!(found.len(), 1, "run {id}");
        assert_eq!(found[0].0.id, id);
        found[0].0.version
    };
    let all = RunFilter::default();
    for page in [
        Page {
            before: None,
            limit: 50,
        },
        Page {
            before: Some(runs[3].id),
            limit: 2,
        },
    ] {
        let listed = store.list_runs(&all, page).await.expect("list");
        let versions = store.list_run_versions(&all, page).await.expect("versions");
        assert_eq!(
            versions.iter().map(|v| v.id).collect::<Vec<_>>(),
            ids(&listed),
            "same runs, same order"
        );
    }
    let tagged = RunFilter {
        tag: Some("nothing-has-it".into()),
        ..Default::default()
    };
    assert!(
        store
            .list_run_versions(
                &tagged,
                Page {
                    before: None,
                    limit: 10
                }
            )
            .await
            .expect("versions")
            .is_empty(),
        "filters apply"
    );

    // Each change moves the version of the run it touches, and only that one.
    let id = runs[0].id;
    let other = version_of(runs[1].id).await;
    let mut last = version_of(id).await;
    let mut moved = async |what: &str| {
        let now = version_of(id).await;
        assert!(now > last, "{what}: version {now} after {last}");
        last = now;
    };
    let claimed = store
        .claim_runs("w1", Duration::from_secs(60), 1)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), [id]);
    moved("claim").await;
    store
        .mark_launched(id, "w1", Utc::now(), Some("abc"))
        .await
        .expect("launched");
    moved("mark_launched").await;
    store
        .append_events(id, &events(1..=3))
        .await
        .expect("events");
    moved("append_events (event count)").await;
    store
        .request_cancel(id, CancelMode::Graceful)
        .await
        .expect("cancel");
    moved("request_cancel").await;
    store
        .finish_run(id, "w1", &ok_outcome())
        .await
        .expect("finish");
    moved("finish_run").await;
    assert_eq!(
        version_of(runs[1].id).await,
        other,
        "other runs keep theirs"
    );

    let got = store
        .get_runs(&[runs[2].id, id, i64::MAX])
        .await
        .expect("get_runs");
    assert_eq!(got.len(), 2, "an unknown id is left out");
    let (v, found) = got
        .into_iter()
        .find(|(v, _)| v.id == id)
        .expect("the finished run");
    assert_eq!(found, store.get_run(id).await.expect("get"));
    assert_eq!(v, RunVersion { id, version: last });
}

/// The runs generation moves after every committed change to a run, and a list read once it
/// has moved shows the change: the API answers an unchanged list from what it kept while the
/// generation stays put. Not among the common cases: only for backends that keep a runs
/// generation ([`Store::runs_generation`]); their tests call it.
pub async fn runs_generation_moves_after_every_change(store: &dyn Store) {
    let p = project(store, "p").await;
    let page = Page {
        before: None,
        limit: 10,
    };
    let all = RunFilter::default();
    // The generation a list read now could be kept under, once the store offers one (a
    // backend offers none while a change is being made), after it left `from`.
    let settled = async |from: Option<u64>, what: &str| -> u64 {
        let start = std::time::Instant::now();
        loop {
            match store.runs_generation() {
                Some(now) if Some(now) != from => return now,
                now => assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{what}: the runs generation stayed {now:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let mut generation = settled(None, "a backend keeps a runs generation").await;
    // Once the generation moved past `from`, the list shows `id` at the version it has now.
    let moved = async |from: u64, id: i64, what: &str| -> u64 {
        let now = settled(Some(from), what).await;
        let current = store.get_runs(&[id]).await.expect("get_runs");
        let listed = store.list_run_versions(&all, page).await.expect("list");
        assert!(
            listed.contains(&current[0].0),
            "{what}: listed {listed:?}, the run is at {:?}",
            current[0].0
        );
        now
    };
    let run = store.create_run(&new_run(p.id)).await.expect("create");
    generation = moved(generation, run.id, "create_run").await;
    store
        .claim_runs("w1", Duration::from_secs(60), 1)
        .await
        .expect("claim");
    generation = moved(generation, run.id, "claim").await;
    store
        .mark_launched(run.id, "w1", Utc::now(), None)
        .await
        .expect("launched");
    generation = moved(generation, run.id, "mark_launched").await;
    store
        .append_events(run.id, &events(1..=2))
        .await
        .expect("events");
    generation = moved(generation, run.id, "append_events (event count)").await;
    store
        .request_cancel(run.id, CancelMode::Force)
        .await
        .expect("cancel");
    generation = moved(generation, run.id, "request_cancel").await;
    store
        .finish_run(run.id, "w1", &ok_outcome())
        .await
        .expect("finish");
    moved(generation, run.id, "finish_run").await;
}

/// Pages follow the `before` cursor with no duplicate and no gap, with and without filters.
pub async fn list_runs_pagination(store: &dyn Store) {
    let p = project(store, "p").await;
    let mut created = Vec::new();
    for i in 0..25 {
        let mut n = new_run(p.id);
        if i % 3 == 0 {
            n.tag = Some("third".into());
        }
        created.push(store.create_run(&n).await.expect("create"));
    }
    for (filter, expected) in [
        (
            RunFilter::default(),
            created.iter().map(|r| r.id).rev().collect::<Vec<_>>(),
        ),
        (
            RunFilter {
                tag: Some("third".into()),
                ..Default::default()
            },
            created
                .iter()
                .filter(|r| r.tag.is_some())
                .map(|r| r.id)
                .rev()
                .collect(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_runs(&filter, Page { before, limit: 7 })
                .await
                .expect("page");
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            if let Some(b) = before {
                assert!(
                    page.iter().all(|r| r.id < b),
                    "page starts below the cursor"
                );
            }
            before = page.last().map(|r| r.id);
            seen.extend(ids(&page));
        }
        assert_eq!(seen, expected, "pages cover every run once, newest first");
    }
    let empty = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: Some(created[0].id),
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(empty.is_empty());
    let zero = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 0,
            },
        )
        .await
        .expect("list");
    assert!(zero.is_empty(), "limit 0 lists nothing");
}

/// Claims take the oldest queued run and set the running fields; nothing to claim is `None`.
pub async fn claim_oldest_first(store: &dyn Store) {
    let p = project(store, "p").await;
    assert!(
        store
            .claim_run("w1", Duration::from_secs(30))
            .await
            .expect("claim")
            .is_none()
    );
    let runs = queued_runs(store, p.id, 3).await;
    store
        .request_cancel(runs[0].id, CancelMode::Force)
        .await
        .expect("cancel");
    let before = Utc::now();
    let a = store
        .claim_run("w1", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("run");
    assert_eq!(
        a.id, runs[1].id,
        "canceled runs are not claimed; oldest queued first"
    );
    assert_eq!(a.status, RunStatus::Running);
    assert_eq!(a.worker_id.as_deref(), Some("w1"));
    let started = a.started_at.expect("started_at");
    assert_recent(started, "started_at");
    assert_eq!(a.cancel_requested, None);
    assert_eq!(store.get_run(a.id).await.expect("get"), a);
    let b = store
        .claim_run("w2", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("run");
    assert_eq!(b.id, runs[2].id);
    assert_eq!(b.worker_id.as_deref(), Some("w2"));
    assert!(
        store
            .claim_run("w1", Duration::from_secs(30))
            .await
            .expect("claim")
            .is_none()
    );
    // The lease is about `lease` from the claim: expiring before it does nothing, after it fails the run.
    let none = store
        .expire_leases(before + ChronoDuration::seconds(20), "lease")
        .await
        .expect("expire");
    assert!(none.is_empty());
    let expired = store
        .expire_leases(Utc::now() + ChronoDuration::seconds(40), "lease")
        .await
        .expect("expire");
    assert_eq!(expired, vec![a.id, b.id]);
}

/// Eight claimers racing over fifty runs: every run is claimed exactly once.
pub async fn concurrent_claims_never_share(store: &dyn Store) {
    let p = project(store, "p").await;
    let runs = queued_runs(store, p.id, 50).await;
    let claimers = (0..8).map(|w| async move {
        let worker = format!("worker-{w}");
        let mut mine = Vec::new();
        while let Some(run) = store
            .claim_run(&worker, Duration::from_secs(60))
            .await
            .expect("claim")
        {
            assert_eq!(run.worker_id.as_deref(), Some(worker.as_str()));
            mine.push(run.id);
        }
        mine
    });
    let per_worker = futures_join_all(claimers).await;
    let mut all: Vec<i64> = per_worker.iter().flatten().copied().collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(total, all.len(), "a run was claimed twice: {per_worker:?}");
    assert_eq!(all, ids(&runs), "every run claimed");
    for run in &runs {
        let got = store.get_run(run.id).await.expect("get");
        assert_eq!(got.status, RunStatus::Running);
        let owner = format!(
            "worker-{}",
            per_worker
                .iter()
                .position(|m| m.contains(&run.id))
                .expect("owner")
        );
        assert_eq!(got.worker_id, Some(owner));
    }
}

/// A batch claim takes the oldest queued runs, oldest first, at most `limit`; racing batch
/// claimers never share a run.
pub async fn batch_claims_take_the_oldest_in_order(store: &dyn Store) {
    let p = project(store, "p").await;
    let runs = queued_runs(store, p.id, 30).await;
    store
        .request_cancel(runs[1].id, CancelMode::Force)
        .await
        .expect("cancel");
    assert!(
        store
            .claim_runs("w", Duration::from_secs(30), 0)
            .await
            .expect("claim")
            .is_empty()
    );
    let first = store
        .claim_runs("w", Duration::from_secs(30), 3)
        .await
        .expect("claim");
    assert_eq!(
        ids(&first),
        vec![runs[0].id, runs[2].id, runs[3].id],
        "oldest first, canceled skipped"
    );
    for r in &first {
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(r.worker_id.as_deref(), Some("w"));
        assert_eq!(store.get_run(r.id).await.expect("get"), *r);
    }
    let claimers = (0..4).map(|w| async move {
        let worker = format!("batch-{w}");
        let mut mine = Vec::new();
        loop {
            let got = store
                .claim_runs(&worker, Duration::from_secs(60), 4)
                .await
                .expect("claim");
            if got.is_empty() {
                return mine;
            }
            assert!(got.len() <= 4);
            assert!(got.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
            mine.extend(ids(&got));
        }
    });
    let per_worker = futures_join_all(claimers).await;
    let mut all: Vec<i64> = per_worker.iter().flatten().copied().collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(total, all.len(), "a run was claimed twice: {per_worker:?}");
    assert_eq!(all, ids(&runs[4..]), "every remaining run claimed once");
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

/// A lease is held while running under the worker, shows cancels, and is lost otherwise.
pub async fn renew_lease_held_and_lost(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w1").await;
    let lease = Duration::from_secs(600);
    assert_eq!(
        store.renew_lease(run.id, "w1", lease).await.expect("renew"),
        Lease::Held {
            cancel_requested: None
        }
    );
    assert_eq!(
        store.renew_lease(run.id, "w2", lease).await.expect("renew"),
        Lease::Lost
    );
    assert_eq!(
        store
            .renew_lease(run.id + 99, "w1", lease)
            .await
            .expect("renew"),
        Lease::Lost
    );
    // A short lease renewed long survives an expiry sweep that would have caught the short one.
    let short = running_run(store, p.id, "w1").await;
    store
        .renew_lease(short.id, "w1", Duration::from_secs(3600))
        .await
        .expect("renew");
    let swept = store
        .expire_leases(Utc::now() + ChronoDuration::seconds(1200), "lease")
        .await
        .expect("expire");
    assert_eq!(
        swept,
        vec![run.id],
        "only the run whose lease was not extended expires"
    );
    assert_eq!(
        store.renew_lease(run.id, "w1", lease).await.expect("renew"),
        Lease::Lost
    );
    store
        .request_cancel(short.id, CancelMode::Graceful)
        .await
        .expect("cancel");
    assert_eq!(
        store
            .renew_lease(short.id, "w1", lease)
            .await
            .expect("renew"),
        Lease::Held {
            cancel_requested: Some(CancelMode::Graceful)
        }
    );
    store
        .finish_run(short.id, "w1", &ok_outcome())
        .await
        .expect("finish");
    assert_eq!(
        store
            .renew_lease(short.id, "w1", lease)
            .await
            .expect("renew"),
        Lease::Lost
    );
    // A queued run is not held by anyone.
    let queued = store.create_run(&new_run(p.id)).await.expect("create");
    assert_eq!(
        store
            .renew_lease(queued.id, "w1", lease)
            .await
            .expect("renew"),
        Lease::Lost
    );
}

/// Finishing needs the run running under the worker, and a legal final status.
pub async fn finish_run_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w1").await;
    store
        .request_cancel(run.id, CancelMode::Force)
        .await
        .expect("cancel");
    let mut summary = RunSummary::new();
    summary.insert(
        "web1".into(),
        HostStats {
            ok: 3,
            changed: 1,
            failed: 1,
            ..Default::default()
        },
    );
    summary.insert(
        "web2".into(),
        HostStats {
            unreachable: 1,
            ..Default::default()
        },
    );
    let outcome = RunOutcome {
        status: RunStatus::Failed,
        rc: Some(2),
        reason: Some("1 host failed".into()),
        summary: summary.clone(),
    };
    assert_conflict(store.finish_run(run.id, "w2", &outcome).await, "");
    let illegal = RunOutcome {
        status: RunStatus::Queued,
        ..outcome.clone()
    };
    assert_conflict(store.finish_run(run.id, "w1", &illegal).await, "");
    let still_running = RunOutcome {
        status: RunStatus::Running,
        ..outcome.clone()
    };
    assert_conflict(store.finish_run(run.id, "w1", &still_running).await, "");
    assert_eq!(
        store.get_run(run.id).await.expect("get").status,
        RunStatus::Running
    );

    let done = store
        .finish_run(run.id, "w1", &outcome)
        .await
        .expect("finish");
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.rc, Some(2));
    assert_eq!(done.status_reason.as_deref(), Some("1 host failed"));
    assert_eq!(done.summary, summary);
    assert_eq!(
        done.cancel_requested, None,
        "finishing clears the cancel request"
    );
    assert_eq!(done.worker_id.as_deref(), Some("w1"));
    let finished_at = done.finished_at.expect("finished_at");
    assert_recent(finished_at, "finished_at");
    assert!(finished_at >= done.started_at.expect("started_at"));
    assert_eq!(store.get_run(run.id).await.expect("get"), done);
    // Only once.
    assert_conflict(store.finish_run(run.id, "w1", &ok_outcome()).await, "");
    assert_eq!(store.get_run(run.id).await.expect("get"), done);
    // Not a queued run, not a missing one.
    let queued = store.create_run(&new_run(p.id)).await.expect("create");
    assert_conflict(store.finish_run(queued.id, "w1", &ok_outcome()).await, "");
    assert_not_found(
        store.finish_run(queued.id + 99, "w1", &ok_outcome()).await,
        "run",
    );
    store
        .request_cancel(queued.id, CancelMode::Graceful)
        .await
        .expect("cancel queued");
    // Every legal end status is accepted.
    for status in [
        RunStatus::Successful,
        RunStatus::Canceled,
        RunStatus::Timeout,
        RunStatus::Error,
    ] {
        let r = running_run(store, p.id, "w9").await;
        let o = RunOutcome {
            status,
            rc: None,
            reason: None,
            summary: RunSummary::new(),
        };
        let done = store.finish_run(r.id, "w9", &o).await.expect("finish");
        assert_eq!(done.status, status);
        assert_eq!(done.rc, None);
        assert!(done.summary.is_empty());
    }
}

/// Canceling a queued run ends it at once; it is never claimed.
pub async fn cancel_queued_run(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = store.create_run(&new_run(p.id)).await.expect("create");
    let canceled = store
        .request_cancel(run.id, CancelMode::Graceful)
        .await
        .expect("cancel");
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_eq!(
        canceled.status_reason.as_deref(),
        Some("canceled before start")
    );
    assert_recent(canceled.finished_at.expect("finished_at"), "finished_at");
    assert_eq!(canceled.started_at, None);
    assert_eq!(canceled.cancel_requested, None);
    assert_eq!(store.get_run(run.id).await.expect("get"), canceled);
    assert!(
        store
            .claim_run("w", Duration::from_secs(30))
            .await
            .expect("claim")
            .is_none()
    );
    assert_conflict(store.request_cancel(run.id, CancelMode::Force).await, "");
}

/// Canceling a running run flags it; force overrides graceful, never the reverse.
pub async fn cancel_running_run(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let r = store
        .request_cancel(run.id, CancelMode::Graceful)
        .await
        .expect("cancel");
    assert_eq!(r.status, RunStatus::Running);
    assert_eq!(r.cancel_requested, Some(CancelMode::Graceful));
    assert_eq!(r.finished_at, None);
    let r = store
        .request_cancel(run.id, CancelMode::Graceful)
        .await
        .expect("again");
    assert_eq!(r.cancel_requested, Some(CancelMode::Graceful));
    let r = store
        .request_cancel(run.id, CancelMode::Force)
        .await
        .expect("force");
    assert_eq!(r.cancel_requested, Some(CancelMode::Force));
    let r = store
        .request_cancel(run.id, CancelMode::Graceful)
        .await
        .expect("graceful after");
    assert_eq!(
        r.cancel_requested,
        Some(CancelMode::Force),
        "graceful never weakens force"
    );
    assert_eq!(
        store.get_run(run.id).await.expect("get").cancel_requested,
        Some(CancelMode::Force)
    );
    // Force first stays force.
    let run2 = running_run(store, p.id, "w").await;
    store
        .request_cancel(run2.id, CancelMode::Force)
        .await
        .expect("force");
    let r = store
        .request_cancel(run2.id, CancelMode::Graceful)
        .await
        .expect("graceful");
    assert_eq!(r.cancel_requested, Some(CancelMode::Force));
    let done = store
        .finish_run(
            run2.id,
            "w",
            &RunOutcome {
                status: RunStatus::Canceled,
                rc: Some(-9),
                reason: Some("canceled".into()),
                summary: RunSummary::new(),
            },
        )
        .await
        .expect("finish");
    assert_eq!(done.status, RunStatus::Canceled);
    assert_eq!(done.cancel_requested, None);
}

/// Canceling a finished run conflicts; a missing one is not found.
pub async fn cancel_finished_or_missing(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    store
        .finish_run(run.id, "w", &ok_outcome())
        .await
        .expect("finish");
    assert_conflict(store.request_cancel(run.id, CancelMode::Graceful).await, "");
    let after = store.get_run(run.id).await.expect("get");
    assert_eq!(after.status, RunStatus::Successful);
    assert_eq!(after.cancel_requested, None);
    assert_not_found(
        store.request_cancel(run.id + 99, CancelMode::Force).await,
        "run",
    );
}

/// Failing a dead process's runs matches the worker id prefix literally (no wildcards, case
/// matters) and only touches running runs.
pub async fn fail_runs_of_workers_by_prefix(store: &dyn Store) {
    let p = project(store, "p").await;
    let a1 = running_run(store, p.id, "host_a:1:w0").await;
    let a2 = running_run(store, p.id, "host_a:1:w1").await;
    let wild_ = running_run(store, p.id, "hostXa:1:w0").await;
    let wild_pct = running_run(store, p.id, "host_a:10:w0").await;
    let upper = running_run(store, p.id, "HOST_A:1:w0").await;
    let done = running_run(store, p.id, "host_a:1:w2").await;
    store
        .finish_run(done.id, "host_a:1:w2", &ok_outcome())
        .await
        .expect("finish");
    let queued = store.create_run(&new_run(p.id)).await.expect("queued");

    let failed = store
        .fail_runs_of_workers("host_a:1:", "worker died")
        .await
        .expect("fail");
    assert_eq!(failed, vec![a1.id, a2.id]);
    for id in [a1.id, a2.id] {
        let r = store.get_run(id).await.expect("get");
        assert_eq!(r.status, RunStatus::Error);
        assert_eq!(r.status_reason.as_deref(), Some("worker died"));
        assert_recent(r.finished_at.expect("finished_at"), "finished_at");
    }
    for id in [wild_.id, wild_pct.id, upper.id] {
        assert_eq!(
            store.get_run(id).await.expect("get").status,
            RunStatus::Running
        );
    }
    assert_eq!(
        store.get_run(done.id).await.expect("get").status,
        RunStatus::Successful
    );
    assert_eq!(
        store.get_run(queued.id).await.expect("get").status,
        RunStatus::Queued
    );
    // `%` in the prefix is literal too.
    assert!(
        store
            .fail_runs_of_workers("host%", "x")
            .await
            .expect("fail")
            .is_empty()
    );
    assert!(
        store
            .fail_runs_of_workers("host_a:1:", "x")
            .await
            .expect("fail")
            .is_empty()
    );
    assert_eq!(
        store
            .fail_runs_of_workers("host_a:10", "gone")
            .await
            .expect("fail"),
        vec![wild_pct.id]
    );
    // The worker can no longer finish a run failed under it.
    assert_conflict(
        store.finish_run(a1.id, "host_a:1:w0", &ok_outcome()).await,
        "",
    );
}

/// Leases that expired before `now` fail their runs; others are untouched.
pub async fn expire_leases_by_time(store: &dyn Store) {
    let p = project(store, "p").await;
    store.create_run(&new_run(p.id)).await.expect("create");
    let short = store
        .claim_run("w", Duration::from_secs(1))
        .await
        .expect("claim")
        .expect("run");
    store.create_run(&new_run(p.id)).await.expect("create");
    let long = store
        .claim_run("w", Duration::from_secs(3600))
        .await
        .expect("claim")
        .expect("run");
    let queued = store.create_run(&new_run(p.id)).await.expect("create");
    assert!(
        store
            .expire_leases(Utc::now() - ChronoDuration::seconds(10), "lease")
            .await
            .expect("x")
            .is_empty()
    );
    let expired = store
        .expire_leases(Utc::now() + ChronoDuration::seconds(30), "lease expired")
        .await
        .expect("expire");
    assert_eq!(expired, vec![short.id]);
    let r = store.get_run(short.id).await.expect("get");
    assert_eq!(r.status, RunStatus::Error);
    assert_eq!(r.status_reason.as_deref(), Some("lease expired"));
    assert!(r.finished_at.is_some());
    assert_eq!(
        store.get_run(long.id).await.expect("get").status,
        RunStatus::Running
    );
    assert_eq!(
        store.get_run(queued.id).await.expect("get").status,
        RunStatus::Queued
    );
    // Already failed: not again.
    assert!(
        store
            .expire_leases(Utc::now() + ChronoDuration::seconds(30), "x")
            .await
            .expect("x")
            .is_empty()
    );
    assert_eq!(
        store
            .renew_lease(short.id, "w", Duration::from_secs(5))
            .await
            .expect("renew"),
        Lease::Lost
    );
}

/// Events keep every field, list in counter order after a cursor, and are counted on the run.
pub async fn events_round_trip_and_paging(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let other = running_run(store, p.id, "w").await;
    let mut evs = events(1..=10);
    evs[0] = Event {
        counter: 1,
        uuid: "0f8c-uuid".into(),
        event: "playbook_on_start".into(),
        parent_uuid: None,
        created: Utc
            .with_ymd_and_hms(2026, 11, 22, 1, 2, 3)
            .single()
            .expect("date")
            + ChronoDuration::microseconds(123_456),
        stdout: String::new(),
        start_line: 0,
        end_line: 0,
        event_data: json!({"playbook": "site.yml", "n": 1.5, "big": 9007199254740993_i64, "u": "ünï \"q\" \\ \n", "arr": [null, true, {}]}).into(),
    };
    store.append_events(run.id, &evs).await.expect("append");
    store
        .append_events(other.id, &events(1..=3))
        .await
        .expect("append other");
    let got = store.list_events(run.id, 0, 100).await.expect("list");
    assert_eq!(got, evs);
    assert_eq!(
        store.list_events(run.id, 4, 3).await.expect("list"),
        evs[4..7].to_vec()
    );
    assert_eq!(
        store.list_events(run.id, 10, 5).await.expect("list"),
        Vec::<Event>::new()
    );
    assert_eq!(
        store.list_events(run.id, 0, 0).await.expect("list"),
        Vec::<Event>::new()
    );
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 10);
    assert_eq!(store.get_run(other.id).await.expect("get").event_count, 3);
    assert_eq!(
        store
            .list_events(other.id, 0, 100)
            .await
            .expect("list")
            .len(),
        3
    );
    // Out-of-order arrival still lists in counter order.
    store
        .append_events(
            other.id,
            &[
                event(6, "runner_on_ok", json!({})),
                event(4, "x", json!(null)),
            ],
        )
        .await
        .expect("append");
    let counters: Vec<i64> = store
        .list_events(other.id, 0, 100)
        .await
        .expect("list")
        .iter()
        .map(|e| e.counter)
        .collect();
    assert_eq!(counters, vec![1, 2, 3, 4, 6]);
    assert_eq!(store.get_run(other.id).await.expect("get").event_count, 5);
    // An empty batch is fine.
    store
        .append_events(run.id, &[])
        .await
        .expect("empty append");
}

/// A retried or overlapping batch never duplicates events nor miscounts them.
pub async fn events_batches_are_idempotent(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let first = events(1..=50);
    store.append_events(run.id, &first).await.expect("append");
    store.append_events(run.id, &first).await.expect("retry");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 50);
    // Overlap, with a changed duplicate: the stored one wins.
    let mut overlap = events(40..=80);
    overlap[0].stdout = "changed".into();
    store
        .append_events(run.id, &overlap)
        .await
        .expect("overlap");
    let got = store.list_events(run.id, 0, 1000).await.expect("list");
    assert_eq!(got.len(), 80);
    assert_eq!(got[39], first[39], "the first stored copy is kept");
    assert!(got.windows(2).all(|w| w[0].counter + 1 == w[1].counter));
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 80);
    // Duplicates inside one batch.
    let dup = vec![
        event(81, "a", json!({})),
        event(81, "b", json!({})),
        event(82, "c", json!({})),
    ];
    store
        .append_events(run.id, &dup)
        .await
        .expect("dups in batch");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 82);
    assert_eq!(
        store.list_events(run.id, 80, 10).await.expect("list").len(),
        2
    );
}

/// One call with more events than one statement can bind is still stored whole.
pub async fn events_large_batch(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let evs = events(1..=7000);
    store.append_events(run.id, &evs).await.expect("append");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 7000);
    let tail = store.list_events(run.id, 6990, 100).await.expect("list");
    assert_eq!(tail, evs[6990..].to_vec());
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(run.id, after, 1000).await.expect("list");
        let Some(last) = page.last() else { break };
        after = last.counter;
        all.extend(page);
    }
    assert_eq!(all, evs);
}

/// Events and output for a run that does not exist are refused, and nothing is stored.
pub async fn events_for_missing_run(store: &dyn Store) {
    assert_not_found(store.append_events(77, &events(1..=2)).await, "run");
    assert_not_found(
        store
            .append_output(
                77,
                &[OutputChunk {
                    stream: Stream::Stdout,
                    seq: 1,
                    text: "x".into(),
                }],
            )
            .await,
        "run",
    );
    let p = project(store, "p").await;
    let run = store.create_run(&new_run(p.id)).await.expect("create");
    assert!(
        store
            .list_events(run.id, 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .read_output(run.id, Stream::Stdout)
            .await
            .expect("read"),
        ""
    );
}

/// Host failures are unreachable hosts and failures that were not ignored, in counter order.
pub async fn host_failures_filter(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let evs = vec![
        event(1, "playbook_on_start", json!({})),
        event(
            2,
            "runner_on_failed",
            json!({"host": "a", "task": "t1", "ignore_errors": true}),
        ),
        event(3, "runner_on_failed", json!({"host": "b", "task": "t1"})),
        event(4, "runner_on_ok", json!({"host": "c", "task": "t1"})),
        event(
            5,
            "runner_on_unreachable",
            json!({"host": "d", "task": "t1"}),
        ),
        event(
            6,
            "runner_on_failed",
            json!({"host": "e", "task": "t2", "ignore_errors": false}),
        ),
        event(
            7,
            "runner_on_failed",
            json!({"host": "f", "ignore_errors": "yes"}),
        ),
    ];
    store.append_events(run.id, &evs).await.expect("append");
    let failures = store.host_failures(run.id).await.expect("failures");
    let expected: Vec<Event> = evs
        .iter()
        .filter(|e| e.is_host_failure())
        .cloned()
        .collect();
    assert_eq!(failures, expected);
    assert_eq!(
        failures.iter().map(|e| e.counter).collect::<Vec<_>>(),
        vec![3, 5, 6, 7]
    );
    let other = running_run(store, p.id, "w").await;
    assert!(
        store
            .host_failures(other.id)
            .await
            .expect("failures")
            .is_empty()
    );
}

/// Output chunks concatenate per stream in seq order; a repeated seq is skipped.
pub async fn output_streams(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    store
        .append_output(
            run.id,
            &[
                chunk(Stream::Stdout, 1, "PLAY [all] "),
                chunk(Stream::Stderr, 2, "warn: x\n"),
                chunk(Stream::Stdout, 4, "ok: [a]\n"),
            ],
        )
        .await
        .expect("append");
    store
        .append_output(
            run.id,
            &[
                chunk(Stream::Stdout, 3, "***\n"),
                chunk(Stream::Stdout, 4, "DUPLICATE"),
                chunk(Stream::Stderr, 5, "ünïcode\n"),
            ],
        )
        .await
        .expect("append");
    store.append_output(run.id, &[]).await.expect("empty");
    assert_eq!(
        store
            .read_output(run.id, Stream::Stdout)
            .await
            .expect("read"),
        "PLAY [all] ***\nok: [a]\n"
    );
    assert_eq!(
        store
            .read_output(run.id, Stream::Stderr)
            .await
            .expect("read"),
        "warn: x\nünïcode\n"
    );
    let big: String = "x".repeat(100_000);
    let many: Vec<OutputChunk> = (6..3006)
        .map(|s| chunk(Stream::Stdout, s, &big[..(s as usize % 50)]))
        .collect();
    store
        .append_output(run.id, &many)
        .await
        .expect("many chunks");
    let out = store
        .read_output(run.id, Stream::Stdout)
        .await
        .expect("read");
    let expected_len =
        "PLAY [all] ***\nok: [a]\n".len() + many.iter().map(|c| c.text.len()).sum::<usize>();
    assert_eq!(out.len(), expected_len);
}

/// Events and output appended together: both stored, and a retried or overlapping batch adds
/// only what is new; a batch for a missing run is refused, whatever it holds.
pub async fn events_and_output_in_one_batch(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let first = [
        chunk(Stream::Stdout, 1, "PLAY [all] ***\n"),
        chunk(Stream::Stderr, 2, "warn\n"),
    ];
    store
        .append_batch(run.id, &events(1..=3), &first)
        .await
        .expect("append");
    store
        .append_batch(run.id, &events(1..=3), &first)
        .await
        .expect("retry");
    store
        .append_batch(
            run.id,
            &events(3..=5),
            &[
                chunk(Stream::Stdout, 2, "DUPLICATE"),
                chunk(Stream::Stdout, 3, "ok: [a]\n"),
            ],
        )
        .await
        .expect("overlap");
    store
        .append_batch(run.id, &events(6..=6), &[])
        .await
        .expect("events only");
    store
        .append_batch(run.id, &[], &[chunk(Stream::Stdout, 4, "done\n")])
        .await
        .expect("output only");
    store.append_batch(run.id, &[], &[]).await.expect("empty");

    let got = store.list_events(run.id, 0, 100).await.expect("list");
    let counters: Vec<i64> = got.iter().map(|e| e.counter).collect();
    assert_eq!(counters, vec![1, 2, 3, 4, 5, 6]);
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.event_count, 6, "each event counted once");
    let read = |stream| store.read_output(run.id, stream);
    assert_eq!(
        read(Stream::Stdout).await.expect("stdout"),
        "PLAY [all] ***\nok: [a]\ndone\n"
    );
    assert_eq!(read(Stream::Stderr).await.expect("stderr"), "warn\n");

    let some_output = [chunk(Stream::Stdout, 1, "x")];
    assert_not_found(
        store.append_batch(77, &events(1..=2), &some_output).await,
        "run",
    );
    assert_not_found(store.append_batch(77, &events(1..=2), &[]).await, "run");
    assert_not_found(store.append_batch(77, &[], &some_output).await, "run");
    assert_not_found(store.append_batch(77, &[], &[]).await, "run");
}

/// A NUL character in text does not fail the write (backends that cannot store it replace it).
pub async fn nul_characters_do_not_break_writes(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let mut e = event(
        1,
        "runner_on_ok",
        json!({"host": "a\u{0}b", "res": {"stdout": "x\u{0}y"}}),
    );
    e.stdout = "bin\u{0}ary".into();
    store
        .append_events(run.id, std::slice::from_ref(&e))
        .await
        .expect("append event");
    let got = store.list_events(run.id, 0, 10).await.expect("list");
    assert_eq!(got.len(), 1);
    assert!(matches!(
        got[0].stdout.as_str(),
        "bin\u{0}ary" | "bin\u{FFFD}ary"
    ));
    assert_eq!(
        got[0].event_data.json(),
        e.event_data.json(),
        "event data is kept exactly"
    );
    store
        .append_output(
            run.id,
            &[OutputChunk {
                stream: Stream::Stdout,
                seq: 1,
                text: "a\u{0}b".into(),
            }],
        )
        .await
        .expect("append output");
    let out = store
        .read_output(run.id, Stream::Stdout)
        .await
        .expect("read");
    assert!(matches!(out.as_str(), "a\u{0}b" | "a\u{FFFD}b"), "{out:?}");
}

/// Tokens are stored by hash (unique); names may repeat.
pub async fn tokens_round_trip(store: &dyn Store) {
    let a = store.create_token("admin", "aa11").await.expect("create");
    let b = store
        .create_token("admin", "bb22")
        .await
        .expect("same name, other hash");
    assert!(b.id > a.id);
    assert_eq!(a.name, "admin");
    assert_eq!(a.hash, "aa11");
    assert_recent(a.created_at, "created_at");
    assert_conflict(store.create_token("ci", "aa11").await, "token");
    let list = store.list_tokens().await.expect("list");
    assert_eq!(list, vec![a, b]);
}

// ---------------------------------------------------------------------------------------------
// Git project sync, inventory revisions and deletion

/// A time with nanoseconds, which every backend keeps to the microsecond.
fn precise_time() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 123_456_789)
        .single()
        .expect("valid time")
}

/// A project starts with no sync state; `set_project_sync` stores all of it and can clear it.
pub async fn project_sync_round_trip(store: &dyn Store) {
    let p = project(store, "git-proj").await;
    assert_eq!(p.sync, ProjectSync::default());
    let sync = ProjectSync {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        synced_at: Some(precise_time()),
        error: Some("fetch failed: exit 128".into()),
        requirements_error: Some("collection x not found".into()),
    };
    let updated = store.set_project_sync(p.id, &sync).await.expect("set sync");
    let expected = ProjectSync {
        synced_at: Some(micros(precise_time())),
        ..sync
    };
    assert_eq!(updated.sync, expected);
    assert_eq!((updated.id, &updated.name), (p.id, &p.name));
    assert_eq!(updated.source, p.source);
    assert_eq!(updated.created_at, p.created_at);
    assert_eq!(store.get_project(p.id).await.expect("get"), updated);
    assert_eq!(
        store.find_project("git-proj").await.expect("find"),
        Some(updated.clone())
    );
    assert_eq!(
        store.list_projects().await.expect("list"),
        vec![updated.clone()]
    );
    let cleared = store
        .set_project_sync(p.id, &ProjectSync::default())
        .await
        .expect("clear");
    assert_eq!(cleared.sync, ProjectSync::default());
    assert_eq!(store.get_project(p.id).await.expect("get"), cleared);
    assert_not_found(
        store
            .set_project_sync(p.id + 100, &ProjectSync::default())
            .await,
        "project",
    );
}

/// `update_inventory` replaces every field and bumps the revision; a taken name is a conflict;
/// runs keep the snapshot they were created with.
pub async fn update_inventory_bumps_revision(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("create");
    assert_eq!(inv.revision, 1);
    let mut run = new_run(p.id);
    run.inventory_id = Some(inv.id);
    run.inventory = inv.content.clone();
    let run = store.create_run(&run).await.expect("run");

    let replacement = NewInventory {
        name: "inv-renamed".into(),
        env: None,
        version: Some("v4".into()),
        format: InventoryFormat::Ini,
        hosts: "[db]\ndb1\ndb2\ndb3\n".into(),
        vars: None,
    };
    let v2 = store
        .update_inventory(inv.id, &replacement, 3)
        .await
        .expect("update");
    assert_eq!(v2.id, inv.id);
    assert_eq!(v2.name, "inv-renamed");
    assert_eq!(v2.env, None);
    assert_eq!(v2.version.as_deref(), Some("v4"));
    assert_eq!(v2.content, replacement.content());
    assert_eq!(v2.host_count, 3);
    assert_eq!(v2.revision, 2);
    assert_eq!(v2.created_at, inv.created_at);
    assert_eq!(store.get_inventory(inv.id).await.expect("get"), v2);
    assert_eq!(store.find_inventory("inv").await.expect("find"), None);
    assert_eq!(
        store.find_inventory("inv-renamed").await.expect("find"),
        Some(v2.clone())
    );
    let v3 = store
        .update_inventory(inv.id, &replacement, 3)
        .await
        .expect("same name again");
    assert_eq!(v3.revision, 3);
    assert_eq!(
        store.get_run_inventory(run.id).await.expect("snapshot"),
        inv.content,
        "the run keeps the inventory it was created with"
    );

    let other = store
        .create_inventory(&new_inventory("other"), 2)
        .await
        .expect("other");
    let taken = NewInventory {
        name: "inv-renamed".into(),
        ..new_inventory("x")
    };
    assert_conflict(
        store.update_inventory(other.id, &taken, 2).await,
        "\"inv-renamed\"",
    );
    assert_eq!(
        store.get_inventory(other.id).await.expect("get"),
        other,
        "a refused update changes nothing"
    );
    assert_eq!(other.revision, 1);
    assert_not_found(
        store
            .update_inventory(other.id + 100, &new_inventory("y"), 2)
            .await,
        "inventory",
    );
}

/// An inventory in use by a queued or running run, or named by a template, is not deleted;
/// once the runs are over it is, and they keep their snapshot without the reference.
pub async fn delete_inventory_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("used"), 2)
        .await
        .expect("create");
    let mut new = new_run(p.id);
    new.inventory_id = Some(inv.id);
    new.inventory = inv.content.clone();
    let queued = store.create_run(&new).await.expect("run");
    let msg = assert_conflict(store.delete_inventory(inv.id).await, "queued");
    assert!(
        msg.contains(&queued.id.to_string()),
        "{msg:?} names the run"
    );
    let running = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("the queued run");
    assert_eq!(running.id, queued.id);
    assert_conflict(store.delete_inventory(inv.id).await, "running");
    store
        .finish_run(running.id, "w", &ok_outcome())
        .await
        .expect("finish");
    // A canceled run (finished too) does not hold it either.
    let canceled = store.create_run(&new).await.expect("run");
    store
        .request_cancel(canceled.id, CancelMode::Force)
        .await
        .expect("cancel");

    store.delete_inventory(inv.id).await.expect("delete");
    assert_not_found(store.get_inventory(inv.id).await, "inventory");
    assert_eq!(store.find_inventory("used").await.expect("find"), None);
    for id in [running.id, canceled.id] {
        let run = store.get_run(id).await.expect("run");
        assert_eq!(run.inventory_id, None, "the reference is gone");
        assert_eq!(
            store.get_run_inventory(id).await.expect("snapshot"),
            inv.content,
            "the snapshot stays"
        );
    }
    assert_not_found(store.delete_inventory(inv.id).await, "inventory");

    // A template naming an inventory holds it.
    let held = store
        .create_inventory(&new_inventory("held"), 2)
        .await
        .expect("create");
    store
        .create_template(&new_template("nightly", p.id, held.id))
        .await
        .expect("template");
    assert_conflict(store.delete_inventory(held.id).await, "\"nightly\"");
    assert_eq!(store.get_inventory(held.id).await.expect("kept"), held);
    // The name is free again after a delete.
    store
        .create_inventory(&new_inventory("used"), 2)
        .await
        .expect("name reused");
}

// ---------------------------------------------------------------------------------------------
// Jobs and units

fn new_job(tag: &str, units: &[&str], project_id: Option<i64>) -> NewJob {
    NewJob {
        tag: tag.into(),
        units: units.iter().map(|u| (*u).to_owned()).collect(),
        project_id,
    }
}

fn unit_names(job: &Job) -> Vec<&str> {
    job.units.iter().map(|u| u.name.as_str()).collect()
}

/// A job keeps its tag, project and units in the order given, with no source yet.
pub async fn jobs_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job(
            "release",
            &["zeta", "alpha", "mid-1", "b.2"],
            Some(p.id),
        ))
        .await
        .expect("create job");
    assert_eq!(job.tag, "release");
    assert_eq!(job.project_id, Some(p.id));
    assert_eq!(unit_names(&job), ["zeta", "alpha", "mid-1", "b.2"]);
    assert!(job.units.iter().all(|u| u.source.is_none()));
    assert_recent(job.created_at, "created_at");
    assert_eq!(store.get_job(job.id).await.expect("get"), job);

    let bare = store
        .create_job(&new_job("release", &["only"], None))
        .await
        .expect("no project");
    assert!(bare.id > job.id);
    assert_eq!(bare.project_id, None);
    assert_eq!(store.get_job(bare.id).await.expect("get"), bare);

    assert_not_found(store.get_job(bare.id + 100).await, "job");
    assert_not_found(
        store
            .create_job(&new_job("x", &["a"], Some(p.id + 100)))
            .await,
        "project",
    );
    // Callers validate; the store still refuses a unit listed twice, storing nothing.
    assert!(matches!(
        store.create_job(&new_job("dup", &["a", "a"], None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.latest_job("dup").await.expect("latest"), None);
    assert_eq!(store.latest_job("x").await.expect("latest"), None);
}

/// `latest_job` is the highest id with the tag; `list_jobs` pages newest first by tag.
pub async fn latest_job_and_list_jobs(store: &dyn Store) {
    assert_eq!(store.latest_job("a").await.expect("latest"), None);
    let mut made = Vec::new();
    for i in 0..11 {
        let tag = if i % 3 == 0 { "a" } else { "b" };
        let units = [format!("u{i}"), format!("v{i}")];
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        made.push(
            store
                .create_job(&new_job(tag, &units, None))
                .await
                .expect("create"),
        );
    }
    let latest_a = store.latest_job("a").await.expect("latest").expect("some");
    assert_eq!(latest_a, made[9]);
    let latest_b = store.latest_job("b").await.expect("latest").expect("some");
    assert_eq!(latest_b, made[10]);
    assert_eq!(store.latest_job("c").await.expect("latest"), None);

    for (tag, expected) in [
        (None, made.iter().rev().cloned().collect::<Vec<_>>()),
        (
            Some("a"),
            made.iter()
                .filter(|j| j.tag == "a")
                .rev()
                .cloned()
                .collect(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_jobs(tag, Page { before, limit: 3 })
                .await
                .expect("page");
            assert!(page.len() <= 3);
            if let Some(b) = before {
                assert!(page.iter().all(|j| j.id < b), "below the cursor");
            }
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            seen.extend(page);
        }
        assert_eq!(
            seen, expected,
            "every job once, newest first, with its units"
        );
    }
    let zero = store
        .list_jobs(
            None,
            Page {
                before: None,
                limit: 0,
            },
        )
        .await
        .expect("list");
    assert!(zero.is_empty(), "limit 0 lists nothing");
    let none = store
        .list_jobs(
            Some("c"),
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(none.is_empty());
}

/// `set_unit_source` sets one unit's source (a project or a data dir), which `get_job` shows.
pub async fn set_unit_source_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job("t", &["web", "db", "cache"], None))
        .await
        .expect("job");
    let web = store
        .set_unit_source(job.id, "web", &UnitSource::Project(p.id))
        .await
        .expect("set");
    assert_eq!(
        web,
        Unit {
            name: "web".into(),
            source: Some(UnitSource::Project(p.id)),
        }
    );
    let dir = UnitSource::DataDir("/var/lib/redrunner/db".into());
    store
        .set_unit_source(job.id, "db", &dir)
        .await
        .expect("set");
    let got = store.get_job(job.id).await.expect("get");
    assert_eq!(unit_names(&got), ["web", "db", "cache"], "order kept");
    assert_eq!(got.units[0].source, Some(UnitSource::Project(p.id)));
    assert_eq!(got.units[1].source, Some(dir.clone()));
    assert_eq!(got.units[2].source, None);
    // Setting again replaces.
    store
        .set_unit_source(job.id, "web", &dir)
        .await
        .expect("replace");
    assert_eq!(
        store.get_job(job.id).await.expect("get").units[0].source,
        Some(dir.clone())
    );

    assert_not_found(
        store.set_unit_source(job.id + 100, "web", &dir).await,
        "job",
    );
    assert_not_found(store.set_unit_source(job.id, "nope", &dir).await, "unit");
    assert_not_found(
        store
            .set_unit_source(job.id, "cache", &UnitSource::Project(p.id + 100))
            .await,
        "project",
    );
    assert_eq!(
        store.get_job(job.id).await.expect("get").units[2].source,
        None,
        "a refused source is not stored"
    );
}

// ---------------------------------------------------------------------------------------------
// Templates

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
    }
}

/// Templates keep every field, are found by id and name, listed by id; names are unique and
/// references must exist.
pub async fn templates_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let new = new_template("deploy", p.id, inv.id);
    let t = store.create_template(&new).await.expect("create");
    assert_eq!(t.name, "deploy");
    assert_eq!(t.project_id, p.id);
    assert_eq!(t.playbook, "plays/site.yml");
    assert_eq!(t.inventory_id, inv.id);
    assert_eq!(t.defaults, new.defaults);
    assert_eq!(t.defaults.start_at_task.as_deref(), Some("deploy the app"));
    assert_eq!(t.allow_overrides, ["limit", "extra_vars"]);
    assert_eq!(t.labels, new.labels);
    assert_recent(t.created_at, "created_at");
    let bare = store
        .create_template(&NewTemplate {
            name: "adhoc".into(),
            defaults: RunOptions::default(),
            allow_overrides: Vec::new(),
            labels: Labels::new(),
            ..new.clone()
        })
        .await
        .expect("create");
    assert!(bare.id > t.id);
    assert_eq!(bare.defaults, RunOptions::default());
    assert!(bare.allow_overrides.is_empty() && bare.labels.is_empty());
    assert_eq!(store.get_template(t.id).await.expect("get"), t);
    assert_eq!(
        store.find_template("adhoc").await.expect("find"),
        Some(bare.clone())
    );
    assert_eq!(store.find_template("nope").await.expect("find"), None);
    assert_eq!(
        store.list_templates().await.expect("list"),
        vec![t.clone(), bare.clone()]
    );
    assert_not_found(store.get_template(bare.id + 100).await, "template");

    assert_conflict(store.create_template(&new).await, "\"deploy\"");
    assert_not_found(
        store
            .create_template(&new_template("x", p.id + 100, inv.id))
            .await,
        "project",
    );
    assert_not_found(
        store
            .create_template(&new_template("y", p.id, inv.id + 100))
            .await,
        "inventory",
    );
    assert_eq!(store.list_templates().await.expect("list").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Run links and launch

/// A run keeps its job and unit, the run it relaunches, its template and its options
/// (`start_at_task` included); a plain run has none of these.
pub async fn run_links_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let job = store
        .create_job(&new_job("rel", &["web", "db"], Some(p.id)))
        .await
        .expect("job");
    let template = store
        .create_template(&new_template("deploy", p.id, inv.id))
        .await
        .expect("template");
    let plain = store.create_run(&new_run(p.id)).await.expect("plain");
    for (field, missing) in [
        ("launched_at", plain.launched_at.is_none()),
        ("commit", plain.commit.is_none()),
        ("job_id", plain.job_id.is_none()),
        ("unit", plain.unit.is_none()),
        ("relaunch_of", plain.relaunch_of.is_none()),
        ("template_id", plain.template_id.is_none()),
    ] {
        assert!(missing, "a plain run has no {field}");
    }
    let mut new = new_run(p.id);
    new.origin = relaunch(
        plain.id,
        Origin::JobUnit {
            job_id: job.id,
            unit: "db".into(),
        },
    );
    new.options.start_at_task = Some("restart db".into());
    let run = store.create_run(&new).await.expect("linked run");
    assert_eq!(run.job_id, Some(job.id));
    assert_eq!(run.unit.as_deref(), Some("db"));
    assert_eq!(run.relaunch_of, Some(plain.id));
    assert_eq!(run.template_id, None);
    assert_eq!(run.options.start_at_task.as_deref(), Some("restart db"));
    assert_eq!(run.launched_at, None);
    assert_eq!(run.commit, None);
    assert_eq!(store.get_run(run.id).await.expect("get"), run);
    let listed = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.first(), Some(&run), "listing carries the links");
    let mut new = new_run(p.id);
    new.origin = relaunch(
        run.id,
        Origin::Template {
            template_id: template.id,
        },
    );
    let templated = store.create_run(&new).await.expect("templated relaunch");
    assert_eq!(templated.template_id, Some(template.id));
    assert_eq!(templated.relaunch_of, Some(run.id));
    assert_eq!(
        (templated.job_id, templated.unit.as_deref()),
        (None, None),
        "a template run is no job action"
    );
    assert_eq!(Origin::of_run(&templated), new.origin);
}

/// A relaunch of `of`, which was started by `original`.
fn relaunch(of: i64, original: Origin) -> Origin {
    Origin::Relaunch {
        of,
        original: Box::new(original),
    }
}

/// A link to a missing job, unit, run or template is `NotFound`, and nothing is stored.
pub async fn create_run_missing_links(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job("t", &["web"], None))
        .await
        .expect("job");
    let with = |f: fn(&mut NewRun, i64), id: i64| {
        let mut n = new_run(p.id);
        f(&mut n, id);
        n
    };
    assert_not_found(
        store
            .create_run(&with(
                |n, j| {
                    n.origin = Origin::JobUnit {
                        job_id: j + 100,
                        unit: "web".into(),
                    }
                },
                job.id,
            ))
            .await,
        "job",
    );
    assert_not_found(
        store
            .create_run(&with(
                |n, j| {
                    n.origin = Origin::JobUnit {
                        job_id: j,
                        unit: "db".into(),
                    }
                },
                job.id,
            ))
            .await,
        "unit",
    );
    assert_not_found(
        store
            .create_run(&with(|n, r| n.origin = relaunch(r, Origin::Api), 4242))
            .await,
        "run",
    );
    assert_not_found(
        store
            .create_run(&with(
                |n, t| n.origin = Origin::Template { template_id: t },
                4242,
            ))
            .await,
        "template",
    );
    let all = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert!(all.is_empty(), "no run stored: {all:?}");
}

/// Listing filters by job, by unit (of a job) and by the run relaunched.
pub async fn list_runs_by_job_unit_relaunch(store: &dyn Store) {
    let p = project(store, "p").await;
    let j1 = store
        .create_job(&new_job("t", &["web", "db"], None))
        .await
        .expect("job");
    let j2 = store
        .create_job(&new_job("t", &["web"], None))
        .await
        .expect("job");
    let mk = |job_unit: Option<(i64, &str)>, relaunch_of: Option<i64>| {
        let mut n = new_run(p.id);
        let base = match job_unit {
            Some((job_id, unit)) => Origin::JobUnit {
                job_id,
                unit: unit.to_owned(),
            },
            None => Origin::Api,
        };
        n.origin = match relaunch_of {
            Some(of) => relaunch(of, base),
            None => base,
        };
        n
    };
    let r1 = store
        .create_run(&mk(Some((j1.id, "web")), None))
        .await
        .expect("r1");
    let r2 = store
        .create_run(&mk(Some((j1.id, "db")), None))
        .await
        .expect("r2");
    let r3 = store
        .create_run(&mk(Some((j2.id, "web")), None))
        .await
        .expect("r3");
    let r4 = store
        .create_run(&mk(Some((j1.id, "web")), Some(r1.id)))
        .await
        .expect("r4");
    let r5 = store.create_run(&mk(None, Some(r1.id))).await.expect("r5");
    let r6 = store.create_run(&mk(None, Some(r4.id))).await.expect("r6");
    let all = Page {
        before: None,
        limit: 100,
    };
    let list = |f: RunFilter| async move { ids(&store.list_runs(&f, all).await.expect("list")) };
    let job = |j: i64| RunFilter {
        job_id: Some(j),
        ..Default::default()
    };
    assert_eq!(list(job(j1.id)).await, vec![r4.id, r2.id, r1.id]);
    assert_eq!(list(job(j2.id)).await, vec![r3.id]);
    assert_eq!(list(job(j2.id + 100)).await, Vec::<i64>::new());
    let unit = |j: i64, u: &str| RunFilter {
        job_id: Some(j),
        unit: Some(u.into()),
        ..Default::default()
    };
    assert_eq!(list(unit(j1.id, "web")).await, vec![r4.id, r1.id]);
    assert_eq!(list(unit(j1.id, "db")).await, vec![r2.id]);
    assert_eq!(list(unit(j2.id, "db")).await, Vec::<i64>::new());
    let relaunch = |r: i64| RunFilter {
        relaunch_of: Some(r),
        ..Default::default()
    };
    assert_eq!(list(relaunch(r1.id)).await, vec![r5.id, r4.id]);
    assert_eq!(list(relaunch(r4.id)).await, vec![r6.id]);
    assert_eq!(list(relaunch(r6.id)).await, Vec::<i64>::new());
    let combo = RunFilter {
        job_id: Some(j1.id),
        relaunch_of: Some(r1.id),
        statuses: vec![RunStatus::Queued],
        ..Default::default()
    };
    assert_eq!(list(combo).await, vec![r4.id]);
    let paged = store
        .list_runs(
            &job(j1.id),
            Page {
                before: Some(r4.id),
                limit: 1,
            },
        )
        .await
        .expect("page");
    assert_eq!(ids(&paged), vec![r2.id]);
}

/// `mark_launched` records the launch time and commit of a run its worker holds, and is a
/// conflict otherwise.
pub async fn mark_launched_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let queued = store.create_run(&new_run(p.id)).await.expect("run");
    assert_conflict(
        store.mark_launched(queued.id, "w", Utc::now(), None).await,
        "not running",
    );
    let run = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("the queued run");
    assert_eq!(run.id, queued.id);
    assert_conflict(
        store.mark_launched(run.id, "other", Utc::now(), None).await,
        "\"other\"",
    );
    assert_eq!(store.get_run(run.id).await.expect("get").launched_at, None);
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    store
        .mark_launched(run.id, "w", precise_time(), Some(commit))
        .await
        .expect("mark");
    let got = store.get_run(run.id).await.expect("get");
    assert_eq!(got.launched_at, Some(micros(precise_time())));
    assert_eq!(got.commit.as_deref(), Some(commit));
    assert_eq!(got.status, RunStatus::Running);
    let finished = store
        .finish_run(run.id, "w", &ok_outcome())
        .await
        .expect("finish");
    assert_eq!(finished.launched_at, Some(micros(precise_time())));
    assert_eq!(finished.commit.as_deref(), Some(commit));
    assert_conflict(
        store.mark_launched(run.id, "w", Utc::now(), None).await,
        "not running",
    );
    assert_eq!(
        store.get_run(run.id).await.expect("get"),
        finished,
        "a refused mark changes nothing"
    );
    // Without a commit (directory projects) only the time is kept.
    let dir = running_run(store, p.id, "w").await;
    let at = micros(Utc::now());
    store
        .mark_launched(dir.id, "w", at, None)
        .await
        .expect("mark");
    let got = store.get_run(dir.id).await.expect("get");
    assert_eq!(got.launched_at, Some(at));
    assert_eq!(got.commit, None);
    assert_not_found(
        store
            .mark_launched(dir.id + 100, "w", Utc::now(), None)
            .await,
        "run",
    );
}

/// Appends `batches` batches of `batch_size` runner-shaped events to one run and returns the
/// rate in events per second. Not a case: backends call it from an ignored test to measure.
pub async fn event_append_rate(store: &dyn Store, batches: usize, batch_size: usize) -> f64 {
    let p = project(store, &format!("rate-{batch_size}")).await;
    let run = running_run(store, p.id, "w").await;
    let payload = json!({
        "playbook": "site.yml", "play": "all", "task": "ping", "task_action": "ansible.builtin.ping",
        "host": "web-01.example.com", "duration": 0.123,
        "res": {"changed": false, "ping": "pong", "_ansible_no_log": false},
    });
    let mut counter = 0_i64;
    let all: Vec<Vec<Event>> = (0..batches)
        .map(|_| {
            (0..batch_size)
                .map(|_| {
                    counter += 1;
                    let mut e = event(counter, "runner_on_ok", payload.clone());
                    e.stdout = format!("ok: [web-01.example.com] => {counter}\n");
                    e
                })
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    for batch in &all {
        store.append_events(run.id, batch).await.expect("append");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        store.get_run(run.id).await.expect("get").event_count,
        counter
    );
    counter as f64 / secs
}

/// Slices point at their split run, and can be listed by it.
pub async fn slices_link_to_their_parent(store: &dyn Store) {
    let p = project(store, "p").await;
    let parent = store.create_run(&new_run(p.id)).await.expect("parent");
    assert_eq!(
        (parent.parent_id, parent.slice, parent.slice_count),
        (None, None, None)
    );
    let mut ids = Vec::new();
    for slice in 1..=3 {
        let mut new = new_run(p.id);
        new.origin = Origin::Slice {
            of: troupe_core::run::SliceOf {
                parent_id: parent.id,
                slice,
                count: 3,
            },
            original: Box::new(Origin::Api),
        };
        let child = store.create_run(&new).await.expect("slice");
        assert_eq!(child.parent_id, Some(parent.id));
        assert_eq!(child.slice, Some(slice));
        assert_eq!(child.slice_count, Some(3));
        ids.push(child.id);
    }
    let filter = RunFilter {
        parent_id: Some(parent.id),
        ..Default::default()
    };
    let listed: Vec<i64> = store
        .list_runs(
            &filter,
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids, "newest first, only the slices");
    let mut orphan = new_run(p.id);
    orphan.origin = Origin::Slice {
        of: troupe_core::run::SliceOf {
            parent_id: 999_999,
            slice: 1,
            count: 1,
        },
        original: Box::new(Origin::Api),
    };
    assert!(matches!(
        store.create_run(&orphan).await,
        Err(StoreError::NotFound { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Inbound events and rules

/// `secs` seconds after [`precise_time`].
fn at(secs: i64) -> DateTime<Utc> {
    precise_time() + ChronoDuration::seconds(secs)
}

/// An event from `source` on `routing_key`, received at `received_at`, that no rule matched.
fn inbound(source: &str, routing_key: &str, received_at: DateTime<Utc>) -> NewEventRecord {
    NewEventRecord {
        received_at,
        source: source.into(),
        routing_key: routing_key.into(),
        delivery_id: None,
        content_hash: format!("hash-of-{routing_key}"),
        redelivery_window: None,
        payload_size: 10,
        payload: Some(r#"{"a": "b"}"#.into()),
        payload_truncated: false,
        status: EventStatus::Unmatched,
        reason: None,
        proposals: Vec::new(),
    }
}

/// `new` with one proposal per `(rule, run)`, no gates nor concurrency.
fn proposing(mut new: NewEventRecord, proposals: Vec<Proposal>) -> NewEventRecord {
    new.proposals = proposals;
    new
}

fn proposal(rule: &str, run: Result<NewRun, String>) -> Proposal {
    Proposal {
        rule: rule.into(),
        gates: Vec::new(),
        concurrency: None,
        run,
    }
}

fn gate(kind: GateKind, key: &str, secs: u64) -> Gate {
    Gate {
        kind,
        key: key.into(),
        within: Duration::from_secs(secs),
    }
}

/// Ingests `new`, which must be recorded (not a duplicate).
async fn recorded(store: &dyn Store, new: &NewEventRecord) -> (EventRecord, Vec<Run>) {
    match store.ingest_event(new).await.expect("ingest") {
        Ingested::Recorded { record, runs } => (record, runs),
        Ingested::Duplicate(earlier) => {
            panic!("expected a new record, got a duplicate of {earlier:?}")
        }
    }
}

/// Ingests `new`, which must be a duplicate; returns the earlier record.
async fn duplicate(store: &dyn Store, new: &NewEventRecord) -> EventRecord {
    match store.ingest_event(new).await.expect("ingest") {
        Ingested::Duplicate(earlier) => earlier,
        Ingested::Recorded { record, .. } => panic!("expected a duplicate, got {record:?}"),
    }
}

/// What each rule did, in order.
fn results(record: &EventRecord) -> Vec<RuleResult> {
    record.rules.iter().map(|o| o.result.clone()).collect()
}

fn started(run_id: i64, canceled: Vec<i64>) -> RuleResult {
    RuleResult::Started { run_id, canceled }
}

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

async fn record_ids(store: &dyn Store, filter: EventRecordFilter, page: Page) -> Vec<i64> {
    store
        .list_event_records(&filter, page)
        .await
        .expect("list records")
        .iter()
        .map(|r| r.id)
        .collect()
}

const ALL: Page = Page {
    before: None,
    limit: 1000,
};

/// An event no rule matched (or one rejected) is recorded with every field as given, can be
/// read back and listed, and starts nothing.
pub async fn inbound_unmatched_is_recorded(store: &dyn Store) {
    let mut new = inbound("hooks", "deploy.web", precise_time());
    new.delivery_id = Some("delivery-1".into());
    new.payload = Some("{\"big\": \"é…".into());
    new.payload_size = 70_000;
    new.payload_truncated = true;
    new.reason = Some("no rule for deploy.web".into());
    let (record, runs) = recorded(store, &new).await;
    assert!(runs.is_empty());
    assert_eq!(
        record,
        EventRecord {
            id: record.id,
            received_at: micros(precise_time()),
            source: "hooks".into(),
            routing_key: "deploy.web".into(),
            delivery_id: Some("delivery-1".into()),
            payload_size: 70_000,
            payload: Some("{\"big\": \"é…".into()),
            payload_truncated: true,
            status: EventStatus::Unmatched,
            reason: Some("no rule for deploy.web".into()),
            rules: Vec::new(),
            run_ids: Vec::new(),
        }
    );
    assert_eq!(
        store.get_event_record(record.id).await.expect("get"),
        record
    );

    let mut bad = inbound("hooks", "deploy.db", at(1));
    bad.status = EventStatus::Rejected;
    bad.payload = None;
    bad.reason = Some("payload is not JSON".into());
    let (rejected, _) = recorded(store, &bad).await;
    assert!(rejected.id > record.id, "ids increase");
    assert_eq!(rejected.status, EventStatus::Rejected);
    assert_eq!(rejected.payload, None);
    assert_eq!(rejected.delivery_id, None);
    assert!(!rejected.payload_truncated);
    assert_eq!(rejected.received_at, micros(at(1)));
    assert_eq!(
        store
            .list_event_records(&EventRecordFilter::default(), ALL)
            .await
            .expect("list"),
        vec![rejected.clone(), record.clone()]
    );
    assert!(all_runs(store).await.is_empty(), "nothing started");
    assert_not_found(store.get_event_record(rejected.id + 100).await, "event");
}

/// Each proposal that passes starts a queued run carrying the event's id, in proposal order;
/// the record is `accepted` and lists the outcomes and runs.
pub async fn inbound_proposals_start_runs(store: &dyn Store) {
    let p = project(store, "p").await;
    let plain = store.create_run(&new_run(p.id)).await.expect("plain run");
    assert_eq!(plain.event_id, None, "a run created directly has no event");
    let mut labelled = new_run(p.id);
    labelled.labels.insert("rule".into(), "deploy".into());
    labelled.options.limit = Some("web".into());
    let mut other = new_run(p.id);
    other.playbook = PlaybookRef::parse("notify.yml").expect("playbook");
    let new = proposing(
        inbound("hooks", "deploy.web", at(0)),
        vec![
            proposal("deploy", Ok(labelled)),
            proposal("notify", Ok(other)),
        ],
    );
    let (record, runs) = recorded(store, &new).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(record.status, EventStatus::Accepted);
    assert_eq!(
        record.rules,
        vec![
            RuleOutcome {
                rule: "deploy".into(),
                result: started(runs[0].id, vec![]),
            },
            RuleOutcome {
                rule: "notify".into(),
                result: started(runs[1].id, vec![]),
            },
        ]
    );
    assert_eq!(record.run_ids, ids(&runs));
    assert!(runs[0].id > plain.id && runs[1].id > runs[0].id);
    assert_eq!(runs[0].playbook, "site.yml");
    assert_eq!(runs[0].options.limit.as_deref(), Some("web"));
    assert_eq!(
        runs[0].labels.get("rule").map(String::as_str),
        Some("deploy")
    );
    assert_eq!(runs[1].playbook, "notify.yml");
    for run in &runs {
        assert_eq!(run.status, RunStatus::Queued);
        assert_eq!(run.event_id, Some(record.id));
        assert_eq!(run.project_id, p.id);
        assert_recent(run.created_at, "created_at");
        assert_eq!(&store.get_run(run.id).await.expect("get"), run);
        assert_eq!(
            store.get_run_inventory(run.id).await.expect("inventory"),
            inline_inventory()
        );
    }
    assert_eq!(
        store.get_event_record(record.id).await.expect("get"),
        record
    );
    let listed = all_runs(store).await;
    assert_eq!(ids(&listed), vec![runs[1].id, runs[0].id, plain.id]);
    assert_eq!(
        listed[0].event_id,
        Some(record.id),
        "listing carries event_id"
    );
    // The labels are searchable like any run's.
    let by_label = store
        .list_runs(
            &RunFilter {
                label: Some(("rule".into(), Some("deploy".into()))),
                ..Default::default()
            },
            ALL,
        )
        .await
        .expect("list");
    assert_eq!(ids(&by_label), vec![runs[0].id]);
    // And workers take them like any other, oldest first.
    let claimed = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("queued");
    assert_eq!(claimed.id, plain.id);
    let claimed = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("queued");
    assert_eq!(claimed.id, runs[0].id);
    assert_eq!(claimed.event_id, Some(record.id));
}

/// A delivery already recorded for the source is a duplicate: the earlier record comes back
/// and nothing is stored or started. The same id from another source is a new event.
pub async fn inbound_delivery_duplicates(store: &dyn Store) {
    let p = project(store, "p").await;
    let mut first = proposing(
        inbound("amqp", "deploy.web", at(0)),
        vec![proposal("deploy", Ok(new_run(p.id)))],
    );
    first.delivery_id = Some("msg-1".into());
    let (record, runs) = recorded(store, &first).await;
    assert_eq!(runs.len(), 1);
    let mut again = proposing(
        inbound("amqp", "deploy.db", at(5)),
        vec![proposal("deploy", Ok(new_run(p.id)))],
    );
    again.delivery_id = Some("msg-1".into());
    again.payload = Some("different".into());
    assert_eq!(duplicate(store, &again).await, record);
    assert_eq!(duplicate(store, &first).await, record);
    assert_eq!(ids(&all_runs(store).await), ids(&runs), "no second run");
    assert_eq!(
        record_ids(store, EventRecordFilter::default(), ALL).await,
        vec![record.id]
    );
    // Another source, or another id, is another event.
    let mut elsewhere = again.clone();
    elsewhere.source = "nats".into();
    let (other, other_runs) = recorded(store, &elsewhere).await;
    assert_eq!(other.delivery_id.as_deref(), Some("msg-1"));
    assert_eq!(other_runs.len(), 1);
    let mut next = again.clone();
    next.delivery_id = Some("msg-2".into());
    let (next_record, _) = recorded(store, &next).await;
    assert_eq!(next_record.source, "amqp");
    assert_eq!(all_runs(store).await.len(), 3);
    // Events without a delivery id never clash on it.
    recorded(store, &inbound("amqp", "x", at(9))).await;
    recorded(store, &inbound("amqp", "x", at(9))).await;
    assert_eq!(
        record_ids(store, EventRecordFilter::default(), ALL)
            .await
            .len(),
        5
    );
}

/// With a redelivery window, the same content from the same source received within the
/// window is a duplicate of the latest such event; outside it, or without a window, it is
/// a new event.
pub async fn inbound_redelivery_window(store: &dyn Store) {
    let p = project(store, "p").await;
    let window = Some(Duration::from_secs(60));
    let msg = |source: &str, hash: &str, secs: i64| {
        let mut new = proposing(
            inbound(source, "deploy.web", at(secs)),
            vec![proposal("deploy", Ok(new_run(p.id)))],
        );
        new.content_hash = hash.into();
        new.redelivery_window = window;
        new
    };
    let (first, _) = recorded(store, &msg("mqtt", "h1", 0)).await;
    assert_eq!(duplicate(store, &msg("mqtt", "h1", 30)).await, first);
    assert_eq!(
        duplicate(store, &msg("mqtt", "h1", 60)).await,
        first,
        "window edge"
    );
    let (other_source, _) = recorded(store, &msg("amqp", "h1", 30)).await;
    let (other_hash, _) = recorded(store, &msg("mqtt", "h2", 30)).await;
    assert_eq!(all_runs(store).await.len(), 3);
    // 61 s after the first: outside its window.
    let (later, _) = recorded(store, &msg("mqtt", "h1", 61)).await;
    assert!(later.id > other_hash.id && other_source.id > first.id);
    assert_eq!(duplicate(store, &msg("mqtt", "h1", 100)).await, later);
    // Without a window the same content is always new, and becomes the latest one.
    let mut no_window = msg("mqtt", "h1", 110);
    no_window.redelivery_window = None;
    let (unchecked, _) = recorded(store, &no_window).await;
    assert_eq!(duplicate(store, &msg("mqtt", "h1", 115)).await, unchecked);
    assert_eq!(all_runs(store).await.len(), 5);
    assert_eq!(
        record_ids(store, EventRecordFilter::default(), ALL)
            .await
            .len(),
        5
    );
}

/// A proposal whose run could not be built, or names a missing project or inventory, fails
/// alone: the others still start their runs, and the event is `failed` only when every
/// proposal failed. A failed proposal leaves no gate mark.
pub async fn inbound_failed_proposals(store: &dyn Store) {
    let p = project(store, "p").await;
    let mut no_inventory = new_run(p.id);
    no_inventory.inventory_id = Some(4242);
    let new = proposing(
        inbound("hooks", "deploy.web", at(0)),
        vec![
            proposal("broken", Err("playbook deploy/web.yml is missing".into())),
            proposal("ghost", Ok(new_run(p.id + 100))),
            proposal("good", Ok(new_run(p.id))),
            proposal("no-inv", Ok(no_inventory)),
        ],
    );
    let (record, runs) = recorded(store, &new).await;
    assert_eq!(record.status, EventStatus::Accepted);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].event_id, Some(record.id));
    let got = results(&record);
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0],
        RuleResult::Failed {
            error: "playbook deploy/web.yml is missing".into()
        }
    );
    let RuleResult::Failed { error } = &got[1] else {
        panic!("a missing project fails the rule: {:?}", got[1]);
    };
    assert!(
        error.contains("project") && error.contains(&(p.id + 100).to_string()),
        "{error:?} names the project"
    );
    assert_eq!(got[2], started(runs[0].id, vec![]));
    let RuleResult::Failed { error } = &got[3] else {
        panic!("a missing inventory fails the rule: {:?}", got[3]);
    };
    assert!(error.contains("inventory"), "{error:?}");
    assert_eq!(
        record
            .rules
            .iter()
            .map(|o| o.rule.as_str())
            .collect::<Vec<_>>(),
        ["broken", "ghost", "good", "no-inv"]
    );
    assert_eq!(record.run_ids, ids(&runs));

    // Only failures: the event failed, and is still recorded.
    let mut gated_ghost = proposal("ghost", Ok(new_run(p.id + 100)));
    gated_ghost.gates = vec![gate(GateKind::Throttle, "web", 600)];
    let only_failures = proposing(
        inbound("hooks", "deploy.web", at(10)),
        vec![gated_ghost, proposal("broken", Err("no".into()))],
    );
    let (failed, none) = recorded(store, &only_failures).await;
    assert!(none.is_empty());
    assert_eq!(failed.status, EventStatus::Failed);
    assert!(failed.run_ids.is_empty());
    assert!(matches!(results(&failed)[0], RuleResult::Failed { .. }));
    assert_eq!(
        store.get_event_record(failed.id).await.expect("get"),
        failed
    );
    assert_eq!(all_runs(store).await.len(), 1);
    // The failed rule closed no gate: once its project exists, it starts.
    let mut fixed = proposal("ghost", Ok(new_run(p.id)));
    fixed.gates = vec![gate(GateKind::Throttle, "web", 600)];
    let (ok, started_now) = recorded(
        store,
        &proposing(inbound("hooks", "deploy.web", at(20)), vec![fixed]),
    )
    .await;
    assert_eq!(ok.status, EventStatus::Accepted);
    assert_eq!(results(&ok), vec![started(started_now[0].id, vec![])]);
}

/// A throttle gate holds back a rule's runs for the same group within the window after a run
/// started, naming the event that started it; other groups, other rules and dedupe gates of
/// the same key are not held, and the gate opens when the window ends.
pub async fn inbound_throttle_gate(store: &dyn Store) {
    let p = project(store, "p").await;
    let ev = |rule: &str, kind: GateKind, key: &str, secs: i64| {
        let mut prop = proposal(rule, Ok(new_run(p.id)));
        prop.gates = vec![gate(kind, key, 60)];
        proposing(inbound("hooks", "deploy.web", at(secs)), vec![prop])
    };
    let (first, first_runs) = recorded(store, &ev("r", GateKind::Throttle, "web", 0)).await;
    assert_eq!(results(&first), vec![started(first_runs[0].id, vec![])]);
    let (held, none) = recorded(store, &ev("r", GateKind::Throttle, "web", 59)).await;
    assert!(none.is_empty());
    assert_eq!(held.status, EventStatus::Skipped);
    assert!(held.run_ids.is_empty());
    assert_eq!(
        results(&held),
        vec![RuleResult::Gated {
            gate: GateKind::Throttle,
            key: "web".into(),
            by_event: first.id,
        }]
    );
    let (db, db_runs) = recorded(store, &ev("r", GateKind::Throttle, "db", 30)).await;
    assert_eq!(results(&db), vec![started(db_runs[0].id, vec![])]);
    let (r2, r2_runs) = recorded(store, &ev("r2", GateKind::Throttle, "web", 30)).await;
    assert_eq!(results(&r2), vec![started(r2_runs[0].id, vec![])]);
    let (dedupe, dedupe_runs) = recorded(store, &ev("r", GateKind::Dedupe, "web", 30)).await;
    assert_eq!(results(&dedupe), vec![started(dedupe_runs[0].id, vec![])]);
    // 60 s after the first run: the window is over.
    let (reopened, reopened_runs) = recorded(store, &ev("r", GateKind::Throttle, "web", 60)).await;
    assert_eq!(reopened.status, EventStatus::Accepted);
    assert_eq!(
        results(&reopened),
        vec![started(reopened_runs[0].id, vec![])]
    );
    let (held_again, _) = recorded(store, &ev("r", GateKind::Throttle, "web", 61)).await;
    assert_eq!(
        results(&held_again),
        vec![RuleResult::Gated {
            gate: GateKind::Throttle,
            key: "web".into(),
            by_event: reopened.id,
        }]
    );
    // A gated rule does not hold back the others of the same event.
    let mut gated = proposal("r", Ok(new_run(p.id)));
    gated.gates = vec![gate(GateKind::Throttle, "web", 60)];
    let (mixed, mixed_runs) = recorded(
        store,
        &proposing(
            inbound("hooks", "deploy.web", at(62)),
            vec![gated, proposal("free", Ok(new_run(p.id)))],
        ),
    )
    .await;
    assert_eq!(mixed.status, EventStatus::Accepted);
    assert_eq!(mixed_runs.len(), 1);
    assert!(
        matches!(results(&mixed)[0], RuleResult::Gated { by_event, .. } if by_event == reopened.id)
    );
    assert_eq!(results(&mixed)[1], started(mixed_runs[0].id, vec![]));
    assert_eq!(all_runs(store).await.len(), 6);
}

/// Dedupe gates work like throttle gates; with several gates the first closed one holds the
/// run back, and a held-back run closes none of its gates.
pub async fn inbound_dedupe_gate_and_gate_order(store: &dyn Store) {
    let p = project(store, "p").await;
    let ev = |gates: Vec<Gate>, secs: i64| {
        let mut prop = proposal("r", Ok(new_run(p.id)));
        prop.gates = gates;
        proposing(inbound("hooks", "alert", at(secs)), vec![prop])
    };
    let both = |throttle: &str, dedupe: &str| {
        vec![
            gate(GateKind::Throttle, throttle, 10),
            gate(GateKind::Dedupe, dedupe, 3600),
        ]
    };
    let (first, _) = recorded(store, &ev(both("g1", "id-1"), 0)).await;
    // The throttle window is over, the dedupe one is not.
    let (held, _) = recorded(store, &ev(both("g1", "id-1"), 20)).await;
    assert_eq!(
        results(&held),
        vec![RuleResult::Gated {
            gate: GateKind::Dedupe,
            key: "id-1".into(),
            by_event: first.id,
        }]
    );
    // The held-back event left no throttle mark: g1 is open at 25 s.
    let (second, second_runs) = recorded(store, &ev(both("g1", "id-2"), 25)).await;
    assert_eq!(results(&second), vec![started(second_runs[0].id, vec![])]);
    // Both closed now: the first one in order is named.
    let (both_closed, _) = recorded(store, &ev(both("g1", "id-2"), 30)).await;
    assert_eq!(
        results(&both_closed),
        vec![RuleResult::Gated {
            gate: GateKind::Throttle,
            key: "g1".into(),
            by_event: second.id,
        }]
    );
    let dedupe_only = |id: &str, secs| ev(vec![gate(GateKind::Dedupe, id, 3600)], secs);
    let (still, _) = recorded(store, &dedupe_only("id-1", 3599)).await;
    assert_eq!(
        results(&still),
        vec![RuleResult::Gated {
            gate: GateKind::Dedupe,
            key: "id-1".into(),
            by_event: first.id,
        }]
    );
    let (after, after_runs) = recorded(store, &dedupe_only("id-1", 3600)).await;
    assert_eq!(results(&after), vec![started(after_runs[0].id, vec![])]);
    assert_eq!(all_runs(store).await.len(), 3);
}

/// The skip policy starts nothing while a run of the same concurrency key is queued or
/// running, naming the oldest; other keys and runs outside any key do not count, and once the
/// key's runs are over a run starts again. A skipped rule closes none of its gates.
pub async fn inbound_concurrency_skip(store: &dyn Store) {
    let p = project(store, "p").await;
    let ev = |key: &str, policy: ConcurrencyPolicy, throttle: &str, secs: i64| {
        let mut prop = proposal("r", Ok(new_run(p.id)));
        prop.concurrency = Some(Concurrency {
            key: key.into(),
            policy,
        });
        prop.gates = vec![gate(GateKind::Throttle, throttle, 3600)];
        proposing(inbound("hooks", "deploy.web", at(secs)), vec![prop])
    };
    use ConcurrencyPolicy::{Queue, Skip};
    let (_, first) = recorded(store, &ev("r/web", Skip, "t1", 0)).await;
    let r1 = first[0].id;
    let (skipped, none) = recorded(store, &ev("r/web", Skip, "t2", 1)).await;
    assert!(none.is_empty());
    assert_eq!(skipped.status, EventStatus::Skipped);
    assert_eq!(
        results(&skipped),
        vec![RuleResult::Skipped { active_run: r1 }]
    );
    // Running counts as active too.
    let claimed = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("r1");
    assert_eq!(claimed.id, r1);
    let (skipped, _) = recorded(store, &ev("r/web", Skip, "t3", 2)).await;
    assert_eq!(
        results(&skipped),
        vec![RuleResult::Skipped { active_run: r1 }]
    );
    // Queue starts another; skip names the oldest active one.
    let (_, queued) = recorded(store, &ev("r/web", Queue, "t4", 3)).await;
    let r2 = queued[0].id;
    let (skipped, _) = recorded(store, &ev("r/web", Skip, "t5", 4)).await;
    assert_eq!(
        results(&skipped),
        vec![RuleResult::Skipped { active_run: r1 }]
    );
    // Other keys, and runs created without one, do not count.
    let (_, other) = recorded(store, &ev("r/db", Skip, "t6", 5)).await;
    assert_eq!(other.len(), 1);
    store.create_run(&new_run(p.id)).await.expect("plain run");
    store
        .finish_run(r1, "w", &ok_outcome())
        .await
        .expect("finish r1");
    let (skipped, _) = recorded(store, &ev("r/web", Skip, "t7", 6)).await;
    assert_eq!(
        results(&skipped),
        vec![RuleResult::Skipped { active_run: r2 }]
    );
    store
        .request_cancel(r2, CancelMode::Graceful)
        .await
        .expect("cancel r2");
    // t2 was skipped, so it left no throttle mark.
    let (accepted, runs) = recorded(store, &ev("r/web", Skip, "t2", 7)).await;
    assert_eq!(accepted.status, EventStatus::Accepted);
    assert_eq!(results(&accepted), vec![started(runs[0].id, vec![])]);
    let (skipped, _) = recorded(store, &ev("r/web", Skip, "t8", 8)).await;
    assert_eq!(
        results(&skipped),
        vec![RuleResult::Skipped {
            active_run: runs[0].id
        }]
    );
}

/// The cancel policy starts the run and lists the key's earlier active runs, oldest first,
/// for the caller to cancel: the store leaves them as they are.
pub async fn inbound_concurrency_cancel(store: &dyn Store) {
    let p = project(store, "p").await;
    let ev = |key: &str, policy: ConcurrencyPolicy, secs: i64| {
        let mut prop = proposal("r", Ok(new_run(p.id)));
        prop.concurrency = Some(Concurrency {
            key: key.into(),
            policy,
        });
        proposing(inbound("hooks", "deploy.web", at(secs)), vec![prop])
    };
    use ConcurrencyPolicy::{Cancel, Queue};
    let (_, a) = recorded(store, &ev("k", Queue, 0)).await;
    let (_, b) = recorded(store, &ev("k", Queue, 1)).await;
    let (_, other) = recorded(store, &ev("other", Queue, 2)).await;
    let (finished_event, done) = recorded(store, &ev("k", Queue, 3)).await;
    assert_eq!(results(&finished_event), vec![started(done[0].id, vec![])]);
    // `a` runs, `done` finishes: only queued and running runs are listed.
    let claimed = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("a");
    assert_eq!(claimed.id, a[0].id);
    store
        .request_cancel(done[0].id, CancelMode::Force)
        .await
        .expect("cancel");
    let (record, runs) = recorded(store, &ev("k", Cancel, 4)).await;
    assert_eq!(record.status, EventStatus::Accepted);
    assert_eq!(
        results(&record),
        vec![started(runs[0].id, vec![a[0].id, b[0].id])]
    );
    assert_eq!(
        store.get_event_record(record.id).await.expect("get").rules,
        record.rules,
        "the canceled ids are kept"
    );
    assert_eq!(
        store.get_run(a[0].id).await.expect("a").status,
        RunStatus::Running
    );
    assert_eq!(
        store.get_run(b[0].id).await.expect("b").status,
        RunStatus::Queued
    );
    assert_eq!(
        store.get_run(other[0].id).await.expect("other").status,
        RunStatus::Queued
    );
    let (again, next) = recorded(store, &ev("k", Cancel, 5)).await;
    assert_eq!(
        results(&again),
        vec![started(next[0].id, vec![a[0].id, b[0].id, runs[0].id])]
    );
    let (fresh, fresh_runs) = recorded(store, &ev("fresh", Cancel, 6)).await;
    assert_eq!(results(&fresh), vec![started(fresh_runs[0].id, vec![])]);
}

/// Records are listed newest first, filtered by source, routing key and status (together
/// too), a page at a time.
pub async fn inbound_list_filters_and_paging(store: &dyn Store) {
    let p = project(store, "p").await;
    let (a1, _) = recorded(store, &inbound("hook", "deploy.web", at(0))).await;
    let (a2, _) = recorded(
        store,
        &proposing(
            inbound("hook", "deploy.db", at(1)),
            vec![proposal("r", Ok(new_run(p.id)))],
        ),
    )
    .await;
    let mut rejected = inbound("amqp", "deploy.web", at(2));
    rejected.status = EventStatus::Rejected;
    let (a3, _) = recorded(store, &rejected).await;
    let (a4, _) = recorded(store, &inbound("amqp", "deploy.web", at(3))).await;
    let (a5, _) = recorded(
        store,
        &proposing(
            inbound("hook", "deploy.web", at(4)),
            vec![proposal("r", Err("bad".into()))],
        ),
    )
    .await;
    assert_eq!(
        [a1.status, a2.status, a3.status, a4.status, a5.status],
        [
            EventStatus::Unmatched,
            EventStatus::Accepted,
            EventStatus::Rejected,
            EventStatus::Unmatched,
            EventStatus::Failed
        ]
    );
    let f = |source: Option<&str>, routing_key: Option<&str>, status: Option<EventStatus>| {
        EventRecordFilter {
            source: source.map(str::to_owned),
            routing_key: routing_key.map(str::to_owned),
            status,
        }
    };
    let all = record_ids(store, f(None, None, None), ALL).await;
    assert_eq!(all, vec![a5.id, a4.id, a3.id, a2.id, a1.id]);
    assert_eq!(
        record_ids(store, f(Some("hook"), None, None), ALL).await,
        vec![a5.id, a2.id, a1.id]
    );
    assert_eq!(
        record_ids(store, f(None, Some("deploy.web"), None), ALL).await,
        vec![a5.id, a4.id, a3.id, a1.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, Some(EventStatus::Unmatched)), ALL).await,
        vec![a4.id, a1.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, Some(EventStatus::Accepted)), ALL).await,
        vec![a2.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, Some(EventStatus::Skipped)), ALL).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        record_ids(
            store,
            f(
                Some("amqp"),
                Some("deploy.web"),
                Some(EventStatus::Rejected)
            ),
            ALL
        )
        .await,
        vec![a3.id]
    );
    assert_eq!(
        record_ids(store, f(Some("amqp"), Some("deploy.db"), None), ALL).await,
        Vec::<i64>::new()
    );
    let page = |before: Option<i64>, limit: i64| Page { before, limit };
    assert_eq!(
        record_ids(store, f(None, None, None), page(None, 2)).await,
        vec![a5.id, a4.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, None), page(Some(a4.id), 2)).await,
        vec![a3.id, a2.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, None), page(Some(a2.id), 2)).await,
        vec![a1.id]
    );
    assert_eq!(
        record_ids(store, f(None, None, None), page(None, 0)).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        record_ids(store, f(Some("hook"), None, None), page(Some(a5.id), 1)).await,
        vec![a2.id]
    );
    let listed = store
        .list_event_records(&f(Some("hook"), Some("deploy.db"), None), ALL)
        .await
        .expect("list");
    assert_eq!(listed, vec![a2.clone()], "listing carries whole records");
}

/// Pruning deletes the records received before the cut (and only those), returning how
/// many, and the gate marks whose window ended; runs keep the id of their pruned event.
pub async fn inbound_prune(store: &dyn Store) {
    let p = project(store, "p").await;
    let gated = |secs: i64| {
        let mut prop = proposal("r", Ok(new_run(p.id)));
        prop.gates = vec![gate(GateKind::Throttle, "web", 3600)];
        proposing(inbound("hooks", "deploy.web", at(secs)), vec![prop])
    };
    let (r1, _) = recorded(store, &inbound("hooks", "a", at(0))).await;
    let (r2, r2_runs) = recorded(store, &gated(10)).await;
    let (r3, _) = recorded(store, &inbound("hooks", "c", at(20))).await;
    assert_eq!(
        store
            .prune_event_records(at(10), at(30))
            .await
            .expect("prune"),
        1,
        "only the record received before the cut"
    );
    assert_not_found(store.get_event_record(r1.id).await, "event");
    assert_eq!(store.get_event_record(r2.id).await.expect("kept"), r2);
    assert_eq!(
        store
            .prune_event_records(at(15), at(1800))
            .await
            .expect("prune"),
        1
    );
    assert_not_found(store.get_event_record(r2.id).await, "event");
    assert_eq!(
        record_ids(store, EventRecordFilter::default(), ALL).await,
        vec![r3.id]
    );
    let run = store.get_run(r2_runs[0].id).await.expect("the run stays");
    assert_eq!(run.event_id, Some(r2.id));
    // The gate's window (until 3610 s) was not over at 1800 s: its mark stays.
    let (held, _) = recorded(store, &gated(2400)).await;
    assert_eq!(
        results(&held),
        vec![RuleResult::Gated {
            gate: GateKind::Throttle,
            key: "web".into(),
            by_event: r2.id,
        }]
    );
    // Once it is over the mark goes, and nothing received after the cut is deleted.
    assert_eq!(
        store
            .prune_event_records(at(0), at(7200))
            .await
            .expect("prune"),
        0
    );
    let (open, open_runs) = recorded(store, &gated(3000)).await;
    assert_eq!(
        results(&open),
        vec![started(open_runs[0].id, vec![])],
        "the pruned mark holds nothing back"
    );
    assert_eq!(
        record_ids(store, EventRecordFilter::default(), ALL).await,
        vec![open.id, held.id, r3.id]
    );
    assert_eq!(
        store
            .prune_event_records(at(100_000), at(0))
            .await
            .expect("prune"),
        3
    );
    assert!(
        record_ids(store, EventRecordFilter::default(), ALL)
            .await
            .is_empty()
    );
    assert_eq!(all_runs(store).await.len(), 2, "runs are never pruned");
}

/// Concurrent ingests of one delivery record it once, and concurrent events through one
/// gate or one skip key start one run.
pub async fn inbound_concurrent_ingests(store: &dyn Store) {
    let p = project(store, "p").await;
    let same_delivery = (0..8).map(|i| {
        let mut new = proposing(
            inbound("amqp", "deploy.web", at(i)),
            vec![proposal("r", Ok(new_run(p.id)))],
        );
        new.delivery_id = Some("once".into());
        async move { store.ingest_event(&new).await.expect("ingest") }
    });
    let outcomes = futures_join_all(same_delivery).await;
    let recorded_ids: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ingested::Recorded { record, .. } => Some(record.id),
            Ingested::Duplicate(_) => None,
        })
        .collect();
    assert_eq!(recorded_ids.len(), 1, "recorded once: {outcomes:?}");
    for o in &outcomes {
        if let Ingested::Duplicate(earlier) = o {
            assert_eq!(earlier.id, recorded_ids[0]);
        }
    }
    assert_eq!(all_runs(store).await.len(), 1);

    let through_gate = (0..8).map(|i| {
        let mut prop = proposal("g", Ok(new_run(p.id)));
        prop.gates = vec![gate(GateKind::Throttle, "web", 3600)];
        let new = proposing(inbound("hooks", "deploy.web", at(100 + i)), vec![prop]);
        async move { recorded(store, &new).await }
    });
    let gated = futures_join_all(through_gate).await;
    let accepted = gated
        .iter()
        .filter(|(r, _)| r.status == EventStatus::Accepted)
        .count();
    assert_eq!(accepted, 1, "one run through the gate: {gated:?}");

    let skip_key = (0..8).map(|i| {
        let mut prop = proposal("s", Ok(new_run(p.id)));
        prop.concurrency = Some(Concurrency {
            key: "s/web".into(),
            policy: ConcurrencyPolicy::Skip,
        });
        let new = proposing(inbound("hooks", "deploy.web", at(200 + i)), vec![prop]);
        async move { recorded(store, &new).await }
    });
    let skipped = futures_join_all(skip_key).await;
    let started_runs: Vec<i64> = skipped.iter().flat_map(|(_, runs)| ids(runs)).collect();
    assert_eq!(started_runs.len(), 1, "one run for the key: {skipped:?}");
    for (record, runs) in &skipped {
        if runs.is_empty() {
            assert_eq!(
                results(record),
                vec![RuleResult::Skipped {
                    active_run: started_runs[0]
                }]
            );
        }
    }
    assert_eq!(all_runs(store).await.len(), 3);
}

/// The rules document: none at first; each change bumps the revision, and a change made
/// against a stale revision is a conflict that changes nothing.
pub async fn rules_doc_revisions(store: &dyn Store) {
    assert_eq!(store.get_rules().await.expect("get"), None);
    assert_conflict(
        store.put_rules("rules: []\n", Some(1)).await,
        "revision is 0, not 1",
    );
    assert_eq!(
        store.get_rules().await.expect("get"),
        None,
        "nothing stored"
    );
    let first = store
        .put_rules("rules: []\n", Some(0))
        .await
        .expect("first");
    assert_eq!(first.revision, 1);
    assert_eq!(first.text, "rules: []\n");
    assert_recent(first.updated_at, "updated_at");
    assert_eq!(store.get_rules().await.expect("get"), Some(first.clone()));
    assert_conflict(
        store.put_rules("other: 1\n", Some(0)).await,
        "revision is 1, not 0",
    );
    let second = store
        .put_rules("rules:\n  - name: é\n", None)
        .await
        .expect("unconditional");
    assert_eq!(second.revision, 2);
    assert_eq!(second.text, "rules:\n  - name: é\n");
    assert!(second.updated_at >= first.updated_at);
    assert_conflict(
        store.put_rules("stale\n", Some(1)).await,
        "revision is 2, not 1",
    );
    assert_eq!(store.get_rules().await.expect("get"), Some(second.clone()));
    let third = store.put_rules("", Some(2)).await.expect("third");
    assert_eq!((third.revision, third.text.as_str()), (3, ""));
    assert_eq!(store.get_rules().await.expect("get"), Some(third));
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
