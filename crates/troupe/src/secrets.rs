//! What changes secrets sealed in the store in bulk: moving a git URL's password into a
//! credential (on every start), and `troupe secrets rotate-key` (offline: sealing everything
//! again with a new key, then putting the new key in place).

use crate::config::Config;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use troupe_core::credential::{CredentialSecret, NewCredential};
use troupe_core::project::ProjectSource;
use troupe_core::redact::SEALED_PREFIX;
use troupe_core::secret::{SealError, Sealer, SecretKey};
use troupe_store::{Resealed, SealedColumn, Store, StoreError};

/// Rows read and written back per transaction while rotating.
const BATCH: i64 = 200;

/// Moves the password or token of every git project URL (`https://user:TOKEN@host/...`, as
/// projects made before credentials kept them) into a new sealed `git` credential named after
/// the project, and points the project at it with the URL left without it. Idempotent: a
/// project without a password in its URL is left alone. The log names projects and
/// credentials, never a value.
pub async fn move_git_secrets(
    store: &dyn Store,
    sealer: &dyn Sealer,
    git: &troupe_worker::git::ProjectSyncer,
) -> anyhow::Result<()> {
    for project in store.list_projects().await? {
        let ProjectSource::Git {
            url,
            git_ref,
            credential,
        } = &project.source
        else {
            continue;
        };
        let Some(split) = troupe_core::url::split_password(url) else {
            continue;
        };
        if let Some(name) = credential {
            // The API refuses such a URL; only a hand-made row can hold both.
            tracing::warn!(project = %project.name, credential = %name, "the project's git URL holds a password besides its credential; remove it from the URL");
            continue;
        }
        let secret = CredentialSecret::Git {
            token: Some(split.password.clone()),
            private_key: None,
        };
        let moved = move_secret(store, sealer, &project, &split.url, git_ref, secret).await?;
        if let Some(name) = moved {
            tracing::info!(project = %project.name, credential = %name, "moved the password of the project's git URL into a credential");
            if let Err(e) = git.set_remote(project.id, &split.url).await {
                tracing::warn!(project = %project.name, error = %e, "could not update the clone's remote URL (the next sync does)");
            }
        }
    }
    Ok(())
}

/// Stores `secret` as a credential under the first free name `git-<project>[-N]` and gives
/// the project the source `url`, `git_ref` naming it. Answers the credential's name, `None`
/// when another replica moved it first.
async fn move_secret(
    store: &dyn Store,
    sealer: &dyn Sealer,
    project: &troupe_core::project::Project,
    url: &str,
    git_ref: &Option<String>,
    secret: CredentialSecret,
) -> anyhow::Result<Option<String>> {
    // Names are at most 100 characters.
    let base: String = format!("git-{}", project.name).chars().take(90).collect();
    for n in 1..=100 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if store.find_credential(&name).await?.is_some() {
            continue;
        }
        let new = NewCredential {
            name: name.clone(),
            secret: secret.clone(),
        };
        let sealed = troupe_core::credential::seal(sealer, &new)
            .context("could not seal the git credential")?;
        let source = ProjectSource::Git {
            url: url.to_owned(),
            git_ref: git_ref.clone(),
            credential: Some(name.clone()),
        };
        match store
            .move_git_secret(project.id, &project.source, &source, &sealed)
            .await
        {
            Ok(Some(_)) => return Ok(Some(name)),
            Ok(None) => return Ok(None),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "no free credential name for the git URL of project {:?}",
        project.name
    )
}

/// Why a text could not be sealed again.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// It opens with neither key.
    #[error("a sealed text opens with neither the old nor the new key: {0}")]
    Open(SealError),
    /// Sealing with the new key failed.
    #[error("could not seal with the new key: {0}")]
    Seal(SealError),
    /// A JSON column holds something else than JSON.
    #[error("not JSON: {0}")]
    Json(String),
}

/// One sealed text sealed with `new`: opened with `old` (or left as it is when `new` opens it
/// already: a rotation interrupted and run again).
fn reseal_one(sealed: &str, old: &SecretKey, new: &SecretKey) -> Result<String, ResealError> {
    match old.open(sealed) {
        Ok(plain) => new.seal(&plain).map_err(ResealError::Seal),
        Err(e) => match new.open(sealed) {
            Ok(_) => Ok(sealed.to_owned()),
            Err(_) => Err(ResealError::Open(e)),
        },
    }
}

/// The text of `column` with every sealed text in it sealed with `new`; `None` when nothing
/// changes.
pub fn reseal(
    column: SealedColumn,
    text: &str,
    old: &SecretKey,
    new: &SecretKey,
) -> Result<Option<String>, ResealError> {
    let out = match column {
        SealedColumn::Credentials | SealedColumn::ExecutionSecrets => reseal_one(text, old, new)?,
        SealedColumn::TemplateNotify | SealedColumn::NotificationTargets => {
            let mut value: Value =
                serde_json::from_str(text).map_err(|e| ResealError::Json(e.to_string()))?;
            let targets: Vec<&mut Value> = match &mut value {
                Value::Array(items) => items.iter_mut().collect(),
                one => vec![one],
            };
            for target in targets {
                if let Some(Value::String(sealed)) = target.get_mut("sealed")
                    && !sealed.is_empty()
                {
                    *sealed = reseal_one(sealed, old, new)?;
                }
            }
            serde_json::to_string(&value).map_err(|e| ResealError::Json(e.to_string()))?
        }
        SealedColumn::RunOptions | SealedColumn::TemplateDefaults => {
            let mut value: Value =
                serde_json::from_str(text).map_err(|e| ResealError::Json(e.to_string()))?;
            reseal_prefixed(&mut value, old, new)?;
            serde_json::to_string(&value).map_err(|e| ResealError::Json(e.to_string()))?
        }
    };
    Ok((out != text).then_some(out))
}

