//! A run's events (and the batch that writes them with its output) on SQLite.

use crate::{EVENT_PARAMS, MAX_PARAMS, OUTPUT_PARAMS, SqliteDialect, SqliteStore, require_row, ts};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};
use troupe_core::Event;
use troupe_store::sql::{
    backend, event_from, foreign_key_violated, host_failures_from, statements,
};
use troupe_store::{EventStore, OutputChunk, StoreError, StoreResult};

#[async_trait]
impl EventStore for SqliteStore {
    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let events = sqlx::query(AssertSqlSafe(statements::list_events::<SqliteDialect>()))
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(event_from::<SqliteDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        if events.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(events)
    }

    async fn host_failures(&self, run_id: i64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(AssertSqlSafe(statements::host_failures::<SqliteDialect>()))
            .bind(run_id)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        let failures = host_failures_from::<SqliteDialect>(&rows)?;
        if rows.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(failures)
    }

    async fn append_batch(
        &self,
        run_id: i64,
        events: &[Event],
        chunks: &[OutputChunk],
    ) -> StoreResult<()> {
        // Every statement is a round trip to the connection's thread, so the run's existence
        // is not read first: a row for a missing run is a foreign key violation. Only an empty
        // batch asks.
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if events.is_empty() && chunks.is_empty() {
            require_row(&mut tx, "runs", "run", run_id).await?;
        }
        let missing = |e: sqlx::Error| {
            if foreign_key_violated(&e) {
                StoreError::not_found("run", run_id)
            } else {
                backend(e)
            }
        };
        let mut stored: i64 = 0;
        for chunk in events.chunks(MAX_PARAMS / EVENT_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (run_id, counter, uuid, event, parent_uuid, host, task, \
                 created, stdout, start_line, end_line, event_data) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(run_id)
                    .push_bind(e.counter)
                    .push_bind(e.uuid.as_str())
                    .push_bind(e.event.as_str())
                    .push_bind(e.parent_uuid.as_deref())
                    .push_bind(e.host())
                    .push_bind(e.task())
                    .push_bind(ts(e.created))
                    .push_bind(e.stdout.as_str())
                    .push_bind(e.start_line)
                    .push_bind(e.end_line)
                    .push_bind(e.event_data.json());
            });
            q.push(" ON CONFLICT (run_id, counter) DO NOTHING");
            let done = q.build().execute(&mut *tx).await.map_err(missing)?;
            stored += i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        }
        if stored > 0 {
            sqlx::query("UPDATE runs SET event_count = event_count + ? WHERE id = ?")
                .bind(stored)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for part in chunks.chunks(MAX_PARAMS / OUTPUT_PARAMS) {
            statements::insert_output::<Sqlite, _>(run_id, part, |text| text)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(missing)?;
        }
        tx.commit().await.map_err(backend)
    }
}
