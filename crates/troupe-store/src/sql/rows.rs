//! Rows into troupe's types, the same for every backend: what differs (times, id lists) is
//! read through the backend's [`Dialect`].

use super::{Dialect, Readable, cancel_mode, format_of, get, invalid, json};
use crate::{RulesDoc, RunVersion, StoreResult, TokenRecord};
use troupe_core::flow::{Execution, FlowVersion, ParentStep, Schedule, StepRecord};
use troupe_core::inbound::{EventRecord, EventStatus};
use troupe_core::inventory::{Inventory, InventoryContent};
use troupe_core::job::{Job, Unit};
use troupe_core::project::{Project, ProjectSync};
use troupe_core::run::Run;
use troupe_core::template::Template;
use troupe_core::{Event, EventData};

/// A project, from a row selected with [`Dialect::PROJECT_COLS`].
pub fn project_from<D: Dialect>(row: &D::Row) -> StoreResult<Project> {
    Ok(Project {
        id: get(row, "id")?,
        name: get(row, "name")?,
        source: json(row, "source")?,
        sync: ProjectSync {
            commit: get(row, "commit")?,
            synced_at: D::opt_time(row, "synced_at")?,
            error: get(row, "sync_error")?,
            requirements_error: get(row, "requirements_error")?,
        },
        created_at: D::time(row, "created_at")?,
    })
}

/// The inventory a run row was created with.
pub fn run_inventory_from<D: Dialect>(row: &D::Row) -> StoreResult<InventoryContent> {
    Ok(InventoryContent {
        format: format_of(&get::<String>(row, "inventory_format")?)?,
        hosts: get(row, "inventory_hosts")?,
        vars: get(row, "inventory_vars")?,
    })
}

/// An inventory, from a row selected with
/// [`INVENTORY_COLS`](super::statements::INVENTORY_COLS).
pub fn inventory_from<D: Dialect>(row: &D::Row) -> StoreResult<Inventory> {
    Ok(Inventory {
        id: get(row, "id")?,
        name: get(row, "name")?,
        env: get(row, "env")?,
        version: get(row, "version")?,
        content: InventoryContent {
            format: format_of(&get::<String>(row, "format")?)?,
            hosts: get(row, "hosts")?,
            vars: get(row, "vars")?,
        },
        host_count: get(row, "host_count")?,
        revision: get(row, "revision")?,
        created_at: D::time(row, "created_at")?,
    })
}

/// A run, from a row selected with [`Dialect::RUN_COLS`].
pub fn run_from<D: Dialect>(row: &D::Row) -> StoreResult<Run> {
    let status: String = get(row, "status")?;
    Ok(Run {
        id: get(row, "id")?,
        project_id: get(row, "project_id")?,
        playbook: get(row, "playbook")?,
        inventory_id: get(row, "inventory_id")?,
        options: json(row, "options")?,
        labels: json(row, "labels")?,
        tag: get(row, "tag")?,
        status: status.parse().map_err(invalid)?,
        status_reason: get(row, "status_reason")?,
        rc: get(row, "rc")?,
        created_at: D::time(row, "created_at")?,
        started_at: D::opt_time(row, "started_at")?,
        finished_at: D::opt_time(row, "finished_at")?,
        worker_id: get(row, "worker_id")?,
        cancel_requested: cancel_mode(get(row, "cancel_requested")?)?,
        summary: json(row, "summary")?,
        event_count: get(row, "event_count")?,
        launched_at: D::opt_time(row, "launched_at")?,
        commit: get(row, "commit")?,
        job_id: get(row, "job_id")?,
        unit: get(row, "unit")?,
        relaunch_of: get(row, "relaunch_of")?,
        parent_id: get(row, "parent_id")?,
        slice: get(row, "slice")?,
        slice_count: get(row, "slice_count")?,
        template_id: get(row, "template_id")?,
        event_id: get(row, "event_id")?,
    })
}

/// A run's id and version, from a row selecting both.
pub fn version_from<D: Dialect>(row: &D::Row) -> StoreResult<RunVersion> {
    Ok(RunVersion {
        id: get(row, "id")?,
        version: get(row, "version")?,
    })
}

/// An event, from a row selected with [`Dialect::EVENT_COLS`].
pub fn event_from<D: Dialect>(row: &D::Row) -> StoreResult<Event> {
    Ok(Event {
        counter: get(row, "counter")?,
        uuid: get(row, "uuid")?,
        event: get(row, "event")?,
        parent_uuid: get(row, "parent_uuid")?,
        created: D::time(row, "created")?,
        stdout: get(row, "stdout")?,
        start_line: get(row, "start_line")?,
        end_line: get(row, "end_line")?,
        event_data: EventData::from_json(get(row, "event_data")?)
            .map_err(|e| invalid(format_args!("column event_data: {e}")))?,
    })
}