/// Every `troupe-sealed:v1:` string in `value`, at any depth, sealed with `new`.
fn reseal_prefixed(value: &mut Value, old: &SecretKey, new: &SecretKey) -> Result<(), ResealError> {
    match value {
        Value::String(s) => {
            if let Some(sealed) = s.strip_prefix(SEALED_PREFIX) {
                *s = format!("{SEALED_PREFIX}{}", reseal_one(sealed, old, new)?);
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| reseal_prefixed(v, old, new)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|v| reseal_prefixed(v, old, new)),
        _ => Ok(()),
    }
}

/// Where the key a rotation makes waits until everything is sealed with it.
fn staged_key_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// `troupe secrets rotate-key`: with the server (every replica) stopped, makes a new key,
/// seals every sealed text of the store again with it (one transaction per batch of rows),
/// then puts it in place of the old, which is kept beside it as `<key
/// file>.old-<timestamp>` (0600). Interrupted, it may be run again: the new key waits in
/// `<key file>.new` and texts it already opens are left as they are.
pub async fn rotate_key(cfg: &Config) -> anyhow::Result<i32> {
    let key_file = cfg.key_file();
    anyhow::ensure!(
        key_file.exists(),
        "there is no key file {} to rotate (the server makes one on its first start)",
        key_file.display()
    );
    let old = troupe_flow::load_or_create_key(&key_file)
        .with_context(|| format!("could not read the key {}", key_file.display()))?;
    // Made (0600) unless an interrupted rotation left it.
    let staged = staged_key_path(&key_file);
    let new = troupe_flow::load_or_create_key(&staged)
        .with_context(|| format!("could not write the new key {}", staged.display()))?;
    let store = crate::serve::open_store(cfg).await.map_err(|e| {
        if crate::in_use(&e) {
            e.context("stop the server first: the key is rotated with the store closed")
        } else {
            e
        }
    })?;
    for column in SealedColumn::ALL {
        let mut after = 0;
        let mut resealed = 0u64;
        loop {
            let rows = store.sealed_texts(column, after, BATCH).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            let mut batch = Vec::new();
            for row in &rows {
                let new_text = reseal(column, &row.text, &old, &new)
                    .with_context(|| format!("{column} of row {}", row.id))?;
                if let Some(new_text) = new_text {
                    batch.push(Resealed {
                        id: row.id,
                        old: row.text.clone(),
                        new: new_text,
                    });
                }
            }
            if !batch.is_empty() {
                resealed += store.replace_sealed(column, &batch).await?;
            }
        }
        println!("{column}: {resealed} sealed again");
    }
    drop(store);
    // The old key stays beside the new one, in case a backup of the store needs it.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut kept = key_file.as_os_str().to_owned();
    kept.push(format!(".old-{stamp}"));
    let kept = PathBuf::from(kept);
    std::fs::hard_link(&key_file, &kept)
        .with_context(|| format!("could not keep the old key as {}", kept.display()))?;
    std::fs::rename(&staged, &key_file)
        .with_context(|| format!("could not put the new key in {}", key_file.display()))?;
    println!(
        "new key in {}; the old one kept as {}. Give every replica the new key file before starting it.",
        key_file.display(),
        kept.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_form_of_sealed_text_is_sealed_again() {
        let (old, new) = (key(), key());
        let seal = |plain: &str| old.seal(plain.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let open = |sealed: &str| {
            String::from_utf8(new.open(sealed).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_default()
        };

        let whole = seal("a credential");
        let out = reseal(SealedColumn::Credentials, &whole, &old, &new)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(open(&out), "a credential");
        assert!(old.open(&out).is_err());
        // Run again (an interrupted rotation): already sealed with the new key, unchanged.
        assert!(
            reseal(SealedColumn::Credentials, &out, &old, &new)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );

        let notify = serde_json::json!([{"shown": {"kind": "webhook"}, "sealed": seal("target")}])
            .to_string();
        let out = reseal(SealedColumn::TemplateNotify, &notify, &old, &new)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(open(v[0]["sealed"].as_str().unwrap_or_default()), "target");
        assert_eq!(v[0]["shown"]["kind"], "webhook");

        let options = serde_json::json!({"extra_vars": {
            "plain": "x",
            "db": {"password": format!("{SEALED_PREFIX}{}", seal("\"pw\""))}
        }})
        .to_string();
        let out = reseal(SealedColumn::RunOptions, &options, &old, &new)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        let sealed = v["extra_vars"]["db"]["password"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(open(&sealed[SEALED_PREFIX.len()..]), "\"pw\"");
        assert_eq!(v["extra_vars"]["plain"], "x");

        // Sealed by a third key: an error, never a silent skip.
        let stranger = key().seal(b"x").unwrap_or_else(|e| panic!("{e}"));
        assert!(reseal(SealedColumn::Credentials, &stranger, &old, &new).is_err());
    }
}
