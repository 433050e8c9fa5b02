//! Executions, their step records and the slots they hold, on SQLite.
//!
//! Every check-then-write here runs under the one writer (a `BEGIN IMMEDIATE` transaction when
//! it takes more than one statement), so no other write comes between the check and the write.

use crate::{MAX_PARAMS, SqliteDialect, SqliteStore, now_us, require_row, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};
use troupe_core::flow::{
    Approval, Execution, ExecutionFilter, ExecutionStatus, NewExecution, StepRecord,
};
use troupe_store::sql::flows::{
    Slots, answered, execution_finished, flow_not_found, not_resumable, slot_requests,
    step_not_found, steps_in_order, take_slots, unfinished,
};
use troupe_store::sql::{
    Dialect, backend, execution_from, foreign_key_violated, push_execution_filter, sorted_ids,
    statements, step_from, to_json,
};
use troupe_store::{ExecutionStore, Page, SlotRequest, StoreError, StoreResult};

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(&self, new: &NewExecution) -> StoreResult<Execution> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let execution = insert_execution(&mut tx, new).await?;
        tx.commit().await.map_err(backend)?;
        Ok(execution)
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Execution> {
        let row = sqlx::query(AssertSqlSafe(statements::get_execution::<SqliteDialect>()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("execution", id))?;
        execution_from::<SqliteDialect>(&row)
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<Execution>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {} FROM executions WHERE 1 = 1",
            SqliteDialect::EXECUTION_COLS
        ));
        push_execution_filter(&mut q, filter, page);
        q.build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(execution_from::<SqliteDialect>)
            .collect()
    }

    async fn claim_execution(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Execution>> {
        let row = sqlx::query(AssertSqlSafe(statements::claim_execution::<SqliteDialect>()))
            .bind(id)
            .bind(owner)
            .bind(ts(now))
            .bind(ts(until))
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => execution_from::<SqliteDialect>(&row).map(Some),
            None => self.current_execution(id).await.map(|_| None),
        }
    }

    async fn renew_executions(
        &self,
        owner: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        let mut w = self.write().await;
        let mut renewed = Vec::with_capacity(ids.len());
        for part in ids.chunks(MAX_PARAMS - 2) {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE executions SET lease_until = ");
            q.push_bind(ts(until))
                .push(" WHERE owner = ")
                .push_bind(owner)
                .push(format!(" AND status IN ({}) AND id IN (", unfinished()));
            let mut list = q.separated(", ");
            for id in part {
                list.push_bind(*id);
            }
            q.push(") RETURNING id");
            let rows = q.build().fetch_all(&mut *w).await.map_err(backend)?;
            renewed.extend(sorted_ids(&rows)?);
        }
        renewed.sort_unstable();
        Ok(renewed)
    }

    async fn unclaimed_executions(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Execution>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        sqlx::query(AssertSqlSafe(statements::unclaimed_executions::<
            SqliteDialect,
        >()))
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .iter()
        .map(execution_from::<SqliteDialect>)
        .collect()
    }

    async fn set_execution_status(
        &self,
        id: i64,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> StoreResult<Execution> {
        let moved = {
            let mut w = self.write().await;
            let mut tx = w.begin().await?;
            let sql = if status.is_finished() {
                statements::finish_execution::<SqliteDialect>()
            } else {
                statements::move_execution::<SqliteDialect>()
            };
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(id)
                .bind(status.as_str())
                .bind(error)
                .bind(now_us())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            if row.is_some() && status.is_finished() {
                release(&mut tx, id).await?;
            }
            tx.commit().await.map_err(backend)?;
            row
        };
        match moved {
            Some(row) => execution_from::<SqliteDialect>(&row),
            None => Err(execution_finished(&self.current_execution(id).await?)),
        }
    }

    async fn cancel_execution(&self, id: i64) -> StoreResult<Execution> {
        let flagged = {
            let mut w = self.write().await;
            let mut tx = w.begin().await?;
            let canceled = sqlx::query(AssertSqlSafe(statements::cancel_queued_execution::<
                SqliteDialect,
            >()))
            .bind(id)
            .bind(now_us())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            let row = match canceled {
                Some(row) => {
                    release(&mut tx, id).await?;
                    Some(row)
                }
                None => sqlx::query(AssertSqlSafe(statements::flag_cancel_execution::<
                    SqliteDialect,
                >()))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?,
            };
            tx.commit().await.map_err(backend)?;
            row
        };
        match flagged {
            Some(row) => execution_from::<SqliteDialect>(&row),
            None => Err(execution_finished(&self.current_execution(id).await?)),
        }
    }

    async fn resume_execution(&self, id: i64) -> StoreResult<Execution> {
        let row = sqlx::query(AssertSqlSafe(
            statements::resume_execution::<SqliteDialect>(),
        ))
        .bind(id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?;
        match row {
            Some(row) => execution_from::<SqliteDialect>(&row),
            None => Err(not_resumable(&self.current_execution(id).await?)),
        }
    }

    async fn put_step(&self, record: &StepRecord) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(statements::put_step::<SqliteDialect>()))
            .bind(record.execution_id)
            .bind(record.round)
            .bind(&record.key)
            .bind(record.phase.as_str())
            .bind(record.position)
            .bind(&record.kind)
            .bind(record.status.as_str())
            .bind(record.attempts)
            .bind(record.started_at.map(ts))
            .bind(record.finished_at.map(ts))
            .bind(to_json(&record.result)?)
            .bind(to_json(&record.published)?)
            .bind(&record.error)
            .bind(to_json(&record.run_ids)?)
            .bind(to_json(&record.execution_ids)?)
            .execute(&mut *self.write().await)
            .await
            .map_err(|e| {
                if foreign_key_violated(&e) {
                    StoreError::not_found("execution", record.execution_id)
                } else {
                    backend(e)
                }
            })?;
        Ok(())
    }

    async fn list_steps(&self, execution_id: i64) -> StoreResult<Vec<StepRecord>> {
        let steps = sqlx::query(AssertSqlSafe(statements::list_steps::<SqliteDialect>()))
            .bind(execution_id)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(step_from::<SqliteDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(steps_in_order(steps))
    }

    async fn answer_approval(
        &self,
        execution_id: i64,
        key: &str,
        approval: &Approval,
    ) -> StoreResult<StepRecord> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let round: i32 = sqlx::query_scalar(statements::EXECUTION_ROUND)
            .bind(execution_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("execution", execution_id))?;
        let row = sqlx::query(AssertSqlSafe(statements::get_step::<SqliteDialect>()))
            .bind(execution_id)
            .bind(round)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| step_not_found(execution_id, round, key))?;
        let result = answered(&step_from::<SqliteDialect>(&row)?, approval)?;
        let row = sqlx::query(AssertSqlSafe(statements::set_waiting_step_result::<
            SqliteDialect,
        >()))
        .bind(execution_id)
        .bind(round)
        .bind(key)
        .bind(to_json(&result)?)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let record = step_from::<SqliteDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    async fn acquire_slots(&self, execution_id: i64, slots: &[SlotRequest]) -> StoreResult<bool> {
        let requests = slot_requests(slots);
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        require_row(&mut tx, "executions", "execution", execution_id).await?;
        let taken = take_slots(&mut SlotTx(&mut tx), execution_id, &requests).await?;
        if taken {
            tx.commit().await.map_err(backend)?;
        }
        Ok(taken)
    }

    async fn slot_holders(&self, key: &str) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(statements::SLOT_HOLDERS)
            .bind(key)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)
    }

    async fn release_slots(&self, execution_id: i64) -> StoreResult<()> {
        release(&mut *self.write().await, execution_id).await
    }
}

