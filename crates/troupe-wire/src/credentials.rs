//! Credentials: `POST /api/v1/credentials` takes the secret; no answer ever holds it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use troupe_core::credential::{Credential, CredentialKind};

/// The body of `POST /api/v1/credentials`: a name, a kind and that kind's fields
/// (`ssh_key`: private_key, passphrase?, username?; `become`: password, username?; `vault`:
/// password, vault_id?; `git`: token or private_key; `env`: vars). Its `Debug` shows no value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    /// Unique name; runs ask for the credential by it.
    pub name: String,
    /// What it is for.
    pub kind: CredentialKind,
    /// `ssh_key`, `git`: a private key in PEM or OpenSSH format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// `ssh_key`: the key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// `ssh_key`: the user to log in as; `become`: the user to become.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `become`, `vault`: the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `vault`: the vault id the password opens (none: the default vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_id: Option<String>,
    /// `git`: an HTTPS token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `env`: environment variables of ansible-playbook, name to value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for CreateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateCredential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl CreateCredential {
    /// A request for a credential of `kind` named `name`, with no fields yet.
    pub fn new(name: impl Into<String>, kind: CredentialKind) -> Self {
        CreateCredential {
            name: name.into(),
            kind,
            private_key: None,
            passphrase: None,
            username: None,
            password: None,
            vault_id: None,
            token: None,
            vars: None,
        }
    }
}

/// The answer to `GET /api/v1/credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialList {
    /// Every credential, by name.
    pub credentials: Vec<Credential>,
}
