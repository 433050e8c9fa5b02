//! Runs: launch, list, inspect, cancel and relaunch.

use crate::IdOrName;
use crate::inventories::InventoryFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use troupe_core::run::{CancelMode, HostStats, Labels, LauncherKind, Run, RunOptions};
pub use troupe_core::{Event, RunStatus};

/// A run to launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// The project, by id or name.
    #[schema(value_type = Object)]
    pub project: IdOrName,
    /// Playbook path relative to the project.
    pub playbook: String,
    /// A stored inventory, by id or name. Give this or `hosts`, or neither: the run then uses
    /// the inventory ansible's configuration names (the project's `ansible.cfg`), as
    /// ansible-playbook without `-i` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub inventory: Option<IdOrName>,
    /// An inline inventory (YAML or INI text). Give this or `inventory` (or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
    /// Format of `hosts`; guessed when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_format: Option<InventoryFormat>,
    /// Extra variables: a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<Value>,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub tags: Vec<String>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub skip_tags: Vec<String>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub check: bool,
    #[allow(missing_docs)]
    #[serde(default)]
    pub diff: bool,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<u32>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub verbosity: u8,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Start at the first task with this name (`--start-at-task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_task: Option<String>,
    /// Split the hosts into this many slices run in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<u32>,
    /// Split the hosts into slices of at most this many hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_size: Option<u32>,
    /// Stored credentials to use, by name (at most one per kind; vault: one per vault id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// `--connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// `--user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_user: Option<String>,
    /// `--become`.
    #[serde(default, rename = "become", skip_serializing_if = "std::ops::Not::not")]
    pub become_: bool,
    /// `--become-method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_method: Option<String>,
    /// `--become-user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_user: Option<String>,
    /// `--ssh-common-args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_common_args: Option<String>,
    /// `--ssh-extra-args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_extra_args: Option<String>,
    /// Labels a worker must have to take the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_labels: Vec<String>,
    /// `exec` or `warm` (see [`RunOptions::launcher`]); unset: the server's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<LauncherKind>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub labels: Labels,
    #[allow(missing_docs)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl CreateRun {
    /// `playbook` of `project` with every option at its default; give it an `inventory` or
    /// `hosts` before sending it.
    pub fn new(project: impl Into<IdOrName>, playbook: impl Into<String>) -> Self {
        CreateRun {
            project: project.into(),
            playbook: playbook.into(),
            inventory: None,
            hosts: None,
            hosts_format: None,
            extra_vars: None,
            limit: None,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            check: false,
            diff: false,
            forks: None,
            verbosity: 0,
            timeout_s: None,
            start_at_task: None,
            slices: None,
            slice_size: None,
            credentials: Vec::new(),
            connection: None,
            remote_user: None,
            become_: false,
            become_method: None,
            become_user: None,
            ssh_common_args: None,
            ssh_extra_args: None,
            worker_labels: Vec::new(),
            launcher: None,
            labels: Labels::default(),
            tag: None,
        }
    }
}

/// The query of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Project id.
    pub project: Option<i64>,
    /// `key` or `key=value`.
    pub label: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Only actions of this job.
    pub job: Option<i64>,
    /// Only actions on this unit (with `job`).
    pub unit: Option<String>,
    /// Only relaunches of this run.
    pub relaunch_of: Option<i64>,
    /// Only the slices of this split run.
    pub parent: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

// A page of `GET /api/v1/runs`, newest first.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// The query of `GET /api/v1/runs/{id}/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a counter above this (default 0).
    pub after: Option<i64>,
    /// At most this many, 1 to 10000 (default 1000).
    pub limit: Option<i64>,
}

// A page of a run's events, in counter order.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The counter to ask for next (`after`).
    pub next_after: i64,
    /// The run's status when the page was read: once it is finished and a page comes back
    /// short, there is nothing more.
    pub run_status: RunStatus,
}

/// The query of `GET /api/v1/runs/{id}/stdout` and `/stderr`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Skip this many bytes (what a follower already has).
    pub offset: Option<usize>,
    /// Keep ansible's colours (ANSI escapes); plain text otherwise.
    #[serde(default)]
    pub ansi: bool,
}

/// A host's result (Pansible's shape): its totals and what failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostResult {
    #[allow(missing_docs)]
    pub stats: HostStats,
    /// True when the host was unreachable at least once.
    pub unreachable: bool,
    #[allow(missing_docs)]
    pub failures: Vec<HostFailure>,
}

// One failure behind a host's totals.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostFailure {
    /// The event's counter.
    pub counter: i64,
    /// `runner_on_failed` or `runner_on_unreachable`.
    pub event: String,
    pub task: Option<String>,
    /// The module's message.
    pub msg: Option<String>,
    /// The whole result ansible returned.
    #[schema(value_type = Object)]
    pub result: Value,
}

// The body of `POST /api/v1/runs/{id}/cancel` (optional).
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// `graceful` (default): the task in flight finishes, no new task starts. `force`:
    /// SIGINT, SIGTERM, then SIGKILL to the whole process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CancelMode>,
}

/// Which hosts a relaunch targets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RelaunchHosts {
    /// The same hosts as the original run.
    #[default]
    All,
    /// Hosts that failed or were unreachable.
    Failed,
    /// Hosts that were unreachable.
    Unreachable,
}

/// Where a relaunch starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RelaunchFrom {
    /// From the playbook's start.
    #[default]
    Start,
    /// At the first task that failed, or for a canceled or timed-out run, the task it stopped
    /// before (graceful cancel) or in (forced cancel, timeout) (`--start-at-task`).
    FailedTask,
}

// The body of `POST /api/v1/runs/{id}/relaunch` (optional).
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaunchRequest {
    #[serde(default)]
    pub hosts: RelaunchHosts,
    #[serde(default)]
    pub from: RelaunchFrom,
}

/// The body of `POST /api/v1/runs/prune`: a retention pass now. Finished runs go when either
/// limit says so; give at least one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRuns {
    /// Runs that finished longer ago than this go (`30d`, `12h`, `90m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Each project keeps its newest this many runs (at least 1); its older finished runs go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Only count what would go.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a prune removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PruneReport {
    /// Runs, slices included.
    pub runs: u64,
    /// Their events (0 on a dry run: not counted).
    pub events: u64,
    /// Their stdout and stderr chunks (0 on a dry run: not counted).
    pub output_chunks: u64,
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
}
