//! Claims, leases and a run's moves to its end, on PostgreSQL.

use crate::runs::insert_run;
use crate::{PgDialect, PgStore, RUN_COLS, lease_end, like_prefix, micros, now, pg_text};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres};
use std::time::Duration;
use troupe_core::RunStatus;
use troupe_core::run::{CancelMode, NewRun, Run};
use troupe_store::sql::RunOrigin;
use troupe_store::sql::{
    already_finished, backend, cancel_mode, finishable, get, not_held, run_from, sorted_ids,
    statements, to_json,
};
use troupe_store::{ClaimStore, Claimant, Lease, RunOutcome, StoreResult};

#[async_trait]
impl ClaimStore for PgStore {
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
        // SKIP LOCKED: runs another claimer has locked are passed over, not waited for; the
        // outer `status = 'queued'` is re-checked on the locked rows.
        let takes = takes(claimant, "runs", "$5");
        let now = now();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH picked AS (SELECT id AS pick FROM runs WHERE status = 'queued' AND {takes} \
               ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE runs SET status = 'running', started_at = $1, worker_id = $2, \
             lease_expires_at = $3, cancel_requested = NULL \
             FROM picked WHERE runs.id = picked.pick AND runs.status = 'queued' \
             RETURNING {RUN_COLS}"
        )))
        .bind(now)
        .bind(claimant.worker_id)
        .bind(lease_end(now, lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(to_json(&claimant.labels)?)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut runs = rows
            .iter()
            .map(run_from::<PgDialect>)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
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
            .bind(micros(at))
            .bind(commit.map(|c| pg_text(c).into_owned()))
            .bind(run_id)
            .bind(worker_id)
            .fetch_optional(&self.pool)
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
            .bind(lease_end(now(), lease))
            .bind(run_id)
            .bind(worker_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            None => Ok(Lease::Lost),
            Some(row) => Ok(Lease::Held {
                cancel_requested: cancel_mode(get(&row, "cancel_requested")?)?,
            }),
        }
    }

    async fn finish_run(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Run> {
        finishable(outcome.status)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = $1, rc = $2, status_reason = $3, summary = $4::jsonb, \
             finished_at = $5, cancel_requested = NULL \
             WHERE id = $6 AND worker_id = $7 AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(outcome.status.as_str())
        .bind(outcome.rc)
        .bind(outcome.reason.as_deref().map(|r| pg_text(r).into_owned()))
        .bind(to_json(&outcome.summary)?)
        .bind(now())
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match row {
            Some(row) => run_from::<PgDialect>(&row),
            None => Err(not_held(run_id, worker_id, self.current_run(run_id).await?)),
        }
    }

    async fn request_cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        debug_assert!(RunStatus::Queued.can_become(RunStatus::Canceled));
        // Each step is one conditional statement; a run that moves between them (queued ->
        // running) is caught by the next one.
        let queued = sqlx::query(AssertSqlSafe(statements::cancel_queued::<PgDialect>()))
            .bind(now())
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if let Some(row) = queued {
            return run_from::<PgDialect>(&row);
        }
        let running = sqlx::query(AssertSqlSafe(statements::cancel_running::<PgDialect>()))
            .bind(mode.as_str())
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if let Some(row) = running {
            return run_from::<PgDialect>(&row);
        }
        Err(already_finished(run_id, &self.current_run(run_id).await?))
    }

    async fn fail_runs_of_workers(
        &self,
        worker_prefix: &str,
        reason: &str,
    ) -> StoreResult<Vec<i64>> {
        self.fail_running(
            "worker_id LIKE $3 ESCAPE '\\'",
            like_prefix(worker_prefix),
            reason,
        )
        .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>> {
        self.fail_running("lease_expires_at < $3", now, reason)
            .await
    }
}

impl PgStore {
    /// Moves every running run matching `condition` (on placeholder `$3`, bound to `arg`) to
    /// `error` with `reason`; returns their ids in order.
    async fn fail_running<T>(&self, condition: &str, arg: T, reason: &str) -> StoreResult<Vec<i64>>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Clone,
    {
        debug_assert!(RunStatus::Running.can_become(RunStatus::Error));
        // Runs whose ansible-playbook never started go back to the queue instead.
        sqlx::query(AssertSqlSafe(statements::requeue_unlaunched(
            &condition.replace("$3", "$1"),
        )))
        .bind(arg.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let rows = sqlx::query(AssertSqlSafe(statements::fail_running(condition)))
            .bind(pg_text(reason).into_owned())
            .bind(now())
            .bind(arg)
            .fetch_all(&self.pool)
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
    conn: &mut PgConnection,
    run_id: i64,
    claimant: &Claimant<'_>,
    lease: Duration,
) -> StoreResult<Option<Run>> {
    // The new run, if the claimant may take it and nothing older it may take is queued.
    // The new row is not visible to other claimers before the commit; older queued runs
    // other transactions hold locked are about to be claimed, so they count as waiting.
    let now = now();
    let row = sqlx::query(AssertSqlSafe(statements::claim_created::<PgDialect>(
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
    row.as_ref().map(run_from::<PgDialect>).transpose()
}

fn takes(claimant: &Claimant<'_>, table: &str, labels: &str) -> String {
    let labels_ok = format!(
        "COALESCE(({table}.options->'worker_labels')::jsonb, '[]'::jsonb) <@ {labels}::jsonb"
    );
    let split_parent = format!(
        "({table}.parent_id IS NULL AND \
         (COALESCE(({table}.options->>'slices')::bigint, 0) > 1 \
          OR {table}.options->>'slice_size' IS NOT NULL))"
    );
    let takes = if claimant.splits {
        format!("({labels_ok} OR {split_parent})")
    } else {
        format!("{labels_ok} AND NOT {split_parent}")
    };
    format!("{takes} AND {}", claimant.job_runs.condition(table))
}
