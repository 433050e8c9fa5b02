//! Notifications: one record per target per run or execution, `pending` until it is sent,
//! given up or skipped.
//!
//! A run's notifications are stored with the run (`NewRun::notify`, one transaction); an
//! execution's are added when it is created. Whoever sends them claims the due ones under a
//! lease, so two replicas do not send the same one, and one a crashed replica had claimed is
//! taken again when its lease ends.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::notify::{Notification, SealedNotify, Subject};

/// A claimed notification and the status its run or execution ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct DueNotification {
    /// The notification (`pending`, claimed).
    pub notification: Notification,
    /// The end of its run or execution (`successful`, `failed`...).
    pub status: String,
}

/// How an attempt at a notification went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Delivered: `sent`.
    Sent,
    /// Not wanted for this end: `skipped`.
    Skipped,
    /// Failed; try again at `at` (it stays `pending`).
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why it failed.
        error: String,
    },
    /// Failed for the last time: `failed`.
    Failed {
        /// Why.
        error: String,
    },
}

/// Notifications of runs and executions.
#[async_trait]
pub trait NotificationStore {
    /// Adds pending notifications to a run or an execution. `NotFound` when it is missing.
    async fn add_notifications(
        &self,
        subject: Subject,
        targets: &[SealedNotify],
    ) -> StoreResult<Vec<Notification>>;
    /// The notifications of a run or an execution, oldest first (empty for one without any,
    /// or one that does not exist).
    async fn list_notifications(&self, subject: Subject) -> StoreResult<Vec<Notification>>;
    /// Claims for `owner` until `until` at most `limit` pending notifications whose run or
    /// execution has ended, whose next attempt is due at `now`, and that nobody else holds
    /// (no claim, `owner`'s own claim (a restarted replica takes back what it held), or one
    /// that ended before `now`); oldest first.
    async fn claim_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueNotification>>;
    /// Records an attempt (counting it, except a skip) and lets go of the claim. `Conflict`
    /// when `owner` does not hold it (any more) or it is no longer pending; `NotFound` when
    /// it is missing.
    async fn record_notification(
        &self,
        id: i64,
        owner: &str,
        outcome: &NotifyOutcome,
    ) -> StoreResult<Notification>;
}
