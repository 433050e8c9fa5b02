//! Leader leases: which replica runs a singleton task (an event source, retention) right now.
//!
//! A lease is a row per name with its holder and an expiry. A replica runs the task only while
//! it holds the lease, renews it well before it expires, and stops the task as soon as a renewal
//! fails. When the holder dies, the lease expires and another replica acquires it. Times are the
//! callers' clocks: replicas sharing a store must keep them in sync (NTP), as run leases need.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLease {
    /// What is leased (a source's name, or a task's reserved name).
    pub name: String,
    /// Who holds it: a replica's node id and incarnation.
    pub holder: String,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// Leader leases, one statement per operation.
#[async_trait]
pub trait SourceLeaseStore {
    /// Takes `name` for `holder` until `until`, if nobody holds it, its lease expired at or
    /// before `now`, or `holder` already holds it (then it is renewed). True when `holder` holds
    /// it afterwards.
    async fn acquire_source_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Extends `holder`'s lease of `name` to `until`. False when `holder` no longer holds it
    /// (another replica took it over, or it was released): the task must stop at once.
    async fn renew_source_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Gives `name` up, if `holder` holds it, so another replica may take it without waiting
    /// for the expiry.
    async fn release_source_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// Every lease, expired or not, by name.
    async fn list_source_leases(&self) -> StoreResult<Vec<SourceLease>>;
}
