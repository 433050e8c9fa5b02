//! Runs: one execution of one playbook against one inventory, its options and its results.

use crate::inventory::InventoryContent;
use crate::project::PlaybookRef;
use crate::{RunStatus, ValidationError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The ansible-playbook options of a run; each maps to the flag of the same name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// Extra variables (`-e @file`); must be a JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub extra_vars: Map<String, Value>,
    /// `--limit` host pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `--tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `--skip-tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_tags: Vec<String>,
    /// `--check`.
    #[serde(default)]
    pub check: bool,
    /// `--diff`.
    #[serde(default)]
    pub diff: bool,
    /// `--forks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<u32>,
    /// `-v` count, 0 to 4.
    #[serde(default)]
    pub verbosity: u8,
    /// Seconds after which the run is stopped with status `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// `--start-at-task`: skip the tasks before the first one with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_task: Option<String>,
    /// With `start_at_task`: start at the task at this position instead of the first task of
    /// that name (a relaunch from a failed task sets it, from the task's
    /// `troupe_task_position` event data). A play whose position no longer holds such a task
    /// starts at the first task of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_position: Option<TaskPosition>,
    /// Split the hosts (after `limit`) into this many slices, one ansible-playbook each, run
    /// in parallel (fewer when there are fewer hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<u32>,
    /// Split the hosts into slices of at most this many hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_size: Option<u32>,
    /// Stored credentials the run uses, by name: at most one of each kind, except vault (one
    /// per vault id). Their secrets are written to 0600 files in the run's private directory
    /// (removed when it ends) and passed as `--private-key`, `--become-password-file`,
    /// `--vault-id`/`--vault-password-file`, or as environment variables (`env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// `--connection` (`ssh`, `local`, `paramiko`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// `--user`: the user to connect as (an `ssh_key` credential's username is used when
    /// this is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_user: Option<String>,
    /// `--become`.
    #[serde(default, rename = "become", skip_serializing_if = "std::ops::Not::not")]
    pub become_: bool,
    /// `--become-method` (`sudo`, `su`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_method: Option<String>,
    /// `--become-user` (a `become` credential's username is used when this is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_user: Option<String>,
    /// `--ssh-common-args`: extra arguments to sftp, scp and ssh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_common_args: Option<String>,
    /// `--ssh-extra-args`: extra arguments to ssh only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_extra_args: Option<String>,
    /// Labels a worker must have to take this run (every one of them); a run no live worker
    /// can take stays queued and says why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_labels: Vec<String>,
    /// How ansible-playbook is started: `exec` (a new process) or `warm` (forked from a parent
    /// that imported ansible once; exec when the configuration cannot be shared). Unset: the
    /// server's `launcher` setting. Not passed to ansible-playbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<LauncherKind>,
}

/// How `ansible-playbook` processes are started (see docs/architecture.md, "The warm
/// launcher").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// A new process per run.
    Exec,
    /// A fork of a warm parent that imported ansible once; exec when the run's configuration
    /// cannot be proven the same as the parent's. The default.
    #[default]
    Warm,
}

impl std::str::FromStr for LauncherKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exec" => Ok(LauncherKind::Exec),
            "warm" => Ok(LauncherKind::Warm),
            other => Err(format!("unknown launcher {other:?} (exec or warm)")),
        }
    }
}

impl std::fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LauncherKind::Exec => "exec",
            LauncherKind::Warm => "warm",
        })
    }
}

/// Where a task is in a playbook, the same in every run of it: which play (its `file:line` and,
/// for a play file imported more than once, which occurrence) and the task's `file:line` (the
/// outermost dynamic include's for a task an `include_tasks` or `include_role` brought in).
/// Paths are relative to the project. The callback plugin records it in every
/// `playbook_on_task_start` event as `troupe_task_position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPosition {
    /// The play's `file:line`.
    pub play: String,
    /// Which play at that `file:line` (1 for the first).
    pub play_n: u32,
    /// The task's `file:line`.
    pub task: String,
}

