//! API tokens on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us};
use async_trait::async_trait;
use troupe_core::worker::TokenRole;
use troupe_store::sql::{backend, statements, token_from, unique_or_backend};
use troupe_store::{StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(
        &self,
        name: &str,
        hash: &str,
        role: TokenRole,
    ) -> StoreResult<TokenRecord> {
        let row = sqlx::query(statements::INSERT_TOKEN)
            .bind(name)
            .bind(hash)
            .bind(now_us())
            .bind(role.as_str())
            .fetch_one(&mut *self.write().await)
            .await
            .map_err(|e| {
                unique_or_backend(e, || "a token with this hash is already stored".into())
            })?;
        token_from::<SqliteDialect>(&row)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(statements::LIST_TOKENS)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from::<SqliteDialect>)
            .collect()
    }
}
