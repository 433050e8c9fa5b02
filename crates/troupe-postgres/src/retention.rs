//! Retention on PostgreSQL. Each statement of a batch is its own short transaction (the runs'
//! rows go together in one), so no lock is held across a batch; ids are bound as one array.
//!
//! The database does not shrink: PostgreSQL's (auto)vacuum makes the space of deleted rows
//! reusable by the next runs' rows; only `VACUUM FULL` gives it back to the file system.

use crate::{PgStore, micros};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgArguments, Postgres};
use troupe_store::sql::retention::{
    ROWS_PER_DELETE, UNFINISHED, UNFINISHED_EXECUTION_STEPS, count_prunable_runs, prunable_runs,
};
use troupe_store::sql::{backend, get};
use troupe_store::{Pruned, RetentionStore, RunRetention, StoreResult};

/// The runs the steps of unfinished executions started.
fn needed() -> String {
    format!("SELECT unnest(s.run_ids) FROM {UNFINISHED_EXECUTION_STEPS} WHERE {UNFINISHED}")
}

/// `sql` with `policy`'s parameters bound, in the order [`prunable_runs`] numbers them.
fn bound(sql: String, policy: &RunRetention) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    if let Some(before) = policy.finished_before {
        q = q.bind(micros(before));
    }
    if let Some(keep) = policy.keep_per_project {
        q = q.bind(i64::from(keep));
    }
    q
}

impl PgStore {
    /// Deletes the rows of `table` (keyed by `run_id` and `key`) of the runs `ids`, a few
    /// thousand per statement. Returns how many went.
    async fn delete_rows_of(&self, table: &str, key: &str, ids: &[i64]) -> StoreResult<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE (run_id, {key}) IN (SELECT run_id, {key} FROM {table} \
             WHERE run_id = ANY($1) LIMIT $2)"
        );
        let mut total = 0;
        loop {
            let done = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(ids)
                .bind(ROWS_PER_DELETE)
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected();
            total += done;
            if done < ROWS_PER_DELETE.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl RetentionStore for PgStore {
    async fn count_prunable_runs(&self, policy: &RunRetention) -> StoreResult<u64> {
        if policy.is_off() {
            return Ok(0);
        }
        let row = bound(count_prunable_runs(policy, &needed()), policy)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(get::<i64>(&row, "n")?.unsigned_abs())
    }

    async fn prune_runs(&self, policy: &RunRetention, limit: u32) -> StoreResult<Pruned> {
        if policy.is_off() || limit == 0 {
            return Ok(Pruned::default());
        }
        let top: Vec<i64> = bound(prunable_runs(policy, "r.id", &needed(), true), policy)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| get::<i64>(row, "id"))
            .collect::<StoreResult<_>>()?;
        if top.is_empty() {
            return Ok(Pruned::default());
        }
        let mut ids: Vec<i64> = sqlx::query("SELECT id FROM runs WHERE parent_id = ANY($1)")
            .bind(&top)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| get::<i64>(row, "id"))
            .collect::<StoreResult<_>>()?;
        ids.extend(&top);
        let events = self.delete_rows_of("events", "counter", &ids).await?;
        let output_chunks = self.delete_rows_of("run_output", "seq", &ids).await?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "UPDATE runs SET relaunch_of = NULL WHERE relaunch_of = ANY($1) \
             AND NOT (id = ANY($1))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let runs = sqlx::query("DELETE FROM runs WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        // Events and output have no foreign key here (migration 0006): a batch appended after
        // the chunks above went is deleted now, after the runs' rows, whose locks an append in
        // flight holds until it commits.
        let mut late = [0; 2];
        for (table, count) in ["events", "run_output"].into_iter().zip(&mut late) {
            *count = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE run_id = ANY($1)"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(Pruned {
            runs,
            events: events + late[0],
            output_chunks: output_chunks + late[1],
        })
    }
}
