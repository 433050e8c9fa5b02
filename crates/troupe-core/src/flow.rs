//! Flows as stored: versions of a flow document, executions of them, the record of every step
//! an execution ran, and schedules that start flows, templates or playbooks.
//!
//! The document itself (its inputs, node sets and steps) is parsed and checked by
//! `troupe-flow`; the store keeps its YAML text, one row per version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// One stored version of a flow document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowVersion {
    /// The flow's name (from the document).
    pub name: String,
    /// 1 for the first version stored under this name, then 2, 3, …
    pub version: i64,
    /// The document, as given.
    pub document: String,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

/// Defines an enum of lowercase names with `as_str`, `Display` and `FromStr`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in the API and the store.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

named_enum! {
    /// Where an execution is in its life:
    /// `queued -> running -> successful | failed | canceled | timeout`; a queued execution may
    /// also end `skipped` (its concurrency group was full and said `skip`) or `canceled`.
    /// A running execution waiting for an approval stays `running`.
    ExecutionStatus {
        /// Waiting to start: for a replica to take it, or for its concurrency slot or locks.
        Queued => "queued",
        /// Its steps are running (or waiting for an approval or a retry delay).
        Running => "running",
        /// Every step succeeded (or failed with `continue_on_error`).
        Successful => "successful",
        /// A step failed.
        Failed => "failed",
        /// Stopped on request (or replaced by a newer execution: `cancel_older`).
        Canceled => "canceled",
        /// Stopped because it ran past the flow's time limit.
        Timeout => "timeout",
        /// Never started: its concurrency group was full and the flow says `skip`.
        Skipped => "skipped",
    }
}

impl ExecutionStatus {
    /// True once the execution can no longer change (until it is resumed).
    pub fn is_finished(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }
}

named_enum! {
    /// Where one step is.
    StepStatus {
        /// Running (an attempt is in flight, or waiting for a retry's delay).
        Running => "running",
        /// Waiting for an approval.
        Waiting => "waiting",
        /// Succeeded.
        Successful => "successful",
        /// Failed, after all its attempts.
        Failed => "failed",
        /// Its `when` was false (or the step was not reached because the execution ended).
        Skipped => "skipped",
        /// Stopped because the execution was canceled.
        Canceled => "canceled",
        /// Stopped at its `timeout`.
        Timeout => "timeout",
    }
}

impl StepStatus {
    /// True once the step can no longer change.
    pub fn is_finished(self) -> bool {
        !matches!(self, StepStatus::Running | StepStatus::Waiting)
    }
}

named_enum! {
    /// Which list of a flow a step comes from.
    Phase {
        /// `pre`: before `steps`.
        Pre => "pre",
        /// `steps`: the flow's body.
        Steps => "steps",
        /// `on_success`: after every step succeeded.
        OnSuccess => "on_success",
        /// `on_failure`: after a step failed.
        OnFailure => "on_failure",
        /// `finally`: always, last.
        Finally => "finally",
    }
}

/// An execution started from a parent execution's `flow` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParentStep {
    /// The parent execution.
    pub execution_id: i64,
    /// The step's key in it (see [`StepRecord::key`]).
    pub step: String,
}

/// What a new execution needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewExecution {
    /// The flow.
    pub flow: String,
    /// Its version.
    pub version: i64,
    /// The inputs, checked and with defaults applied, secrets replaced by `"********"`.
    pub inputs: Map<String, Value>,
    /// The secret inputs, sealed by the caller (encrypted with the server's key); never the
    /// clear text.
    pub sealed_secrets: Option<String>,
    /// Its concurrency group, rendered (`None` without `concurrency`).
    pub concurrency_key: Option<String>,
    /// The execution and step that started it, for a sub-flow.
    pub parent: Option<ParentStep>,
    /// Who or what started it: `api`, `cli`, `schedule:<id>`, `rule:<name>`, `flow:<id>`.
    pub started_by: String,
    /// Where to tell its end (the flow's `notify`, rendered and sealed): stored with it, in the
    /// same transaction.
    pub notify: Vec<crate::notify::SealedNotify>,
}

/// One execution of one version of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Execution {
    /// Its id.
    pub id: i64,
    /// The flow.
    pub flow: String,
    /// The version of the flow it runs.
    pub version: i64,
    /// Where it is.
    pub status: ExecutionStatus,
    /// The inputs, secrets shown as `"********"`.
    #[schema(value_type = Object)]
    pub inputs: Map<String, Value>,
    /// The secret inputs, sealed; never serialized.
    #[serde(skip)]
    pub sealed_secrets: Option<String>,
    /// Its concurrency group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The execution and step that started it, for a sub-flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentStep>,
    /// Who or what started it.
    pub started_by: String,
    /// How many times it was resumed: step records of the latest round carry this number.
    pub round: i32,
    /// Why it failed, when it did (the failing step and its error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True once a cancel was asked for (the engine stops it at its next chance).
    pub cancel_requested: bool,
    /// The replica running it, while one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Until when the owner's hold lasts; past it another replica may take the execution over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it started running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which executions to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Only of this flow.
    pub flow: Option<String>,
    /// Only in this status.
    pub status: Option<ExecutionStatus>,
    /// Only started by this step of this execution.
    pub parent: Option<i64>,
}

