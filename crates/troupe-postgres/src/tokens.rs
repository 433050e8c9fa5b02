//! API tokens on PostgreSQL.

use crate::{PgDialect, PgStore, now, pg_text};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_store::sql::{backend, statements, to_json, token_from, unique_or_backend};
use troupe_store::{NewTokenRecord, StoreError, StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl TokenStore for PgStore {
    async fn insert_token(&self, token: &NewTokenRecord) -> StoreResult<TokenRecord> {
        let projects = token.projects.as_ref().map(to_json).transpose()?;
        let row = sqlx::query(statements::INSERT_TOKEN)
            .bind(pg_text(&token.name).into_owned())
            .bind(&token.hash)
            .bind(now())
            .bind(token.role.as_str())
            .bind(projects)
            .bind(token.expires_at)
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

    async fn revoke_token(&self, id: i64, at: DateTime<Utc>) -> StoreResult<TokenRecord> {
        // Admin tokens' rows are locked first, so two replicas revoking the last two admin
        // tokens at once cannot both see the other one still live.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT id FROM tokens WHERE role = 'admin' ORDER BY id FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let row = sqlx::query(statements::REVOKE_TOKEN)
            .bind(at)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            let t = token_from::<PgDialect>(&row)?;
            tx.commit().await.map_err(backend)?;
            return Ok(t);
        }
        let found = sqlx::query(statements::GET_TOKEN)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .map(|r| token_from::<PgDialect>(&r))
            .transpose()?;
        Err(match found {
            Some(t) if t.revoked_at.is_none() => {
                StoreError::Conflict("the last admin token cannot be revoked".into())
            }
            _ => StoreError::not_found("token", id),
        })
    }
}
