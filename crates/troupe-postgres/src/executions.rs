//! Executions, their step records and the slots they hold, on PostgreSQL, where several
//! replicas share them.
//!
//! A claim is one conditional update: a second replica claiming the same execution waits for
//! the first's row lock, then sees its owner and lease and takes nothing. Slots are added only
//! under a transaction-scoped advisory lock per key (taken in one order by every caller), so
//! counting a key's holders and adding one are a single step. An approval is answered under
//! the step's row lock.

use crate::inbound::lock_all;
use crate::{PgDialect, PgStore, micros, now, pg_text, require_row};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};
use troupe_core::flow::{
    Approval, Execution, ExecutionFilter, ExecutionStatus, NewExecution, StepRecord,
};
use troupe_store::sql::flows::{
    Slots, answered, execution_finished, flow_not_found, not_resumable, slot_requests,
    step_not_found, steps_in_order, take_slots, unfinished,
};
use troupe_store::sql::{
    Dialect, backend, execution_from, foreign_key_violated, push_execution_filter, statements,
    step_from, to_json,
};
use troupe_store::{ExecutionStore, Page, SlotRequest, StoreError, StoreResult};

#[async_trait]
impl ExecutionStore for PgStore {
    async fn create_execution(&self, new: &NewExecution) -> StoreResult<Execution> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let execution = insert_execution(&mut tx, new).await?;
        tx.commit().await.map_err(backend)?;
        Ok(execution)
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Execution> {
        self.current_execution(id).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<Execution>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM executions WHERE TRUE",
            PgDialect::EXECUTION_COLS
        ));
        push_execution_filter(&mut q, filter, page);
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(execution_from::<PgDialect>)
            .collect()
    }

    async fn claim_execution(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Execution>> {
        let row = sqlx::query(AssertSqlSafe(statements::claim_execution::<PgDialect>()))
            .bind(id)
            .bind(owner)
            .bind(micros(now))
            .bind(micros(until))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => execution_from::<PgDialect>(&row).map(Some),
            None => self.current_execution(id).await.map(|_| None),
        }
    }

    async fn renew_executions(
        &self,
        owner: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut renewed: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE executions SET lease_until = $1 WHERE owner = $2 AND status IN ({}) \
             AND id = ANY($3) RETURNING id",
            unfinished()
        )))
        .bind(micros(until))
        .bind(owner)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
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
        sqlx::query(AssertSqlSafe(
            statements::unclaimed_executions::<PgDialect>(),
        ))
        .bind(micros(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(execution_from::<PgDialect>)
        .collect()
    }

    async fn set_execution_status(
        &self,
        id: i64,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> StoreResult<Execution> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let sql = if status.is_finished() {
            statements::finish_execution::<PgDialect>()
        } else {
            statements::move_execution::<PgDialect>()
        };
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(status.as_str())
            .bind(error.map(|e| pg_text(e).into_owned()))
            .bind(now())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            drop(tx);
            return Err(execution_finished(&self.current_execution(id).await?));
        };
        if status.is_finished() {
            release(&mut tx, id).await?;
        }
        tx.commit().await.map_err(backend)?;
        execution_from::<PgDialect>(&row)
    }

    async fn cancel_execution(&self, id: i64) -> StoreResult<Execution> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Each step is one conditional statement; an execution that moves between them
        // (claimed, started) is caught by the next one.
        let canceled = sqlx::query(AssertSqlSafe(statements::cancel_queued_execution::<
            PgDialect,
        >()))
        .bind(id)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let row = match canceled {
            Some(row) => {
                release(&mut tx, id).await?;
                row
            }
            None => {
                let flagged = sqlx::query(AssertSqlSafe(statements::flag_cancel_execution::<
                    PgDialect,
                >()))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
                let Some(row) = flagged else {
                    drop(tx);
                    return Err(execution_finished(&self.current_execution(id).await?));
                };
                row
            }
        };
        tx.commit().await.map_err(backend)?;
        execution_from::<PgDialect>(&row)
    }

    async fn resume_execution(&self, id: i64) -> StoreResult<Execution> {
        let row = sqlx::query(AssertSqlSafe(statements::resume_execution::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => execution_from::<PgDialect>(&row),
            None => Err(not_resumable(&self.current_execution(id).await?)),
        }
    }

    async fn put_step(&self, record: &StepRecord) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(statements::put_step::<PgDialect>()))
            .bind(record.execution_id)
            .bind(record.round)
            .bind(&record.key)
            .bind(record.phase.as_str())
            .bind(record.position)
            .bind(&record.kind)
            .bind(record.status.as_str())
            .bind(record.attempts)
            .bind(record.started_at.map(micros))
            .bind(record.finished_at.map(micros))
            .bind(to_json(&record.result)?)
            .bind(to_json(&record.published)?)
            .bind(record.error.as_deref().map(|e| pg_text(e).into_owned()))
            .bind(&record.run_ids)
            .bind(&record.execution_ids)
            .execute(&self.pool)
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
        let steps = sqlx::query(AssertSqlSafe(statements::list_steps::<PgDialect>()))
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(step_from::<PgDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(steps_in_order(steps))
    }

    async fn answer_approval(
        &self,
        execution_id: i64,
        key: &str,
        approval: &Approval,
    ) -> StoreResult<StepRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let round: i32 = sqlx::query_scalar(statements::EXECUTION_ROUND)
            .bind(execution_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("execution", execution_id))?;
        // The row lock makes concurrent answers take turns; each reads the record as the one
        // before it left it.
        let row = sqlx::query(AssertSqlSafe(format!(
            "{} FOR UPDATE",
            statements::get_step::<PgDialect>()
        )))
        .bind(execution_id)
        .bind(round)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or_else(|| step_not_found(execution_id, round, key))?;
        let result = answered(&step_from::<PgDialect>(&row)?, approval)?;
        let row = sqlx::query(AssertSqlSafe(statements::set_waiting_step_result::<
            PgDialect,
        >()))
        .bind(execution_id)
        .bind(round)
        .bind(key)
        .bind(to_json(&result)?)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let record = step_from::<PgDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    async fn acquire_slots(&self, execution_id: i64, slots: &[SlotRequest]) -> StoreResult<bool> {
        let requests = slot_requests(slots);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        require_row(&mut tx, "executions", "execution", execution_id).await?;
        let locks: Vec<String> = requests
            .iter()
            .map(|r| pg_text(&format!("troupe:slot:{}", r.key)).into_owned())
            .collect();
        lock_all(&mut tx, &locks).await?;
        let taken = take_slots(&mut SlotTx(&mut tx), execution_id, &requests).await?;
        if taken {
            tx.commit().await.map_err(backend)?;
        }
        Ok(taken)
    }

    async fn slot_holders(&self, key: &str) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(statements::SLOT_HOLDERS)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn release_slots(&self, execution_id: i64) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        release(&mut conn, execution_id).await
    }
}

