//! Conformance cases: workers, and claims routed by worker labels.

use super::*;
use crate::{Claimant, JobRuns};
use troupe_core::worker::{NewWorker, WorkerKind};

fn new_worker(id: &str, labels: &[&str]) -> NewWorker {
    NewWorker {
        id: id.into(),
        name: format!("host-{id}"),
        kind: WorkerKind::Remote,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        capacity: 3,
        version: "1.2.3".into(),
    }
}

/// Register, heartbeat, drain, stop; a new incarnation of a node stops the older one.
pub async fn workers_register_heartbeat_drain(store: &dyn Store) {
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let a = store
        .register_worker(&new_worker("node1/a", &["gpu", "eu"]))
        .await
        .expect("register");
    assert_eq!(a.labels, vec!["gpu".to_owned(), "eu".to_owned()]);
    assert_eq!((a.capacity, a.active_runs), (3, 0));
    assert_eq!(a.kind, WorkerKind::Remote);
    assert!(!a.draining && a.stopped_at.is_none());
    assert_recent(a.last_heartbeat, "last_heartbeat");

    let beat = store.heartbeat_worker("node1/a", 2).await.expect("beat");
    assert_eq!(beat.active_runs, 2);
    assert!(beat.last_heartbeat >= a.last_heartbeat);
    assert_not_found(store.heartbeat_worker("nobody/x", 0).await, "worker");

    let drained = store.drain_worker("node1/a").await.expect("drain");
    assert!(drained.draining);
    assert_eq!(store.get_worker("node1/a").await.expect("get"), drained);
    assert_not_found(store.drain_worker("nobody/x").await, "worker");

    store
        .register_worker(&new_worker("node2/a", &[]))
        .await
        .expect("other node");
    // node1 restarts: its old incarnation is stopped, the other node is untouched.
    let b = store
        .register_worker(&new_worker("node1/b", &["gpu"]))
        .await
        .expect("again");
    assert!(!b.draining, "a new incarnation starts fresh");
    let old = store.get_worker("node1/a").await.expect("old");
    assert!(
        old.stopped_at.is_some(),
        "the old incarnation counts as stopped"
    );
    assert_not_found(store.heartbeat_worker("node1/a", 0).await, "worker");
    let listed: Vec<String> = store
        .list_workers(since)
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, ["node1/a", "node1/b", "node2/a"]);

    store.stop_worker("node2/a").await.expect("stop");
    assert!(
        store
            .get_worker("node2/a")
            .await
            .expect("get")
            .stopped_at
            .is_some()
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let listed: Vec<String> = store
        .list_workers(later)
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, ["node1/b"], "stopped and silent workers age out");
}

/// A run requiring labels goes only to a claimant having all of them; split parents only to
/// a claimant that coordinates splits.
pub async fn claims_follow_worker_labels_and_splits(store: &dyn Store) {
    let p = project(store, "p").await;
    let with = |labels: &[&str], slices: Option<u32>| {
        let mut new = new_run(p.id);
        new.options.worker_labels = labels.iter().map(|l| l.to_string()).collect();
        new.options.slices = slices;
        new
    };
    let gpu = store.create_run(&with(&["gpu"], None)).await.expect("run");
    let gpu_eu = store
        .create_run(&with(&["gpu", "eu"], None))
        .await
        .expect("run");
    let split = store
        .create_run(&with(&["gpu"], Some(3)))
        .await
        .expect("run");
    let plain = store.create_run(&with(&[], None)).await.expect("run");
    let lease = Duration::from_secs(60);

    let none: Vec<String> = Vec::new();
    let remote_plain = Claimant {
        worker_id: "r/1",
        labels: &none,
        splits: false,
        job_runs: JobRuns::Any,
    };
    let got = store
        .claim_for(&remote_plain, lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&got),
        vec![plain.id],
        "no labels, no splits: only the plain run"
    );

    let gpu_only = vec!["gpu".to_owned(), "x".to_owned()];
    let got = store
        .claim_for(
            &Claimant {
                worker_id: "r/2",
                labels: &gpu_only,
                splits: false,
                job_runs: JobRuns::Any,
            },
            lease,
            10,
        )
        .await
        .expect("claim");
    assert_eq!(ids(&got), vec![gpu.id], "gpu but not eu");

    let got = store
        .claim_runs("embedded/1", lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&got),
        vec![split.id],
        "the embedded pool takes the split parent, whose slices carry its labels"
    );

    let both = vec!["eu".to_owned(), "gpu".to_owned()];
    let got = store
        .claim_for(
            &Claimant {
                worker_id: "r/3",
                labels: &both,
                splits: false,
                job_runs: JobRuns::Any,
            },
            lease,
            10,
        )
        .await
        .expect("claim");
    assert_eq!(ids(&got), vec![gpu_eu.id]);
    assert_eq!(got[0].worker_id.as_deref(), Some("r/3"));
}

/// A token's role is stored with it.
pub async fn token_roles_round_trip(store: &dyn Store) {
    let w = store
        .create_token("w", "cc33", TokenRole::Worker)
        .await
        .expect("create");
    assert_eq!(w.role, TokenRole::Worker);
    let list = store.list_tokens().await.expect("list");
    assert!(list.contains(&w));
}

/// Job unit actions are claimed apart from other runs when the claimant says so: the
/// embedded pool's job lane takes only them, its other lane everything else.
pub async fn claims_take_job_runs_apart(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job("t", &["web", "db"], None))
        .await
        .expect("job");
    let unit_run = |unit: &str| {
        let mut n = new_run(p.id);
        n.origin = Origin::JobUnit {
            job_id: job.id,
            unit: unit.to_owned(),
        };
        n
    };
    let web = store.create_run(&unit_run("web")).await.expect("run");
    let plain = store.create_run(&new_run(p.id)).await.expect("run");
    let db = store.create_run(&unit_run("db")).await.expect("run");
    let lease = Duration::from_secs(60);
    let lane = |worker_id: &'static str, job_runs: JobRuns| Claimant {
        worker_id,
        labels: &[],
        splits: true,
        job_runs,
    };
    let got = store
        .claim_for(&lane("e/1", JobRuns::Exclude), lease, 10)
        .await
        .expect("claim");
    assert_eq!(ids(&got), vec![plain.id], "the other lane skips job runs");
    let got = store
        .claim_for(&lane("e/2", JobRuns::Only), lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&got),
        vec![web.id, db.id],
        "the job lane takes them in order"
    );
    let got = store
        .claim_for(&lane("e/3", JobRuns::Any), lease, 10)
        .await
        .expect("claim");
    assert!(got.is_empty(), "nothing left: {got:?}");
}
