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