/// A job from its row (selected with [`JOB_COLS`](super::statements::JOB_COLS)) and its
/// units (in order).
pub fn job_from<D: Dialect>(row: &D::Row, units: Vec<Unit>) -> StoreResult<Job> {
    Ok(Job {
        id: get(row, "id")?,
        tag: get(row, "tag")?,
        project_id: get(row, "project_id")?,
        units,
        created_at: D::time(row, "created_at")?,
    })
}

/// A unit, from a row selecting its `name` and its `source` as JSON text.
pub fn unit_from<D: Dialect>(row: &D::Row) -> StoreResult<Unit> {
    let source: Option<String> = get(row, "source")?;
    Ok(Unit {
        name: get(row, "name")?,
        source: source
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| invalid(format_args!("unit source: {e}")))
            })
            .transpose()?,
    })
}

/// A template, from a row selected with [`Dialect::TEMPLATE_COLS`].
pub fn template_from<D: Dialect>(row: &D::Row) -> StoreResult<Template> {
    Ok(Template {
        id: get(row, "id")?,
        name: get(row, "name")?,
        project_id: get(row, "project_id")?,
        playbook: get(row, "playbook")?,
        inventory_id: get(row, "inventory_id")?,
        defaults: json(row, "defaults")?,
        allow_overrides: json(row, "allow_overrides")?,
        labels: json(row, "labels")?,
        notify: json(row, "notify")?,
        created_at: D::time(row, "created_at")?,
    })
}

/// An inbound event record, from a row selected with [`Dialect::EVENT_RECORD_COLS`].
pub fn event_record_from<D: Dialect>(row: &D::Row) -> StoreResult<EventRecord> {
    let status: String = get(row, "status")?;
    Ok(EventRecord {
        id: get(row, "id")?,
        received_at: D::time(row, "received_at")?,
        source: get(row, "source")?,
        routing_key: get(row, "routing_key")?,
        delivery_id: get(row, "delivery_id")?,
        payload_size: get(row, "payload_size")?,
        payload: get(row, "payload")?,
        payload_truncated: get(row, "payload_truncated")?,
        status: EventStatus::parse(&status)
            .ok_or_else(|| invalid(format_args!("event status {status:?}")))?,
        reason: get(row, "reason")?,
        rules: json(row, "rules")?,
        run_ids: D::ids(row, "run_ids")?,
    })
}

/// The rules document, from a row selected with
/// [`RULES_DOC_COLS`](super::statements::RULES_DOC_COLS).
pub fn rules_doc_from<D: Dialect>(row: &D::Row) -> StoreResult<RulesDoc> {
    Ok(RulesDoc {
        revision: get(row, "revision")?,
        text: get(row, "text")?,
        updated_at: D::time(row, "updated_at")?,
    })
}

/// A token, from a row selected with [`TOKEN_COLS`](super::statements::TOKEN_COLS).
pub fn token_from<D: Dialect>(row: &D::Row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        hash: get(row, "hash")?,
        role: {
            let role: String = get(row, "role")?;
            troupe_core::worker::TokenRole::parse(&role)
                .ok_or_else(|| invalid(format_args!("token role {role:?}")))?
        },
        projects: match get::<Option<String>>(row, "projects")? {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| invalid(format_args!("column projects: {e}")))?,
            ),
            None => None,
        },
        created_at: D::time(row, "created_at")?,
        expires_at: D::opt_time(row, "expires_at")?,
        revoked_at: D::opt_time(row, "revoked_at")?,
    })
}

/// A flow version, from a row selected with
/// [`FLOW_VERSION_COLS`](super::statements::FLOW_VERSION_COLS).
pub fn flow_version_from<D: Dialect>(row: &D::Row) -> StoreResult<FlowVersion> {
    Ok(FlowVersion {
        name: get(row, "name")?,
        version: get(row, "version")?,
        document: get(row, "document")?,
        created_at: D::time(row, "created_at")?,
    })
}

