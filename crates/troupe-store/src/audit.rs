//! The audit log's store: entries appended in batches, listed newest first, pruned by age.

use crate::{Page, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::audit::{AuditEntry, AuditFilter, NewAuditEntry};

/// Where the audit log is kept.
#[async_trait]
pub trait AuditStore {
    /// Appends `entries`, in order, in one transaction.
    async fn record_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()>;

    /// Entries matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter, page: Page) -> StoreResult<Vec<AuditEntry>>;

    /// Deletes the entries from before `before`; answers how many.
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
