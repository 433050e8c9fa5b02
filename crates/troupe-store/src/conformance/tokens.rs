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

/// A token keeps its project scope and expiry; revoking marks it (once), and the last live
/// unscoped admin token cannot be revoked.
pub async fn token_scopes_expiry_and_revocation(store: &dyn Store) {
    let admin = store
        .create_token("admin", "a1", TokenRole::Admin)
        .await
        .expect("admin");
    assert_eq!(admin.projects, None);
    assert_eq!(admin.expires_at, None);
    assert_eq!(admin.revoked_at, None);
    let expires = Utc::now() + ChronoDuration::days(30);
    let ops = store
        .insert_token(&NewTokenRecord {
            name: "ops".into(),
            hash: "b2".into(),
            role: TokenRole::Operator,
            projects: Some(vec![3, 7]),
            expires_at: Some(expires),
        })
        .await
        .expect("scoped");
    assert_eq!(ops.role, TokenRole::Operator);
    assert_eq!(ops.projects, Some(vec![3, 7]));
    let stored = ops.expires_at.expect("expiry kept");
    assert!(
        (stored - expires).num_milliseconds().abs() < 1,
        "{stored} vs {expires}"
    );
    assert!(ops.live_at(Utc::now()));
    assert!(!ops.live_at(expires + ChronoDuration::seconds(1)));
    // An admin token limited to a project, or one that expired, cannot manage tokens: they do
    // not count as another admin.
    let scoped_admin = store
        .insert_token(&NewTokenRecord {
            name: "scoped".into(),
            hash: "c3".into(),
            role: TokenRole::Admin,
            projects: Some(vec![1]),
            expires_at: None,
        })
        .await
        .expect("scoped admin");
    store
        .insert_token(&NewTokenRecord {
            name: "old".into(),
            hash: "d4".into(),
            role: TokenRole::Admin,
            projects: None,
            expires_at: Some(Utc::now() - ChronoDuration::seconds(5)),
        })
        .await
        .expect("expired admin");
    assert_conflict(store.revoke_token(admin.id, Utc::now()).await, "last admin");
    let revoked = store
        .revoke_token(ops.id, Utc::now())
        .await
        .expect("revoke operator");
    assert_eq!(revoked.id, ops.id);
    assert_recent(revoked.revoked_at.expect("revoked_at"), "revoked_at");
    assert!(!revoked.live_at(Utc::now()));
    assert_not_found(store.revoke_token(ops.id, Utc::now()).await, "token");
    assert_not_found(store.revoke_token(9999, Utc::now()).await, "token");
    store
        .revoke_token(scoped_admin.id, Utc::now())
        .await
        .expect("a scoped admin token is not the last admin");
    // With a second live admin token, the first may go; then the second is the last.
    let second = store
        .create_token("admin2", "e5", TokenRole::Admin)
        .await
        .expect("second admin");
    store
        .revoke_token(admin.id, Utc::now())
        .await
        .expect("revoke first admin");
    assert_conflict(
        store.revoke_token(second.id, Utc::now()).await,
        "last admin",
    );
    let list = store.list_tokens().await.expect("list");
    assert_eq!(list.len(), 5);
    let by_id = |id: i64| list.iter().find(|t| t.id == id).expect("listed");
    assert!(by_id(admin.id).revoked_at.is_some());
    assert!(by_id(second.id).revoked_at.is_none());
    assert_eq!(by_id(ops.id).projects, Some(vec![3, 7]));
}
