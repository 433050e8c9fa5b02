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
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Where the API's tokens are kept.
#[async_trait]
pub trait TokenStore {
    /// Stores a token hash under `name`, with its role.
    async fn create_token(
        &self,
        name: &str,
        hash: &str,
        role: TokenRole,
    ) -> StoreResult<TokenRecord>;
    /// Every stored token.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
}
