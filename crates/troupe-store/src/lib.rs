//! The storage interface of troupe.
//!
//! One [`Store`] trait, implemented once per backend (`troupe-sqlite`, `troupe-postgres`), each
//! owning its migrations. The `conformance` feature exposes the test suite every backend must
//! pass, so both behave the same down to the edge cases.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use troupe_core::inbound::{ConcurrencyPolicy, EventRecord, EventStatus, GateKind};
use troupe_core::inventory::{Inventory, InventoryContent, NewInventory};
use troupe_core::job::{Job, NewJob, Unit, UnitSource};
use troupe_core::project::{NewProject, Project, ProjectSync};
use troupe_core::run::{CancelMode, NewRun, Run, RunSummary};
use troupe_core::template::{NewTemplate, Template};
use troupe_core::{Event, RunStatus};

#[cfg(feature = "conformance")]
pub mod conformance;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing, e.g. `run`.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The change conflicts with what is stored (duplicate name, run already finished...).
    #[error("{0}")]
    Conflict(String),
    /// The backend failed (connection lost, disk full...). Retrying may help.
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A `NotFound` for `what` with `id`.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RunFilter {
    /// Only runs in one of these statuses (any when empty).
    pub statuses: Vec<RunStatus>,
    /// Only runs of this project.
    pub project_id: Option<i64>,
    /// Only runs carrying this label key (and value, when given).
    pub label: Option<(String, Option<String>)>,
    /// Only runs with this tag.
    pub tag: Option<String>,
    /// Only actions of this job.
    pub job_id: Option<i64>,
    /// Only actions on this unit (of `job_id`).
    pub unit: Option<String>,
    /// Only relaunches of this run.
    pub relaunch_of: Option<i64>,
    /// Only slices of this split run.
    pub parent_id: Option<i64>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    /// Only items with an id below this (the previous page's last id).
    pub before: Option<i64>,
    /// At most this many items.
    pub limit: i64,
}

/// One state of a run: its id and its version, a counter the store bumps on every change to
/// the run. Readers key what they derive from a run (its JSON, say) by it, and ask for the
/// whole run again only when the version moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunVersion {
    /// The run.
    pub id: i64,
    /// Grows with every change to the run; never goes back.
    pub version: i64,
}

/// How a worker finished a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The final status; must be a legal move from `running`.
    pub status: RunStatus,
    /// ansible-playbook's exit code, when it exited.
    pub rc: Option<i32>,
    /// Why, when it needs saying.
    pub reason: Option<String>,
    /// Per-host totals from the stats event (empty when there was none).
    pub summary: RunSummary,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Still ours; a cancel may have been asked for in the meantime.
    Held {
        /// A cancel asked for and not yet carried out.
        cancel_requested: Option<CancelMode>,
    },
    /// No longer ours (expired and taken away, or the run is over): stop working on it.
    Lost,
}

/// Which of a process's output streams a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output: what ansible's stdout callback printed.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A piece of a run's output, in order within its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub stream: Stream,
    /// Position within the run's output (both streams share one sequence), from 1.
    pub seq: i64,
    /// The text.
    pub text: String,
}

/// An API token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Store-assigned id.
    pub id: i64,
    /// Human name ("admin", "ci"...).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A gate a rule's run must pass: no run was started for the same rule, kind and key within
/// `within` before the event was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Throttle or dedupe.
    pub kind: GateKind,
    /// The rendered group (throttle) or event id (dedupe).
    pub key: String,
    /// The window.
    pub within: Duration,
}

/// A rule's concurrency setting for the run it proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Runs sharing this key (the rule and the routing key) count as the same work.
    pub key: String,
    /// What to do when one of them is queued or running.
    pub policy: ConcurrencyPolicy,
}

/// What one matching rule wants done with an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The rule's name.
    pub rule: String,
    /// Gates checked in order, inside the same transaction as the run's creation; the first
    /// closed one holds the run back.
    pub gates: Vec<Gate>,
    /// Concurrency policy, checked after the gates.
    pub concurrency: Option<Concurrency>,
    /// The run to start, or why none could be built (recorded as `failed`).
    pub run: Result<NewRun, String>,
}

