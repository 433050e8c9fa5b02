//! Jobs and their units on SQLite.

use crate::{MAX_PARAMS, SqliteDialect, SqliteStore, now_us, require_row};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};
use std::collections::HashMap;
use troupe_core::job::{Job, NewJob, Unit, UnitSource};
use troupe_store::sql::statements::{self, JOB_COLS};
use troupe_store::sql::{
    backend, fresh_units, get, job_from, push_page, to_json, unique_or_backend, unit_from,
    unit_not_found,
};
use troupe_store::{JobStore, Page, StoreError, StoreResult};

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: &NewJob) -> StoreResult<Job> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if let Some(project_id) = new.project_id {
            require_row(&mut tx, "projects", "project", project_id).await?;
        }
        let row = sqlx::query(statements::INSERT_JOB)
            .bind(&new.tag)
            .bind(new.project_id)
            .bind(now_us())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let job_id: i64 = get(&row, "id")?;
        let positioned: Vec<(i64, &String)> = (0..).zip(&new.units).collect();
        for part in positioned.chunks(MAX_PARAMS / 3) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO job_units (job_id, position, name) ");
            q.push_values(part, |mut b, (position, name)| {
                b.push_bind(job_id)
                    .push_bind(*position)
                    .push_bind(name.as_str());
            });
            q.build().execute(&mut *tx).await.map_err(|e| {
                unique_or_backend(e, || "a job cannot have two units of one name".into())
            })?;
        }
        tx.commit().await.map_err(backend)?;
        job_from::<SqliteDialect>(&row, fresh_units(&new.units))
    }

    async fn get_job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query(statements::GET_JOB)
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("job", id))?;
        let mut jobs = self.jobs_from(std::slice::from_ref(&row)).await?;
        jobs.pop().ok_or_else(|| StoreError::not_found("job", id))
    }

    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>> {
        let rows = sqlx::query(statements::LATEST_JOB)
            .bind(tag)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        Ok(self.jobs_from(&rows).await?.pop())
    }

    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE 1 = 1"));
        if let Some(tag) = tag {
            q.push(" AND tag = ").push_bind(tag);
        }
        push_page(&mut q, page);
        let rows = q
            .build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        self.jobs_from(&rows).await
    }

    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit> {
        let encoded = to_json(source)?;
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        require_row(&mut tx, "jobs", "job", job_id).await?;
        if let UnitSource::Project(project_id) = source {
            require_row(&mut tx, "projects", "project", *project_id).await?;
        }
        let row = sqlx::query(
            "UPDATE job_units SET source = ? WHERE job_id = ? AND name = ? \
             RETURNING name, source",
        )
        .bind(encoded)
        .bind(job_id)
        .bind(unit)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or_else(|| unit_not_found(job_id, unit))?;
        let unit = unit_from::<SqliteDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(unit)
    }
}

impl SqliteStore {
    /// The jobs of `rows` (selected with [`JOB_COLS`]), in the same order, with their units.
    async fn jobs_from(&self, rows: &[SqliteRow]) -> StoreResult<Vec<Job>> {
        let ids = rows
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut units: HashMap<i64, Vec<Unit>> = HashMap::new();
        for part in ids.chunks(1000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT job_id, name, source FROM job_units WHERE job_id IN (",
            );
            let mut list = q.separated(", ");
            for id in part {
                list.push_bind(*id);
            }
            q.push(") ORDER BY job_id, position");
            for row in q
                .build()
                .fetch_all(&mut *self.read().await?)
                .await
                .map_err(backend)?
            {
                units
                    .entry(get(&row, "job_id")?)
                    .or_default()
                    .push(unit_from::<SqliteDialect>(&row)?);
            }
        }
        rows.iter()
            .zip(ids)
            .map(|(row, id)| job_from::<SqliteDialect>(row, units.remove(&id).unwrap_or_default()))
            .collect()
    }
}
