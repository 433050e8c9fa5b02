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

/// Measures the event append rate (`cargo test --release -p troupe-sqlite -- --ignored`).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_event_append_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("rate.db"))
        .await
        .expect("open");
    let rate = troupe_store::conformance::event_append_rate(&store, 200, 500).await;
    eprintln!("sqlite: {rate:.0} events/s (200 batches of 500)");
    store.close().await;
}
