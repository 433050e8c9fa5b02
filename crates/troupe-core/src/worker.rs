//! Workers as the server knows them: the embedded pools of `troupe serve` replicas and remote
//! `troupe worker` agents, what they offer (labels, capacity) and whether they are alive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a token may do. Which routes each role may call is one table, in `troupe-api`'s
/// `access` module (and docs/security.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Everything but the worker protocol: tokens, credentials, rules, definitions.
    #[default]
    Admin,
    /// Read everything and act on it: launch and cancel runs, launch templates, run and
    /// resume flows, job actions, project syncs, publish events. Changes no definition.
    Operator,
    /// Read only (and stream tokens, to follow runs live).
    Viewer,
    /// Only the worker protocol (`/api/v1/worker/...`): register, claim runs, report on them.
    Worker,
    /// Only event intake: the webhook routes (`/api/v1/hooks/...`).
    Webhook,
}

impl TokenRole {
    /// Every role, in the order the docs list them.
    pub const ALL: [TokenRole; 5] = [
        TokenRole::Admin,
        TokenRole::Operator,
        TokenRole::Viewer,
        TokenRole::Worker,
        TokenRole::Webhook,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Operator => "operator",
            TokenRole::Viewer => "viewer",
            TokenRole::Worker => "worker",
            TokenRole::Webhook => "webhook",
        }
    }

    /// The role a stored name means; `None` for a name this version does not know.
    pub fn parse(s: &str) -> Option<TokenRole> {
        TokenRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a token of this role may be limited to some projects: the worker protocol and
    /// event intake are not about one project.
    pub fn scopable(self) -> bool {
        matches!(
            self,
            TokenRole::Admin | TokenRole::Operator | TokenRole::Viewer
        )
    }
}

/// Where a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// The pool inside a `troupe serve` process.
    Embedded,
    /// A `troupe worker` agent talking to a server over HTTP.
    Remote,
}

impl WorkerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Embedded => "embedded",
            WorkerKind::Remote => "remote",
        }
    }

    /// The kind a stored name means.
    pub fn parse(s: &str) -> Option<WorkerKind> {
        match s {
            "embedded" => Some(WorkerKind::Embedded),
            "remote" => Some(WorkerKind::Remote),
            _ => None,
        }
    }
}

/// A worker as it registers (again after every start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorker {
    /// `<node>/<incarnation>`: the node id is kept in the worker's data dir across restarts,
    /// the incarnation is new on every start; runs are claimed under this id.
    pub id: String,
    /// A name for people (the host name by default).
    pub name: String,
    /// Embedded or remote.
    pub kind: WorkerKind,
    /// Labels runs may require.
    pub labels: Vec<String>,
    /// Runs it executes at once.
    pub capacity: u32,
    /// troupe's version on it.
    pub version: String,
}

/// Whether a worker is taking work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Heartbeating and claiming.
    Active,
    /// Heartbeating, finishing its runs, claiming no more.
    Draining,
    /// Its heartbeats stopped: its runs' leases expire.
    Lost,
    /// It said goodbye.
    Stopped,
}

/// A worker as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Worker {
    /// `<node>/<incarnation>`.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Embedded or remote.
    pub kind: WorkerKind,
    /// Labels runs may require.
    pub labels: Vec<String>,
    /// Runs it executes at once.
    pub capacity: u32,
    /// Runs it executed at its last heartbeat.
    pub active_runs: u32,
    /// troupe's version on it.
    pub version: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Asked to finish its runs and claim no more.
    pub draining: bool,
    /// When it said goodbye.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Worker {
    /// What it is doing, given how long a worker may stay silent before it counts as lost.
    pub fn status(&self, now: DateTime<Utc>, silence: Duration) -> WorkerStatus {
        if self.stopped_at.is_some() {
            WorkerStatus::Stopped
        } else if now - self.last_heartbeat
            > chrono::Duration::from_std(silence).unwrap_or_default()
        {
            WorkerStatus::Lost
        } else if self.draining {
            WorkerStatus::Draining
        } else {
            WorkerStatus::Active
        }
    }

    /// Whether it may take a run that requires `required` labels.
    pub fn can_take(&self, required: &[String]) -> bool {
        required.iter().all(|l| self.labels.contains(l))
    }
}

/// Checks a node id: 1 to 64 letters, digits, `-` or `_` (it prefixes worker ids, so no `/`).
pub fn check_node(node: &str, field: &str) -> Result<(), crate::ValidationError> {
    if !node.is_empty()
        && node.len() <= 64
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(crate::ValidationError::new(
            "invalid_field",
            field,
            format!("node {node:?} must be 1 to 64 letters, digits, '-' or '_'"),
        ))
    }
}

/// The node part of a worker id (`node/incarnation`).
pub fn node_of(worker_id: &str) -> &str {
    worker_id
        .split_once('/')
        .map_or(worker_id, |(node, _)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(labels: &[&str]) -> Worker {
        let now = Utc::now();
        Worker {
            id: "n1/a".into(),
            name: "w".into(),
            kind: WorkerKind::Remote,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            capacity: 2,
            active_runs: 0,
            version: "0".into(),
            started_at: now,
            last_heartbeat: now,
            draining: false,
            stopped_at: None,
        }
    }

    #[test]
    fn status_follows_heartbeats_drain_and_goodbye() {
        let mut w = worker(&[]);
        let silence = Duration::from_secs(30);
        assert_eq!(w.status(w.last_heartbeat, silence), WorkerStatus::Active);
        w.draining = true;
        assert_eq!(w.status(w.last_heartbeat, silence), WorkerStatus::Draining);
        let later = w.last_heartbeat + chrono::Duration::seconds(31);
        assert_eq!(w.status(later, silence), WorkerStatus::Lost);
        w.stopped_at = Some(later);
        assert_eq!(w.status(later, silence), WorkerStatus::Stopped);
    }

    #[test]
    fn a_worker_takes_runs_whose_labels_it_has_all_of() {
        let w = worker(&["gpu", "eu"]);
        assert!(w.can_take(&[]));
        assert!(w.can_take(&["gpu".into()]));
        assert!(w.can_take(&["eu".into(), "gpu".into()]));
        assert!(!w.can_take(&["gpu".into(), "us".into()]));
        assert!(!worker(&[]).can_take(&["gpu".into()]));
    }

    #[test]
    fn roles_and_kinds_round_trip() {
        for r in [TokenRole::Admin, TokenRole::Worker] {
            assert_eq!(TokenRole::parse(r.as_str()), Some(r));
        }
        for k in [WorkerKind::Embedded, WorkerKind::Remote] {
            assert_eq!(WorkerKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TokenRole::parse("root"), None);
        assert_eq!(node_of("abc/123"), "abc");
        assert_eq!(node_of("abc"), "abc");
    }
}
