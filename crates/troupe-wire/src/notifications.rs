//! Notifications: what a webhook receives when a run or an execution ends, and the answers of
//! `GET /api/v1/runs/{id}/notifications` and `GET /api/v1/executions/{id}/notifications`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use troupe_core::run::{Labels, RunSummary};

pub use troupe_core::notify::{Notification, NotificationState, NotifyShown};

/// The notifications of a run or an execution, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationList {
    /// Each with its target (scheme and host only), state, attempts and last error.
    pub notifications: Vec<Notification>,
}

/// The JSON body POSTed to a webhook when a run or an execution ends. Exactly one of `run`
/// and `execution` is present, as `kind` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ended {
    /// `run` or `execution`.
    pub kind: String,
    /// How it ended (`successful`, `failed`, `canceled`, `timeout`, `error`, `skipped`).
    pub status: String,
    /// Its path in the API (`/api/v1/runs/12`).
    pub link: String,
    /// The run that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunEnded>,
    /// The execution that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ExecutionEnded>,
}

/// A run, as a notification tells of its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunEnded {
    /// Its id.
    pub id: i64,
    /// How it ended.
    pub status: String,
    /// ansible-playbook's exit code.
    pub rc: Option<i32>,
    /// Why it ended so, when that needs saying.
    pub reason: Option<String>,
    /// The playbook, relative to its project.
    pub playbook: String,
    /// The project's name.
    pub project: String,
    /// The template's name, for a run launched from one.
    pub template: Option<String>,
    /// Its labels.
    pub labels: Labels,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Per host: ok, changed, failed, unreachable, skipped, rescued, ignored.
    #[schema(value_type = Object)]
    pub hosts: RunSummary,
}

/// A flow execution, as a notification tells of its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionEnded {
    /// Its id.
    pub id: i64,
    /// The flow.
    pub flow: String,
    /// The flow's version it ran.
    pub version: i64,
    /// How it ended.
    pub status: String,
    /// The step that failed, if one did.
    pub failed_step: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Who or what started it.
    pub started_by: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}
