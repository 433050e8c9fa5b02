//! API tokens: only a hash of each secret is stored.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::worker::TokenRole;

/// An API token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Store-assigned id.
    pub id: i64,
    /// Human name ("admin", "ci"...).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// What it may do.
    pub role: TokenRole,
    /// The ids of the projects it is limited to; `None` for every project.
    pub projects: Option<Vec<i64>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops being accepted; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token is never accepted again.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// True when the token may still be used at `now`: not revoked and not expired.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewTokenRecord {
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// What it may do.
    pub role: TokenRole,
    /// Project ids it is limited to; `None` for every project.
    pub projects: Option<Vec<i64>>,
    /// When it stops being accepted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where the API's tokens are kept.
#[async_trait]
pub trait TokenStore {
    /// Stores a token hash with its role, project scope and expiry.
    async fn insert_token(&self, token: &NewTokenRecord) -> StoreResult<TokenRecord>;

    /// Stores an unscoped token that never expires, under `name`, with its role.
    async fn create_token(
        &self,
        name: &str,
        hash: &str,
        role: TokenRole,
    ) -> StoreResult<TokenRecord> {
        self.insert_token(&NewTokenRecord {
            name: name.to_owned(),
            hash: hash.to_owned(),
            role,
            projects: None,
            expires_at: None,
        })
        .await
    }

    /// Every stored token, revoked and expired ones included, oldest first.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes a token at `at`. `NotFound` when there is no such token or it is already
    /// revoked; `Conflict` when it is the last live admin token that is limited to no project
    /// (nobody could manage tokens any more).
    async fn revoke_token(&self, id: i64, at: DateTime<Utc>) -> StoreResult<TokenRecord>;
}
