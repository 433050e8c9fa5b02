//! Conformance cases: notifications of runs and executions, their claims and outcomes.

use super::*;
use crate::NotifyOutcome;
use troupe_core::flow::{ExecutionStatus, NewExecution};
use troupe_core::notify::{NotificationState, Notify, NotifyOn, SealedNotify, Subject};

fn target(url: &str, on: &[&str]) -> SealedNotify {
    let clear = Notify {
        webhook: Some(url.into()),
        on: NotifyOn(on.iter().map(|s| (*s).to_owned()).collect()),
        ..Notify::default()
    };
    SealedNotify {
        shown: clear.shown(),
        // Opaque to the store.
        sealed: format!("sealed:{url}"),
    }
}

fn notifying_run(project_id: i64, targets: Vec<SealedNotify>) -> NewRun {
    NewRun {
        notify: targets,
        ..new_run(project_id)
    }
}

async fn ended_execution(store: &dyn Store, status: ExecutionStatus) -> i64 {
    let flow = store
        .put_flow("notified", "name: notified\nsteps: []\n")
        .await
        .expect("put flow");
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
        .expect("create execution");
    store
        .set_execution_status(e.id, ExecutionStatus::Running, None)
        .await
        .expect("running");
    store
        .set_execution_status(e.id, status, Some("step x failed"))
        .await
        .expect("ended");
    e.id
}

/// A run stores its notifications with it, pending, targets whole (sealed part included); a
/// template keeps its targets; an execution gets notifications added; a missing subject is
/// `NotFound` to add to and has none to list.
pub async fn notifications_round_trip(store: &dyn Store) {
    let p = project(store, "notify").await;
    let targets = vec![
        target("https://a.example/hook?t=1", &[]),
        target("http://b.example:8080/x", &["failed", "error"]),
    ];
    let run = store
        .create_run(&notifying_run(p.id, targets.clone()))
        .await
        .expect("create run");
    let listed = store
        .list_notifications(Subject::Run(run.id))
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    for (n, t) in listed.iter().zip(&targets) {
        assert_eq!(n.target, *t);
        assert_eq!(n.state, NotificationState::Pending);
        assert_eq!((n.run_id, n.execution_id), (Some(run.id), None));
        assert_eq!((n.attempts, n.last_error.clone()), (0, None));
        assert_eq!((n.next_attempt_at, n.finished_at), (None, None));
        assert_recent(n.created_at, "created_at");
    }
    assert!(listed[0].id < listed[1].id);
    let plain = store.create_run(&new_run(p.id)).await.expect("plain run");
    assert!(
        store
            .list_notifications(Subject::Run(plain.id))
            .await
            .expect("list")
            .is_empty()
    );

    let inv = store
        .create_inventory(&new_inventory("notify-inv"), 2)
        .await
        .expect("inventory");
    let t = store
        .create_template(&NewTemplate {
            notify: targets.clone(),
            ..new_template("notified", p.id, inv.id)
        })
        .await
        .expect("template");
    assert_eq!(t.notify, targets);
    assert_eq!(store.get_template(t.id).await.expect("get").notify, targets);
    let bare = store
        .create_template(&new_template("bare", p.id, inv.id))
        .await
        .expect("template");
    assert!(bare.notify.is_empty());

    // An execution's targets are stored with it.
    let flow = store
        .put_flow("told", "name: told\nsteps: []\n")
        .await
        .expect("put flow");
    let told = store
        .create_execution(&NewExecution {
            flow: flow.name.clone(),
            version: flow.version,
            started_by: "api".into(),
            notify: targets.clone(),
            ..Default::default()
        })
        .await
        .expect("create execution");
    let stored = store
        .list_notifications(Subject::Execution(told.id))
        .await
        .expect("list");
    assert_eq!(
        stored
            .iter()
            .map(|n| (n.run_id, n.execution_id, n.target.clone()))
            .collect::<Vec<_>>(),
        targets
            .iter()
            .map(|t| (None, Some(told.id), t.clone()))
            .collect::<Vec<_>>()
    );

    let e = ended_execution(store, ExecutionStatus::Failed).await;
    let added = store
        .add_notifications(Subject::Execution(e), &targets[..1])
        .await
        .expect("add");
    assert_eq!(added.len(), 1);
    assert_eq!((added[0].run_id, added[0].execution_id), (None, Some(e)));
    assert_eq!(
        store
            .list_notifications(Subject::Execution(e))
            .await
            .expect("list"),
        added
    );
    assert_not_found(
        store
            .add_notifications(Subject::Run(run.id + 1000), &targets)
            .await,
        "run",
    );
    assert_not_found(
        store
            .add_notifications(Subject::Execution(e + 1000), &targets)
            .await,
        "execution",
    );
    assert!(
        store
            .list_notifications(Subject::Execution(e + 1000))
            .await
            .expect("list")
            .is_empty()
    );
}

