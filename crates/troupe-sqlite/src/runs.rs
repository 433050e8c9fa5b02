//! Runs created and read on SQLite.

use crate::claims::takes;
use crate::{RUN_COLS, SqliteDialect, SqliteStore, now_us, require_row};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection};
use troupe_core::RunStatus;
use troupe_core::inventory::InventoryContent;
use troupe_core::project::Project;
use troupe_core::run::{NewRun, Run};
use troupe_store::sql::{
    References, RunOrigin, backend, check_references, foreign_key_violated, invalid, project_from,
    push_run_filter, run_from, run_inventory_from, statements, status_counts, to_json,
    version_from,
};
use troupe_store::{Claimant, Page, RunFilter, RunStore, RunVersion, StoreError, StoreResult};

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        // Most runs are one statement, one trip to SQLite's thread instead of four (begin,
        // check, insert, commit). A violated foreign key sends the run the long way, whose
        // checks name what is missing.
        if one_statement_run(new) {
            let mut conn = self.write().await;
            match insert_run_row(&mut conn, new, RunOrigin::default()).await {
                Err(StoreError::Backend(e))
                    if e.downcast_ref().is_some_and(foreign_key_violated) => {}
                done => return done,
            }
        }
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let run = insert_run(&mut tx, new, RunOrigin::default()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn get_run(&self, id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(statements::get_run::<SqliteDialect>()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        run_from::<SqliteDialect>(&row)
    }

    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent> {
        let row = sqlx::query(statements::RUN_INVENTORY)
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        run_inventory_from::<SqliteDialect>(&row)
    }

    async fn get_run_launch(&self, id: i64) -> StoreResult<(Project, InventoryContent)> {
        let row = sqlx::query(AssertSqlSafe(statements::run_launch::<SqliteDialect>()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", id))?;
        Ok((
            project_from::<SqliteDialect>(&row)?,
            run_inventory_from::<SqliteDialect>(&row)?,
        ))
    }

    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query(&format!("SELECT {RUN_COLS} FROM runs"), filter, page)
            .build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(run_from::<SqliteDialect>)
            .collect()
    }

    async fn count_runs_by_status(&self) -> StoreResult<Vec<(RunStatus, u64)>> {
        let rows = sqlx::query_as(statements::COUNT_RUNS_BY_STATUS)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        status_counts(rows)
    }

    fn runs_generation(&self) -> Option<u64> {
        self.writer.changes.current()
    }

    async fn list_run_versions(
        &self,
        filter: &RunFilter,
        page: Page,
    ) -> StoreResult<Vec<RunVersion>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        // One row holding them all: rows cross from SQLite's thread one message (and often one
        // wake-up) each, which costs more than the rows themselves.
        let mut q = runs_query(
            "SELECT json_group_array(json_array(id, version) ORDER BY id DESC) \
             FROM (SELECT id, version FROM runs",
            filter,
            page,
        );
        q.push(")");
        let text: String = q
            .build()
            .fetch_one(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        let pairs: Vec<(i64, i64)> = serde_json::from_str(&text).map_err(invalid)?;
        Ok(pairs
            .into_iter()
            .map(|(id, version)| RunVersion { id, version })
            .collect())
    }

    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT version, {RUN_COLS} FROM runs WHERE id IN ("
        ));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(")");
        q.build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok((
                    version_from::<SqliteDialect>(row)?,
                    run_from::<SqliteDialect>(row)?,
                ))
            })
            .collect()
    }
}

/// Checks the references of `new` and stores it, queued, on `conn` (inside the caller's
/// transaction): what `create_run` does. `NotFound` names the missing reference; nothing is
/// written then.
pub(crate) async fn insert_run(
    conn: &mut SqliteConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    check_references(&mut Refs(&mut *conn), new).await?;
    let run = insert_run_row(conn, new, origin).await?;
    if !new.labels.is_empty() {
        statements::insert_labels::<Sqlite>(run.id, &new.labels)
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
    Ok(run)
}

/// Whether a run can be stored with [`insert_run_row`] alone, outside a transaction: it has no
/// labels or notifications (other tables) and no job unit (the one reference no foreign key
/// checks), so the foreign keys check all it refers to.
pub(crate) fn one_statement_run(new: &NewRun) -> bool {
    new.labels.is_empty() && new.notify.is_empty() && new.origin.job_unit().is_none()
}

/// The writer's transaction, as the shared reference checks use it.
struct Refs<'c>(&'c mut SqliteConnection);

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
        // One writer: nothing can delete it before this transaction ends.
        require_row(self.0, "inventories", "inventory", id).await
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

