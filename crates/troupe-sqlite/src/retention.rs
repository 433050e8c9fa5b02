//! Retention on SQLite. Every statement of a batch takes the writer on its own, so runs being
//! written meanwhile wait for one statement at most, never for a whole batch. Ids are bound
//! as one JSON array (`json_each`), whatever their number.
//!
//! The file does not shrink: SQLite keeps the pages a prune frees (`auto_vacuum` is off) and
//! fills them with the next runs' rows before it grows the file again.

use crate::{SqliteStore, ts};
use async_trait::async_trait;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{AssertSqlSafe, SqliteConnection};
use troupe_store::sql::retention::{
    ROWS_PER_DELETE, UNFINISHED, UNFINISHED_EXECUTION_STEPS, count_prunable_runs, prunable_runs,
};
use troupe_store::sql::{backend, get, limit, to_json};
use troupe_store::{Pruned, RetentionStore, RunRetention, StoreResult};

/// The runs the steps of unfinished executions started.
fn needed() -> String {
    format!(
        "SELECT j.value FROM {UNFINISHED_EXECUTION_STEPS}, json_each(s.run_ids) j \
         WHERE {UNFINISHED}"
    )
}

/// `sql` with `policy`'s parameters bound, in the order [`prunable_runs`] numbers them.
fn bound(
    sql: String,
    policy: &RunRetention,
) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    if let Some(before) = policy.finished_before {
        q = q.bind(ts(before));
    }
    if let Some(keep) = policy.keep_per_project {
        q = q.bind(i64::from(keep));
    }
    q
}

/// Deletes the rows of `table` whose `run_id` is in `ids` (a JSON array), a few thousand per
/// statement, each statement taking the writer on its own. Returns how many went.
async fn delete_rows_of(store: &SqliteStore, table: &str, ids: &str) -> StoreResult<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} \
         WHERE run_id IN (SELECT value FROM json_each($1)) {})",
        limit("$2")
    );
    let mut total = 0;
    loop {
        let done = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(ids)
            .bind(ROWS_PER_DELETE)
            .execute(&mut *store.write().await)
            .await
            .map_err(backend)?
            .rows_affected();
        total += done;
        if done < ROWS_PER_DELETE.unsigned_abs() {
            return Ok(total);
        }
    }
}

/// Deletes the runs of `ids` (a JSON array): the links later runs keep to them first.
async fn delete_runs(conn: &mut SqliteConnection, ids: &str) -> StoreResult<u64> {
    sqlx::query(
        "UPDATE runs SET relaunch_of = NULL \
         WHERE relaunch_of IN (SELECT value FROM json_each($1)) \
         AND id NOT IN (SELECT value FROM json_each($1))",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(
        sqlx::query("DELETE FROM runs WHERE id IN (SELECT value FROM json_each($1))")
            .bind(ids)
            .execute(&mut *conn)
            .await
            .map_err(backend)?
            .rows_affected(),
    )
}

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn count_prunable_runs(&self, policy: &RunRetention) -> StoreResult<u64> {
        if policy.is_off() {
            return Ok(0);
        }
        let row = bound(count_prunable_runs(policy, &needed()), policy)
            .fetch_one(&mut *self.read().await?)
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
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| get::<i64>(row, "id"))
            .collect::<StoreResult<_>>()?;
        if top.is_empty() {
            return Ok(Pruned::default());
        }
        let slices: Vec<i64> =
            sqlx::query("SELECT id FROM runs WHERE parent_id IN (SELECT value FROM json_each($1))")
                .bind(to_json(&top)?)
                .fetch_all(&mut *self.read().await?)
                .await
                .map_err(backend)?
                .iter()
                .map(|row| get::<i64>(row, "id"))
                .collect::<StoreResult<_>>()?;
        let ids = to_json(&top.iter().chain(&slices).collect::<Vec<_>>())?;
        let events = delete_rows_of(self, "events", &ids).await?;
        let output_chunks = delete_rows_of(self, "run_output", &ids).await?;
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let runs = delete_runs(&mut tx, &ids).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Pruned {
            runs,
            events,
            output_chunks,
        })
    }
}