/// An execution, from a row selected with [`Dialect::EXECUTION_COLS`].
pub fn execution_from<D: Dialect>(row: &D::Row) -> StoreResult<Execution> {
    let status: String = get(row, "status")?;
    let parent_id: Option<i64> = get(row, "parent_execution_id")?;
    let parent_step: Option<String> = get(row, "parent_step")?;
    let parent = match (parent_id, parent_step) {
        (Some(execution_id), Some(step)) => Some(ParentStep { execution_id, step }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "an execution's parent without its step, or the reverse",
            ));
        }
    };
    Ok(Execution {
        id: get(row, "id")?,
        flow: get(row, "flow")?,
        version: get(row, "version")?,
        status: status.parse().map_err(invalid)?,
        inputs: json(row, "inputs")?,
        sealed_secrets: get(row, "sealed_secrets")?,
        concurrency_key: get(row, "concurrency_key")?,
        parent,
        started_by: get(row, "started_by")?,
        round: get(row, "round")?,
        error: get(row, "error")?,
        cancel_requested: get(row, "cancel_requested")?,
        owner: get(row, "owner")?,
        lease_until: D::opt_time(row, "lease_until")?,
        created_at: D::time(row, "created_at")?,
        started_at: D::opt_time(row, "started_at")?,
        finished_at: D::opt_time(row, "finished_at")?,
    })
}

/// A step record, from a row selected with [`Dialect::STEP_COLS`].
pub fn step_from<D: Dialect>(row: &D::Row) -> StoreResult<StepRecord> {
    let phase: String = get(row, "phase")?;
    let status: String = get(row, "status")?;
    Ok(StepRecord {
        execution_id: get(row, "execution_id")?,
        round: get(row, "round")?,
        key: get(row, "key")?,
        phase: phase.parse().map_err(invalid)?,
        position: get(row, "position")?,
        kind: get(row, "kind")?,
        status: status.parse().map_err(invalid)?,
        attempts: get(row, "attempts")?,
        started_at: D::opt_time(row, "started_at")?,
        finished_at: D::opt_time(row, "finished_at")?,
        result: json(row, "result")?,
        published: json(row, "published")?,
        error: get(row, "error")?,
        run_ids: D::ids(row, "run_ids")?,
        execution_ids: D::ids(row, "execution_ids")?,
    })
}

/// A schedule, from a row selected with [`Dialect::SCHEDULE_COLS`].
pub fn schedule_from<D: Dialect>(row: &D::Row) -> StoreResult<Schedule> {
    let missed: String = get(row, "missed")?;
    Ok(Schedule {
        id: get(row, "id")?,
        name: get(row, "name")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        target: json(row, "target")?,
        missed: missed.parse().map_err(invalid)?,
        next_fire_at: D::time(row, "next_fire_at")?,
        last_fire_at: D::opt_time(row, "last_fire_at")?,
        last_result: get(row, "last_result")?,
        created_at: D::time(row, "created_at")?,
    })
}

/// The events of `rows` (selected with [`statements::host_failures`](super::statements::host_failures))
/// that mean a host failed: the query cannot see whether a failure was ignored.
pub fn host_failures_from<D: Dialect>(rows: &[D::Row]) -> StoreResult<Vec<Event>> {
    let mut failures = Vec::new();
    for row in rows {
        let e = event_from::<D>(row)?;
        if e.is_host_failure() {
            failures.push(e);
        }
    }
    Ok(failures)
}

/// The units of a job just created from these names: in order, no source set yet.
pub fn fresh_units(names: &[String]) -> Vec<Unit> {
    names
        .iter()
        .map(|name| Unit {
            name: name.clone(),
            source: None,
        })
        .collect()
}

/// The `id` column of every row, in increasing order (a statement's `RETURNING` has none).
pub fn sorted_ids(rows: &[impl super::Readable]) -> StoreResult<Vec<i64>> {
    let mut ids = rows
        .iter()
        .map(|r| get::<i64>(r, "id"))
        .collect::<StoreResult<Vec<_>>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// The `text` of every row, one after the other: a stream's output from its chunks.
pub fn joined_text(rows: &[impl super::Readable]) -> StoreResult<String> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&get::<String>(row, "text")?);
    }
    Ok(out)
}

/// A worker, from a row selected with the worker columns of the statements.
pub fn worker_from<D: Dialect>(row: &D::Row) -> StoreResult<troupe_core::worker::Worker> {
    let kind: String = get(row, "kind")?;
    let labels: String = get(row, "labels")?;
    Ok(troupe_core::worker::Worker {
        id: get(row, "id")?,
        name: get(row, "name")?,
        kind: troupe_core::worker::WorkerKind::parse(&kind)
            .ok_or_else(|| invalid(format_args!("worker kind {kind:?}")))?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| invalid(format_args!("worker labels: {e}")))?,
        capacity: u32::try_from(row.int32("capacity")?).unwrap_or(0),
        active_runs: u32::try_from(row.int32("active_runs")?).unwrap_or(0),
        version: get(row, "version")?,
        started_at: D::time(row, "started_at")?,
        last_heartbeat: D::time(row, "last_heartbeat")?,
        draining: row.flag("draining")?,
        stopped_at: D::opt_time(row, "stopped_at")?,
    })
}
