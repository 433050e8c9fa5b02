//! Workers: the list and drain routes people use, and the worker protocol `troupe worker`
//! speaks with a server (`/api/v1/worker/...`, worker tokens only).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use troupe_core::credential::CredentialSecret;
use troupe_core::inventory::InventoryContent;
use troupe_core::run::{CancelMode, Run, RunSummary};
pub use troupe_core::worker::{TokenRole, Worker, WorkerKind, WorkerStatus};
use troupe_core::{Event, RunStatus};

/// A worker as `GET /api/v1/workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    /// The worker as registered.
    #[serde(flatten)]
    pub worker: Worker,
    /// What it is doing now.
    pub status: WorkerStatus,
    /// The runs it holds now.
    pub runs: Vec<i64>,
}

/// The answer of `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    /// Workers alive, and those gone in the last hour, by id.
    pub workers: Vec<WorkerView>,
}

/// `POST /api/v1/worker/register`: a worker starting (again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// The worker's stable node id (kept in its data dir): letters, digits, `-`, `_`.
    pub node: String,
    /// A name for people (its host name).
    pub name: String,
    /// Labels runs may require.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Runs it executes at once.
    pub capacity: u32,
    /// troupe's version on it.
    pub version: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// The id to claim and report under (`node/incarnation`).
    pub worker_id: String,
    /// How long a claim holds without renewal, in seconds.
    pub lease_s: u64,
    /// Runs a previous incarnation of this node still held; they were ended `error`.
    pub failed_runs: Vec<i64>,
}

/// `POST /api/v1/worker/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The worker's id.
    pub worker_id: String,
    /// Runs it executes now.
    pub active_runs: u32,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    /// Finish the runs in flight and claim no more.
    pub drain: bool,
}

/// `POST /api/v1/worker/claim`: waits up to `wait_ms` for runs this worker may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuns {
    /// The worker's id.
    pub worker_id: String,
    /// At most this many runs (its free slots).
    pub max: u32,
    /// How long to wait when none is queued, in milliseconds (at most 30,000).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The runs claimed (none when the wait ran out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimedRuns {
    /// Claimed runs, oldest first: they are `running` under the worker's id now.
    pub runs: Vec<Run>,
}

/// Which worker asks (query of `GET .../plan` and `GET .../bundle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
pub struct WorkerQuery {
    /// The worker's id.
    pub worker_id: String,
    /// For a bundle: the SHA-256 the plan named, so the server answers with the bundle it
    /// built for the plan instead of building it again.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// What a worker needs to execute a run it claimed, besides the run.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The inventory the run was created with.
    pub inventory: InventoryContent,
    /// The SHA-256 (hex) of the project bundle (`GET .../bundle`): a gzipped tar of the
    /// project's files as the run must see them.
    pub bundle_sha256: String,
    /// For git projects, the commit the files are at.
    pub commit: Option<String>,
    /// The opened secrets of the credentials the run names: for this run only, never stored
    /// by the worker outside the run's private directory.
    pub credentials: Vec<CredentialSecret>,
    /// The run's extra vars with their sealed (secret) values opened, when it has sealed
    /// ones: what ansible-playbook gets instead of the claimed run's options' extra vars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// The run's secret texts besides its credentials' values: the worker redacts them from
    /// whatever the run produces before it is written anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for LaunchPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchPlan")
            .field("bundle_sha256", &self.bundle_sha256)
            .field("commit", &self.commit)
            .field("credentials", &self.credentials.len())
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// `POST .../launched`: ansible-playbook started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Launched {
    /// The worker's id.
    pub worker_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// For git projects, the commit run.
    #[serde(default)]
    pub commit: Option<String>,
}

/// `POST .../lease`: renew the claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLease {
    /// The worker's id.
    pub worker_id: String,
}

/// The answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseAnswer {
    /// Still this worker's; when false, stop working on the run.
    pub held: bool,
    /// A cancel asked for in the meantime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<CancelMode>,
}

/// Which output stream a piece is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of a run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputPiece {
    /// Which stream.
    pub stream: OutputStream,
    /// Position in the run's output (both streams share one sequence), from 1.
    pub seq: i64,
    /// The text.
    pub text: String,
}

/// `POST .../batches`: events and output of a run, stored idempotently (by event counter and
/// output sequence): a batch sent twice is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBatch {
    /// The worker's id (any incarnation of the node that claimed the run).
    pub worker_id: String,
    /// Events, in counter order.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Output pieces.
    #[serde(default)]
    pub output: Vec<OutputPiece>,
}

/// The answer to a batch: everything in it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAck {
    /// Events the batch held.
    pub events: usize,
}

/// `POST .../finish`: how the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRun {
    /// The worker's id the run was claimed under.
    pub worker_id: String,
    /// The final status.
    pub status: RunStatus,
    /// ansible-playbook's exit code.
    #[serde(default)]
    pub rc: Option<i32>,
    /// Why, when it needs saying.
    #[serde(default)]
    pub reason: Option<String>,
    /// Per-host totals.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub summary: RunSummary,
}

/// `POST /api/v1/worker/goodbye`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Goodbye {
    /// The worker's id.
    pub worker_id: String,
}

/// `GET /api/v1/runs/{id}/placement`: where a run can go, and why a queued one waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Placement {
    /// The run.
    pub run_id: i64,
    /// Its status now.
    pub status: RunStatus,
    /// Labels a worker must have to take it.
    pub worker_labels: Vec<String>,
    /// Live workers that may take it (active, not draining, with every label).
    pub able_workers: Vec<String>,
    /// Why a queued run is not running, when the reason is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