/// The record of one step of one execution, in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// The execution.
    pub execution_id: i64,
    /// The round (0, then one more per resume) it ran in.
    pub round: i32,
    /// Its key, unique in the execution: `<phase>/<step id>` (a step without an id gets its
    /// index: `steps/3`).
    pub key: String,
    /// Its list.
    pub phase: Phase,
    /// Its place in the list.
    pub position: i32,
    /// Its kind (`playbook`, `shell`, …).
    pub kind: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// When its first attempt in this round started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What its last attempt produced (kind-specific, bounded in size).
    #[schema(value_type = Object)]
    pub result: Value,
    /// The values it published for later steps.
    #[schema(value_type = Object)]
    pub published: Map<String, Value>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The runs it launched, oldest first (one per attempt of a playbook step).
    pub run_ids: Vec<i64>,
    /// The executions it started (a `flow` step).
    pub execution_ids: Vec<i64>,
}

/// The answer to an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    /// Approved (true) or denied.
    pub approved: bool,
    /// Who answered (the token's name).
    pub by: String,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

named_enum! {
    /// What happens to fires missed while no troupe was running.
    MissedFires {
        /// Missed fires are dropped; the schedule fires next at its next time from now.
        Skip => "skip",
        /// If any fire was missed, fire once on start (not once per missed time).
        Once => "once",
    }
}

/// What a schedule starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleTarget {
    /// An execution of a flow (its latest version).
    Flow {
        /// The flow.
        flow: String,
        /// Its inputs.
        #[serde(default)]
        #[schema(value_type = Object)]
        inputs: Map<String, Value>,
    },
    /// A run of a template, with options over its own.
    Template {
        /// The template's name.
        template: String,
        /// Run options over the template's (as a template launch takes them).
        #[serde(default)]
        #[schema(value_type = Object)]
        options: Map<String, Value>,
    },
    /// A run of a playbook.
    Playbook {
        /// The project's name.
        project: String,
        /// The playbook's path in the project.
        playbook: String,
        /// The stored inventory's name.
        inventory: String,
        /// Run options.
        #[serde(default)]
        #[schema(value_type = Object)]
        options: Map<String, Value>,
    },
}

/// What a new schedule needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// Its name, unique.
    pub name: String,
    /// A cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// An IANA time zone name the expression is read in (`UTC`, `Europe/Paris`).
    pub timezone: String,
    /// What it starts.
    pub target: ScheduleTarget,
    /// What happens to missed fires.
    pub missed: MissedFires,
    /// When it fires first (computed by the caller from `cron` and `timezone`).
    pub next_fire_at: DateTime<Utc>,
}

/// A schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// What it starts.
    pub target: ScheduleTarget,
    /// What happens to missed fires.
    pub missed: MissedFires,
    /// When it fires next.
    pub next_fire_at: DateTime<Utc>,
    /// When it last fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fire_at: Option<DateTime<Utc>>,
    /// What its last fire started (`run:<id>` or `execution:<id>`), or why it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A change of some execution, for live followers (the cross-run stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlowChange {
    /// An execution changed status.
    ExecutionChanged {
        /// The execution.
        execution_id: i64,
        /// Its flow.
        flow: String,
        /// Its new status.
        status: ExecutionStatus,
        /// Why it failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step's record changed.
    StepChanged {
        /// The execution.
        execution_id: i64,
        /// The step's key.
        key: String,
        /// Its kind.
        kind: String,
        /// Its status.
        status: StepStatus,
        /// Attempts so far.
        attempts: i32,
        /// Its runs.
        run_ids: Vec<i64>,
        /// Why it failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A line of an execution's log.
    ExecutionLog {
        /// The execution.
        execution_id: i64,
        /// The line.
        line: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl FlowChange {
    /// The execution this change is about.
    pub fn execution_id(&self) -> i64 {
        match self {
            FlowChange::ExecutionChanged { execution_id, .. }
            | FlowChange::StepChanged { execution_id, .. }
            | FlowChange::ExecutionLog { execution_id, .. } => *execution_id,
        }
    }

    /// The change for an execution's new status.
    pub fn of_execution(e: &Execution) -> FlowChange {
        FlowChange::ExecutionChanged {
            execution_id: e.id,
            flow: e.flow.clone(),
            status: e.status,
            error: e.error.clone(),
            at: Utc::now(),
        }
    }

    /// The change for a step's new record.
    pub fn of_step(r: &StepRecord) -> FlowChange {
        FlowChange::StepChanged {
            execution_id: r.execution_id,
            key: r.key.clone(),
            kind: r.kind.clone(),
            status: r.status,
            attempts: r.attempts,
            run_ids: r.run_ids.clone(),
            error: r.error.clone(),
            at: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ExecutionStatus::ALL {
            assert_eq!(s.as_str().parse::<ExecutionStatus>(), Ok(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
        }
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(*p));
        }
        assert!("nope".parse::<Phase>().is_err());
    }

    #[test]
    fn serde_names_match_store_names() {
        for s in ExecutionStatus::ALL {
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(Value::String(s.as_str().into()))
            );
        }
    }
}
