//! Schedules and their fires on PostgreSQL.
//!
//! A fire is claimed by a conditional update of its schedule's row: a second replica trying
//! the same fire waits for the first's row lock, then finds `next_fire_at` moved and claims
//! nothing.

use crate::{PgDialect, PgStore, micros, now, pg_text};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use troupe_core::flow::{NewSchedule, Schedule};
use troupe_store::sql::flows::fire_not_found;
use troupe_store::sql::{backend, schedule_from, statements, to_json, unique_or_backend};
use troupe_store::{ScheduleStore, StoreError, StoreResult};

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, new: &NewSchedule) -> StoreResult<Schedule> {
        let row = sqlx::query(AssertSqlSafe(statements::insert_schedule::<PgDialect>()))
            .bind(&new.name)
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(to_json(&new.target)?)
            .bind(new.missed.as_str())
            .bind(micros(new.next_fire_at))
            .bind(now())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                unique_or_backend(e, || format!("schedule name {:?} is taken", new.name))
            })?;
        schedule_from::<PgDialect>(&row)
    }

    async fn get_schedule(&self, id: i64) -> StoreResult<Schedule> {
        let row = sqlx::query(AssertSqlSafe(statements::get_schedule::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("schedule", id))?;
        schedule_from::<PgDialect>(&row)
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        sqlx::query(AssertSqlSafe(statements::list_schedules::<PgDialect>()))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(schedule_from::<PgDialect>)
            .collect()
    }

    async fn delete_schedule(&self, id: i64) -> StoreResult<()> {
        sqlx::query(statements::DELETE_SCHEDULE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|_| ())
            .ok_or_else(|| StoreError::not_found("schedule", id))
    }

    async fn due_schedules(&self, now: DateTime<Utc>) -> StoreResult<Vec<Schedule>> {
        sqlx::query(AssertSqlSafe(statements::due_schedules::<PgDialect>()))
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(schedule_from::<PgDialect>)
            .collect()
    }

    async fn claim_fire(
        &self,
        id: i64,
        fire_at: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let fire_at = micros(fire_at);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let advanced = sqlx::query(statements::ADVANCE_SCHEDULE)
            .bind(id)
            .bind(fire_at)
            .bind(micros(next))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if advanced.is_none() {
            return Ok(false);
        }
        let recorded = sqlx::query(statements::INSERT_FIRE)
            .bind(id)
            .bind(fire_at)
            .bind(now())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if recorded.is_none() {
            // Fired before (a `next` that went back in time): the rollback keeps the schedule
            // as it was.
            return Ok(false);
        }
        sqlx::query(statements::PRUNE_FIRES)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn record_fire(&self, id: i64, fire_at: DateTime<Utc>, result: &str) -> StoreResult<()> {
        let result = pg_text(result);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(statements::RECORD_FIRE)
            .bind(id)
            .bind(micros(fire_at))
            .bind(result.as_ref())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| fire_not_found(id, fire_at))?;
        sqlx::query(statements::RECORD_LAST_RESULT)
            .bind(id)
            .bind(micros(fire_at))
            .bind(result.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}
