//! Conformance cases: Claims, leases, launching, finishing, cancelling and failing runs.

use super::*;

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
    for (run, worker) in [(&a, "w1"), (&b, "w2")] {
        store
            .mark_launched(run.id, worker, Utc::now(), None)
            .await
            .expect("launched");
    }
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

/// A lease is held while running under the worker, shows cancels, and is lost otherwise.
pub async fn renew_lease_held_and_lost(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = launched_run(store, p.id, "w1").await;
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
    let a1 = launched_run(store, p.id, "host_a:1:w0").await;
    let a2 = launched_run(store, p.id, "host_a:1:w1").await;
    let wild_ = launched_run(store, p.id, "hostXa:1:w0").await;
    let wild_pct = launched_run(store, p.id, "host_a:10:w0").await;
    let upper = launched_run(store, p.id, "HOST_A:1:w0").await;
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
    store
        .mark_launched(short.id, "w", Utc::now(), None)
        .await
        .expect("launched");
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

/// A run whose worker died (lease expired, or the node restarted) before its ansible-playbook
/// started goes back to the queue, unless a cancel was asked for or it queued slices; one that
/// started ends `error`.
pub async fn unlaunched_runs_of_dead_workers_are_requeued(store: &dyn Store) {
    let p = project(store, "p").await;
    let lease = Duration::from_secs(1);
    let mut claimed = Vec::new();
    for _ in 0..4 {
        store.create_run(&new_run(p.id)).await.expect("create");
        claimed.push(
            store
                .claim_run("n1/a", lease)
                .await
                .expect("claim")
                .expect("run"),
        );
    }
    let (never, started, canceled, parent) = (&claimed[0], &claimed[1], &claimed[2], &claimed[3]);
    store
        .mark_launched(started.id, "n1/a", Utc::now(), None)
        .await
        .expect("launched");
    store
        .request_cancel(canceled.id, CancelMode::Graceful)
        .await
        .expect("cancel");
    let mut slice = new_run(p.id);
    slice.origin = Origin::Slice {
        of: SliceOf {
            parent_id: parent.id,
            slice: 1,
            count: 1,
        },
        original: Box::new(Origin::Api),
    };
    store.create_run(&slice).await.expect("slice");

    let failed = store
        .expire_leases(Utc::now() + ChronoDuration::seconds(30), "worker lost")
        .await
        .expect("expire");
    assert_eq!(failed, vec![started.id, canceled.id, parent.id]);
    let back = store.get_run(never.id).await.expect("get");
    assert_eq!(back.status, RunStatus::Queued, "{back:?}");
    assert_eq!((back.worker_id.as_deref(), back.started_at), (None, None));
    assert_eq!(
        store
            .renew_lease(never.id, "n1/a", lease)
            .await
            .expect("renew"),
        Lease::Lost,
        "the dead worker no longer holds it"
    );
    let again = store
        .claim_run("n2/b", lease)
        .await
        .expect("claim")
        .expect("run");
    assert_eq!(again.id, never.id, "another worker takes it");

    // The same when the node restarts.
    let failed = store
        .fail_runs_of_workers("n2/", "restarted")
        .await
        .expect("fail");
    assert!(failed.is_empty());
    assert_eq!(
        store.get_run(never.id).await.expect("get").status,
        RunStatus::Queued
    );
}

/// Admission at create: with nothing waiting that the claimant may take, a new run is stored
/// already claimed (running, leased, its `started_at` set); otherwise it is stored queued and
/// older runs keep their turn. Runs the claimant may not take (labels, the other lane,
/// canceled ones) do not hold it back.
pub async fn create_run_claimed_only_when_nothing_waits(store: &dyn Store) {
    use crate::{Claimant, JobRuns};
    let p = project(store, "p").await;
    let lease = Duration::from_secs(60);
    let embedded = Claimant::embedded("w1");

    let admitted = store
        .create_run_claimed(&new_run(p.id), &embedded, lease)
        .await
        .expect("create");
    assert_eq!(admitted.status, RunStatus::Running);
    assert_eq!(admitted.worker_id.as_deref(), Some("w1"));
    assert_recent(admitted.started_at.expect("started_at"), "started_at");
    assert_eq!(store.get_run(admitted.id).await.expect("get"), admitted);
    assert!(
        store.claim_run("w2", lease).await.expect("claim").is_none(),
        "an admitted run is not in the queue"
    );
    store
        .mark_launched(admitted.id, "w1", Utc::now(), None)
        .await
        .expect("the admitting worker holds it");
    assert_eq!(
        store
            .renew_lease(admitted.id, "w1", lease)
            .await
            .expect("renew"),
        Lease::Held {
            cancel_requested: None
        }
    );

    // Something older waits: the new run queues behind it.
    let older = store.create_run(&new_run(p.id)).await.expect("create");
    let behind = store
        .create_run_claimed(&new_run(p.id), &embedded, lease)
        .await
        .expect("create");
    assert_eq!(behind.status, RunStatus::Queued);
    assert_eq!(
        (behind.worker_id.as_deref(), behind.started_at),
        (None, None)
    );
    let claimed = store.claim_runs("w2", lease, 10).await.expect("claim");
    assert_eq!(ids(&claimed), vec![older.id, behind.id], "oldest first");

    // A waiting run the claimant may not take (a label it lacks) does not hold it back; a new
    // run needing that label is not taken by it.
    let mut gpu = new_run(p.id);
    gpu.options.worker_labels = vec!["gpu".to_owned()];
    let remote = Claimant {
        worker_id: "r/1",
        labels: &[],
        splits: false,
        job_runs: JobRuns::Any,
    };
    let gpu_waiting = store.create_run(&gpu).await.expect("create");
    let plain = store
        .create_run_claimed(&new_run(p.id), &remote, lease)
        .await
        .expect("create");
    assert_eq!(plain.status, RunStatus::Running);
    let gpu_new = store
        .create_run_claimed(&gpu, &remote, lease)
        .await
        .expect("create");
    assert_eq!(gpu_new.status, RunStatus::Queued, "a label it lacks");
    for id in [gpu_waiting.id, gpu_new.id] {
        store
            .request_cancel(id, CancelMode::Force)
            .await
            .expect("cancel");
    }

    // Lanes: a job unit action waiting holds back only the job lane; canceled runs nothing.
    let job = store
        .create_job(&new_job("t", &["web"], None))
        .await
        .expect("job");
    let mut unit = new_run(p.id);
    unit.origin = Origin::JobUnit {
        job_id: job.id,
        unit: "web".to_owned(),
    };
    let unit_waiting = store.create_run(&unit).await.expect("create");
    let lane = |job_runs| Claimant {
        worker_id: "e/1",
        labels: &[],
        splits: true,
        job_runs,
    };
    let other_lane = store
        .create_run_claimed(&new_run(p.id), &lane(JobRuns::Exclude), lease)
        .await
        .expect("create");
    assert_eq!(other_lane.status, RunStatus::Running);
    let unit_new = store
        .create_run_claimed(&unit, &lane(JobRuns::Exclude), lease)
        .await
        .expect("create");
    assert_eq!(unit_new.status, RunStatus::Queued, "not its lane");
    let job_lane = store
        .create_run_claimed(&unit, &lane(JobRuns::Only), lease)
        .await
        .expect("create");
    assert_eq!(job_lane.status, RunStatus::Queued, "two job runs wait");
    let claimed = store
        .claim_for(&lane(JobRuns::Only), lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&claimed),
        vec![unit_waiting.id, unit_new.id, job_lane.id]
    );
    let admitted_unit = store
        .create_run_claimed(&unit, &lane(JobRuns::Only), lease)
        .await
        .expect("create");
    assert_eq!(admitted_unit.status, RunStatus::Running);
}