impl TaskPosition {
    /// Checks its parts: short texts, one line each, and a play number from 1.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |t: &str| t.is_empty() || t.len() > 4096 || t.contains(['\0', '\n']);
        if bad(&self.play) || bad(&self.task) || self.play_n == 0 {
            return Err(ValidationError::new(
                "invalid_field",
                "start_at_position",
                "start_at_position needs a play and a task (`file:line`) and a play_n from 1",
            ));
        }
        Ok(())
    }
}

impl RunOptions {
    /// How this run is split, if it is.
    pub fn slicing(&self) -> Option<crate::slice::Slicing> {
        match (self.slices, self.slice_size) {
            (Some(n), _) if n > 1 => Some(crate::slice::Slicing::Count(n)),
            (_, Some(k)) => Some(crate::slice::Slicing::Size(k)),
            _ => None,
        }
    }
}

impl RunOptions {
    /// Checks every option; errors name the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for label in &self.worker_labels {
            check_worker_label(label, "worker_labels")?;
        }
        if let Some(limit) = &self.limit {
            check_cli_word(limit, "limit")?;
        }
        for (field, list) in [("tags", &self.tags), ("skip_tags", &self.skip_tags)] {
            for tag in list {
                check_cli_word(tag, field)?;
                if tag.contains(',') {
                    return Err(ValidationError::new(
                        "invalid_field",
                        field,
                        format!(
                            "tag {tag:?} must not contain ','; give each tag as its own list item"
                        ),
                    ));
                }
            }
        }
        if let Some(f) = self.forks
            && !(1..=1000).contains(&f)
        {
            return Err(ValidationError::new(
                "invalid_field",
                "forks",
                format!("forks must be between 1 and 1000, got {f}"),
            ));
        }
        if let Some(task) = &self.start_at_task
            && (task.is_empty() || task.len() > 1024 || task.contains(['\0', '\n']))
        {
            return Err(ValidationError::new(
                "invalid_field",
                "start_at_task",
                "start_at_task must be a task name",
            ));
        }
        if let Some(position) = &self.start_at_position {
            if self.start_at_task.is_none() {
                return Err(ValidationError::new(
                    "invalid_field",
                    "start_at_position",
                    "start_at_position needs start_at_task (the task's name)",
                ));
            }
            position.validate()?;
        }
        if self.slices.is_some() && self.slice_size.is_some() {
            return Err(ValidationError::new(
                "invalid_field",
                "slices",
                "give slices or slice_size, not both",
            ));
        }
        for (field, v) in [("slices", self.slices), ("slice_size", self.slice_size)] {
            if v.is_some_and(|v| !(1..=1000).contains(&v)) {
                return Err(ValidationError::new(
                    "invalid_field",
                    field,
                    format!("{field} must be between 1 and 1000"),
                ));
            }
        }
        if self.verbosity > 4 {
            return Err(ValidationError::new(
                "invalid_field",
                "verbosity",
                format!("verbosity must be between 0 and 4, got {}", self.verbosity),
            ));
        }
        for (field, value) in [
            ("connection", &self.connection),
            ("remote_user", &self.remote_user),
            ("become_method", &self.become_method),
            ("become_user", &self.become_user),
        ] {
            if let Some(v) = value {
                check_cli_word(v, field)?;
                if v.contains([' ', ',']) {
                    return Err(ValidationError::new(
                        "invalid_field",
                        field,
                        format!("{field} must be one word"),
                    ));
                }
            }
        }
        for (field, value) in [
            ("ssh_common_args", &self.ssh_common_args),
            ("ssh_extra_args", &self.ssh_extra_args),
        ] {
            if let Some(v) = value
                && (v.len() > 4096 || v.contains(['\0', '\n']))
            {
                return Err(ValidationError::new(
                    "invalid_field",
                    field,
                    format!("{field} must be one line of at most 4096 bytes"),
                ));
            }
        }
        if self.credentials.len() > 16 {
            return Err(ValidationError::new(
                "invalid_field",
                "credentials",
                "a run takes at most 16 credentials",
            ));
        }
        for (i, name) in self.credentials.iter().enumerate() {
            crate::project::validate_name(name, "credentials")?;
            if self.credentials[..i].contains(name) {
                return Err(ValidationError::new(
                    "invalid_field",
                    "credentials",
                    format!("credential {name:?} is named twice"),
                ));
            }
        }
        if self.timeout_s == Some(0) {
            return Err(ValidationError::new(
                "invalid_field",
                "timeout_s",
                "timeout_s must be at least 1 (omit it for no timeout)",
            ));
        }
        Ok(())
    }

    /// The ansible-playbook arguments these options stand for (extra vars excluded: they go
    /// through a file).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(limit) = &self.limit {
            args.extend(["--limit".to_owned(), limit.clone()]);
        }
        if !self.tags.is_empty() {
            args.extend(["--tags".to_owned(), self.tags.join(",")]);
        }
        if !self.skip_tags.is_empty() {
            args.extend(["--skip-tags".to_owned(), self.skip_tags.join(",")]);
        }
        if self.check {
            args.push("--check".into());
        }
        if self.diff {
            args.push("--diff".into());
        }
        if let Some(f) = self.forks {
            args.extend(["--forks".to_owned(), f.to_string()]);
        }
        if let Some(task) = &self.start_at_task {
            args.push(format!("--start-at-task={task}"));
        }
        if self.verbosity > 0 {
            args.push(format!("-{}", "v".repeat(self.verbosity.into())));
        }
        if let Some(c) = &self.connection {
            args.push(format!("--connection={c}"));
        }
        if let Some(u) = &self.remote_user {
            args.push(format!("--user={u}"));
        }
        if self.become_ {
            args.push("--become".into());
        }
        if let Some(m) = &self.become_method {
            args.push(format!("--become-method={m}"));
        }
        if let Some(u) = &self.become_user {
            args.push(format!("--become-user={u}"));
        }
        // `=`: a value starting with `-` is the option's value, not another option.
        if let Some(a) = &self.ssh_common_args {
            args.push(format!("--ssh-common-args={a}"));
        }
        if let Some(a) = &self.ssh_extra_args {
            args.push(format!("--ssh-extra-args={a}"));
        }
        args
    }
}

