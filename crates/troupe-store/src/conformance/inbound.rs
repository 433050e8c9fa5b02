//! Conformance cases: Inbound event records (gates, concurrency, duplicates, pruning) and the rules document.

use super::*;
use troupe_core::flow::{ExecutionFilter, ExecutionStatus, NewExecution};

const ALL: Page = Page {
    before: None,
    limit: 1000,
};

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
        start: run.map(|r| Start::Run(Box::new(r))),
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
    admitted(store, new, None).await
}

/// Ingests `new` with `admission`, which must be recorded (not a duplicate).
async fn admitted(
    store: &dyn Store,
    new: &NewEventRecord,
    admission: Option<crate::Admission<'_>>,
) -> (EventRecord, Vec<Run>) {
    match store.ingest_event(new, admission).await.expect("ingest") {
        Ingested::Recorded { record, runs, .. } => (record, runs),
        Ingested::Duplicate(earlier) => {
            panic!("expected a new record, got a duplicate of {earlier:?}")
        }
    }
}

/// Ingests `new`, which must be a duplicate; returns the earlier record.
async fn duplicate(store: &dyn Store, new: &NewEventRecord) -> EventRecord {
    match store.ingest_event(new, None).await.expect("ingest") {
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

async fn record_ids(store: &dyn Store, filter: EventRecordFilter, page: Page) -> Vec<i64> {
    store
        .list_event_records(&filter, page)
        .await
        .expect("list records")
        .iter()
        .map(|r| r.id)
        .collect()
}

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
        async move { store.ingest_event(&new, None).await.expect("ingest") }
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

/// A proposal to start a flow's execution passes the same gates as a run, in the same
/// transaction: the execution is stored queued and named in the rule's outcome, and closes the
/// gate; a later event of the same gate key is held back; a flow version that is gone fails
/// that rule only. The rule's concurrency policy (over runs) does not apply to it.
pub async fn inbound_flow_proposals_start_executions(store: &dyn Store) {
    let flow = store
        .put_flow("deploy", "name: deploy\nsteps: []\n")
        .await
        .expect("put flow");
    let new_execution = |started_by: &str| NewExecution {
        flow: flow.name.clone(),
        version: flow.version,
        inputs: json!({"host": "web1"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        sealed_secrets: None,
        concurrency_key: None,
        parent: None,
        started_by: started_by.into(),
        notify: Vec::new(),
    };
    let gated = |start: Result<Start, String>| Proposal {
        rule: "deploy".into(),
        gates: vec![gate(GateKind::Dedupe, "web1", 60)],
        // Skip, with an active run of the key: would hold a run back, not an execution.
        concurrency: Some(Concurrency {
            key: "deploy\u{1f}deploy.web".into(),
            policy: ConcurrencyPolicy::Skip,
        }),
        start,
    };
    let p = project(store, "p").await;
    let busy = proposing(
        inbound("hooks", "deploy.web", at(0)),
        vec![Proposal {
            rule: "deploy".into(),
            gates: Vec::new(),
            concurrency: Some(Concurrency {
                key: "deploy\u{1f}deploy.web".into(),
                policy: ConcurrencyPolicy::Queue,
            }),
            start: Ok(Start::Run(Box::new(new_run(p.id)))),
        }],
    );
    let (_, busy_runs) = recorded(store, &busy).await;
    assert_eq!(busy_runs.len(), 1, "an active run of the key");

    let first = proposing(
        inbound("hooks", "deploy.web", at(1)),
        vec![gated(Ok(Start::Flow(new_execution("rule:deploy"))))],
    );
    let Ingested::Recorded {
        record,
        runs,
        executions,
    } = store.ingest_event(&first, None).await.expect("ingest")
    else {
        panic!("expected a new record");
    };
    assert!(runs.is_empty());
    assert_eq!(executions.len(), 1);
    let execution = &executions[0];
    assert_eq!(execution.status, ExecutionStatus::Queued);
    assert_eq!(execution.started_by, "rule:deploy");
    assert_eq!(execution.inputs, new_execution("x").inputs);
    assert_eq!(record.status, EventStatus::Accepted);
    assert_eq!(
        results(&record),
        vec![RuleResult::StartedFlow {
            execution_id: execution.id
        }]
    );
    assert!(record.run_ids.is_empty(), "no run was started");
    assert_eq!(
        store.get_execution(execution.id).await.expect("stored"),
        *execution
    );
    assert_eq!(
        store.get_event_record(record.id).await.expect("get"),
        record
    );

    // The same dedupe key within the window: held back, nothing stored.
    let second = proposing(
        inbound("hooks", "deploy.web", at(2)),
        vec![gated(Ok(Start::Flow(new_execution("rule:deploy"))))],
    );
    let (again, _) = recorded(store, &second).await;
    assert_eq!(again.status, EventStatus::Skipped);
    assert_eq!(
        results(&again),
        vec![RuleResult::Gated {
            gate: GateKind::Dedupe,
            key: "web1".into(),
            by_event: record.id,
        }]
    );

    // A version that is not stored fails this rule only, and closes no gate.
    let mut missing = new_execution("rule:deploy");
    missing.version = flow.version + 7;
    let mut other_key = gated(Ok(Start::Flow(missing)));
    other_key.gates = vec![gate(GateKind::Dedupe, "web2", 60)];
    let (failed, _) = recorded(
        store,
        &proposing(
            inbound("hooks", "deploy.web", at(3)),
            vec![other_key.clone()],
        ),
    )
    .await;
    assert_eq!(failed.status, EventStatus::Failed);
    assert!(
        matches!(&results(&failed)[..], [RuleResult::Failed { error }] if error.contains("deploy")),
        "{failed:?}"
    );
    other_key.start = Ok(Start::Flow(new_execution("rule:deploy")));
    let (started_now, _) = recorded(
        store,
        &proposing(inbound("hooks", "deploy.web", at(4)), vec![other_key]),
    )
    .await;
    assert_eq!(started_now.status, EventStatus::Accepted, "{started_now:?}");

    let all = store
        .list_executions(&ExecutionFilter::default(), ALL)
        .await
        .expect("list executions");
    assert_eq!(all.len(), 2, "one per started outcome");
}

/// Admission at create through an ingest: the runs an event starts are stored already claimed
/// in proposal order while the admission's slots last (a failed proposal takes none), the
/// rest queued; with an older run waiting that the claimant may take, none is claimed.
pub async fn inbound_runs_are_admitted_while_slots_last(store: &dyn Store) {
    use crate::{Admission, Claimant};
    let p = project(store, "p").await;
    let lease = Duration::from_secs(60);
    let admission = |slots| Admission {
        claimant: Claimant::embedded("w1"),
        lease,
        slots,
    };
    let new = proposing(
        inbound("hooks", "deploy.web", at(0)),
        vec![
            proposal("a", Ok(new_run(p.id))),
            proposal("broken", Err("no such playbook".into())),
            proposal("b", Ok(new_run(p.id))),
            proposal("c", Ok(new_run(p.id))),
        ],
    );
    let (record, runs) = admitted(store, &new, Some(admission(2))).await;
    let statuses: Vec<RunStatus> = runs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Running, RunStatus::Running, RunStatus::Queued]
    );
    assert_eq!(record.run_ids, ids(&runs));
    for run in &runs[..2] {
        assert_eq!(run.worker_id.as_deref(), Some("w1"));
        assert_eq!(run.event_id, Some(record.id));
        assert_eq!(&store.get_run(run.id).await.expect("get"), run);
        store
            .mark_launched(run.id, "w1", Utc::now(), None)
            .await
            .expect("the admitting worker holds it");
    }
    // The third waits: a later event's run queues behind it, admission or not.
    let later = proposing(
        inbound("hooks", "deploy.web", at(1)),
        vec![proposal("a", Ok(new_run(p.id)))],
    );
    let (_, behind) = admitted(store, &later, Some(admission(1))).await;
    assert_eq!(behind.len(), 1);
    assert_eq!(behind[0].status, RunStatus::Queued);
    let claimed = store.claim_runs("w2", lease, 10).await.expect("claim");
    assert_eq!(
        ids(&claimed),
        vec![runs[2].id, behind[0].id],
        "oldest first"
    );
}
