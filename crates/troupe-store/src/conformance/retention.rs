//! Conformance cases: pruning finished runs (retention).

use super::*;
use crate::{Pruned, RunRetention};
use troupe_core::flow::{ExecutionStatus, NewExecution, Phase, StepRecord, StepStatus};

/// A run of `new` that ran with three events and two output chunks, then finished. No other
/// run may be queued (the claim takes the oldest).
async fn finished_from(store: &dyn Store, new: &NewRun) -> Run {
    let run = store.create_run(new).await.expect("create run");
    let claimed = store
        .claim_run("w1", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("a queued run to claim");
    assert_eq!(claimed.id, run.id, "claimed the run just created");
    store
        .append_batch(
            run.id,
            &events(1..=3),
            &[
                chunk(Stream::Stdout, 1, "out\n"),
                chunk(Stream::Stderr, 2, "err\n"),
            ],
        )
        .await
        .expect("append");
    store
        .finish_run(run.id, "w1", &ok_outcome())
        .await
        .expect("finish")
}

async fn finished(store: &dyn Store, project_id: i64) -> Run {
    finished_from(store, &new_run(project_id)).await
}

/// Whether the run is gone with its events and output.
async fn assert_pruned(store: &dyn Store, id: i64) {
    assert_not_found(store.get_run(id).await, "run");
    assert!(
        store
            .list_events(id, 0, 100)
            .await
            .unwrap_or_default()
            .is_empty(),
        "run {id}'s events are gone"
    );
    for stream in [Stream::Stdout, Stream::Stderr] {
        assert_eq!(
            store.read_output(id, stream).await.unwrap_or_default(),
            "",
            "run {id}'s output is gone"
        );
    }
}

/// Whether the run is there with its events and output.
async fn assert_kept(store: &dyn Store, id: i64) {
    store.get_run(id).await.expect("run kept");
    assert_eq!(
        store.list_events(id, 0, 100).await.expect("events").len(),
        3,
        "run {id} keeps its events"
    );
    assert_eq!(
        store.read_output(id, Stream::Stdout).await.expect("output"),
        "out\n"
    );
}

/// By age: only runs that finished before the cutoff go, never a running or queued one; a
/// batch takes at most its limit, oldest first; repeating once nothing is left does nothing;
/// with no limit set nothing goes.
pub async fn retention_by_age_in_batches(store: &dyn Store) {
    let p = project(store, "p").await;
    let old = [finished(store, p.id).await, finished(store, p.id).await];
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let recent = finished(store, p.id).await;
    let running = running_run(store, p.id, "w2").await;
    let queued = store.create_run(&new_run(p.id)).await.expect("queued");
    let policy = RunRetention {
        finished_before: Some(cutoff),
        keep_per_project: None,
    };
    let off = RunRetention::default();
    assert_eq!(store.count_prunable_runs(&off).await.expect("count"), 0);
    assert_eq!(
        store.prune_runs(&off, 10).await.expect("prune"),
        Pruned::default()
    );
    assert_eq!(store.count_prunable_runs(&policy).await.expect("count"), 2);

    let first = store.prune_runs(&policy, 1).await.expect("prune");
    assert_eq!(
        first,
        Pruned {
            runs: 1,
            events: 3,
            output_chunks: 2
        }
    );
    assert_pruned(store, old[0].id).await;
    assert_kept(store, old[1].id).await;
    let second = store.prune_runs(&policy, 10).await.expect("prune");
    assert_eq!(second.runs, 1);
    assert_pruned(store, old[1].id).await;
    assert_eq!(
        store.prune_runs(&policy, 10).await.expect("prune again"),
        Pruned::default()
    );
    assert_eq!(store.count_prunable_runs(&policy).await.expect("count"), 0);
    assert_kept(store, recent.id).await;
    store.get_run(running.id).await.expect("running run kept");
    store.get_run(queued.id).await.expect("queued run kept");

    // Even a cutoff in the future leaves active runs alone.
    let all = RunRetention {
        finished_before: Some(Utc::now() + ChronoDuration::hours(1)),
        keep_per_project: None,
    };
    let pruned = crate::retention::prune(store, &all, 1, Duration::ZERO)
        .await
        .expect("pass");
    assert_eq!(pruned.runs, 1, "only the finished run went: {pruned:?}");
    assert_pruned(store, recent.id).await;
    store.get_run(running.id).await.expect("running run kept");
    store.get_run(queued.id).await.expect("queued run kept");
}

/// By count: each project keeps its newest runs (an active one among them counts); the
/// older finished ones go.
pub async fn retention_keeps_the_newest_per_project(store: &dyn Store) {
    let a = project(store, "a").await;
    let b = project(store, "b").await;
    let mut a_runs = Vec::new();
    for _ in 0..4 {
        a_runs.push(finished(store, a.id).await.id);
    }
    let b_runs = [
        finished(store, b.id).await.id,
        finished(store, b.id).await.id,
    ];
    let a_running = running_run(store, a.id, "w2").await.id;
    let policy = RunRetention {
        finished_before: None,
        keep_per_project: Some(2),
    };
    assert_eq!(store.count_prunable_runs(&policy).await.expect("count"), 3);
    let pruned = crate::retention::prune(store, &policy, 2, Duration::ZERO)
        .await
        .expect("pass");
    assert_eq!(
        pruned,
        Pruned {
            runs: 3,
            events: 9,
            output_chunks: 6
        }
    );
    for id in &a_runs[..3] {
        assert_pruned(store, *id).await;
    }
    assert_kept(store, a_runs[3]).await;
    store.get_run(a_running).await.expect("running run kept");
    for id in b_runs {
        assert_kept(store, id).await;
    }
}

/// What still needs a run keeps it: a slice still going keeps its parent (and a slice never
/// goes alone), a pending notification, the latest action of a job's unit, a step of an
/// unfinished execution. A split run goes with its slices; a relaunch of a pruned run stays,
/// without the link.
pub async fn retention_spares_what_is_still_needed(store: &dyn Store) {
    let p = project(store, "p").await;
    let slice_of = |parent_id: i64, slice: i32| NewRun {
        origin: Origin::Slice {
            of: SliceOf {
                parent_id,
                slice,
                count: 2,
            },
            original: Box::new(Origin::Api),
        },
        ..new_run(p.id)
    };
    // A split run whose slices both ended.
    let split = finished(store, p.id).await;
    let split_slices = [
        finished_from(store, &slice_of(split.id, 1)).await.id,
        finished_from(store, &slice_of(split.id, 2)).await.id,
    ];
    // One whose second slice is still running.
    let going = finished(store, p.id).await;
    let going_done = finished_from(store, &slice_of(going.id, 1)).await.id;
    store
        .create_run(&slice_of(going.id, 2))
        .await
        .expect("slice");
    let going_running = store
        .claim_run("w2", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("the slice")
        .id;
    // A relaunched run, and its relaunch.
    let relaunched = finished(store, p.id).await;
    let relaunch = finished_from(
        store,
        &NewRun {
            origin: relaunch(relaunched.id, Origin::Api),
            ..new_run(p.id)
        },
    )
    .await;
    // A run with a notification still to send.
    let notified = finished_from(
        store,
        &NewRun {
            notify: vec![troupe_core::notify::SealedNotify {
                shown: troupe_core::notify::Notify {
                    webhook: Some("https://hooks.example/x".into()),
                    ..Default::default()
                }
                .shown(),
                sealed: "sealed".into(),
            }],
            ..new_run(p.id)
        },
    )
    .await;
    // Two actions on one unit of a job: the older may go, the latest stays.
    let job = store
        .create_job(&new_job("deploy", &["app"], Some(p.id)))
        .await
        .expect("job");
    let action = || NewRun {
        origin: Origin::JobUnit {
            job_id: job.id,
            unit: "app".into(),
        },
        ..new_run(p.id)
    };
    let older_action = finished_from(store, &action()).await.id;
    let latest_action = finished_from(store, &action()).await.id;
    // Runs of two executions' steps: one still running, one ended.
    let flow = store
        .put_flow("f", "name: f\nsteps: []\n")
        .await
        .expect("flow");
    let mut step_runs = Vec::new();
    for status in [ExecutionStatus::Running, ExecutionStatus::Successful] {
        let run = finished(store, p.id).await.id;
        let e = store
            .create_execution(&NewExecution {
                flow: flow.name.clone(),
                version: flow.version,
                inputs: Default::default(),
                sealed_secrets: None,
                concurrency_key: None,
                parent: None,
                started_by: "api".into(),
                notify: Vec::new(),
            })
            .await
            .expect("execution");
        store
            .set_execution_status(e.id, ExecutionStatus::Running, None)
            .await
            .expect("running");
        store
            .put_step(&StepRecord {
                execution_id: e.id,
                round: 0,
                key: "steps/0".into(),
                phase: Phase::Steps,
                position: 0,
                kind: "playbook".into(),
                status: StepStatus::Running,
                attempts: 1,
                started_at: None,
                finished_at: None,
                result: json!({}),
                published: serde_json::Map::new(),
                error: None,
                run_ids: vec![run],
                execution_ids: Vec::new(),
            })
            .await
            .expect("step");
        if status != ExecutionStatus::Running {
            store
                .set_execution_status(e.id, status, None)
                .await
                .expect("ended");
        }
        step_runs.push(run);
    }

    let everything = RunRetention {
        finished_before: Some(Utc::now() + ChronoDuration::hours(1)),
        keep_per_project: None,
    };
    let pruned = crate::retention::prune(store, &everything, 500, Duration::ZERO)
        .await
        .expect("pass");
    // The split run and its 2 slices, the relaunched run, the older action, the ended
    // execution's run, the relaunch itself.
    assert_eq!(pruned.runs, 7, "{pruned:?}");
    assert_pruned(store, split.id).await;
    for id in split_slices {
        assert_pruned(store, id).await;
    }
    assert_pruned(store, relaunched.id).await;
    assert_pruned(store, relaunch.id).await;
    assert_pruned(store, older_action).await;
    assert_pruned(store, step_runs[1]).await;
    for id in [
        going.id,
        going_done,
        notified.id,
        latest_action,
        step_runs[0],
    ] {
        assert_kept(store, id).await;
    }
    store.get_run(going_running).await.expect("running slice");
    assert_eq!(store.get_job(job.id).await.expect("job").id, job.id);
}

/// A relaunch outlives the run it came from, losing only the link.
pub async fn retention_unlinks_relaunches(store: &dyn Store) {
    let p = project(store, "p").await;
    let original = finished(store, p.id).await;
    let cutoff = Utc::now() + ChronoDuration::milliseconds(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = finished_from(
        store,
        &NewRun {
            origin: relaunch(original.id, Origin::Api),
            ..new_run(p.id)
        },
    )
    .await;
    assert_eq!(again.relaunch_of, Some(original.id));
    let policy = RunRetention {
        finished_before: Some(cutoff),
        keep_per_project: None,
    };
    let pruned = store.prune_runs(&policy, 10).await.expect("prune");
    assert_eq!(pruned.runs, 1);
    assert_pruned(store, original.id).await;
    let kept = store.get_run(again.id).await.expect("relaunch kept");
    assert_eq!(kept.relaunch_of, None);
    assert_kept(store, again.id).await;
}