impl SqliteStore {
    /// After a conditional update matched nothing: `NotFound` if the execution is missing,
    /// else the execution as it is now.
    async fn current_execution(&self, id: i64) -> StoreResult<Execution> {
        let row = sqlx::query(AssertSqlSafe(statements::get_execution::<SqliteDialect>()))
            .bind(id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("execution", id))?;
        execution_from::<SqliteDialect>(&row)
    }
}

/// Lets go of every slot of the execution.
async fn release(conn: &mut SqliteConnection, execution_id: i64) -> StoreResult<()> {
    sqlx::query(statements::RELEASE_SLOTS)
        .bind(execution_id)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The `acquire_slots` transaction, which holds the write lock.
struct SlotTx<'c>(&'c mut SqliteConnection);

impl Slots for SlotTx<'_> {
    async fn holders(&mut self, key: &str) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(statements::SLOT_HOLDERS)
            .bind(key)
            .fetch_all(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn hold(&mut self, key: &str, execution_id: i64) -> StoreResult<()> {
        sqlx::query(statements::HOLD_SLOT)
            .bind(key)
            .bind(execution_id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Stores an execution, queued, on `conn` (the writer, or the ingest transaction).
pub(crate) async fn insert_execution(
    conn: &mut SqliteConnection,
    new: &NewExecution,
) -> StoreResult<Execution> {
    let parent = new.parent.as_ref();
    let row = sqlx::query(AssertSqlSafe(
        statements::insert_execution::<SqliteDialect>(),
    ))
    .bind(&new.flow)
    .bind(new.version)
    .bind(to_json(&new.inputs)?)
    .bind(&new.sealed_secrets)
    .bind(&new.concurrency_key)
    .bind(parent.map(|p| p.execution_id))
    .bind(parent.map(|p| p.step.as_str()))
    .bind(&new.started_by)
    .bind(now_us())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match parent {
        Some(p) if foreign_key_violated(&e) => StoreError::not_found("execution", p.execution_id),
        _ => backend(e),
    })?
    .ok_or_else(|| flow_not_found(&new.flow, Some(new.version)))?;
    let execution = execution_from::<SqliteDialect>(&row)?;
    if !new.notify.is_empty() {
        crate::notifications::insert(
            conn,
            troupe_core::notify::Subject::Execution(execution.id),
            &new.notify,
        )
        .await?;
    }
    Ok(execution)
}
