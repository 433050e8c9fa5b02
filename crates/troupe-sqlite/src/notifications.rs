//! Notifications of runs and executions on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us, require_row, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use troupe_core::notify::{Notification, SealedNotify, Subject};
use troupe_store::sql::notifications::{
    self as statement, NOTIFICATION_COLS, not_claimed, notification_from, outcome_columns,
    subject_column,
};
use troupe_store::sql::{backend, to_json};
use troupe_store::{DueNotification, NotificationStore, NotifyOutcome, StoreError, StoreResult};

/// Inserts one pending notification per target, in the caller's transaction.
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    subject: Subject,
    targets: &[SealedNotify],
) -> StoreResult<Vec<Notification>> {
    let (column, id) = subject_column(subject);
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let row = sqlx::query(AssertSqlSafe(statement::insert(column)))
            .bind(id)
            .bind(to_json(target)?)
            .bind(now_us())
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
        out.push(notification_from::<SqliteDialect>(&row)?);
    }
    Ok(out)
}

impl SqliteStore {
    async fn notification(&self, id: i64) -> StoreResult<Notification> {
        let row = sqlx::query(AssertSqlSafe(statement::get_one()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("notification", id))?;
        notification_from::<SqliteDialect>(&row)
    }
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn add_notifications(
        &self,
        subject: Subject,
        targets: &[SealedNotify],
    ) -> StoreResult<Vec<Notification>> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
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
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(notification_from::<SqliteDialect>)
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
        // One writer: nobody claims between the look and the update.
        let mut w = self.write().await;
        let due = sqlx::query(AssertSqlSafe(statement::due("")))
            .bind(ts(now))
            .bind(limit)
            .bind(owner)
            .fetch_all(&mut *w)
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(due.len());
        for row in due {
            let id: i64 = row.try_get("due_id").map_err(backend)?;
            let status: String = row.try_get("subject_status").map_err(backend)?;
            let row = sqlx::query(AssertSqlSafe(format!(
                "UPDATE notifications SET owner = ?, lease_until = ? WHERE id = ? \
                 RETURNING {NOTIFICATION_COLS}"
            )))
            .bind(owner)
            .bind(ts(until))
            .bind(id)
            .fetch_one(&mut *w)
            .await
            .map_err(backend)?;
            out.push(DueNotification {
                notification: notification_from::<SqliteDialect>(&row)?,
                status,
            });
        }
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
            NotifyOutcome::Retry { at, .. } => Some(ts(*at)),
            _ => None,
        };
        let row = sqlx::query(AssertSqlSafe(statement::record()))
            .bind(state.as_str())
            .bind(counted)
            .bind(error)
            .bind(next)
            .bind(finished.then(now_us))
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => notification_from::<SqliteDialect>(&row),
            None => Err(not_claimed(id, owner, &self.notification(id).await?)),
        }
    }
}
