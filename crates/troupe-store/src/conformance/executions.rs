//! Conformance cases: Executions, their leases, status moves, steps, approvals and slots.

use super::*;
use crate::SlotRequest;
use troupe_core::flow::{
    Approval, Execution, ExecutionFilter, ExecutionStatus, FlowVersion, NewExecution, ParentStep,
    Phase, StepRecord, StepStatus,
};

async fn flow(store: &dyn Store, name: &str) -> FlowVersion {
    store
        .put_flow(name, &format!("name: {name}\nsteps: []\n"))
        .await
        .expect("put flow")
}

fn new_execution(flow: &FlowVersion) -> NewExecution {
    NewExecution {
        flow: flow.name.clone(),
        version: flow.version,
        inputs: json!({"env": "prod", "hosts": ["a", "b"], "token": "********"})
            .as_object()
            .expect("object")
            .clone(),
        sealed_secrets: Some("sealed:v1:8f3a".into()),
        concurrency_key: Some(format!("{}/prod", flow.name)),
        parent: None,
        started_by: "api".into(),
        notify: Vec::new(),
    }
}

async fn execution(store: &dyn Store, flow: &FlowVersion) -> Execution {
    store
        .create_execution(&new_execution(flow))
        .await
        .expect("create execution")
}

async fn executions(store: &dyn Store, flow: &FlowVersion, n: usize) -> Vec<Execution> {
    let mut made = Vec::with_capacity(n);
    for _ in 0..n {
        made.push(execution(store, flow).await);
    }
    made
}

fn execution_ids(list: &[Execution]) -> Vec<i64> {
    list.iter().map(|e| e.id).collect()
}

fn step(execution_id: i64, round: i32, key: &str, phase: Phase, position: i32) -> StepRecord {
    StepRecord {
        execution_id,
        round,
        key: key.into(),
        phase,
        position,
        kind: "shell".into(),
        status: StepStatus::Successful,
        attempts: 1,
        started_at: None,
        finished_at: None,
        result: json!({}),
        published: serde_json::Map::new(),
        error: None,
        run_ids: Vec::new(),
        execution_ids: Vec::new(),
    }
}

fn slot(key: &str, limit: i64) -> SlotRequest {
    SlotRequest {
        key: key.into(),
        limit,
    }
}

fn approval(by: &str) -> Approval {
    Approval {
        approved: true,
        by: by.into(),
        comment: Some("looks good".into()),
    }
}

