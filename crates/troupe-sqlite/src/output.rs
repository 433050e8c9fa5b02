//! A run's output on SQLite.

use crate::SqliteStore;
use async_trait::async_trait;
use troupe_store::sql::{backend, joined_text, statements};
use troupe_store::{OutputStore, StoreResult, Stream};

#[async_trait]
impl OutputStore for SqliteStore {
    async fn read_output(&self, run_id: i64, stream: Stream) -> StoreResult<String> {
        let rows = sqlx::query(statements::READ_OUTPUT)
            .bind(run_id)
            .bind(stream.as_str())
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        let out = joined_text(&rows)?;
        if rows.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(out)
    }
}
