//! Runs created and read on PostgreSQL.

use crate::{PgDialect, PgStore, RUN_COLS, WORK_CHANNEL, now, pg_text, require_row, share_row};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};
use troupe_core::RunStatus;
use troupe_core::inventory::InventoryContent;
use troupe_core::project::Project;
use troupe_core::run::{NewRun, Run};
use troupe_store::sql::{
    References, RunOrigin, backend, check_references, project_from, push_run_filter, run_from,
    run_inventory_from, statements, status_counts, to_json, version_from,
};
use troupe_store::{Page, RunFilter, RunStore, RunVersion, StoreError, StoreResult};

#[async_trait]
impl RunStore for PgStore {
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let run = insert_run(&mut tx, new, RunOrigin::default()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn get_run(&self, id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(statements::get_run::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        run_from::<PgDialect>(&row)
    }

    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent> {
        let row = sqlx::query(statements::RUN_INVENTORY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        run_inventory_from::<PgDialect>(&row)
    }

    async fn get_run_launch(&self, id: i64) -> StoreResult<(Project, InventoryContent)> {
        let row = sqlx::query(AssertSqlSafe(statements::run_launch::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        Ok((
            project_from::<PgDialect>(&row)?,
            run_inventory_from::<PgDialect>(&row)?,
        ))
    }

    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query(RUN_COLS, filter, page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(run_from::<PgDialect>)
            .collect()
    }

    async fn count_runs_by_status(&self) -> StoreResult<Vec<(RunStatus, u64)>> {
        let rows = sqlx::query_as(statements::COUNT_RUNS_BY_STATUS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        status_counts(rows)
    }

    async fn list_run_versions(
        &self,
        filter: &RunFilter,
        page: Page,
    ) -> StoreResult<Vec<RunVersion>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query("id, version", filter, page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(version_from::<PgDialect>)
            .collect()
    }

    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(AssertSqlSafe(format!(
            "SELECT version, {RUN_COLS} FROM runs WHERE id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| Ok((version_from::<PgDialect>(row)?, run_from::<PgDialect>(row)?)))
        .collect()
    }
}

/// Checks the references of `new` and stores it, queued, on `conn` (inside the caller's
/// transaction), announcing it to listeners on commit: what `create_run` does. `NotFound`
/// names the missing reference; nothing is written then.
pub(crate) async fn insert_run(
    conn: &mut PgConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    let options = to_json(&new.options)?;
    let labels = to_json(&new.labels)?;
    check_references(&mut Refs(&mut *conn), new).await?;
    let (job_id, unit) = new
        .origin
        .job_unit()
        .map(|(j, u)| (Some(j), Some(u)))
        .unwrap_or_default();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO runs (project_id, playbook, inventory_id, inventory_format, \
         inventory_hosts, inventory_vars, options, labels, tag, status, created_at, \
         job_id, unit, relaunch_of, template_id, parent_id, slice, slice_count, event_id, \
         concurrency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::jsonb, $9, 'queued', $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING {RUN_COLS}"
    )))
    .bind(new.project_id)
    .bind(new.playbook.as_str())
    .bind(new.inventory_id)
    .bind(new.inventory.format.as_str())
    .bind(pg_text(&new.inventory.hosts).into_owned())
    .bind(
        new.inventory
            .vars
            .as_deref()
            .map(|v| pg_text(v).into_owned()),
    )
    .bind(options)
    .bind(labels)
    .bind(&new.tag)
    .bind(now())
    .bind(job_id)
    .bind(unit)
    .bind(new.origin.relaunch_of())
    .bind(new.origin.template_id())
    .bind(new.origin.slice_of().map(|s| s.parent_id))
    .bind(new.origin.slice_of().map(|s| s.slice))
    .bind(new.origin.slice_of().map(|s| s.count))
    .bind(origin.event_id)
    .bind(origin.concurrency_key.map(|k| pg_text(k).into_owned()))
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    let run = run_from::<PgDialect>(&row)?;
    if !new.labels.is_empty() {
        statements::insert_labels::<Postgres>(run.id, &new.labels)
            .build()
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    crate::notifications::insert(
        &mut *conn,
        troupe_core::notify::Subject::Run(run.id),
        &new.notify,
    )
    .await?;
    // Delivered on commit.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WORK_CHANNEL)
        .bind(run.id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(run)
}

/// The run's transaction, as the shared reference checks use it.
struct Refs<'c>(&'c mut PgConnection);

impl References for Refs<'_> {
    async fn require(
        &mut self,
        table: &'static str,
        what: &'static str,
        id: i64,
    ) -> StoreResult<()> {
        require_row(self.0, table, what, id).await
    }

    async fn require_inventory(&mut self, id: i64) -> StoreResult<()> {
        // KEY SHARE: a concurrent delete_inventory waits for this run to be stored, and
        // then sees it.
        share_row(self.0, "inventories", "inventory", id).await
    }

    async fn unit_exists(&mut self, job_id: i64, unit: &str) -> StoreResult<bool> {
        Ok(sqlx::query(statements::UNIT_EXISTS)
            .bind(job_id)
            .bind(unit)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(backend)?
            .is_some())
    }
}

/// `SELECT cols FROM runs` with `filter` and `page` applied, newest first.
fn runs_query(cols: &str, filter: &RunFilter, page: Page) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {cols} FROM runs WHERE TRUE"));
    push_run_filter(&mut q, filter, page);
    q
}