/// An execution is created queued in round 0 with what it was given (sealed secrets
/// included, kept opaque), of an existing flow version, under an existing parent.
pub async fn executions_round_trip(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let new = new_execution(&f);
    let e = store.create_execution(&new).await.expect("create");
    assert_eq!(e.flow, "deploy");
    assert_eq!(e.version, 1);
    assert_eq!(e.status, ExecutionStatus::Queued);
    assert_eq!(e.inputs, new.inputs);
    assert_eq!(e.sealed_secrets.as_deref(), Some("sealed:v1:8f3a"));
    assert_eq!(e.concurrency_key.as_deref(), Some("deploy/prod"));
    assert_eq!(e.parent, None);
    assert_eq!(e.started_by, "api");
    assert_eq!(e.round, 0);
    assert_eq!(e.error, None);
    assert!(!e.cancel_requested);
    assert_eq!((e.owner.as_deref(), e.lease_until), (None, None));
    assert_recent(e.created_at, "created_at");
    assert_eq!((e.started_at, e.finished_at), (None, None));
    assert_eq!(store.get_execution(e.id).await.expect("get"), e);

    let child = store
        .create_execution(&NewExecution {
            inputs: serde_json::Map::new(),
            sealed_secrets: None,
            concurrency_key: None,
            parent: Some(ParentStep {
                execution_id: e.id,
                step: "steps/sub".into(),
            }),
            started_by: format!("flow:{}", e.id),
            ..new.clone()
        })
        .await
        .expect("child");
    assert!(child.id > e.id);
    assert_eq!(
        child.parent,
        Some(ParentStep {
            execution_id: e.id,
            step: "steps/sub".into(),
        })
    );
    assert!(child.inputs.is_empty());
    assert_eq!((child.sealed_secrets, child.concurrency_key), (None, None));
    assert_eq!(
        store.get_execution(child.id).await.expect("get").parent,
        child.parent
    );

    // A newer version is its own; a version or flow that does not exist is refused.
    let f2 = store
        .put_flow("deploy", "name: deploy\nsteps: [x]\n")
        .await
        .expect("v2");
    assert_eq!(execution(store, &f2).await.version, 2);
    for missing in [
        NewExecution {
            version: 3,
            ..new.clone()
        },
        NewExecution {
            flow: "nope".into(),
            ..new.clone()
        },
    ] {
        assert_not_found(store.create_execution(&missing).await, "flow");
    }
    assert_not_found(
        store
            .create_execution(&NewExecution {
                parent: Some(ParentStep {
                    execution_id: child.id + 100,
                    step: "steps/sub".into(),
                }),
                ..new.clone()
            })
            .await,
        "execution",
    );
    assert_not_found(store.get_execution(child.id + 100).await, "execution");
    let all = store
        .list_executions(
            &ExecutionFilter::default(),
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert_eq!(all.len(), 3, "refused executions are not stored: {all:?}");
}

/// Executions are listed newest first, by flow, status and parent, a page at a time.
pub async fn list_executions_filters_and_paging(store: &dyn Store) {
    let deploy = flow(store, "deploy").await;
    let audit = flow(store, "audit").await;
    let mut made = Vec::new();
    for i in 0..9 {
        made.push(execution(store, if i % 3 == 0 { &audit } else { &deploy }).await);
    }
    let child = store
        .create_execution(&NewExecution {
            parent: Some(ParentStep {
                execution_id: made[1].id,
                step: "steps/0".into(),
            }),
            ..new_execution(&audit)
        })
        .await
        .expect("child");
    store
        .set_execution_status(made[4].id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    store
        .set_execution_status(made[5].id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    made.push(child.clone());
    let list = |filter: ExecutionFilter, before: Option<i64>, limit: i64| async move {
        store
            .list_executions(&filter, Page { before, limit })
            .await
            .expect("list")
    };

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = list(ExecutionFilter::default(), before, 4).await;
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(execution_ids(&page));
    }
    let mut newest_first = execution_ids(&made);
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every execution once, newest first");

    let audits = list(
        ExecutionFilter {
            flow: Some("audit".into()),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(
        execution_ids(&audits),
        [child.id, made[6].id, made[3].id, made[0].id]
    );
    let running = list(
        ExecutionFilter {
            status: Some(ExecutionStatus::Running),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(execution_ids(&running), [made[5].id, made[4].id]);
    assert!(running.iter().all(|e| e.status == ExecutionStatus::Running));
    let both = list(
        ExecutionFilter {
            flow: Some("deploy".into()),
            status: Some(ExecutionStatus::Queued),
            parent: None,
        },
        Some(made[8].id),
        2,
    )
    .await;
    assert_eq!(execution_ids(&both), [made[7].id, made[2].id]);
    let children = list(
        ExecutionFilter {
            parent: Some(made[1].id),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(children, [child]);
    assert!(list(ExecutionFilter::default(), None, 0).await.is_empty());
    assert!(
        list(
            ExecutionFilter {
                flow: Some("nope".into()),
                ..Default::default()
            },
            None,
            10
        )
        .await
        .is_empty()
    );
}

/// A claim takes an execution that nobody holds, is the holder's already, or whose lease
/// ended before now; never one another owner holds, nor a finished one.
pub async fn claim_execution_rules(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = execution(store, &f).await;
    let a = store
        .claim_execution(e.id, "replica-a", at(0), at(30))
        .await
        .expect("claim")
        .expect("unowned: taken");
    assert_eq!(a.owner.as_deref(), Some("replica-a"));
    assert_eq!(a.lease_until, Some(micros(at(30))));
    assert_eq!(
        a.status,
        ExecutionStatus::Queued,
        "a claim does not start it"
    );
    assert_eq!(store.get_execution(e.id).await.expect("get"), a);

    let b = store
        .claim_execution(e.id, "replica-b", at(10), at(40))
        .await
        .expect("claim");
    assert_eq!(b, None, "held by replica-a");
    // At the lease's very end it still holds.
    let b = store
        .claim_execution(e.id, "replica-b", at(30), at(60))
        .await
        .expect("claim");
    assert_eq!(b, None, "a lease that ends now has not ended before now");

    let again = store
        .claim_execution(e.id, "replica-a", at(20), at(90))
        .await
        .expect("claim")
        .expect("its own: taken again");
    assert_eq!(
        again.lease_until,
        Some(micros(at(90))),
        "and the lease extended"
    );

    let b = store
        .claim_execution(e.id, "replica-b", at(91), at(120))
        .await
        .expect("claim")
        .expect("lease ended: taken over");
    assert_eq!(b.owner.as_deref(), Some("replica-b"));
    assert_eq!(b.lease_until, Some(micros(at(120))));
    assert_eq!(
        store
            .claim_execution(e.id, "replica-a", at(92), at(150))
            .await
            .expect("claim"),
        None,
        "the old owner lost it"
    );

    // A running execution is claimed the same way (a takeover after a crash).
    store
        .set_execution_status(e.id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    let c = store
        .claim_execution(e.id, "replica-c", at(121), at(150))
        .await
        .expect("claim")
        .expect("running, lease ended: taken over");
    assert_eq!(c.status, ExecutionStatus::Running);
    assert_eq!(c.owner.as_deref(), Some("replica-c"));

    store
        .set_execution_status(e.id, ExecutionStatus::Successful, None)
        .await
        .expect("finish");
    for owner in ["replica-a", "replica-c"] {
        assert_eq!(
            store
                .claim_execution(e.id, owner, at(500), at(600))
                .await
                .expect("claim"),
            None,
            "finished: nobody takes it"
        );
    }
    assert_not_found(
        store
            .claim_execution(e.id + 100, "replica-a", at(0), at(30))
            .await,
        "execution",
    );
}

/// Renewing extends the leases an owner still holds and says which those are.
pub async fn renew_executions_returns_owned(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = executions(store, &f, 4).await;
    for (x, owner) in [(0, "a"), (1, "a"), (2, "b"), (3, "a")] {
        store
            .claim_execution(e[x].id, owner, at(0), at(30))
            .await
            .expect("claim")
            .expect("taken");
    }
    store
        .set_execution_status(e[3].id, ExecutionStatus::Failed, Some("boom"))
        .await
        .expect("finish");
    let asked = [e[2].id, e[0].id, e[1].id, e[3].id, e[3].id + 100];
    let renewed = store
        .renew_executions("a", &asked, at(60))
        .await
        .expect("renew");
    assert_eq!(renewed, [e[0].id, e[1].id], "only what a still holds");
    for x in [0, 1] {
        let got = store.get_execution(e[x].id).await.expect("get");
        assert_eq!(got.lease_until, Some(micros(at(60))));
    }
    let b = store.get_execution(e[2].id).await.expect("get");
    assert_eq!(
        (b.owner.as_deref(), b.lease_until),
        (Some("b"), Some(micros(at(30)))),
        "another owner's lease is not touched"
    );

    // b takes e[1] over once a's lease has ended; a's next renewal leaves it out.
    store
        .claim_execution(e[1].id, "b", at(61), at(90))
        .await
        .expect("claim")
        .expect("taken over");
    let renewed = store
        .renew_executions("a", &[e[0].id, e[1].id], at(120))
        .await
        .expect("renew");
    assert_eq!(renewed, [e[0].id]);
    assert_eq!(
        store.get_execution(e[1].id).await.expect("get").lease_until,
        Some(micros(at(90)))
    );
    assert!(
        store
            .renew_executions("a", &[], at(120))
            .await
            .expect("renew")
            .is_empty()
    );
    assert!(
        store
            .renew_executions("nobody", &[e[0].id], at(120))
            .await
            .expect("renew")
            .is_empty()
    );
}

/// Unclaimed executions: unfinished, with no owner or a lease ended before now; oldest
/// first, at most `limit`.
pub async fn unclaimed_executions_listing(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = executions(store, &f, 5).await;
    store
        .claim_execution(e[1].id, "a", at(0), at(30))
        .await
        .expect("claim")
        .expect("taken");
    store
        .claim_execution(e[2].id, "b", at(0), at(10))
        .await
        .expect("claim")
        .expect("taken");
    store
        .set_execution_status(e[2].id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    store
        .set_execution_status(e[3].id, ExecutionStatus::Skipped, None)
        .await
        .expect("skipped");
    let unclaimed = |now, limit| async move {
        execution_ids(
            &store
                .unclaimed_executions(now, limit)
                .await
                .expect("unclaimed"),
        )
    };
    assert_eq!(unclaimed(at(5), 10).await, [e[0].id, e[4].id]);
    assert_eq!(
        unclaimed(at(10), 10).await,
        [e[0].id, e[4].id],
        "a lease ending now still holds"
    );
    assert_eq!(unclaimed(at(11), 10).await, [e[0].id, e[2].id, e[4].id]);
    assert_eq!(
        unclaimed(at(31), 10).await,
        [e[0].id, e[1].id, e[2].id, e[4].id]
    );
    assert_eq!(unclaimed(at(31), 2).await, [e[0].id, e[1].id]);
    assert!(unclaimed(at(31), 0).await.is_empty());
    let listed = store.unclaimed_executions(at(5), 1).await.expect("list");
    assert_eq!(listed, [e[0].clone()], "whole executions");
}

/// Status moves: `running` sets `started_at` once; a finished status sets `finished_at`,
/// drops the owner and the slots; nothing moves a finished execution.
pub async fn execution_status_moves(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = execution(store, &f).await;
    let held = Utc::now() + ChronoDuration::hours(1);
    store
        .claim_execution(e.id, "a", Utc::now(), held)
        .await
        .expect("claim")
        .expect("taken");
    assert!(
        store
            .acquire_slots(e.id, &[slot("flow:deploy", 1), slot("lock:db", 1)])
            .await
            .expect("acquire")
    );

    let running = store
        .set_execution_status(e.id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    assert_eq!(running.status, ExecutionStatus::Running);
    let started = running.started_at.expect("started_at");
    assert_recent(started, "started_at");
    assert_eq!(running.owner.as_deref(), Some("a"), "the owner stays");
    assert_eq!(running.finished_at, None);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store
        .set_execution_status(e.id, ExecutionStatus::Running, Some("retrying steps/2"))
        .await
        .expect("running again");
    assert_eq!(again.started_at, Some(started), "the first start is kept");
    assert_eq!(again.error.as_deref(), Some("retrying steps/2"));
    assert_eq!(
        store.slot_holders("lock:db").await.expect("holders"),
        [e.id],
        "an unfinished execution keeps its slots"
    );

    let failed = store
        .set_execution_status(e.id, ExecutionStatus::Failed, Some("steps/upgrade: rc 2"))
        .await
        .expect("fail");
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("steps/upgrade: rc 2"));
    assert_recent(failed.finished_at.expect("finished_at"), "finished_at");
    assert_eq!(failed.started_at, Some(started));
    assert_eq!((failed.owner.as_deref(), failed.lease_until), (None, None));
    assert_eq!(store.get_execution(e.id).await.expect("get"), failed);
    for key in ["flow:deploy", "lock:db"] {
        assert!(
            store.slot_holders(key).await.expect("holders").is_empty(),
            "a finished execution lets go of {key}"
        );
    }

    for status in ExecutionStatus::ALL {
        let msg = assert_conflict(
            store.set_execution_status(e.id, *status, None).await,
            "finished",
        );
        assert!(msg.contains("failed"), "{msg:?} says how it ended");
    }
    assert_eq!(store.get_execution(e.id).await.expect("get"), failed);

    // Queued may end without running.
    let q = execution(store, &f).await;
    let skipped = store
        .set_execution_status(q.id, ExecutionStatus::Skipped, None)
        .await
        .expect("skip");
    assert_eq!(skipped.status, ExecutionStatus::Skipped);
    assert_eq!(skipped.started_at, None);
    assert!(skipped.finished_at.is_some());
    assert_not_found(
        store
            .set_execution_status(q.id + 100, ExecutionStatus::Running, None)
            .await,
        "execution",
    );
}

/// A cancel of a queued execution nobody holds cancels it at once and lets go of its slots;
/// any other unfinished execution is only asked to stop; a finished one is refused.
pub async fn cancel_queued_and_running_executions(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = executions(store, &f, 4).await;
    let now = Utc::now();
    let held = now + ChronoDuration::hours(1);
    for x in &e {
        assert!(
            store
                .acquire_slots(x.id, &[slot(&format!("lock:{}", x.id), 1)])
                .await
                .expect("acquire")
        );
    }

    // Queued, nobody holds it: canceled now.
    let canceled = store.cancel_execution(e[0].id).await.expect("cancel");
    assert_eq!(canceled.status, ExecutionStatus::Canceled);
    assert!(canceled.cancel_requested);
    assert_recent(canceled.finished_at.expect("finished_at"), "finished_at");
    assert!(
        store
            .slot_holders(&format!("lock:{}", e[0].id))
            .await
            .expect("holders")
            .is_empty(),
        "its slots are let go"
    );

    // Queued, held by a replica about to start it: asked to stop.
    store
        .claim_execution(e[1].id, "a", now, held)
        .await
        .expect("claim")
        .expect("taken");
    let asked = store.cancel_execution(e[1].id).await.expect("cancel");
    assert_eq!(asked.status, ExecutionStatus::Queued);
    assert!(asked.cancel_requested);
    assert_eq!(asked.owner.as_deref(), Some("a"));
    assert_eq!(asked.finished_at, None);
    assert_eq!(
        store
            .slot_holders(&format!("lock:{}", e[1].id))
            .await
            .expect("holders"),
        [e[1].id],
        "the owner lets go when it stops"
    );

    // Queued, its owner's lease ended: nobody holds it, canceled now.
    store
        .claim_execution(
            e[2].id,
            "gone",
            now - ChronoDuration::hours(2),
            now - ChronoDuration::hours(1),
        )
        .await
        .expect("claim")
        .expect("taken");
    let canceled = store.cancel_execution(e[2].id).await.expect("cancel");
    assert_eq!(canceled.status, ExecutionStatus::Canceled);
    assert_eq!(canceled.owner, None);

    // Running: asked to stop, asked again is the same.
    store
        .set_execution_status(e[3].id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    let asked = store.cancel_execution(e[3].id).await.expect("cancel");
    assert_eq!(asked.status, ExecutionStatus::Running);
    assert!(asked.cancel_requested);
    assert_eq!(
        store.cancel_execution(e[3].id).await.expect("cancel again"),
        asked
    );
    assert_eq!(store.get_execution(e[3].id).await.expect("get"), asked);

    let finished = store
        .set_execution_status(e[3].id, ExecutionStatus::Canceled, None)
        .await
        .expect("stopped");
    let msg = assert_conflict(store.cancel_execution(e[3].id).await, "finished");
    assert!(msg.contains("canceled"), "{msg:?}");
    assert_conflict(store.cancel_execution(e[0].id).await, "finished");
    assert_eq!(store.get_execution(e[3].id).await.expect("get"), finished);
    assert_not_found(store.cancel_execution(e[3].id + 100).await, "execution");
}

/// A failed, canceled or timed out execution is queued again one round later, cleared of its
/// owner, error, end and cancel; nothing else is resumed.
pub async fn resume_execution_rules(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = execution(store, &f).await;
    store
        .claim_execution(e.id, "a", at(0), at(30))
        .await
        .expect("claim")
        .expect("taken");
    assert_conflict(store.resume_execution(e.id).await, "queued");
    let running = store
        .set_execution_status(e.id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    assert_conflict(store.resume_execution(e.id).await, "running");
    store.cancel_execution(e.id).await.expect("ask to stop");
    store
        .set_execution_status(e.id, ExecutionStatus::Failed, Some("steps/3: rc 1"))
        .await
        .expect("fail");

    let resumed = store.resume_execution(e.id).await.expect("resume");
    assert_eq!(resumed.status, ExecutionStatus::Queued);
    assert_eq!(resumed.round, 1);
    assert_eq!(resumed.error, None);
    assert!(!resumed.cancel_requested);
    assert_eq!(
        (resumed.owner.as_deref(), resumed.lease_until),
        (None, None)
    );
    assert_eq!(resumed.finished_at, None);
    assert_eq!(resumed.started_at, running.started_at);
    assert_eq!(
        (
            resumed.inputs.clone(),
            resumed.sealed_secrets.clone(),
            resumed.created_at
        ),
        (e.inputs.clone(), e.sealed_secrets.clone(), e.created_at)
    );
    assert_eq!(store.get_execution(e.id).await.expect("get"), resumed);
    assert_eq!(
        execution_ids(&store.unclaimed_executions(at(0), 10).await.expect("list")),
        [e.id],
        "queued again for any replica"
    );

    for (round, end) in [
        (2, ExecutionStatus::Canceled),
        (3, ExecutionStatus::Timeout),
    ] {
        store
            .set_execution_status(e.id, end, None)
            .await
            .expect("end");
        let again = store.resume_execution(e.id).await.expect("resume");
        assert_eq!(
            (again.round, again.status),
            (round, ExecutionStatus::Queued)
        );
    }
    store
        .set_execution_status(e.id, ExecutionStatus::Successful, None)
        .await
        .expect("succeed");
    assert_conflict(store.resume_execution(e.id).await, "successful");
    assert_eq!(store.get_execution(e.id).await.expect("get").round, 3);

    let never_ran = execution(store, &f).await;
    store
        .set_execution_status(never_ran.id, ExecutionStatus::Skipped, None)
        .await
        .expect("skip");
    assert_conflict(store.resume_execution(never_ran.id).await, "skipped");
    assert_not_found(store.resume_execution(e.id + 100).await, "execution");
}

/// Step records round-trip whole, a second put replaces the first of the same round and key,
/// and they are listed by round, phase order and position.
pub async fn steps_round_trip_and_order(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = execution(store, &f).await;
    let other = execution(store, &f).await;
    assert!(store.list_steps(e.id).await.expect("list").is_empty());

    let full = StepRecord {
        kind: "playbook".into(),
        status: StepStatus::Failed,
        attempts: 3,
        started_at: Some(precise_time()),
        finished_at: Some(at(42)),
        result: json!({"rc": 2, "stdout": "a\u{0}b", "hosts": {"web1": {"failed": 1}}}),
        published: json!({"version": "1.2.3", "n": [1, 2.5, null, true]})
            .as_object()
            .expect("object")
            .clone(),
        error: Some("rc 2 after 3 attempts".into()),
        run_ids: vec![7, 9, 12],
        execution_ids: vec![other.id],
        ..step(e.id, 0, "steps/upgrade", Phase::Steps, 1)
    };
    // Put in an order unlike the listing's.
    let records = [
        step(e.id, 1, "steps/check", Phase::Steps, 2),
        step(e.id, 0, "finally/0", Phase::Finally, 0),
        step(e.id, 0, "on_failure/notify", Phase::OnFailure, 0),
        full.clone(),
        step(e.id, 1, "pre/discover", Phase::Pre, 0),
        step(e.id, 0, "steps/check", Phase::Steps, 2),
        step(e.id, 0, "on_success/0", Phase::OnSuccess, 0),
        step(e.id, 0, "pre/discover", Phase::Pre, 0),
        step(e.id, 0, "steps/drain", Phase::Steps, 0),
        step(other.id, 0, "steps/0", Phase::Steps, 0),
    ];
    for r in &records {
        store.put_step(r).await.expect("put step");
    }
    let listed = store.list_steps(e.id).await.expect("list");
    let keys: Vec<(i32, &str)> = listed.iter().map(|s| (s.round, s.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (0, "pre/discover"),
            (0, "steps/drain"),
            (0, "steps/upgrade"),
            (0, "steps/check"),
            (0, "on_success/0"),
            (0, "on_failure/notify"),
            (0, "finally/0"),
            (1, "pre/discover"),
            (1, "steps/check"),
        ]
    );
    assert_eq!(
        listed[2],
        StepRecord {
            started_at: Some(micros(precise_time())),
            finished_at: Some(micros(at(42))),
            ..full.clone()
        },
        "every field kept, times to the microsecond"
    );

    // The same execution, round and key: replaced, not added.
    let done = StepRecord {
        status: StepStatus::Successful,
        attempts: 4,
        result: json!({"rc": 0}),
        error: None,
        run_ids: vec![7, 9, 12, 15],
        execution_ids: Vec::new(),
        published: serde_json::Map::new(),
        started_at: Some(micros(precise_time())),
        finished_at: None,
        ..full.clone()
    };
    store.put_step(&done).await.expect("replace");
    let listed = store.list_steps(e.id).await.expect("list");
    assert_eq!(listed.len(), 9);
    assert_eq!(listed[2], done);
    assert_eq!(
        store.list_steps(other.id).await.expect("list"),
        [records[9].clone()]
    );

    assert_not_found(
        store
            .put_step(&step(other.id + 100, 0, "steps/0", Phase::Steps, 0))
            .await,
        "execution",
    );
    assert!(
        store
            .list_steps(other.id + 100)
            .await
            .expect("list")
            .is_empty()
    );
}

/// An approval is stored in the waiting step of the current round, once: a second answer, or
/// an answer to a step that is not waiting, is refused.
pub async fn approvals_only_while_waiting(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = execution(store, &f).await;
    let waiting = StepRecord {
        kind: "approval".into(),
        status: StepStatus::Waiting,
        result: json!({"prompt": "upgrade prod?"}),
        ..step(e.id, 0, "steps/ok", Phase::Steps, 0)
    };
    store.put_step(&waiting).await.expect("put");
    store
        .put_step(&StepRecord {
            status: StepStatus::Running,
            ..step(e.id, 0, "steps/run", Phase::Steps, 1)
        })
        .await
        .expect("put");

    let answered = store
        .answer_approval(e.id, "steps/ok", &approval("alice"))
        .await
        .expect("answer");
    assert_eq!(
        answered.result,
        json!({
            "prompt": "upgrade prod?",
            "approval": {"approved": true, "by": "alice", "comment": "looks good"}
        })
    );
    assert_eq!(
        answered.status,
        StepStatus::Waiting,
        "the engine moves it on"
    );
    assert_eq!(
        store.list_steps(e.id).await.expect("list")[0],
        answered,
        "stored as returned"
    );
    assert_conflict(
        store
            .answer_approval(e.id, "steps/ok", &approval("bob"))
            .await,
        "answered",
    );
    assert_conflict(
        store
            .answer_approval(e.id, "steps/run", &approval("bob"))
            .await,
        "not waiting",
    );
    assert_eq!(store.list_steps(e.id).await.expect("list")[0], answered);
    assert_not_found(
        store
            .answer_approval(e.id, "steps/nope", &approval("bob"))
            .await,
        "step",
    );
    assert_not_found(
        store
            .answer_approval(e.id + 100, "steps/ok", &approval("bob"))
            .await,
        "execution",
    );

    // After a resume only the new round's record is answered.
    store
        .set_execution_status(e.id, ExecutionStatus::Failed, Some("denied"))
        .await
        .expect("fail");
    store.resume_execution(e.id).await.expect("resume");
    let old = StepRecord {
        key: "steps/old".into(),
        ..waiting.clone()
    };
    store.put_step(&old).await.expect("put old round");
    assert_not_found(
        store
            .answer_approval(e.id, "steps/old", &approval("bob"))
            .await,
        "step",
    );
    store
        .put_step(&StepRecord {
            round: 1,
            result: serde_json::Value::Null,
            ..waiting.clone()
        })
        .await
        .expect("put round 1");
    let denied = Approval {
        approved: false,
        by: "bob".into(),
        comment: None,
    };
    let second = store
        .answer_approval(e.id, "steps/ok", &denied)
        .await
        .expect("answer round 1");
    assert_eq!(second.round, 1);
    assert_eq!(
        second.result,
        json!({"approval": {"approved": false, "by": "bob"}})
    );
    let listed = store.list_steps(e.id).await.expect("list");
    assert_eq!(listed[0], answered, "round 0 is left as it was");

    // Racing answers: one is stored.
    store
        .put_step(&StepRecord {
            key: "steps/race".into(),
            round: 1,
            ..waiting.clone()
        })
        .await
        .expect("put");
    let id = e.id;
    let answers = race(8, |i| {
        let by = format!("user-{i}");
        async move {
            store
                .answer_approval(id, "steps/race", &approval(&by))
                .await
        }
    })
    .await;
    let won: Vec<&StepRecord> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "one answer wins: {answers:?}");
    for a in &answers {
        if let Err(e) = a {
            assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        }
    }
    let stored = store.list_steps(e.id).await.expect("list");
    assert!(stored.contains(won[0]), "the winner's answer is stored");
}

/// Slots: up to the limit per key; all keys of a request or none; holding one already counts;
/// released all at once.
pub async fn slots_limits_and_atomicity(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = executions(store, &f, 4).await;
    let group = slot("flow:deploy/prod", 2);
    let lock = slot("lock:db", 1);
    let acquire = |x: usize, slots: Vec<SlotRequest>| {
        let id = e[x].id;
        async move { store.acquire_slots(id, &slots).await.expect("acquire") }
    };
    let holders =
        |key: &'static str| async move { store.slot_holders(key).await.expect("holders") };

    assert!(holders("flow:deploy/prod").await.is_empty());
    assert!(acquire(1, vec![group.clone()]).await);
    assert!(acquire(0, vec![group.clone()]).await);
    assert!(!acquire(2, vec![group.clone()]).await, "the limit is 2");
    assert_eq!(
        holders("flow:deploy/prod").await,
        [e[0].id, e[1].id],
        "oldest first"
    );
    assert!(acquire(0, vec![group.clone()]).await, "held already");
    assert!(
        acquire(0, vec![group.clone(), group.clone()]).await,
        "a key asked twice"
    );
    assert_eq!(holders("flow:deploy/prod").await, [e[0].id, e[1].id]);
    assert!(
        acquire(2, Vec::new()).await,
        "nothing asked, nothing to wait for"
    );

    // All or nothing: the group has room (its key comes first) but the lock is taken, so e2
    // takes neither.
    assert!(acquire(3, vec![lock.clone()]).await);
    store.release_slots(e[1].id).await.expect("release");
    assert!(!acquire(2, vec![lock.clone(), group.clone()]).await);
    assert_eq!(
        holders("flow:deploy/prod").await,
        [e[0].id],
        "no partial take"
    );
    assert_eq!(holders("lock:db").await, [e[3].id]);
    store.release_slots(e[3].id).await.expect("release");
    assert!(acquire(2, vec![lock.clone(), group.clone()]).await);
    assert_eq!(holders("flow:deploy/prod").await, [e[0].id, e[2].id]);
    assert_eq!(holders("lock:db").await, [e[2].id]);
    assert!(
        !acquire(3, vec![lock.clone()]).await,
        "a lock has one holder"
    );
    assert!(!acquire(3, vec![slot("lock:none", 0)]).await, "limit 0");
    assert!(
        acquire(2, vec![slot("lock:db", 1), slot("flow:deploy/prod", 1)]).await,
        "what an execution holds counts as had, whatever the limit"
    );

    store.release_slots(e[2].id).await.expect("release");
    assert_eq!(holders("flow:deploy/prod").await, [e[0].id]);
    assert!(holders("lock:db").await.is_empty());
    store.release_slots(e[2].id).await.expect("release twice");
    store
        .release_slots(e[3].id + 100)
        .await
        .expect("release of a missing execution");
    assert!(acquire(3, vec![lock]).await);
    assert_not_found(
        store.acquire_slots(e[3].id + 100, &[group]).await,
        "execution",
    );
}

/// Executions racing for a key take no more than its limit, however many race; requests
/// naming the same keys in opposite orders never deadlock.
pub async fn racing_slot_acquires(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    for limit in [1, 3] {
        let key = format!("lock:race-{limit}");
        let e = executions(store, &f, 8).await;
        let got = race(8, |i| {
            let requests = [slot(&key, limit)];
            let id = e[i].id;
            async move { store.acquire_slots(id, &requests).await.expect("acquire") }
        })
        .await;
        let winners: Vec<i64> = e
            .iter()
            .zip(&got)
            .filter(|(_, won)| **won)
            .map(|(x, _)| x.id)
            .collect();
        assert_eq!(
            winners.len(),
            usize::try_from(limit).expect("small"),
            "limit {limit}: {got:?}"
        );
        assert_eq!(store.slot_holders(&key).await.expect("holders"), winners);
    }

    let e = executions(store, &f, 8).await;
    let got = race(8, |i| {
        let requests = if i % 2 == 0 {
            [slot("lock:a", 1), slot("lock:b", 1)]
        } else {
            [slot("lock:b", 1), slot("lock:a", 1)]
        };
        let id = e[i].id;
        async move { store.acquire_slots(id, &requests).await.expect("acquire") }
    })
    .await;
    assert_eq!(got.iter().filter(|won| **won).count(), 1, "{got:?}");
    let a = store.slot_holders("lock:a").await.expect("holders");
    assert_eq!(a.len(), 1);
    assert_eq!(store.slot_holders("lock:b").await.expect("holders"), a);
}

/// Owners racing to claim one execution: exactly one takes it.
pub async fn racing_execution_claims(store: &dyn Store) {
    let f = flow(store, "deploy").await;
    let e = executions(store, &f, 5).await;
    for (n, x) in e.iter().enumerate() {
        // The last one's lease has ended: the race is a takeover.
        if n == 4 {
            store
                .claim_execution(x.id, "gone", at(0), at(1))
                .await
                .expect("claim")
                .expect("taken");
        }
        let got = race(8, |i| {
            let owner = format!("replica-{i}");
            async move {
                store
                    .claim_execution(x.id, &owner, at(2), at(60))
                    .await
                    .expect("claim")
            }
        })
        .await;
        let won: Vec<&Execution> = got.iter().flatten().collect();
        assert_eq!(won.len(), 1, "one owner: {got:?}");
        let stored = store.get_execution(x.id).await.expect("get");
        assert_eq!(stored.owner, won[0].owner, "the winner holds it");
    }
}
