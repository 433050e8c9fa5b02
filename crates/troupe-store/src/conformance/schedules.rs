//! Conformance cases: Schedules and their fires.

use super::*;
use troupe_core::flow::{MissedFires, NewSchedule, Schedule, ScheduleTarget};

fn new_schedule(name: &str, target: ScheduleTarget, next_fire_at: DateTime<Utc>) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: "*/5 * * * *".into(),
        timezone: "Europe/Paris".into(),
        target,
        missed: MissedFires::Once,
        next_fire_at,
    }
}

fn flow_target() -> ScheduleTarget {
    ScheduleTarget::Flow {
        flow: "upgrade".into(),
        inputs: json!({"env": "prod", "batch": 2})
            .as_object()
            .expect("object")
            .clone(),
    }
}

async fn schedule(store: &dyn Store, name: &str, next_fire_at: DateTime<Utc>) -> Schedule {
    store
        .create_schedule(&new_schedule(name, flow_target(), next_fire_at))
        .await
        .expect("create schedule")
}

/// A schedule keeps what it was created with (each kind of target); names are unique; a
/// deleted schedule is gone.
pub async fn schedules_round_trip(store: &dyn Store) {
    assert!(store.list_schedules().await.expect("list").is_empty());
    let nightly = store
        .create_schedule(&new_schedule("nightly", flow_target(), precise_time()))
        .await
        .expect("create");
    assert_eq!(nightly.name, "nightly");
    assert_eq!(nightly.cron, "*/5 * * * *");
    assert_eq!(nightly.timezone, "Europe/Paris");
    assert_eq!(nightly.target, flow_target());
    assert_eq!(nightly.missed, MissedFires::Once);
    assert_eq!(nightly.next_fire_at, micros(precise_time()));
    assert_eq!(
        (nightly.last_fire_at, nightly.last_result.clone()),
        (None, None)
    );
    assert_recent(nightly.created_at, "created_at");
    assert_eq!(store.get_schedule(nightly.id).await.expect("get"), nightly);

    let template = ScheduleTarget::Template {
        template: "backup".into(),
        options: json!({"limit": "db*"}).as_object().expect("object").clone(),
    };
    let playbook = ScheduleTarget::Playbook {
        project: "ops".into(),
        playbook: "plays/rotate.yml".into(),
        inventory: "prod".into(),
        options: serde_json::Map::new(),
    };
    let backup = store
        .create_schedule(&NewSchedule {
            missed: MissedFires::Skip,
            ..new_schedule("backup", template.clone(), at(60))
        })
        .await
        .expect("create");
    let rotate = store
        .create_schedule(&new_schedule("rotate", playbook.clone(), at(120)))
        .await
        .expect("create");
    assert!(backup.id > nightly.id && rotate.id > backup.id);
    assert_eq!(backup.target, template);
    assert_eq!(backup.missed, MissedFires::Skip);
    assert_eq!(rotate.target, playbook);

    assert_conflict(
        store
            .create_schedule(&new_schedule("nightly", flow_target(), at(0)))
            .await,
        "nightly",
    );
    assert_eq!(
        store.list_schedules().await.expect("list"),
        [backup.clone(), nightly.clone(), rotate.clone()],
        "by name"
    );

    store.delete_schedule(backup.id).await.expect("delete");
    assert_not_found(store.get_schedule(backup.id).await, "schedule");
    assert_not_found(store.delete_schedule(backup.id).await, "schedule");
    assert_eq!(
        store.list_schedules().await.expect("list"),
        [nightly.clone(), rotate]
    );
    // The name is free again.
    store
        .create_schedule(&new_schedule("backup", template, at(60)))
        .await
        .expect("name reused");
}

