//! The store conformance suite against PostgreSQL, when `TROUPE_TEST_DATABASE_URL` names a
//! server (e.g. `postgres://postgres@127.0.0.1:5432/test`): each case gets a database of its
//! own, dropped afterwards. Without the variable every case is skipped (and passes).

use futures_util::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection};
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

async fn admin(options: &PgConnectOptions) -> PgConnection {
    options.connect().await.expect("connect to the test server")
}

async fn run(name: &str, case: CaseFn) {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("skipped {name}: {URL_VAR} is not set");
        return;
    };
    let base: PgConnectOptions = url.parse().expect("valid TROUPE_TEST_DATABASE_URL");
    let db = database_name(name);
    let mut conn = admin(&base).await;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let store = PgStore::connect_with(base.clone().database(&db))
        .await
        .expect("connect store");
    let outcome = AssertUnwindSafe(case(&store)).catch_unwind().await;
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

troupe_store::conformance_tests!(run);

/// New runs are announced to listeners.
#[tokio::test]
async fn new_runs_are_notified() {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("skipped new_runs_are_notified: {URL_VAR} is not set");
        return;
    };
    let base: PgConnectOptions = url.parse().expect("valid URL");
    let db = database_name("notify");
    let mut conn = admin(&base).await;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .expect("create");
    let store = PgStore::connect_with(base.clone().database(&db))
        .await
        .expect("connect");
    let outcome = AssertUnwindSafe(async {
        use troupe_store::Store;
        let mut listener = store.listen_for_work().await.expect("listen");
        let p = store
            .create_project(&troupe_core::project::NewProject {
                name: "p".into(),
                source: troupe_core::project::ProjectSource::Dir {
                    path: "/srv/p".into(),
                },
            })
            .await
            .expect("project");
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
                job_unit: None,
                relaunch_of: None,
                template_id: None,
                slice_of: None,
            })
            .await
            .expect("run");
        let id = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
            .await
            .expect("notified in time")
            .expect("notification");
        assert_eq!(id, run.id);
    })
    .catch_unwind()
    .await;
    store.close().await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