/// An event to record, with the runs its matching rules propose.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEventRecord {
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The source's name.
    pub source: String,
    /// The routing key.
    pub routing_key: String,
    /// The source's id for the delivery; unique per source. An event whose (source,
    /// delivery_id) is stored already is not recorded again: `Ingested::Duplicate`.
    pub delivery_id: Option<String>,
    /// Hex SHA-256 over the routing key and the payload bytes.
    pub content_hash: String,
    /// When set (a broker redelivered a message that carries no id), an event of the same
    /// source with the same `content_hash` received within this window counts as this one:
    /// `Ingested::Duplicate`.
    pub redelivery_window: Option<Duration>,
    /// The payload's size in bytes.
    pub payload_size: i64,
    /// The payload (text), whole or cut.
    pub payload: Option<String>,
    /// Whether `payload` was cut.
    pub payload_truncated: bool,
    /// The status when `proposals` is empty (`unmatched` or `rejected`); with proposals the
    /// store decides: `accepted` if a run started, else `failed` if every proposal failed,
    /// else `skipped`.
    pub status: EventStatus,
    /// Why, when it needs saying.
    pub reason: Option<String>,
    /// What the matching rules want, in rule order.
    pub proposals: Vec<Proposal>,
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// Recorded now, with the runs it started (queued).
    Recorded {
        /// The record.
        record: EventRecord,
        /// The runs created, in proposal order.
        runs: Vec<Run>,
    },
    /// Recorded before (same delivery): nothing was done now.
    Duplicate(EventRecord),
}

/// Which event records to list.
#[derive(Debug, Clone, Default)]
pub struct EventRecordFilter {
    /// Only from this source.
    pub source: Option<String>,
    /// Only with this routing key.
    pub routing_key: Option<String>,
    /// Only in this status.
    pub status: Option<EventStatus>,
}

/// The rules document, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesDoc {
    /// Increases by one with every change, from 1.
    pub revision: i64,
    /// The YAML text.
    pub text: String,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// Everything troupe keeps. Implemented once per backend.