impl PgStore {
    /// An execution as it is now; `NotFound` if it is missing.
    async fn current_execution(&self, id: i64) -> StoreResult<Execution> {
        let row = sqlx::query(AssertSqlSafe(statements::get_execution::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("execution", id))?;
        execution_from::<PgDialect>(&row)
    }
}

/// Lets go of every slot of the execution.
async fn release(conn: &mut PgConnection, execution_id: i64) -> StoreResult<()> {
    sqlx::query(statements::RELEASE_SLOTS)
        .bind(execution_id)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The `acquire_slots` transaction, holding the advisory locks of its keys.
struct SlotTx<'c>(&'c mut PgConnection);

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

/// Stores an execution, queued, on `conn` (a pooled connection, or the ingest transaction).
pub(crate) async fn insert_execution(
    conn: &mut PgConnection,
    new: &NewExecution,
) -> StoreResult<Execution> {
    let parent = new.parent.as_ref();
    let row = sqlx::query(AssertSqlSafe(statements::insert_execution::<PgDialect>()))
        .bind(&new.flow)
        .bind(new.version)
        .bind(to_json(&new.inputs)?)
        .bind(&new.sealed_secrets)
        .bind(&new.concurrency_key)
        .bind(parent.map(|p| p.execution_id))
        .bind(parent.map(|p| p.step.as_str()))
        .bind(&new.started_by)
        .bind(now())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match parent {
            Some(p) if foreign_key_violated(&e) => {
                StoreError::not_found("execution", p.execution_id)
            }
            _ => backend(e),
        })?
        .ok_or_else(|| flow_not_found(&new.flow, Some(new.version)))?;
    let execution = execution_from::<PgDialect>(&row)?;
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