/// A run stored claimed is the run `create_run` stores, only claimed: every field it was
/// made with comes back (labels or not, a stored inventory, a template and a relaunch as its
/// origin), and a missing reference is refused as `create_run` refuses it.
pub async fn create_run_claimed_stores_what_create_run_stores(store: &dyn Store) {
    let p = project(store, "p").await;
    let lease = Duration::from_secs(60);
    let embedded = crate::Claimant::embedded("w1");
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let template = store
        .create_template(&new_template("t", p.id, inv.id))
        .await
        .expect("template");
    let first = store.create_run(&new_run(p.id)).await.expect("create");
    store
        .request_cancel(first.id, CancelMode::Force)
        .await
        .expect("cancel");
    let mut full = new_run(p.id);
    full.inventory_id = Some(inv.id);
    full.inventory = inv.content.clone();
    full.options.extra_vars = json!({"a": [1, "two"], "s": "é"})
        .as_object()
        .expect("object")
        .clone();
    full.options.limit = Some("web".into());
    full.options.forks = Some(3);
    full.tag = Some("nightly".into());
    full.origin = relaunch(
        first.id,
        Origin::Template {
            template_id: template.id,
        },
    );
    let mut labeled = full.clone();
    labeled.labels.insert("team".into(), "ops".into());
    // What a stored run says of how it was made, whoever stored it.
    let made = |run: &Run| {
        (
            run.project_id,
            run.playbook.clone(),
            run.inventory_id,
            run.options.clone(),
            run.labels.clone(),
            run.tag.clone(),
            run.relaunch_of,
            run.template_id,
            run.job_id,
        )
    };
    for new in [&full, &labeled] {
        let claimed = store
            .create_run_claimed(new, &embedded, lease)
            .await
            .expect("create claimed");
        assert_eq!(claimed.status, RunStatus::Running, "{:?}", new.labels);
        assert_eq!(store.get_run(claimed.id).await.expect("get"), claimed);
        assert_eq!(
            store
                .get_run_inventory(claimed.id)
                .await
                .expect("inventory"),
            inv.content
        );
        let queued = store.create_run(new).await.expect("create");
        assert_eq!(made(&claimed), made(&queued));
        assert_eq!(
            (
                claimed.finished_at,
                claimed.launched_at,
                claimed.event_count
            ),
            (None, None, 0)
        );
        store
            .request_cancel(queued.id, CancelMode::Force)
            .await
            .expect("cancel");
    }
    // Missing references: the same refusal, nothing stored.
    let before = all_runs(store).await.len();
    let mut no_project = new_run(p.id + 1000);
    let mut no_inventory = new_run(p.id);
    no_inventory.inventory_id = Some(inv.id + 1000);
    for new in [&mut no_project, &mut no_inventory] {
        let plain = store.create_run(new).await.expect_err("missing reference");
        let claimed = store
            .create_run_claimed(new, &embedded, lease)
            .await
            .expect_err("missing reference");
        assert_eq!(claimed.to_string(), plain.to_string());
        new.labels.insert("team".into(), "ops".into());
        let claimed = store
            .create_run_claimed(new, &embedded, lease)
            .await
            .expect_err("missing reference");
        assert_eq!(claimed.to_string(), plain.to_string(), "with labels");
    }
    let after = all_runs(store).await.len();
    assert_eq!(after, before, "a refused run is not stored");
}

