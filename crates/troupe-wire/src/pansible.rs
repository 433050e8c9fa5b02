//! Pansible's API (`/pansible/api/v1`): the request and response bodies as Pansible's README
//! prints them. It is a thin layer over troupe's own resources (see docs/pansible.md): a
//! Pansible inventory is an inventory, a playbook a git project and the file its jobs run,
//! a job a run. Names carry a `Pansible` prefix so they never meet troupe's own in the
//! OpenAPI document.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// The run label holding a job's uuid: how `/job/...{uuid}` finds its run.
pub const JOB_LABEL: &str = "pansible.job";
/// The run label holding a job's `env`.
pub const ENV_LABEL: &str = "pansible.env";
/// The header Pansible clients send their token in (a troupe token); `Authorization: Bearer`
/// works as well.
pub const TOKEN_HEADER: &str = "coffee_token";

/// The body of `POST /pansible/api/v1/inventory`: `hosts` is an Ansible YAML inventory,
/// `vars` a YAML mapping of group name to that group's variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPansibleInventory {
    /// Unique name: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Environment label; a job's `env` must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Ansible's YAML inventory (`all: {hosts: ..., children: ...}`).
    pub hosts: String,
    /// YAML mapping of group name to variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<String>,
}

/// An inventory as Pansible shows it (the troupe inventory of the same id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleInventory {
    /// The inventory's id (the same in troupe's API).
    pub id: i64,
    #[allow(missing_docs)]
    pub name: String,
    #[allow(missing_docs)]
    pub env: Option<String>,
    #[allow(missing_docs)]
    pub version: Option<String>,
    /// As uploaded.
    pub hosts: String,
    /// As uploaded.
    pub vars: Option<String>,
}

/// The body of `POST /pansible/api/v1/playbook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPansiblePlaybook {
    /// Unique name (the git project's).
    pub name: String,
    /// What `git clone` takes: a URL, `user@host:path`, or a path on the server.
    pub git_repo: String,
    /// The playbook file its jobs run, relative to the repository.
    pub entry: String,
}

/// A playbook as Pansible shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansiblePlaybook {
    /// The git project's id (the same in troupe's API).
    pub id: i64,
    #[allow(missing_docs)]
    pub name: String,
    /// The repository, any credentials in the URL left out.
    pub git_repo: String,
    #[allow(missing_docs)]
    pub entry: String,
}

/// The body of `POST /pansible/api/v1/app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPansibleApp {
    /// Unique name: letters, digits, `.`, `_`, `-`.
    pub appid: String,
}

/// An app, with what is linked to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleApp {
    #[allow(missing_docs)]
    pub id: i64,
    #[allow(missing_docs)]
    pub appid: String,
    /// The ids of the playbooks linked to it.
    #[serde(default)]
    pub playbooks: Vec<i64>,
    /// The ids of the inventories linked to it.
    #[serde(default)]
    pub inventories: Vec<i64>,
}

/// The body of `POST /pansible/api/v1/app/playbook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PansibleAppPlaybook {
    #[allow(missing_docs)]
    pub app_id: i64,
    #[allow(missing_docs)]
    pub playbook_id: i64,
}

/// The body of `POST /pansible/api/v1/app/inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PansibleAppInventory {
    #[allow(missing_docs)]
    pub app_id: i64,
    #[allow(missing_docs)]
    pub inventory_id: i64,
}

/// The body of `POST /pansible/api/v1/job`: run a playbook against an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPansibleJob {
    /// The environment; must be the inventory's when it has one.
    pub env: String,
    #[allow(missing_docs)]
    pub playbook_id: i64,
    #[allow(missing_docs)]
    pub inventory_id: i64,
}