fn check_cli_word(value: &str, field: &str) -> Result<(), ValidationError> {
    if value.is_empty()
        || value.len() > 4096
        || value.starts_with('-')
        || value.contains(['\0', '\n'])
    {
        return Err(ValidationError::new(
            "invalid_field",
            field,
            format!("{value:?} is not a valid {field} value"),
        ));
    }
    Ok(())
}

/// Labels: short key/value pairs to find runs by.
pub type Labels = BTreeMap<String, String>;

fn validate_labels(labels: &Labels) -> Result<(), ValidationError> {
    if labels.len() > 32 {
        return Err(ValidationError::new(
            "invalid_field",
            "labels",
            "at most 32 labels",
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok || v.len() > 255 || v.contains('\0') {
            return Err(ValidationError::new(
                "invalid_field",
                format!("labels.{k}"),
                "label keys are 1 to 63 of [A-Za-z0-9._/-]; values at most 255 characters",
            ));
        }
    }
    Ok(())
}

/// How to stop a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelMode {
    /// Let the task in flight finish on every host, start no new task, still print the recap.
    Graceful,
    /// SIGINT, then SIGTERM, then SIGKILL to the whole process group.
    Force,
}

impl CancelMode {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelMode::Graceful => "graceful",
            CancelMode::Force => "force",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "graceful" => Some(Self::Graceful),
            "force" => Some(Self::Force),
            _ => None,
        }
    }
}

