//! The store conformance suite against PostgreSQL, when `TROUPE_TEST_DATABASE_URL` names a
//! server (e.g. `postgres://postgres@127.0.0.1:5432/test`): each case gets a database of its
//! own, dropped afterwards. Without the variable every case is skipped (and passes).

use futures_util::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use troupe_postgres::PgStore;
use troupe_store::conformance::CaseFn;

const URL_VAR: &str = "TROUPE_TEST_DATABASE_URL";

fn database_name(case: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "troupe_t_{}_{}_{nanos}_{}",
        &case[..case.len().min(20)],
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `body` with a store on a database of its own (dropped afterwards, whatever `body` did)
/// and that database's connect options; skipped without `TROUPE_TEST_DATABASE_URL`.
async fn with_database<F>(name: &str, body: F)
where
    F: AsyncFnOnce(&PgStore, PgConnectOptions),
{
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("skipped {name}: {URL_VAR} is not set");
        return;
    };
    let base: PgConnectOptions = url.parse().expect("valid TROUPE_TEST_DATABASE_URL");
    let db = database_name(name);
    let mut conn = base.connect().await.expect("connect to the test server");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let options = base.clone().database(&db);
    let store = PgStore::connect_with(options.clone())
        .await
        .expect("connect store");
    let outcome = AssertUnwindSafe(body(&store, options)).catch_unwind().await;
    store.close().await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop test database");
    conn.close().await.ok();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(name: &str, case: CaseFn) {
    with_database(name, async |store, _| case(store).await).await;
}

troupe_store::conformance_tests!(run);

fn new_project() -> troupe_core::project::NewProject {
    troupe_core::project::NewProject {
        name: "p".into(),
        source: troupe_core::project::ProjectSource::Dir {
            path: "/srv/p".into(),
        },
    }
}

/// New runs are announced to listeners.
#[tokio::test]
async fn new_runs_are_notified() {
    with_database("notify", async |store, _| {
        use troupe_store::prelude::*;
        let mut listener = store.listen_for_work().await.expect("listen");
        let p = store.create_project(&new_project()).await.expect("project");
        let run = store
            .create_run(&troupe_core::run::NewRun {
                project_id: p.id,
                playbook: troupe_core::project::PlaybookRef::parse("site.yml").expect("playbook"),
                inventory_id: None,
                inventory: troupe_core::inventory::InventoryContent {
                    format: troupe_core::inventory::InventoryFormat::Ini,
                    hosts: "a\n".into(),
                    vars: None,
                },
                options: Default::default(),
                labels: Default::default(),
                tag: None,
                origin: troupe_core::run::Origin::Api,
                notify: Vec::new(),
            })
            .await
            .expect("run");
        let id = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
            .await
            .expect("notified in time")
            .expect("notification");
        assert_eq!(id, run.id);
    })
    .await;
}

/// No foreign key checks events and output row by row: a batch for a run that does not exist
/// is refused as a whole, and none of its rows stays behind.
#[tokio::test]
async fn appends_to_a_missing_run_leave_no_rows() {
    with_database("orphans", async |store, options| {
        use troupe_core::event::{Event, EventData};
        use troupe_store::prelude::*;
        use troupe_store::{OutputChunk, StoreError};
        let event = Event {
            counter: 1,
            uuid: "u1".into(),
            event: "verbose".into(),
            parent_uuid: None,
            created: chrono::Utc::now(),
            stdout: "x\n".into(),
            start_line: 0,
            end_line: 1,
            event_data: EventData::from_json("{}".into()).expect("event data"),
        };
        let chunk = OutputChunk {
            seq: 1,
            stream: troupe_store::Stream::Stdout,
            text: "x\n".into(),
        };
        let events = std::slice::from_ref(&event);
        let chunks = std::slice::from_ref(&chunk);
        for (evs, out) in [(events, chunks), (events, &[][..]), (&[][..], chunks)] {
            let got = store.append_batch(4242, evs, out).await;
            assert!(
                matches!(got, Err(StoreError::NotFound { .. })),
                "append to a missing run: {got:?}"
            );
        }
        let mut conn = options.connect().await.expect("connect");
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM run_output)",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count rows");
        assert_eq!(left, 0, "rows of a missing run were kept");
        conn.close().await.ok();
    })
    .await;
}

/// A schedule keeps its latest 100 fires, however often it fires.
#[tokio::test]
async fn old_fires_are_pruned() {
    with_database("fires", async |store, options| {
        use chrono::{Duration, TimeZone, Utc};
        use troupe_core::flow::{MissedFires, NewSchedule, ScheduleTarget};
        use troupe_store::prelude::*;
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
        let mut conn = options.connect().await.expect("connect");
        let (count, oldest): (i64, chrono::DateTime<Utc>) =
            sqlx::query_as("SELECT count(*), min(fire_at) FROM schedule_fires")
                .fetch_one(&mut conn)
                .await
                .expect("count fires");
        assert_eq!((count, oldest), (100, at(30)));
        conn.close().await.ok();
    })
    .await;
}
