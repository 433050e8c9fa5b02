//! Workers on postgres.

use crate::{PgDialect, PgStore, micros, now};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::worker::{NewWorker, Worker, node_of};
use troupe_store::sql::{backend, statements, to_json, worker_from};
use troupe_store::{StoreError, StoreResult, WorkerStore};

#[async_trait]
impl WorkerStore for PgStore {
    async fn register_worker(&self, new: &NewWorker) -> StoreResult<Worker> {
        let now = now();
        let row = sqlx::query(statements::REGISTER_WORKER)
            .bind(&new.id)
            .bind(&new.name)
            .bind(new.kind.as_str())
            .bind(to_json(&new.labels)?)
            .bind(i32::try_from(new.capacity).unwrap_or(i32::MAX))
            .bind(&new.version)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        sqlx::query(statements::STOP_OTHER_INCARNATIONS)
            .bind(now)
            .bind(format!("{}/%", node_of(&new.id)))
            .bind(&new.id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        worker_from::<PgDialect>(&row)
    }

    async fn heartbeat_worker(&self, id: &str, active_runs: u32) -> StoreResult<Worker> {
        let row = sqlx::query(statements::HEARTBEAT_WORKER)
            .bind(now())
            .bind(i32::try_from(active_runs).unwrap_or(i32::MAX))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("worker", id))?;
        worker_from::<PgDialect>(&row)
    }

    async fn get_worker(&self, id: &str) -> StoreResult<Worker> {
        let row = sqlx::query(statements::GET_WORKER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("worker", id))?;
        worker_from::<PgDialect>(&row)
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> StoreResult<Vec<Worker>> {
        sqlx::query(statements::LIST_WORKERS)
            .bind(micros(since))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(worker_from::<PgDialect>)
            .collect()
    }

    async fn drain_worker(&self, id: &str) -> StoreResult<Worker> {
        let row = sqlx::query(statements::DRAIN_WORKER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("worker", id))?;
        worker_from::<PgDialect>(&row)
    }

    async fn stop_worker(&self, id: &str) -> StoreResult<()> {
        sqlx::query(statements::STOP_WORKER)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
