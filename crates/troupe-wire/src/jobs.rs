//! RedRunner's jobs: a tag and named units, each unit's actions run as ordinary runs.

use crate::IdOrName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use troupe_core::job::{Job, Unit, UnitSource};
pub use troupe_core::run::Run;

// The body of `POST /api/v1/jobs`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub tag: String,
    pub units: Vec<String>,
    /// Default project of the units (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub project: Option<IdOrName>,
}

/// The query of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs with this tag.
    pub tag: Option<String>,
    /// With `tag`: answer with the latest such job itself (404 when there is none).
    #[serde(default)]
    pub latest: bool,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

// A page of `GET /api/v1/jobs`, newest first.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// A unit with its runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnitView {
    #[allow(missing_docs)]
    pub name: String,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<UnitSource>,
    /// The status of its latest run (`idle` when it has none).
    pub status: String,
    #[allow(missing_docs)]
    pub runs: Vec<Run>,
}

/// A job with each unit's runs and a status aggregated from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    #[allow(missing_docs)]
    pub id: i64,
    #[allow(missing_docs)]
    pub tag: String,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
    /// `idle` (no runs), `running` (a unit's latest run is queued or running), `failed` (some
    /// unit's latest run did not succeed) or `successful`.
    pub status: String,
    #[allow(missing_docs)]
    pub units: Vec<UnitView>,
}

// The body of `PUT /api/v1/jobs/{id}/units/{unit}`: a project or a data_dir.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUnit {
    /// A registered project (id or name) holding the unit's playbooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub project: Option<IdOrName>,
    /// A directory holding a `project/` (or `projects/`) directory of playbooks: absolute, or
    /// relative to the server's `unit_data_dir_base` (and inside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
}

// The body of the actions routes of a job and of a unit.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Runs `<action>-<unit>.yml`: the action's name (`restart`, `hot-restart`), or the
    /// playbook's file name as the seed posts it: `<action>-<unit>.yml` to a unit,
    /// `<action>-each.yml` to a unit or to the job.
    pub action: String,
    /// Extra variables for the playbook(s); troupe adds `troupe_job_id`, `troupe_job_tag`,
    /// `troupe_unit` and `troupe_action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<Value>,
    /// Inventory text (YAML or INI) to run against; default: `localhost` with a local
    /// connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
}

// A unit whose action could not start: its name, the error's code and message.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnitError {
    pub unit: String,
    pub code: String,
    pub message: String,
}

// The answer to `POST /api/v1/jobs/{id}/actions`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobActionResult {
    /// One run per unit that could start.
    pub runs: Vec<Run>,
    /// Units whose action could not start, and why.
    pub errors: Vec<UnitError>,
}
