//! Flows, their executions, and schedules.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use troupe_core::flow::{
    Approval, Execution, ExecutionStatus, FlowVersion, MissedFires, Phase, Schedule,
    ScheduleTarget, StepRecord, StepStatus,
};

/// The body of `POST /api/v1/flows`: a flow document (YAML), stored as the flow's newest
/// version when it differs from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFlow {
    /// The YAML document.
    pub document: String,
}

/// A stored flow version, with what its document says in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowView {
    /// The flow's name.
    pub name: String,
    /// This version.
    pub version: i64,
    /// When it was stored.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// What it does, from the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its inputs' names, in order.
    pub inputs: Vec<String>,
    /// How many steps its body has.
    pub steps: usize,
    /// The document.
    pub document: String,
    /// The flow in sentences (what `troupe flow validate` prints).
    pub explanation: String,
}

/// The answer of `GET /api/v1/flows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowList {
    /// The newest version of every flow, by name.
    pub flows: Vec<FlowView>,
}

/// The body of `POST /api/v1/flows/{name}/executions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExecution {
    /// The inputs. Strings are read as the declared type (`"3"` for an integer), as the CLI's
    /// `-i k=v` sends them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    /// The version to run (the newest when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// An execution with the record of every step it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionView {
    /// The execution.
    #[serde(flatten)]
    pub execution: Execution,
    /// Its steps' records, every round, in order.
    pub steps: Vec<StepRecord>,
}

/// The query of `GET /api/v1/executions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExecutionsQuery {
    /// Only of this flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Only in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only sub-flows started by this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// A page of `GET /api/v1/executions`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionList {
    /// The executions.
    pub executions: Vec<Execution>,
    /// Where the next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// The body of `POST /api/v1/executions/{id}/approvals/{step}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerApproval {
    /// Approve (true) or deny (false).
    pub approved: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who answers (`api` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}
