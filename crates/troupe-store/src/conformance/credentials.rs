//! Conformance cases: credentials.

use super::*;
use crate::StoredCredential;
use troupe_core::credential::{CredentialKind, SealedCredential};

fn sealed(name: &str, kind: CredentialKind, vault_id: Option<&str>) -> SealedCredential {
    SealedCredential {
        name: name.into(),
        kind,
        username: (kind == CredentialKind::SshKey).then(|| "deploy".to_owned()),
        vault_id: vault_id.map(str::to_owned),
        sealed: format!("sealed-{name}"),
    }
}

/// Credentials are stored with their sealed secret, found by id and name, listed by name
/// without it, their names unique, and deleted.
pub async fn credentials_round_trip(store: &dyn Store) {
    let key = store
        .create_credential(&sealed("web-key", CredentialKind::SshKey, None))
        .await
        .expect("create");
    let vault = store
        .create_credential(&sealed("prod-vault", CredentialKind::Vault, Some("prod")))
        .await
        .expect("create");
    assert!(vault.id > key.id);
    assert_eq!(key.name, "web-key");
    assert_eq!(key.kind, CredentialKind::SshKey);
    assert_eq!(key.username.as_deref(), Some("deploy"));
    assert_eq!(key.vault_id, None);
    assert_eq!(vault.vault_id.as_deref(), Some("prod"));
    assert_recent(key.created_at, "created_at");
    assert_conflict(
        store
            .create_credential(&sealed("web-key", CredentialKind::Become, None))
            .await,
        "credential",
    );

    assert_eq!(store.get_credential(key.id).await.expect("get"), key);
    assert_eq!(
        store.find_credential("prod-vault").await.expect("find"),
        Some(vault.clone())
    );
    assert_eq!(store.find_credential("nope").await.expect("find"), None);
    assert_eq!(
        store.list_credentials().await.expect("list"),
        vec![vault.clone(), key.clone()],
        "by name"
    );
    assert_eq!(
        store.sealed_credential("web-key").await.expect("sealed"),
        Some(StoredCredential {
            credential: key.clone(),
            sealed: "sealed-web-key".into(),
        })
    );
    assert_eq!(store.sealed_credential("nope").await.expect("sealed"), None);

    store.delete_credential(key.id).await.expect("delete");
    assert!(matches!(
        store.get_credential(key.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_credential(key.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.sealed_credential("web-key").await.expect("sealed"),
        None
    );
    assert_eq!(store.list_credentials().await.expect("list"), vec![vault]);
    // The name is free again.
    store
        .create_credential(&sealed("web-key", CredentialKind::SshKey, None))
        .await
        .expect("created again");
}