/// Due schedules are those whose next fire has come; claiming a fire moves the next one on,
/// once; its result is recorded and shown as the last one.
pub async fn due_schedules_and_fires(store: &dyn Store) {
    let s1 = schedule(store, "a", at(0)).await;
    let s2 = schedule(store, "b", at(-30)).await;
    let s3 = schedule(store, "c", at(60)).await;
    let due = |now| async move {
        store
            .due_schedules(now)
            .await
            .expect("due")
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>()
    };
    assert!(due(at(-31)).await.is_empty());
    assert_eq!(due(at(-1)).await, [s2.id]);
    assert_eq!(
        due(at(0)).await,
        [s2.id, s1.id],
        "earliest first, at or before now"
    );
    assert_eq!(due(at(60)).await, [s2.id, s1.id, s3.id]);

    // Times carry nanoseconds; the store keeps microseconds and still knows the fire.
    assert!(
        !store
            .claim_fire(s1.id, at(1), at(300))
            .await
            .expect("claim"),
        "not the planned fire"
    );
    assert!(
        store
            .claim_fire(s1.id, at(0), at(300))
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_fire(s1.id, at(0), at(300))
            .await
            .expect("claim"),
        "claimed once"
    );
    let fired = store.get_schedule(s1.id).await.expect("get");
    assert_eq!(fired.next_fire_at, micros(at(300)));
    assert_eq!(fired.last_fire_at, Some(micros(at(0))));
    assert_eq!(fired.last_result, None);
    assert_eq!(due(at(0)).await, [s2.id], "not due until its next fire");

    store
        .record_fire(s1.id, at(0), "execution:17")
        .await
        .expect("record");
    let recorded = store.get_schedule(s1.id).await.expect("get");
    assert_eq!(recorded.last_result.as_deref(), Some("execution:17"));
    assert_eq!(
        Schedule {
            last_result: None,
            ..recorded.clone()
        },
        fired
    );
    assert_not_found(store.record_fire(s1.id, at(300), "x").await, "fire");
    assert_not_found(store.record_fire(s2.id, at(0), "x").await, "fire");

    // The next fire starts a new last result; an older fire's late record leaves it alone.
    assert!(
        store
            .claim_fire(s1.id, at(300), at(600))
            .await
            .expect("claim")
    );
    let next = store.get_schedule(s1.id).await.expect("get");
    assert_eq!(next.last_fire_at, Some(micros(at(300))));
    assert_eq!(next.last_result, None);
    store
        .record_fire(s1.id, at(0), "run:3")
        .await
        .expect("late record");
    assert_eq!(store.get_schedule(s1.id).await.expect("get"), next);
    store
        .record_fire(s1.id, at(300), "failed: template \"x\" not found")
        .await
        .expect("record");
    assert_eq!(
        store
            .get_schedule(s1.id)
            .await
            .expect("get")
            .last_result
            .as_deref(),
        Some("failed: template \"x\" not found")
    );
    // A fire already recorded is not claimed again, even if the schedule went back to it.
    let back = schedule(store, "back", at(0)).await;
    assert!(
        store
            .claim_fire(back.id, at(0), at(0))
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_fire(back.id, at(0), at(5))
            .await
            .expect("claim"),
        "the fire at 0 is taken"
    );
    assert_eq!(
        store.get_schedule(back.id).await.expect("get").next_fire_at,
        micros(at(0)),
        "a refused claim moves nothing"
    );

    store.delete_schedule(s1.id).await.expect("delete");
    assert!(
        !store
            .claim_fire(s1.id, at(600), at(900))
            .await
            .expect("claim"),
        "a deleted schedule does not fire"
    );
    assert_not_found(store.record_fire(s1.id, at(300), "x").await, "fire");
}

/// Replicas racing for one fire: exactly one claims it, fire after fire.
pub async fn racing_fire_claims(store: &dyn Store) {
    let s = schedule(store, "every-second", at(0)).await;
    let id = s.id;
    for n in 0..5 {
        let got = race(8, |_| async move {
            store.claim_fire(id, at(n), at(n + 1)).await.expect("claim")
        })
        .await;
        assert_eq!(
            got.iter().filter(|won| **won).count(),
            1,
            "fire {n}: {got:?}"
        );
    }
    let after = store.get_schedule(s.id).await.expect("get");
    assert_eq!(after.next_fire_at, micros(at(5)));
    assert_eq!(after.last_fire_at, Some(micros(at(4))));
}
