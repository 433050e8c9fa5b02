//! Conformance cases: bulk changes of sealed texts.

use super::*;
use crate::{Resealed, SealedColumn};
use troupe_core::credential::{CredentialKind, SealedCredential};

/// Sealed texts are listed by column (only rows that may hold some), in id order and pages,
/// and replaced in a batch only where they are still what was read.
pub async fn sealed_texts_listed_and_replaced(store: &dyn Store) {
    let git = |name: &str| SealedCredential {
        name: name.into(),
        kind: CredentialKind::Git,
        username: None,
        vault_id: None,
        sealed: format!("sealed-{name}"),
    };
    let a = store.create_credential(&git("a")).await.expect("create");
    let b = store.create_credential(&git("b")).await.expect("create");
    let texts = store
        .sealed_texts(SealedColumn::Credentials, 0, 10)
        .await
        .expect("list");
    let shown: Vec<(i64, &str)> = texts.iter().map(|t| (t.id, t.text.as_str())).collect();
    assert_eq!(shown, vec![(a.id, "sealed-a"), (b.id, "sealed-b")]);
    let page = store
        .sealed_texts(SealedColumn::Credentials, a.id, 1)
        .await
        .expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, b.id);

    let replaced = store
        .replace_sealed(
            SealedColumn::Credentials,
            &[
                Resealed {
                    id: a.id,
                    old: "sealed-a".into(),
                    new: "resealed-a".into(),
                },
                // Changed since it was read: left alone.
                Resealed {
                    id: b.id,
                    old: "stale".into(),
                    new: "resealed-b".into(),
                },
            ],
        )
        .await
        .expect("replace");
    assert_eq!(replaced, 1);
    let a_now = store.sealed_credential("a").await.expect("get").expect("a");
    assert_eq!(a_now.sealed, "resealed-a");
    let b_now = store.sealed_credential("b").await.expect("get").expect("b");
    assert_eq!(b_now.sealed, "sealed-b");

    // Runs: only those whose options hold a sealed extra var; JSON kept as JSON.
    let p = project(store, "sealed").await;
    store.create_run(&new_run(p.id)).await.expect("plain run");
    let mut secret = new_run(p.id);
    secret.options.extra_vars.insert(
        "db_password".into(),
        json!(format!("{}abc", troupe_core::redact::SEALED_PREFIX)),
    );
    let run = store.create_run(&secret).await.expect("secret run");
    let texts = store
        .sealed_texts(SealedColumn::RunOptions, 0, 10)
        .await
        .expect("list");
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0].id, run.id);
    let new_text = texts[0].text.replace(
        &format!("{}abc", troupe_core::redact::SEALED_PREFIX),
        &format!("{}xyz", troupe_core::redact::SEALED_PREFIX),
    );
    let replaced = store
        .replace_sealed(
            SealedColumn::RunOptions,
            &[Resealed {
                id: run.id,
                old: texts[0].text.clone(),
                new: new_text,
            }],
        )
        .await
        .expect("replace");
    assert_eq!(replaced, 1);
    let run = store.get_run(run.id).await.expect("get run");
    assert_eq!(
        run.options.extra_vars["db_password"],
        json!(format!("{}xyz", troupe_core::redact::SEALED_PREFIX))
    );
    for column in [
        SealedColumn::ExecutionSecrets,
        SealedColumn::TemplateNotify,
        SealedColumn::NotificationTargets,
    ] {
        assert!(
            store
                .sealed_texts(column, 0, 10)
                .await
                .expect("list")
                .is_empty(),
            "{column}"
        );
    }
}

/// A git URL's secret moves into a credential with the project's new source in one step,
/// once: a second move of the same project finds its source changed and stores nothing.
pub async fn git_secrets_move_once(store: &dyn Store) {
    let old = ProjectSource::Git {
        url: "https://bob:tok@git.example.com/r.git".into(),
        git_ref: None,
        credential: None,
    };
    let project = store
        .create_project(&NewProject {
            name: "legacy".into(),
            source: old.clone(),
        })
        .await
        .expect("create");
    let new = ProjectSource::Git {
        url: "https://bob@git.example.com/r.git".into(),
        git_ref: None,
        credential: Some("git-legacy".into()),
    };
    let credential = SealedCredential {
        name: "git-legacy".into(),
        kind: CredentialKind::Git,
        username: None,
        vault_id: None,
        sealed: "sealed-token".into(),
    };
    let moved = store
        .move_git_secret(project.id, &old, &new, &credential)
        .await
        .expect("move")
        .expect("moved");
    assert_eq!(moved.name, "git-legacy");
    assert_eq!(moved.kind, CredentialKind::Git);
    assert_eq!(
        store.get_project(project.id).await.expect("get").source,
        new
    );
    let again = SealedCredential {
        name: "git-legacy-2".into(),
        ..credential.clone()
    };
    assert_eq!(
        store
            .move_git_secret(project.id, &old, &new, &again)
            .await
            .expect("move"),
        None
    );
    assert_eq!(
        store.find_credential("git-legacy-2").await.expect("find"),
        None
    );
    // A taken name: Conflict, and the project is unchanged.
    let other = store
        .create_project(&NewProject {
            name: "other".into(),
            source: old.clone(),
        })
        .await
        .expect("create");
    assert_conflict(
        store
            .move_git_secret(other.id, &old, &new, &credential)
            .await,
        "credential",
    );
    assert_eq!(store.get_project(other.id).await.expect("get").source, old);
    assert!(matches!(
        store.move_git_secret(9999, &old, &new, &again).await,
        Err(StoreError::NotFound { .. })
    ));
}
