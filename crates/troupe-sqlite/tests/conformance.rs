//! The store conformance suite against SQLite: a fresh database file per case.

use troupe_sqlite::SqliteStore;
use troupe_store::conformance::CaseFn;

async fn run(name: &str, case: CaseFn) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join(format!("{name}.db")))
        .await
        .expect("open store");
    case(&store).await;
    store.close().await;
}

troupe_store::conformance_tests!(run);

/// A schedule keeps its latest 100 fires, however often it fires.
#[tokio::test]
async fn old_fires_are_pruned() {
    use chrono::{Duration, TimeZone, Utc};
    use sqlx::{ConnectOptions, Connection};
    use troupe_core::flow::{MissedFires, NewSchedule, ScheduleTarget};
    use troupe_store::prelude::*;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fires.db");
    let store = SqliteStore::open(&path).await.expect("open store");
    let t0 = Utc.timestamp_opt(1_767_225_600, 0).single().expect("time");
    let at = |n: i64| t0 + Duration::seconds(n);
    let s = store
        .create_schedule(&NewSchedule {
            name: "every-second".into(),
            cron: "* * * * * *".into(),
            timezone: "UTC".into(),
            target: ScheduleTarget::Flow {
                flow: "f".into(),
                inputs: Default::default(),
            },
            missed: MissedFires::Skip,
            next_fire_at: at(0),
        })
        .await
        .expect("schedule");
    for n in 0..130 {
        assert!(
            store
                .claim_fire(s.id, at(n), at(n + 1))
                .await
                .expect("claim")
        );
    }
    store.close().await;
    drop(store);
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .connect()
        .await
        .expect("connect");
    let (count, oldest): (i64, i64) =
        sqlx::query_as("SELECT count(*), min(fire_at) FROM schedule_fires")
            .fetch_one(&mut conn)
            .await
            .expect("count fires");
    assert_eq!((count, oldest), (100, at(30).timestamp_micros()));
    conn.close().await.ok();
}
