//! The storage interface of troupe.
//!
//! One [`Store`] trait, implemented once per backend (`troupe-sqlite`, `troupe-postgres`), each
//! owning its migrations. `Store` is the sum of one trait per aggregate, each in a module of
//! its own with its types: [`catalog`] (projects, inventories, templates), [`runs`],
//! [`claims`], [`events`], [`output`], [`jobs`], [`inbound`] (event records and the rules
//! document), [`tokens`], [`credentials`] (and what is [`sealed`]) and [`flows`] (flow versions, executions with their steps and slots,
//! schedules: [`FlowStore`], [`ExecutionStore`], [`ScheduleStore`]), [`notifications`] of
//! runs' and executions' ends, the [`audit`] log, [`retention`] (pruning finished runs) and
//! what [`pansible`]'s API keeps (playbook entries, apps).
//! Callers hold an `Arc<dyn Store>` and call any of their methods on it.
//!
//! The `sql` feature adds [`sql`], what both SQL backends share: row mapping, column lists,
//! query builders and statement text written once. The `conformance` feature exposes the test
//! suite every backend must pass, so both behave the same down to the edge cases.

use async_trait::async_trait;

pub mod audit;
pub mod bus;
pub mod catalog;
pub mod claims;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod credentials;
mod error;
pub mod events;
pub mod flows;
pub mod inbound;
pub mod jobs;
pub mod leases;
pub mod notifications;
pub mod output;
pub mod pansible;
pub mod retention;
pub mod runs;
pub mod sealed;
#[cfg(feature = "sql")]
pub mod sql;
pub mod tokens;
pub mod workers;

pub use audit::AuditStore;
pub use bus::{Heard, LiveBus, LocalBus, MAX_NOTICE_BYTES};
pub use catalog::{InventoryStore, ProjectStore, TemplateStore};
pub use claims::{Admission, ClaimStore, Claimant, JobRuns, Lease, RunOutcome};
pub use credentials::{CredentialStore, StoredCredential};
pub use error::{StoreError, StoreResult};
pub use events::EventStore;
pub use flows::{ExecutionStore, FlowStore, ScheduleStore, SlotRequest};
pub use inbound::{
    Concurrency, EventRecordFilter, Gate, InboundStore, Ingested, NewEventRecord, Proposal,
    RulesDoc, Start,
};
pub use jobs::JobStore;
pub use leases::{SourceLease, SourceLeaseStore};
pub use notifications::{DueNotification, NotificationStore, NotifyOutcome};
pub use output::{OutputChunk, OutputStore, Stream};
pub use pansible::PansibleStore;
pub use retention::{Pruned, RetentionStore, RunRetention};
pub use runs::{RunFilter, RunStore, RunVersion};
pub use sealed::{Resealed, SealedColumn, SealedStore, SealedText};
pub use tokens::{NewTokenRecord, TokenRecord, TokenStore};
pub use workers::WorkerStore;

/// Every store trait, for code that calls store methods on a concrete backend type (methods
/// of the aggregates' traits need their trait in scope there; on a `dyn Store` they do not).
pub mod prelude {
    pub use crate::{
        AuditStore, ClaimStore, CredentialStore, EventStore, ExecutionStore, FlowStore,
        InboundStore, InventoryStore, JobStore, NotificationStore, OutputStore, PansibleStore,
        ProjectStore, RetentionStore, RunStore, ScheduleStore, SealedStore, SourceLeaseStore,
        Store, StoreBackend, TemplateStore, TokenStore, WorkerStore,
    };
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    /// Only items with an id below this (the previous page's last id).
    pub before: Option<i64>,
    /// At most this many items.
    pub limit: i64,
}

/// What a backend says about itself.
#[async_trait]
pub trait StoreBackend {
    /// The backend's name: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// The database server's version, for `troupe doctor`.
    async fn server_version(&self) -> StoreResult<String>;
    /// Succeeds when the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
}

/// Everything troupe keeps: every aggregate's trait together. Implemented by any type that
/// implements them all (a backend implements each, and gets this one).
///
/// Every method is atomic: it either happens whole or not at all. The methods of the
/// aggregates' traits are callable on a `dyn Store` without importing those traits.
pub trait Store:
    StoreBackend
    + AuditStore
    + ProjectStore
    + InventoryStore
    + TemplateStore
    + RunStore
    + ClaimStore
    + EventStore
    + OutputStore
    + JobStore
    + InboundStore
    + TokenStore
    + FlowStore
    + ExecutionStore
    + ScheduleStore
    + NotificationStore
    + CredentialStore
    + SealedStore
    + WorkerStore
    + SourceLeaseStore
    + RetentionStore
    + PansibleStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: StoreBackend
        + AuditStore
        + ProjectStore
        + InventoryStore
        + TemplateStore
        + RunStore
        + ClaimStore
        + EventStore
        + OutputStore
        + JobStore
        + InboundStore
        + TokenStore
        + FlowStore
        + ExecutionStore
        + ScheduleStore
        + NotificationStore
        + CredentialStore
        + SealedStore
        + WorkerStore
        + SourceLeaseStore
        + RetentionStore
        + PansibleStore
        + Send
        + Sync
        + 'static
{
}
