//! Conformance cases: API tokens.

use super::*;

/// Tokens are stored by hash (unique); names may repeat.
pub async fn tokens_round_trip(store: &dyn Store) {
    let a = store
        .create_token("admin", "aa11", TokenRole::Admin)
        .await
        .expect("create");
    let b = store
        .create_token("admin", "bb22", TokenRole::Admin)
        .await
        .expect("same name, other hash");
    assert!(b.id > a.id);
    assert_eq!(a.name, "admin");
    assert_eq!(a.hash, "aa11");
    assert_recent(a.created_at, "created_at");
    assert_conflict(
        store.create_token("ci", "aa11", TokenRole::Admin).await,
        "token",
    );
    let list = store.list_tokens().await.expect("list");
    assert_eq!(list, vec![a, b]);
}