/// A validated request for a run, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The project the playbook is in.
    pub project_id: i64,
    /// The playbook, relative to the project.
    pub playbook: PlaybookRef,
    /// The stored inventory used, if any (its content is copied into `inventory`).
    pub inventory_id: Option<i64>,
    /// The inventory the run uses, as it was when the run was created.
    pub inventory: InventoryContent,
    /// ansible-playbook options.
    pub options: RunOptions,
    /// Labels to find the run by.
    pub labels: Labels,
    /// A tag grouping related runs (jobs use it).
    pub tag: Option<String>,
    /// What started the run.
    pub origin: Origin,
    /// Where the run's end is told (sealed): stored with the run, in the same transaction.
    pub notify: Vec<crate::notify::SealedNotify>,
}

/// What started a run: one value instead of a field per way of starting one.
///
/// A relaunch or a slice keeps the lineage of the run it comes from (its template, its job and
/// unit), so a relaunched template run still counts as a run of that template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// Launched directly, through the API or the CLI.
    #[default]
    Api,
    /// Launched from a saved template.
    Template {
        /// The template.
        template_id: i64,
    },
    /// An action on a job's unit (RedRunner).
    JobUnit {
        /// The job.
        job_id: i64,
        /// The unit acted on.
        unit: String,
    },
    /// Started by an event rule, directly or through a template.
    Rule {
        /// The rule's name.
        rule: String,
        /// The event source's name.
        source: String,
        /// The template the rule's action launched, if any.
        template_id: Option<i64>,
    },
    /// A relaunch of a finished run.
    Relaunch {
        /// The run relaunched.
        of: i64,
        /// What started that run.
        original: Box<Origin>,
    },
    /// One slice of a split run.
    Slice {
        /// The slice's place in its split run.
        of: SliceOf,
        /// What started the split run.
        original: Box<Origin>,
    },
}

impl Origin {
    /// The template the run comes from, through relaunches and slices.
    pub fn template_id(&self) -> Option<i64> {
        match self {
            Origin::Template { template_id } => Some(*template_id),
            Origin::Rule { template_id, .. } => *template_id,
            Origin::Relaunch { original, .. } | Origin::Slice { original, .. } => {
                original.template_id()
            }
            Origin::Api | Origin::JobUnit { .. } => None,
        }
    }

    /// The job and unit the run is an action of, through relaunches and slices.
    pub fn job_unit(&self) -> Option<(i64, &str)> {
        match self {
            Origin::JobUnit { job_id, unit } => Some((*job_id, unit.as_str())),
            Origin::Relaunch { original, .. } | Origin::Slice { original, .. } => {
                original.job_unit()
            }
            Origin::Api | Origin::Template { .. } | Origin::Rule { .. } => None,
        }
    }

    /// The run this one relaunches (a slice of a relaunch is not itself a relaunch).
    pub fn relaunch_of(&self) -> Option<i64> {
        match self {
            Origin::Relaunch { of, .. } => Some(*of),
            _ => None,
        }
    }

    /// The split run this run is a slice of.
    pub fn slice_of(&self) -> Option<SliceOf> {
        match self {
            Origin::Slice { of, .. } => Some(*of),
            _ => None,
        }
    }

    /// What started a stored run, as far as its stored columns tell: the lineage a relaunch or
    /// a slice of it keeps.
    pub fn of_run(run: &Run) -> Origin {
        let base = match (run.job_id, &run.unit, run.template_id) {
            (Some(job_id), Some(unit), _) => Origin::JobUnit {
                job_id,
                unit: unit.clone(),
            },
            (_, _, Some(template_id)) => Origin::Template { template_id },
            _ => Origin::Api,
        };
        match (run.parent_id, run.slice, run.slice_count) {
            (Some(parent_id), Some(slice), Some(count)) => Origin::Slice {
                of: SliceOf {
                    parent_id,
                    slice,
                    count,
                },
                original: Box::new(base),
            },
            _ => match run.relaunch_of {
                Some(of) => Origin::Relaunch {
                    of,
                    original: Box::new(base),
                },
                None => base,
            },
        }
    }
}