///
/// Every method is atomic: it either happens whole or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// The database server's version, for `troupe doctor`.
    async fn server_version(&self) -> StoreResult<String>;
    /// Succeeds when the store answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Creates a project; `Conflict` when the name is taken.
    async fn create_project(&self, new: &NewProject) -> StoreResult<Project>;
    /// A project by id.
    async fn get_project(&self, id: i64) -> StoreResult<Project>;
    /// A project by name.
    async fn find_project(&self, name: &str) -> StoreResult<Option<Project>>;
    /// All projects, by id.
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// Records the outcome of a git project's sync (replacing the last one); `NotFound` for a
    /// missing project.
    async fn set_project_sync(&self, id: i64, sync: &ProjectSync) -> StoreResult<Project>;

    /// Creates an inventory that the caller has validated; `Conflict` when the name is taken.
    async fn create_inventory(&self, new: &NewInventory, host_count: i64)
    -> StoreResult<Inventory>;
    /// An inventory by id.
    async fn get_inventory(&self, id: i64) -> StoreResult<Inventory>;
    /// An inventory by name.
    async fn find_inventory(&self, name: &str) -> StoreResult<Option<Inventory>>;
    /// All inventories, by id.
    async fn list_inventories(&self) -> StoreResult<Vec<Inventory>>;
    /// Replaces an inventory's content and labels (validated by the caller) and bumps its
    /// revision. Queued runs keep the snapshot they were created with.
    async fn update_inventory(
        &self,
        id: i64,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory>;
    /// Deletes an inventory. `Conflict` while a queued or running run uses it, or a template
    /// names it; finished runs keep their snapshot and lose only the reference.
    async fn delete_inventory(&self, id: i64) -> StoreResult<()>;

    /// Stores a new run, `queued`. The project (and inventory, job unit, relaunched run and
    /// template, if any) must exist: `NotFound` names the one that does not.
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run>;
    /// A run by id.
    async fn get_run(&self, id: i64) -> StoreResult<Run>;
    /// The inventory a run was created with.
    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent>;
    /// What starting a run reads, in one trip: its project as it is now, and the inventory
    /// the run was created with.
    async fn get_run_launch(&self, id: i64) -> StoreResult<(Project, InventoryContent)>;
    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>>;
    /// A number that moves after every committed change to runs and their labels, whoever made
    /// it; `None` while the store cannot promise that (the default; and while a change is being
    /// made, for a backend that sees changes before they commit). Read before a list query,
    /// an unchanged number later means the query would still answer the same, so the answer
    /// can be reused without asking. It may also move when nothing listed changed.
    fn runs_generation(&self) -> Option<u64> {
        None
    }
    /// What [`Store::list_runs`] would return, as ids and versions only (same order).
    async fn list_run_versions(
        &self,
        filter: &RunFilter,
        page: Page,
    ) -> StoreResult<Vec<RunVersion>>;
    /// The runs with these ids, each with its version, in no particular order; ids with no
    /// run are left out.
    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>>;

    /// Claims the oldest queued run for `worker_id`: it becomes `running` with a lease that
    /// expires after `lease`. Two workers never claim the same run.
    async fn claim_run(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Run>> {
        Ok(self
            .claim_runs(worker_id, lease, 1)
            .await?
            .into_iter()
            .next())
    }
    /// Claims up to `limit` of the oldest queued runs for `worker_id` in one transaction,
    /// returned oldest first; each becomes `running` with a lease that expires after `lease`.
    /// Two workers never claim the same run.
    async fn claim_runs(
        &self,
        worker_id: &str,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Run>>;
    /// Records that ansible-playbook was started for a run `worker_id` holds, and for git
    /// projects the commit it runs. `Conflict` when it is not running under that worker.
    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()>;
    /// Extends the lease of a run `worker_id` holds.
    async fn renew_lease(
        &self,
        run_id: i64,
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<Lease>;
    /// Ends a run `worker_id` holds. `Conflict` when it is not running under that worker.
    async fn finish_run(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Run>;
    /// Asks for a run to stop. A queued run is canceled at once; a running one is flagged for
    /// its worker. `Conflict` when the run has already finished.
    async fn request_cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run>;
    /// Marks `error` (with `reason`) every running run whose worker id starts with
    /// `worker_prefix`: the runs a dead process left behind. Returns their ids.
    async fn fail_runs_of_workers(
        &self,
        worker_prefix: &str,
        reason: &str,
    ) -> StoreResult<Vec<i64>>;
    /// Marks `error` (with `reason`) every running run whose lease expired before `now`.
    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>>;

    /// Appends events in one transaction. An event whose counter is already stored for the
    /// run is skipped, so a retried batch never duplicates.
    async fn append_events(&self, run_id: i64, events: &[Event]) -> StoreResult<()> {
        self.append_batch(run_id, events, &[]).await
    }
    /// Events with `counter > after`, in counter order, at most `limit`.
    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>>;
    /// The events that mean a host failed (`runner_on_failed` not ignored, and
    /// `runner_on_unreachable`), in counter order.
    async fn host_failures(&self, run_id: i64) -> StoreResult<Vec<Event>>;
    /// Appends output chunks in one transaction (a chunk whose seq is stored is skipped).
    async fn append_output(&self, run_id: i64, chunks: &[OutputChunk]) -> StoreResult<()> {
        self.append_batch(run_id, &[], chunks).await
    }
    /// Appends events and output chunks together, in one transaction, skipping what is
    /// already stored as [`Store::append_events`] and [`Store::append_output`] do: what a
    /// running playbook produced since the last flush costs one commit.
    async fn append_batch(
        &self,
        run_id: i64,
        events: &[Event],
        chunks: &[OutputChunk],
    ) -> StoreResult<()>;
    /// A run's whole output on one stream.
    async fn read_output(&self, run_id: i64, stream: Stream) -> StoreResult<String>;

    /// Creates a job with its units, in the order given (no source set yet); `NotFound` for a
    /// missing project.
    async fn create_job(&self, new: &NewJob) -> StoreResult<Job>;
    /// A job with its units.
    async fn get_job(&self, id: i64) -> StoreResult<Job>;
    /// The most recently created job with this tag.
    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>>;
    /// Jobs, newest first, optionally only those with `tag`.
    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>>;
    /// Sets where a unit's playbooks are. `NotFound` when the job, the unit or the project the
    /// source names is missing.
    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit>;

    /// Creates a template (references checked by the caller, and again here: `NotFound` for a
    /// missing project or inventory); `Conflict` on a taken name.
    async fn create_template(&self, new: &NewTemplate) -> StoreResult<Template>;
    /// A template by id.
    async fn get_template(&self, id: i64) -> StoreResult<Template>;
    /// A template by name.
    async fn find_template(&self, name: &str) -> StoreResult<Option<Template>>;
    /// All templates, by id.
    async fn list_templates(&self) -> StoreResult<Vec<Template>>;

    /// Records an inbound event and, in the same transaction, creates the runs its proposals
    /// pass (gates, then concurrency policy); each started run carries the event's id and the
    /// proposal's concurrency key. With the `cancel` policy the earlier active runs of the key
    /// are listed in the outcome for the caller to cancel.
    async fn ingest_event(&self, new: &NewEventRecord) -> StoreResult<Ingested>;
    /// An event record by id.
    async fn get_event_record(&self, id: i64) -> StoreResult<EventRecord>;
    /// Event records matching `filter`, newest first.
    async fn list_event_records(
        &self,
        filter: &EventRecordFilter,
        page: Page,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Deletes event records received before `before`, and gate marks whose window ended
    /// before `now`. Returns how many records went.
    async fn prune_event_records(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// The rules document, if one was ever stored.
    async fn get_rules(&self) -> StoreResult<Option<RulesDoc>>;
    /// Replaces the rules document. With `expected_revision`, `Conflict` unless the stored
    /// revision is that one (0: none stored yet).
    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc>;

    /// Stores a token hash under `name`.
    async fn create_token(&self, name: &str, hash: &str) -> StoreResult<TokenRecord>;
    /// Every stored token.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
}
