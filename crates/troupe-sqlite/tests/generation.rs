//! What the SQLite store alone promises: a runs generation (the runs list answers unchanged
//! pages from it), and one process at a time on a database file.

use troupe_sqlite::SqliteStore;
use troupe_store::{StoreBackend, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runs_generation_moves_after_every_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("troupe.db"))
        .await
        .expect("open store");
    troupe_store::conformance::runs_generation_moves_after_every_change(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_second_store_cannot_open_the_file_until_the_first_lets_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("troupe.db");
    let first = SqliteStore::open(&path).await.expect("open store");
    assert!(first.ping().await.is_ok());
    match SqliteStore::open(&path).await {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains("in use by another troupe process"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!("a second open should be refused, got {other:?}"),
    }
    first.close().await;
    drop(first);
    let again = SqliteStore::open(&path)
        .await
        .expect("open after the first closed");
    again.ping().await.expect("ping");
    again.close().await;
}
