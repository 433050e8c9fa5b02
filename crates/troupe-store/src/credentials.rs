//! Credentials: their public part, and their secret sealed (the store never sees it in clear).

use crate::StoreResult;
use async_trait::async_trait;
use troupe_core::credential::{Credential, SealedCredential};

/// A stored credential with its sealed secret, for the one reader that opens it (the worker).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// Its public part.
    pub credential: Credential,
    /// Its secret, sealed.
    pub sealed: String,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// Where credentials are kept.
#[async_trait]
pub trait CredentialStore {
    /// Stores a credential; `Conflict` when its name is taken.
    async fn create_credential(&self, new: &SealedCredential) -> StoreResult<Credential>;
    /// One credential by id; `NotFound` when there is none.
    async fn get_credential(&self, id: i64) -> StoreResult<Credential>;
    /// One credential by name.
    async fn find_credential(&self, name: &str) -> StoreResult<Option<Credential>>;
    /// Every credential, by name.
    async fn list_credentials(&self) -> StoreResult<Vec<Credential>>;
    /// Deletes a credential; `NotFound` when there is none.
    async fn delete_credential(&self, id: i64) -> StoreResult<()>;
    /// One credential by name with its sealed secret.
    async fn sealed_credential(&self, name: &str) -> StoreResult<Option<StoredCredential>>;
}