/// Creators admitting runs while claimers take queued ones, each on a thread of its own:
/// every run ends up held by exactly one worker.
pub async fn create_run_claimed_races_claims(store: &dyn Store) {
    let p = project(store, "p").await;
    let lease = Duration::from_secs(60);
    // Four creators, then two claimers: one kind of future, so they run side by side.
    let callers = (0..6).map(|c| async move {
        let mut held = Vec::new();
        if c < 4 {
            let worker = format!("creator-{c}");
            let claimant = crate::Claimant::embedded(&worker);
            for _ in 0..10 {
                let run = store
                    .create_run_claimed(&new_run(p.id), &claimant, lease)
                    .await
                    .expect("create");
                match run.status {
                    RunStatus::Running => {
                        assert_eq!(run.worker_id.as_deref(), Some(worker.as_str()));
                        held.push((run.id, worker.clone()));
                    }
                    RunStatus::Queued => {}
                    other => panic!("a new run {other}"),
                }
            }
        } else {
            let worker = format!("claimer-{c}");
            for _ in 0..20 {
                for run in store.claim_runs(&worker, lease, 3).await.expect("claim") {
                    held.push((run.id, worker.clone()));
                }
            }
        }
        held
    });
    let per_caller = futures_join_all(callers).await;
    let mut held: Vec<(i64, String)> = per_caller.into_iter().flatten().collect();
    // What is still queued is claimed now.
    held.extend(
        store
            .claim_runs("last", lease, 100)
            .await
            .expect("claim")
            .into_iter()
            .map(|r| (r.id, "last".to_owned())),
    );
    held.sort();
    let ids_held: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
    let mut unique = ids_held.clone();
    unique.dedup();
    assert_eq!(ids_held, unique, "a run was held twice: {held:?}");
    assert_eq!(unique.len(), 40, "every run held once: {held:?}");
    for (id, worker) in held {
        let run = store.get_run(id).await.expect("get");
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.worker_id, Some(worker));
    }
}