/// The columns [`insert_run_row`] fills from `$1`..`$19` (`status` aside).
const INSERT_COLS: &str = "project_id, playbook, inventory_id, inventory_format, \
     inventory_hosts, inventory_vars, options, labels, tag, created_at, job_id, unit, \
     relaunch_of, template_id, parent_id, slice, slice_count, event_id, concurrency_key";

/// The `runs` row of `new`, and nothing else.
async fn insert_run_row(
    conn: &mut SqliteConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    let sql = format!(
        "INSERT INTO runs ({INSERT_COLS}, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, 'queued') RETURNING {RUN_COLS}"
    );
    let row = bind_run_row(sqlx::query(AssertSqlSafe(sql)), new, origin)?
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    run_from::<SqliteDialect>(&row)
}

/// The `runs` row of `new`, claimed by `claimant` in the same statement when it may take the
/// run and no older queued run it may take waits (as [`crate::claims::claim_created`] claims
/// a stored run, under a lease of `lease`), and left `queued` otherwise.
pub(crate) async fn insert_run_row_claimed(
    conn: &mut SqliteConnection,
    new: &NewRun,
    claimant: &Claimant<'_>,
    lease: std::time::Duration,
) -> StoreResult<Run> {
    // `new` is the row as a plain insert stores it; `admit` says whether it is claimed.
    let sql = format!(
        "INSERT INTO runs ({INSERT_COLS}, status, started_at, worker_id, lease_expires_at) \
         SELECT {INSERT_COLS}, CASE WHEN admit THEN 'running' ELSE 'queued' END, \
           CASE WHEN admit THEN $10 END, CASE WHEN admit THEN $20 END, \
           CASE WHEN admit THEN $21 END \
         FROM (SELECT *, ({new_takes} AND NOT EXISTS (SELECT 1 FROM runs AS older \
             WHERE older.status = 'queued' AND {older_takes})) AS admit \
           FROM (SELECT $1 AS project_id, $2 AS playbook, $3 AS inventory_id, \
             $4 AS inventory_format, $5 AS inventory_hosts, $6 AS inventory_vars, \
             $7 AS options, $8 AS labels, $9 AS tag, $10 AS created_at, $11 AS job_id, \
             $12 AS unit, $13 AS relaunch_of, $14 AS template_id, $15 AS parent_id, \
             $16 AS slice, $17 AS slice_count, $18 AS event_id, $19 AS concurrency_key) AS new) \
         RETURNING {RUN_COLS}",
        new_takes = takes(claimant, "new", "$22"),
        older_takes = takes(claimant, "older", "$22"),
    );
    let row = bind_run_row(sqlx::query(AssertSqlSafe(sql)), new, RunOrigin::default())?
        .bind(claimant.worker_id)
        .bind(crate::lease_end(now_us(), lease))
        .bind(to_json(&claimant.labels)?)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    run_from::<SqliteDialect>(&row)
}

/// `query` with `$1`..`$19` bound to `new`'s [`INSERT_COLS`] (`created_at` now).
fn bind_run_row<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    new: &'q NewRun,
    origin: RunOrigin<'q>,
) -> StoreResult<sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>> {
    let (job_id, unit) = new
        .origin
        .job_unit()
        .map(|(j, u)| (Some(j), Some(u)))
        .unwrap_or_default();
    Ok(query
        .bind(new.project_id)
        .bind(new.playbook.as_str())
        .bind(new.inventory_id)
        .bind(new.inventory.format.as_str())
        .bind(&new.inventory.hosts)
        .bind(&new.inventory.vars)
        .bind(to_json(&new.options)?)
        .bind(to_json(&new.labels)?)
        .bind(&new.tag)
        .bind(now_us())
        .bind(job_id)
        .bind(unit)
        .bind(new.origin.relaunch_of())
        .bind(new.origin.template_id())
        .bind(new.origin.slice_of().map(|s| s.parent_id))
        .bind(new.origin.slice_of().map(|s| s.slice))
        .bind(new.origin.slice_of().map(|s| s.count))
        .bind(origin.event_id)
        .bind(origin.concurrency_key))
}

/// `select` (which ends in `FROM runs`) with `filter` and `page` applied, newest first.
fn runs_query(select: &str, filter: &RunFilter, page: Page) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(select);
    q.push(" WHERE 1 = 1");
    push_run_filter(&mut q, filter, page);
    q
}
