//! Credentials' statements and rows, the same on both backends.

use super::{Dialect, get, invalid};
use crate::StoreResult;
use crate::credentials::StoredCredential;
use troupe_core::credential::{Credential, CredentialKind};

/// The public columns of `credentials`.
macro_rules! credential_cols {
    () => {
        "id, name, kind, username, vault_id, created_at"
    };
}

/// Stores a credential (`$1`..`$6`: name, kind, username, vault id, sealed secret, when).
pub const INSERT: &str = concat!(
    "INSERT INTO credentials (name, kind, username, vault_id, sealed, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    credential_cols!()
);
/// Credential `$1`.
pub const BY_ID: &str = concat!(
    "SELECT ",
    credential_cols!(),
    " FROM credentials WHERE id = $1"
);
/// The credential named `$1`.
pub const BY_NAME: &str = concat!(
    "SELECT ",
    credential_cols!(),
    " FROM credentials WHERE name = $1"
);
/// Every credential, by name.
pub const LIST: &str = concat!(
    "SELECT ",
    credential_cols!(),
    " FROM credentials ORDER BY name"
);
/// Deletes credential `$1`.
pub const DELETE: &str = "DELETE FROM credentials WHERE id = $1 RETURNING id";
/// The credential named `$1` with its sealed secret.
pub const SEALED_BY_NAME: &str = concat!(
    "SELECT ",
    credential_cols!(),
    ", sealed FROM credentials WHERE name = $1"
);

/// The message of a taken name.
pub fn name_taken(name: &str) -> String {
    format!("a credential named {name:?} already exists")
}

/// A credential, from a row of its public columns.
pub fn credential_from<D: Dialect>(row: &D::Row) -> StoreResult<Credential> {
    let kind: String = get(row, "kind")?;
    Ok(Credential {
        id: get(row, "id")?,
        name: get(row, "name")?,
        kind: CredentialKind::parse(&kind)
            .ok_or_else(|| invalid(format_args!("credential kind {kind:?}")))?,
        username: get(row, "username")?,
        vault_id: get(row, "vault_id")?,
        created_at: D::time(row, "created_at")?,
    })
}

/// A credential with its sealed secret, from a row of [`SEALED_BY_NAME`].
pub fn stored_from<D: Dialect>(row: &D::Row) -> StoreResult<StoredCredential> {
    Ok(StoredCredential {
        credential: credential_from::<D>(row)?,
        sealed: get(row, "sealed")?,
    })
}
