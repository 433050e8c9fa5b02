//! Notifications of runs and executions on PostgreSQL.

use crate::{PgDialect, PgStore, micros, now, require_row};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use troupe_core::notify::{Notification, SealedNotify, Subject};
use troupe_store::sql::notifications::{
    self as statement, NOTIFICATION_COLS, not_claimed, notification_from, outcome_columns,
    subject_column,
};
use troupe_store::sql::{backend, to_json};
use troupe_store::{DueNotification, NotificationStore, NotifyOutcome, StoreError, StoreResult};

/// Inserts one pending notification per target, in the caller's transaction.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    subject: Subject,
    targets: &[SealedNotify],
) -> StoreResult<Vec<Notification>> {
    let (column, id) = subject_column(subject);
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let row = sqlx::query(AssertSqlSafe(statement::insert(column)))
            .bind(id)
            .bind(to_json(target)?)
            .bind(now())
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
        out.push(notification_from::<PgDialect>(&row)?);
    }
    Ok(out)
}

impl PgStore {
    async fn notification(&self, id: i64) -> StoreResult<Notification> {
        let row = sqlx::query(AssertSqlSafe(statement::get_one()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("notification", id))?;
        notification_from::<PgDialect>(&row)
    }
}

#[async_trait]
impl NotificationStore for PgStore {
    async fn add_notifications(
        &self,
        subject: Subject,
        targets: &[SealedNotify],
    ) -> StoreResult<Vec<Notification>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        match subject {
            Subject::Run(id) => require_row(&mut tx, "runs", "run", id).await?,
            Subject::Execution(id) => require_row(&mut tx, "executions", "execution", id).await?,
        }
        let added = insert(&mut tx, subject, targets).await?;
        tx.commit().await.map_err(backend)?;
        Ok(added)
    }

    async fn list_notifications(&self, subject: Subject) -> StoreResult<Vec<Notification>> {
        let (column, id) = subject_column(subject);
        sqlx::query(AssertSqlSafe(statement::list(column)))
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(notification_from::<PgDialect>)
            .collect()
    }

    async fn claim_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueNotification>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let returned = NOTIFICATION_COLS
            .split(", ")
            .map(|c| format!("n.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // SKIP LOCKED: replicas claiming at once each take other rows.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH due AS ({}) \
             UPDATE notifications n SET owner = $3, lease_until = $4 FROM due \
             WHERE n.id = due.due_id RETURNING {returned}, due.subject_status",
            statement::due("FOR UPDATE OF n SKIP LOCKED")
        )))
        .bind(micros(now))
        .bind(limit)
        .bind(owner)
        .bind(micros(until))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out = rows
            .iter()
            .map(|row| {
                Ok(DueNotification {
                    notification: notification_from::<PgDialect>(row)?,
                    status: row.try_get("subject_status").map_err(backend)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|d| d.notification.id);
        Ok(out)
    }

    async fn record_notification(
        &self,
        id: i64,
        owner: &str,
        outcome: &NotifyOutcome,
    ) -> StoreResult<Notification> {
        let (state, counted, error, finished) = outcome_columns(outcome);
        let next = match outcome {
            NotifyOutcome::Retry { at, .. } => Some(micros(*at)),
            _ => None,
        };
        let row = sqlx::query(AssertSqlSafe(statement::record()))
            .bind(state.as_str())
            .bind(counted)
            .bind(error)
            .bind(next)
            .bind(finished.then(now))
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => notification_from::<PgDialect>(&row),
            None => Err(not_claimed(id, owner, &self.notification(id).await?)),
        }
    }
}