/// A slice's place in its split run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOf {
    /// The split (parent) run.
    pub parent_id: i64,
    /// This slice's number, from 1.
    pub slice: i32,
    /// How many slices the parent has.
    pub count: i32,
}

impl NewRun {
    /// Checks what a run request may get wrong beyond references to other resources.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.options.validate()?;
        validate_labels(&self.labels)?;
        if let Some(tag) = &self.tag {
            crate::project::validate_name(tag, "tag")?;
        }
        Ok(())
    }
}

/// Per-host totals from ansible's `playbook_on_stats` (its PLAY RECAP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostStats {
    /// Tasks that were ok (changed ones included, as in the recap).
    pub ok: i64,
    /// Tasks that changed something.
    pub changed: i64,
    /// Tasks that failed.
    pub failed: i64,
    /// Times the host was unreachable.
    pub unreachable: i64,
    /// Tasks skipped.
    pub skipped: i64,
    /// Failures rescued by a block.
    pub rescued: i64,
    /// Failures ignored (`ignore_errors`).
    pub ignored: i64,
}

/// A run's per-host summary, by host name.
pub type RunSummary = BTreeMap<String, HostStats>;

impl HostStats {
    /// Builds the per-host summary from a `playbook_on_stats` event's data (ansible-runner's
    /// `ok`/`changed`/`failures`/`dark`/`skipped`/`rescued`/`ignored`/`processed` maps).
    pub fn from_stats_event(event_data: &Value) -> RunSummary {
        let mut summary = RunSummary::new();
        let field = |name: &str| event_data.get(name).and_then(Value::as_object);
        if let Some(processed) = field("processed") {
            for host in processed.keys() {
                summary.entry(host.clone()).or_default();
            }
        }
        type Column = fn(&mut HostStats) -> &mut i64;
        let columns: [(&str, Column); 7] = [
            ("ok", |s| &mut s.ok),
            ("changed", |s| &mut s.changed),
            ("failures", |s| &mut s.failed),
            ("dark", |s| &mut s.unreachable),
            ("skipped", |s| &mut s.skipped),
            ("rescued", |s| &mut s.rescued),
            ("ignored", |s| &mut s.ignored),
        ];
        for (name, slot) in columns {
            for (host, n) in field(name).into_iter().flatten() {
                *slot(summary.entry(host.clone()).or_default()) = n.as_i64().unwrap_or(0);
            }
        }
        summary
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    /// Store-assigned id; increases with creation order.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// The playbook, relative to the project.
    pub playbook: String,
    /// The stored inventory used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_id: Option<i64>,
    /// ansible-playbook options.
    pub options: RunOptions,
    /// Labels.
    pub labels: Labels,
    /// Tag grouping related runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Current status.
    pub status: RunStatus,
    /// Why the run is in its status, when that needs saying (errors, cancels, timeouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// ansible-playbook's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rc: Option<i32>,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
    /// When a worker started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker holding (or that held) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// A cancel asked for and not yet carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<CancelMode>,
    /// Per-host totals, once the run has reported them.
    #[serde(default)]
    pub summary: RunSummary,
    /// Number of events stored.
    pub event_count: i64,
    /// When ansible-playbook was started (exec'd) for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<DateTime<Utc>>,
    /// For git projects: the commit the run ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The job this run is an action of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// The job's unit this run acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The run this one relaunches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaunch_of: Option<i64>,
    /// The template it was launched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<i64>,
    /// For a slice: the split run it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// For a slice: its number, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<i32>,
    /// For a slice: how many slices its split run has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_count: Option<i32>,
    /// The inbound event (webhook, broker message...) whose rule started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
}

/// Checks one worker label: 1 to 63 characters of letters, digits, `-`, `_`, `.`, `/` and `=`,
/// so that `--labels a,b` and label lists read the same everywhere.
pub fn check_worker_label(label: &str, field: &str) -> Result<(), ValidationError> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '='));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "invalid_field",
            field,
            format!(
                "worker label {label:?} must be 1 to 63 letters, digits or '-', '_', '.', '/', '='"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_to_args() {
        let o = RunOptions {
            limit: Some("web".into()),
            tags: vec!["a".into(), "b".into()],
            check: true,
            forks: Some(3),
            verbosity: 2,
            ..Default::default()
        };
        assert_eq!(
            o.to_args(),
            vec![
                "--limit", "web", "--tags", "a,b", "--check", "--forks", "3", "-vv"
            ]
        );
        let o: RunOptions = serde_json::from_value(json!({
            "connection": "ssh", "remote_user": "deploy", "become": true,
            "become_method": "sudo", "become_user": "app",
            "ssh_common_args": "-o StrictHostKeyChecking=no", "ssh_extra_args": "-p 2222",
            "credentials": ["key"]
        }))
        .expect("options");
        o.validate().expect("valid");
        assert_eq!(
            o.to_args(),
            vec![
                "--connection=ssh",
                "--user=deploy",
                "--become",
                "--become-method=sudo",
                "--become-user=app",
                "--ssh-common-args=-o StrictHostKeyChecking=no",
                "--ssh-extra-args=-p 2222",
            ]
        );
        // `become` is its name on the wire, and false is left out.
        let shown = serde_json::to_value(&o).expect("json");
        assert_eq!(shown["become"], json!(true));
        assert!(
            serde_json::to_value(RunOptions::default())
                .expect("json")
                .get("become")
                .is_none()
        );
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            (json!({"verbosity": 5}), "verbosity"),
            (json!({"forks": 0}), "forks"),
            (json!({"limit": "--become"}), "limit"),
            (json!({"tags": ["a,b"]}), "tags"),
            (json!({"timeout_s": 0}), "timeout_s"),
            (json!({"remote_user": "-oProxyCommand=x"}), "remote_user"),
            (json!({"become_user": "a b"}), "become_user"),
            (json!({"connection": ""}), "connection"),
            (json!({"ssh_extra_args": "-o A\n-o B"}), "ssh_extra_args"),
            (json!({"credentials": ["key", "key"]}), "credentials"),
            (json!({"credentials": ["no such name!"]}), "credentials"),
        ];
        for (v, field) in bad {
            let o: RunOptions = serde_json::from_value(v).expect("shape");
            assert_eq!(o.validate().expect_err(field).field, field);
        }
        assert!(serde_json::from_value::<RunOptions>(json!({"extra_vars": [1]})).is_err());
        assert!(serde_json::from_value::<RunOptions>(json!({"bogus": 1})).is_err());
    }

    #[test]
    fn stats_event_to_summary() {
        let data = json!({
            "ok": {"a": 3, "b": 2}, "changed": {"a": 1}, "failures": {"b": 1},
            "dark": {"c": 1}, "skipped": {"a": 1}, "rescued": {}, "ignored": {"a": 1},
            "processed": {"a": 1, "b": 1, "c": 1}
        });
        let s = HostStats::from_stats_event(&data);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s["a"],
            HostStats {
                ok: 3,
                changed: 1,
                skipped: 1,
                ignored: 1,
                ..Default::default()
            }
        );
        assert_eq!(s["b"].failed, 1);
        assert_eq!(s["c"].unreachable, 1);
    }

    #[test]
    fn labels_are_checked() {
        let mut l = Labels::new();
        l.insert("team".into(), "ops".into());
        assert!(validate_labels(&l).is_ok());
        l.insert("bad key".into(), "x".into());
        assert!(validate_labels(&l).is_err());
    }
}
