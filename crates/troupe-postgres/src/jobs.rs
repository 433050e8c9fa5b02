//! Jobs and their units on PostgreSQL.

use crate::{PgDialect, PgStore, now, require_row};
use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};
use std::collections::HashMap;
use troupe_core::job::{Job, NewJob, Unit, UnitSource};
use troupe_store::sql::statements::{self, JOB_COLS};
use troupe_store::sql::{
    backend, fresh_units, get, job_from, push_page, to_json, unique_or_backend, unit_from,
    unit_not_found,
};
use troupe_store::{JobStore, Page, StoreError, StoreResult};

#[async_trait]
impl JobStore for PgStore {
    async fn create_job(&self, new: &NewJob) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(project_id) = new.project_id {
            require_row(&mut tx, "projects", "project", project_id).await?;
        }
        let row = sqlx::query(statements::INSERT_JOB)
            .bind(&new.tag)
            .bind(new.project_id)
            .bind(now())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let job_id: i64 = get(&row, "id")?;
        // Positions follow the list: WITH ORDINALITY numbers the names as given.
        sqlx::query(
            "INSERT INTO job_units (job_id, position, name) \
             SELECT $1, u.position - 1, u.name \
             FROM UNNEST($2::text[]) WITH ORDINALITY AS u(name, position)",
        )
        .bind(job_id)
        .bind(&new.units)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or_backend(e, || "a job cannot have two units of one name".into()))?;
        tx.commit().await.map_err(backend)?;
        job_from::<PgDialect>(&row, fresh_units(&new.units))
    }

    async fn get_job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query(statements::GET_JOB)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("job", id))?;
        let mut jobs = self.jobs_from(std::slice::from_ref(&row)).await?;
        jobs.pop().ok_or_else(|| StoreError::not_found("job", id))
    }

    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>> {
        let rows = sqlx::query(statements::LATEST_JOB)
            .bind(tag)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        Ok(self.jobs_from(&rows).await?.pop())
    }

    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE TRUE"));
        if let Some(tag) = tag {
            q.push(" AND tag = ").push_bind(tag);
        }
        push_page(&mut q, page);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        self.jobs_from(&rows).await
    }

    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit> {
        let encoded = to_json(source)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        require_row(&mut tx, "jobs", "job", job_id).await?;
        if let UnitSource::Project(project_id) = source {
            require_row(&mut tx, "projects", "project", *project_id).await?;
        }
        let row = sqlx::query(
            "UPDATE job_units SET source = $1::jsonb WHERE job_id = $2 AND name = $3 \
             RETURNING name, source::text AS source",
        )
        .bind(encoded)
        .bind(job_id)
        .bind(unit)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or_else(|| unit_not_found(job_id, unit))?;
        let unit = unit_from::<PgDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(unit)
    }
}

impl PgStore {
    /// The jobs of `rows` (selected with [`JOB_COLS`]), in the same order, with their units.
    async fn jobs_from(&self, rows: &[PgRow]) -> StoreResult<Vec<Job>> {
        let ids = rows
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut units: HashMap<i64, Vec<Unit>> = HashMap::new();
        if !ids.is_empty() {
            let found = sqlx::query(
                "SELECT job_id, name, source::text AS source FROM job_units \
                 WHERE job_id = ANY($1) ORDER BY job_id, position",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            for row in &found {
                units
                    .entry(get(row, "job_id")?)
                    .or_default()
                    .push(unit_from::<PgDialect>(row)?);
            }
        }
        rows.iter()
            .zip(ids)
            .map(|(row, id)| job_from::<PgDialect>(row, units.remove(&id).unwrap_or_default()))
            .collect()
    }
}
