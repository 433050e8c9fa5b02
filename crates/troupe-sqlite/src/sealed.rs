//! Bulk changes of sealed texts on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use troupe_core::credential::{Credential, SealedCredential};
use troupe_core::project::ProjectSource;
use troupe_store::sql::credentials::{self as creds, credential_from};
use troupe_store::sql::sealed as sql;
use troupe_store::sql::{backend, to_json, unique_or_backend};
use troupe_store::{Resealed, SealedColumn, SealedStore, SealedText, StoreError, StoreResult};

#[async_trait]
impl SealedStore for SqliteStore {
    async fn sealed_texts(
        &self,
        column: SealedColumn,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<SealedText>> {
        sqlx::query(AssertSqlSafe(sql::select::<SqliteDialect>(column)))
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok(SealedText {
                    id: row.try_get("id").map_err(backend)?,
                    text: row.try_get("text").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn replace_sealed(&self, column: SealedColumn, rows: &[Resealed]) -> StoreResult<u64> {
        let statement = sql::replace::<SqliteDialect>(column);
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let mut replaced = 0;
        for row in rows {
            replaced += sqlx::query(AssertSqlSafe(statement.clone()))
                .bind(&row.new)
                .bind(row.id)
                .bind(&row.old)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(replaced)
    }

    async fn move_git_secret(
        &self,
        project_id: i64,
        old: &ProjectSource,
        new: &ProjectSource,
        credential: &SealedCredential,
    ) -> StoreResult<Option<Credential>> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let current: String = sqlx::query_scalar("SELECT source FROM projects WHERE id = ?")
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("project", project_id))?;
        if serde_json::from_str::<ProjectSource>(&current)
            .ok()
            .as_ref()
            != Some(old)
        {
            return Ok(None);
        }
        let row = sqlx::query(creds::INSERT)
            .bind(&credential.name)
            .bind(credential.kind.as_str())
            .bind(&credential.username)
            .bind(&credential.vault_id)
            .bind(&credential.sealed)
            .bind(now_us())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique_or_backend(e, || creds::name_taken(&credential.name)))?;
        let stored = credential_from::<SqliteDialect>(&row)?;
        sqlx::query("UPDATE projects SET source = ? WHERE id = ?")
            .bind(to_json(new)?)
            .bind(project_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        // The old row's page is in the database file until a checkpoint writes the new one
        // over it (secure_delete zeroes the old cell in the new page): write it now, and
        // empty the WAL, so no copy of the secret stays on disk.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *w)
            .await
            .map_err(backend)?;
        Ok(Some(stored))
    }
}