/// Only notifications of ended runs and executions are claimed, each by one owner while its
/// claim lasts, with the end's status; outcomes are recorded by the owner only, once; a retry
/// waits for its time; a skip does not count as an attempt.
pub async fn notification_claims_and_outcomes(store: &dyn Store) {
    let p = project(store, "notify").await;
    let now = Utc::now();
    let until = now + ChronoDuration::seconds(30);
    let queued = store
        .create_run(&notifying_run(p.id, vec![target("http://q/", &[])]))
        .await
        .expect("queued run");
    assert!(
        store
            .claim_notifications("a", now, until, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a queued run's notification waits for its end"
    );
    let running = store
        .create_run(&notifying_run(
            p.id,
            vec![target("http://r1/", &[]), target("http://r2/", &[])],
        ))
        .await
        .expect("run");
    store
        .request_cancel(queued.id, CancelMode::Force)
        .await
        .expect("cancel queued");
    let claimed = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim run")
        .expect("a run");
    assert_eq!(claimed.id, running.id);
    let due = store
        .claim_notifications("a", now, until, 10)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1, "only the canceled run has ended");
    assert_eq!(due[0].status, "canceled");
    assert_eq!(due[0].notification.run_id, Some(queued.id));
    store
        .finish_run(
            running.id,
            "w",
            &RunOutcome {
                status: RunStatus::Failed,
                rc: Some(2),
                ..ok_outcome()
            },
        )
        .await
        .expect("finish");
    let by_b = store
        .claim_notifications("b", now, until, 10)
        .await
        .expect("claim");
    assert_eq!(by_b.len(), 2, "{by_b:?}");
    assert!(
        by_b.iter()
            .all(|d| d.notification.run_id == Some(running.id) && d.status == "failed"),
        "what a holds is not claimed again"
    );
    // An owner takes back what it holds (a restarted replica keeps its name).
    assert_eq!(
        store
            .claim_notifications("b", now, until, 10)
            .await
            .expect("claim")
            .len(),
        2
    );
    let sent_one = due[0].notification.id;
    assert_conflict(
        store
            .record_notification(sent_one, "b", &NotifyOutcome::Sent)
            .await,
        "not held",
    );
    let sent = store
        .record_notification(sent_one, "a", &NotifyOutcome::Sent)
        .await
        .expect("sent");
    assert_eq!((sent.state, sent.attempts), (NotificationState::Sent, 1));
    assert_recent(sent.finished_at.expect("finished_at"), "finished_at");
    assert_conflict(
        store
            .record_notification(sent_one, "a", &NotifyOutcome::Sent)
            .await,
        "already sent",
    );
    assert_not_found(
        store
            .record_notification(sent_one + 1000, "a", &NotifyOutcome::Sent)
            .await,
        "notification",
    );

    // b took both of the failed run; they come back once b's claim has ended.
    let later = until + ChronoDuration::seconds(1);
    let retaken = store
        .claim_notifications("c", later, later + ChronoDuration::seconds(30), 1)
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 1, "limit");
    assert_eq!(retaken[0].status, "failed");
    let first = retaken[0].notification.id;

    let retry_at = later + ChronoDuration::seconds(60);
    let pending = store
        .record_notification(
            first,
            "c",
            &NotifyOutcome::Retry {
                at: retry_at,
                error: "http://r1 answered 503".into(),
            },
        )
        .await
        .expect("retry");
    assert_eq!(pending.state, NotificationState::Pending);
    assert_eq!(pending.attempts, 1);
    assert_eq!(
        pending.last_error.as_deref(),
        Some("http://r1 answered 503")
    );
    assert_eq!(pending.next_attempt_at, Some(micros(retry_at)));
    assert_eq!(pending.finished_at, None);
    let before = retry_at - ChronoDuration::seconds(1);
    assert!(
        store
            .claim_notifications("d", before, before + ChronoDuration::seconds(30), 10)
            .await
            .expect("claim")
            .iter()
            .all(|d| d.notification.id != first),
        "a retry waits for its time"
    );
    let again = store
        .claim_notifications("d", retry_at, retry_at + ChronoDuration::seconds(30), 10)
        .await
        .expect("claim");
    let ids: Vec<i64> = again.iter().map(|d| d.notification.id).collect();
    assert!(ids.contains(&first), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let failed = store
        .record_notification(
            first,
            "d",
            &NotifyOutcome::Failed {
                error: "gave up".into(),
            },
        )
        .await
        .expect("failed");
    assert_eq!(
        (failed.state, failed.attempts, failed.last_error.as_deref()),
        (NotificationState::Failed, 2, Some("gave up"))
    );
    let other = ids
        .iter()
        .copied()
        .find(|id| *id != first)
        .expect("the second");
    let skipped = store
        .record_notification(other, "d", &NotifyOutcome::Skipped)
        .await
        .expect("skipped");
    assert_eq!(
        (skipped.state, skipped.attempts),
        (NotificationState::Skipped, 0)
    );
    let far = retry_at + ChronoDuration::hours(1);
    assert!(
        store
            .claim_notifications("e", far, far, 10)
            .await
            .expect("claim")
            .is_empty(),
        "nothing pending is left"
    );

    let e = ended_execution(store, ExecutionStatus::Timeout).await;
    store
        .add_notifications(Subject::Execution(e), &[target("http://x/", &[])])
        .await
        .expect("add");
    let due = store
        .claim_notifications("e", far, far + ChronoDuration::seconds(30), 10)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].status, "timeout");
    assert_eq!(due[0].notification.execution_id, Some(e));
}

/// Owners claiming at once never share a notification.
pub async fn racing_notification_claims(store: &dyn Store) {
    let p = project(store, "notify").await;
    let targets: Vec<SealedNotify> = (0..12)
        .map(|i| target(&format!("http://h{i}/"), &[]))
        .collect();
    let run = store
        .create_run(&notifying_run(p.id, targets))
        .await
        .expect("run");
    store
        .request_cancel(run.id, CancelMode::Force)
        .await
        .expect("cancel");
    let now = Utc::now();
    let until = now + ChronoDuration::seconds(30);
    let claims = race(6, |i| {
        let owner = format!("owner-{i}");
        async move {
            store
                .claim_notifications(&owner, now, until, 3)
                .await
                .expect("claim")
        }
    })
    .await;
    let mut all: Vec<i64> = claims.iter().flatten().map(|d| d.notification.id).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a notification was claimed twice");
    assert_eq!(n, 12, "every one was claimed");
}
