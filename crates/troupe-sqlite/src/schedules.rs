//! Schedules and their fires on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use troupe_core::flow::{NewSchedule, Schedule};
use troupe_store::sql::flows::fire_not_found;
use troupe_store::sql::{backend, schedule_from, statements, to_json, unique_or_backend};
use troupe_store::{ScheduleStore, StoreError, StoreResult};

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn create_schedule(&self, new: &NewSchedule) -> StoreResult<Schedule> {
        let row = sqlx::query(AssertSqlSafe(statements::insert_schedule::<SqliteDialect>()))
            .bind(&new.name)
            .bind(&new.cron)
            .bind(&new.timezone)
            .bind(to_json(&new.target)?)
            .bind(new.missed.as_str())
            .bind(ts(new.next_fire_at))
            .bind(now_us())
            .fetch_one(&mut *self.write().await)
            .await
            .map_err(|e| {
                unique_or_backend(e, || format!("schedule name {:?} is taken", new.name))
            })?;
        schedule_from::<SqliteDialect>(&row)
    }

    async fn get_schedule(&self, id: i64) -> StoreResult<Schedule> {
        let row = sqlx::query(AssertSqlSafe(statements::get_schedule::<SqliteDialect>()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("schedule", id))?;
        schedule_from::<SqliteDialect>(&row)
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        sqlx::query(AssertSqlSafe(statements::list_schedules::<SqliteDialect>()))
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(schedule_from::<SqliteDialect>)
            .collect()
    }

    async fn delete_schedule(&self, id: i64) -> StoreResult<()> {
        sqlx::query(statements::DELETE_SCHEDULE)
            .bind(id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?
            .map(|_| ())
            .ok_or_else(|| StoreError::not_found("schedule", id))
    }

    async fn due_schedules(&self, now: DateTime<Utc>) -> StoreResult<Vec<Schedule>> {
        sqlx::query(AssertSqlSafe(statements::due_schedules::<SqliteDialect>()))
            .bind(ts(now))
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(schedule_from::<SqliteDialect>)
            .collect()
    }

    async fn claim_fire(
        &self,
        id: i64,
        fire_at: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let advanced = sqlx::query(statements::ADVANCE_SCHEDULE)
            .bind(id)
            .bind(ts(fire_at))
            .bind(ts(next))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if advanced.is_none() {
            return Ok(false);
        }
        let recorded = sqlx::query(statements::INSERT_FIRE)
            .bind(id)
            .bind(ts(fire_at))
            .bind(now_us())
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
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        sqlx::query(statements::RECORD_FIRE)
            .bind(id)
            .bind(ts(fire_at))
            .bind(result)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| fire_not_found(id, fire_at))?;
        sqlx::query(statements::RECORD_LAST_RESULT)
            .bind(id)
            .bind(ts(fire_at))
            .bind(result)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}
