//! Claims, leases and a run's moves to its end, on SQLite.

use crate::runs::{insert_run, insert_run_row_claimed, one_statement_run};
use crate::{RUN_COLS, SqliteDialect, SqliteStore, lease_end, now_us, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection};
use std::time::Duration;
use troupe_core::RunStatus;
use troupe_core::run::{CancelMode, NewRun, Run};
use troupe_store::sql::{self, RunOrigin};
use troupe_store::sql::{
    already_finished, backend, cancel_mode, finishable, foreign_key_violated, get, not_held,
    run_from, sorted_ids, statements, to_json,
};
use troupe_store::{ClaimStore, Claimant, Lease, RunOutcome, StoreError, StoreResult};

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim_for(
        &self,
        claimant: &Claimant<'_>,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        debug_assert_eq!(
            RunStatus::sources_of(RunStatus::Running),
            [RunStatus::Queued]
        );
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One statement: SQLite runs it under the write lock, so the runs it picks cannot be
        // picked by anyone else. The clock is read once the writer is ours, so `started_at` is
        // when the claim happened, not when it started waiting behind other writes.
        let takes = takes(claimant, "runs", "?");
        let mut conn = self.write().await;
        let now = now_us();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'running', started_at = ?, worker_id = ?, \
             lease_expires_at = ?, cancel_requested = NULL \
             WHERE id IN (SELECT id FROM runs WHERE status = 'queued' AND {takes} \
               ORDER BY id {limit}) \
             AND status = 'queued' RETURNING {RUN_COLS}",
            limit = sql::limit("?")
        )))
        .bind(now)
        .bind(claimant.worker_id)
        .bind(lease_end(now, lease))
        .bind(to_json(&claimant.labels)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let mut runs = rows
            .iter()
            .map(run_from::<SqliteDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    async fn create_run_claimed(
        &self,
        new: &NewRun,
        claimant: &Claimant<'_>,
        lease: Duration,
    ) -> StoreResult<Run> {
        // Most runs are one statement, as in `create_run`: one trip to SQLite's thread while
        // the writer is held instead of five (begin, check, insert, claim, commit). A
        // violated foreign key sends the run the long way, whose checks name what is missing.
        if one_statement_run(new) {
            let mut conn = self.write().await;
            match insert_run_row_claimed(&mut conn, new, claimant, lease).await {
                Err(StoreError::Backend(e))
                    if e.downcast_ref().is_some_and(foreign_key_violated) => {}
                done => return done,
            }
        }
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let run = insert_run(&mut tx, new, RunOrigin::default()).await?;
        let run = match claim_created(&mut tx, run.id, claimant, lease).await? {
            Some(claimed) => claimed,
            None => run,
        };
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()> {
        let row = sqlx::query(statements::MARK_LAUNCHED)
            .bind(ts(at))
            .bind(commit)
            .bind(run_id)
            .bind(worker_id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        if row.is_some() {
            return Ok(());
        }
        Err(not_held(run_id, worker_id, self.current_run(run_id).await?))
    }

    async fn renew_lease(
        &self,
        run_id: i64,
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<Lease> {
        let row = sqlx::query(statements::RENEW_LEASE)
            .bind(lease_end(now_us(), lease))
            .bind(run_id)
            .bind(worker_id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(Lease::Lost);
        };
        Ok(Lease::Held {
            cancel_requested: cancel_mode(get(&row, "cancel_requested")?)?,
        })
    }

    async fn finish_run(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Run> {
        finishable(outcome.status)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = ?, rc = ?, status_reason = ?, summary = ?, \
             finished_at = ?, cancel_requested = NULL \
             WHERE id = ? AND worker_id = ? AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(outcome.status.as_str())
        .bind(outcome.rc)
        .bind(&outcome.reason)
        .bind(to_json(&outcome.summary)?)
        .bind(now_us())
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?;
        match row {
            Some(row) => run_from::<SqliteDialect>(&row),
            None => Err(not_held(run_id, worker_id, self.current_run(run_id).await?)),
        }
    }

    async fn request_cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        debug_assert!(RunStatus::Queued.can_become(RunStatus::Canceled));
        // Each step is one conditional statement; a run that moves between them (queued ->
        // running) is caught by the next one.
        let queued = sqlx::query(AssertSqlSafe(statements::cancel_queued::<SqliteDialect>()))
            .bind(now_us())
            .bind(run_id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        if let Some(row) = queued {
            return run_from::<SqliteDialect>(&row);
        }
        let running = sqlx::query(AssertSqlSafe(statements::cancel_running::<SqliteDialect>()))
            .bind(mode.as_str())
            .bind(run_id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        if let Some(row) = running {
            return run_from::<SqliteDialect>(&row);
        }
        Err(already_finished(run_id, &self.current_run(run_id).await?))
    }

    async fn fail_runs_of_workers(
        &self,
        worker_prefix: &str,
        reason: &str,
    ) -> StoreResult<Vec<i64>> {
        // Not LIKE: SQLite's LIKE ignores ASCII case, and worker ids are case-sensitive.
        self.fail_running(
            "substr(worker_id, 1, length($3)) = $3",
            worker_prefix,
            reason,
        )
        .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>> {
        self.fail_running("lease_expires_at < $3", ts(now), reason)
            .await
    }
}

impl SqliteStore {
    /// Moves every running run matching `condition` (on placeholder `$3`, bound to `arg`) to
    /// `error` with `reason`; returns their ids in order.
    async fn fail_running<T>(&self, condition: &str, arg: T, reason: &str) -> StoreResult<Vec<i64>>
    where
        T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Clone,
    {
        debug_assert!(RunStatus::Running.can_become(RunStatus::Error));
        // Runs whose ansible-playbook never started go back to the queue instead.
        sqlx::query(AssertSqlSafe(statements::requeue_unlaunched(
            &condition.replace("$3", "$1"),
        )))
        .bind(arg.clone())
        .fetch_all(&mut *self.write().await)
        .await
        .map_err(backend)?;
        let rows = sqlx::query(AssertSqlSafe(statements::fail_running(condition)))
            .bind(reason)
            .bind(now_us())
            .bind(arg)
            .fetch_all(&mut *self.write().await)
            .await
            .map_err(backend)?;
        sorted_ids(&rows)
    }
}

/// The condition on `table`'s row for runs `claimant` may take; `labels` is the placeholder of
/// its labels (JSON). A run may be taken when every label it requires is among the
/// claimant's. A split parent only queues its slices (which carry its labels), so a claimant
/// coordinating splits takes it whatever its labels; one that does not never does.
/// Claims the run `run_id` that `conn`'s transaction just stored, for `claimant`: `running`
/// under a lease of `lease` when `claimant` may take it and nothing older it may take is
/// queued; `None` (still `queued`) otherwise. Admission at create, for `create_run_claimed`
/// and the event ingest.
pub(crate) async fn claim_created(
    conn: &mut SqliteConnection,
    run_id: i64,
    claimant: &Claimant<'_>,
    lease: Duration,
) -> StoreResult<Option<Run>> {
    // The new run, if the claimant may take it and nothing older it may take is queued.
    let now = now_us();
    let row = sqlx::query(AssertSqlSafe(statements::claim_created::<SqliteDialect>(
        |table| takes(claimant, table, "$5"),
    )))
    .bind(now)
    .bind(claimant.worker_id)
    .bind(lease_end(now, lease))
    .bind(run_id)
    .bind(to_json(&claimant.labels)?)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    row.as_ref().map(run_from::<SqliteDialect>).transpose()
}

pub(crate) fn takes(claimant: &Claimant<'_>, table: &str, labels: &str) -> String {
    let labels_ok = format!(
        "NOT EXISTS (SELECT 1 FROM json_each({table}.options, '$.worker_labels') AS l \
         WHERE l.value NOT IN (SELECT value FROM json_each({labels})))"
    );
    let split_parent = format!(
        "({table}.parent_id IS NULL AND \
         (COALESCE(json_extract({table}.options, '$.slices'), 0) > 1 \
          OR json_extract({table}.options, '$.slice_size') IS NOT NULL))"
    );
    let takes = if claimant.splits {
        format!("({labels_ok} OR {split_parent})")
    } else {
        format!("{labels_ok} AND NOT {split_parent}")
    };
    format!("{takes} AND {}", claimant.job_runs.condition(table))
}