/// A job: one troupe run (split into slices when `hosts_per_task` is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleJob {
    /// The run's id (`/api/v1/runs/{id}`).
    pub id: i64,
    /// What the job's result and progress routes take.
    pub uuid: String,
    #[allow(missing_docs)]
    pub env: String,
    #[allow(missing_docs)]
    pub playbook_id: i64,
    #[allow(missing_docs)]
    pub inventory_id: i64,
    /// The run's status (`queued`, `running`, `successful`, `failed`...): troupe's addition.
    pub status: String,
}

/// `GET /pansible/api/v1/job/result/{uuid}`: every host of the job, by name.
pub type PansibleJobResult = BTreeMap<String, PansibleHostResult>;

/// One host's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleHostResult {
    /// The tasks that failed on the host (ignored failures left out); `null` when none did.
    pub failures: Option<Vec<PansibleFailure>>,
    #[allow(missing_docs)]
    pub stats: PansibleStats,
}

/// A task that failed on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleFailure {
    /// The failure's event counter in the run.
    pub id: i64,
    /// Ansible's result of the task, as JSON text.
    pub result: String,
    /// The `id` of the host's stats.
    pub stats_id: i64,
}

/// A host's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleStats {
    /// Tasks that failed on the host.
    pub failed: i64,
    /// The host's place in the result, from 1 (hosts by name).
    pub id: i64,
    /// When the job started (when it was created, before a worker took it).
    #[serde(serialize_with = "whole_seconds")]
    pub job_start_time: DateTime<Utc>,
    /// The task (the one ansible-playbook process) that ran the host: its playbook uuid, as in
    /// the progress messages' `_pansible_task`.
    pub run_id: String,
    /// The host.
    pub target: String,
    /// Whether the host was unreachable.
    pub unreachable: bool,
}

/// Times as Pansible prints them: `2018-01-30T03:33:45Z`.
fn whole_seconds<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// One message of `/pansible/api/v1/job/progress/{uuid}` (a WebSocket): a host's result of a
/// task, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PansibleProgress {
    /// The task (one ansible-playbook process: a slice of a split job) that ran it.
    #[serde(rename = "_pansible_task")]
    pub task: String,
    /// `ok`, `failed`, `unreachable` or `skipped`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The host.
    pub target: String,
    /// The job's uuid.
    #[serde(rename = "_pansible_job")]
    pub job: String,
    /// The task's name: troupe's addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// What ansible returned.
    #[schema(value_type = Object)]
    pub result: Value,
}

impl PansibleProgress {
    /// The message type of a troupe event name, for the events progress is made of.
    pub fn kind_of(event: &str) -> Option<&'static str> {
        match event {
            "runner_on_ok" => Some("ok"),
            "runner_on_failed" => Some("failed"),
            "runner_on_unreachable" => Some("unreachable"),
            "runner_on_skipped" => Some("skipped"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_print_as_pansible_did() -> Result<(), serde_json::Error> {
        let start = DateTime::parse_from_rfc3339("2018-01-30T03:33:45.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let host = PansibleHostResult {
            failures: None,
            stats: PansibleStats {
                failed: 0,
                id: 317,
                job_start_time: start,
                run_id: "18c77843-954a-49e0-9a36-cd270af665bb".into(),
                target: "one.example.com".into(),
                unreachable: true,
            },
        };
        assert_eq!(
            serde_json::to_value(&host)?,
            json!({"failures": null, "stats": {"failed": 0, "id": 317,
                "job_start_time": "2018-01-30T03:33:45Z",
                "run_id": "18c77843-954a-49e0-9a36-cd270af665bb",
                "target": "one.example.com", "unreachable": true}})
        );
        let progress = PansibleProgress {
            task: "t".into(),
            kind: "unreachable".into(),
            target: "one.example.com".into(),
            job: "j".into(),
            task_name: None,
            result: json!({"unreachable": true}),
        };
        assert_eq!(
            serde_json::to_value(&progress)?,
            json!({"_pansible_task": "t", "type": "unreachable", "target": "one.example.com",
                "_pansible_job": "j", "result": {"unreachable": true}})
        );
        Ok(())
    }
}
