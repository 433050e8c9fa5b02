//! API tokens on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_store::sql::{backend, statements, to_json, token_from, unique_or_backend};
use troupe_store::{NewTokenRecord, StoreError, StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, token: &NewTokenRecord) -> StoreResult<TokenRecord> {
        let projects = token.projects.as_ref().map(to_json).transpose()?;
        let row = sqlx::query(statements::INSERT_TOKEN)
            .bind(&token.name)
            .bind(&token.hash)
            .bind(now_us())
            .bind(token.role.as_str())
            .bind(projects)
            .bind(token.expires_at.map(ts))
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

    async fn revoke_token(&self, id: i64, at: DateTime<Utc>) -> StoreResult<TokenRecord> {
        // The one writer makes the check and the update one step.
        let mut conn = self.write().await;
        let row = sqlx::query(statements::REVOKE_TOKEN)
            .bind(ts(at))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return token_from::<SqliteDialect>(&row);
        }
        let found = sqlx::query(statements::GET_TOKEN)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        Err(revoke_refused(
            found.map(|r| token_from::<SqliteDialect>(&r)).transpose()?,
            id,
        ))
    }
}

/// Why a revocation changed nothing.
fn revoke_refused(found: Option<TokenRecord>, id: i64) -> StoreError {
    match found {
        Some(t) if t.revoked_at.is_none() => {
            StoreError::Conflict("the last admin token cannot be revoked".into())
        }
        _ => StoreError::not_found("token", id),
    }
}
