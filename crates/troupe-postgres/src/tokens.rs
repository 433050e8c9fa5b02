//! API tokens on PostgreSQL.

use crate::{PgDialect, PgStore, now, pg_text};
use async_trait::async_trait;
use troupe_core::worker::TokenRole;
use troupe_store::sql::{backend, statements, token_from, unique_or_backend};
use troupe_store::{StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl TokenStore for PgStore {
    async fn create_token(
        &self,
        name: &str,
        hash: &str,
        role: TokenRole,
    ) -> StoreResult<TokenRecord> {
        let row = sqlx::query(statements::INSERT_TOKEN)
            .bind(pg_text(name).into_owned())
            .bind(hash)
            .bind(now())
            .bind(role.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                unique_or_backend(e, || "a token with this hash is already stored".into())
            })?;
        token_from::<PgDialect>(&row)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(statements::LIST_TOKENS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from::<PgDialect>)
            .collect()
    }
}
