//! troupe's PostgreSQL store, for several troupe processes sharing one database.
//!
//! Workers claim runs with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on
//! each other nor take the same run; every new run is announced with `NOTIFY troupe_runs`
//! (see [`PgStore::listen_for_work`]) so idle workers need not poll hard.
//!
//! PostgreSQL text cannot hold the NUL character; where ansible output may contain one (event
//! text, output chunks), it is stored as U+FFFD. JSON keeps it (as `\u0000` in `json` columns).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Row};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use troupe_core::inbound::{ConcurrencyPolicy, EventRecord, EventStatus, RuleOutcome, RuleResult};
use troupe_core::inventory::{Inventory, InventoryContent, InventoryFormat, NewInventory};
use troupe_core::job::{Job, NewJob, Unit, UnitSource};
use troupe_core::project::{NewProject, Project, ProjectSync};
use troupe_core::run::{CancelMode, NewRun, Run};
use troupe_core::template::{NewTemplate, Template};
use troupe_core::{Event, EventData, RunStatus};
use troupe_store::{
    EventRecordFilter, Ingested, Lease, NewEventRecord, OutputChunk, Page, Proposal, RulesDoc,
    RunFilter, RunOutcome, RunVersion, Store, StoreError, StoreResult, Stream, TokenRecord,
};

/// PostgreSQL's limit on bound parameters per statement.
const MAX_PARAMS: usize = 65_535;
/// Events sent in one statement (as arrays, so not bound by `MAX_PARAMS`; this only bounds
/// the size of one message).
const EVENTS_PER_STATEMENT: usize = 5_000;
/// Columns bound per output row.
const OUTPUT_PARAMS: usize = 4;
/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 16;
/// The channel new runs are announced on; the payload is the run id.
pub const WORK_CHANNEL: &str = "troupe_runs";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A [`Store`] in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// Data in the database that does not decode into troupe's types.
#[derive(Debug, thiserror::Error)]
#[error("stored data is invalid: {0}")]
struct InvalidData(String);

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(Box::new(InvalidData(what.to_string())))
}

/// Maps a unique violation to `Conflict(message())`, anything else to `Backend`.
fn unique_or_backend(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => backend(e),
    }
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(backend)
}

/// Decodes a JSON column selected as `col::text`.
fn json<T: serde::de::DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| invalid(format_args!("column {col}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| invalid(format_args!("cannot encode JSON: {e}")))
}

/// `s` with NUL characters, which PostgreSQL text cannot hold, replaced by U+FFFD.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A LIKE pattern matching strings that start with `prefix` literally (escape character `\`).
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Now, cut to the microsecond precision PostgreSQL keeps.
fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

/// `t` cut (not rounded, as PostgreSQL would) to whole microseconds.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn format_of(s: &str) -> StoreResult<InventoryFormat> {
    match s {
        "yaml" => Ok(InventoryFormat::Yaml),
        "ini" => Ok(InventoryFormat::Ini),
        other => Err(invalid(format_args!("inventory format {other:?}"))),
    }
}

fn cancel_mode(mode: Option<String>) -> StoreResult<Option<CancelMode>> {
    mode.map(|c| CancelMode::parse(&c).ok_or_else(|| invalid(format_args!("cancel mode {c:?}"))))
        .transpose()
}

const PROJECT_COLS: &str = "id, name, source::text AS source, \"commit\", synced_at, \
     sync_error, requirements_error, created_at";

fn project_from(row: &PgRow) -> StoreResult<Project> {
    Ok(Project {
        id: get(row, "id")?,
        name: get(row, "name")?,
        source: json(row, "source")?,
        sync: ProjectSync {
            commit: get(row, "commit")?,
            synced_at: get(row, "synced_at")?,
            error: get(row, "sync_error")?,
            requirements_error: get(row, "requirements_error")?,
        },
        created_at: get(row, "created_at")?,
    })
}

/// The inventory a run row was created with.
fn run_inventory_from(row: &PgRow) -> StoreResult<InventoryContent> {
    Ok(InventoryContent {
        format: format_of(&get::<String>(row, "inventory_format")?)?,
        hosts: get(row, "inventory_hosts")?,
        vars: get(row, "inventory_vars")?,
    })
}

const INVENTORY_COLS: &str =
    "id, name, env, version, format, hosts, vars, host_count, revision, created_at";

fn inventory_from(row: &PgRow) -> StoreResult<Inventory> {
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
        created_at: get(row, "created_at")?,
    })
}

const RUN_COLS: &str = "id, project_id, playbook, inventory_id, options::text AS options, \
     labels::text AS labels, tag, status, status_reason, rc, created_at, started_at, \
     finished_at, worker_id, cancel_requested, summary::text AS summary, event_count, \
     launched_at, \"commit\", job_id, unit, relaunch_of, template_id, parent_id, slice, \
     slice_count, event_id";

fn run_from(row: &PgRow) -> StoreResult<Run> {
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
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        worker_id: get(row, "worker_id")?,
        cancel_requested: cancel_mode(get(row, "cancel_requested")?)?,
        summary: json(row, "summary")?,
        event_count: get(row, "event_count")?,
        launched_at: get(row, "launched_at")?,
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

/// `SELECT cols FROM runs` with `filter` and `page` applied, newest first.
fn runs_query(cols: &str, filter: &RunFilter, page: Page) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {cols} FROM runs WHERE TRUE"));
    if !filter.statuses.is_empty() {
        q.push(" AND status IN (");
        let mut list = q.separated(", ");
        for s in &filter.statuses {
            list.push_bind(s.as_str());
        }
        q.push(")");
    }
    if let Some(project_id) = filter.project_id {
        q.push(" AND project_id = ").push_bind(project_id);
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND tag = ").push_bind(tag.as_str());
    }
    if let Some(job_id) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job_id);
    }
    if let Some(unit) = &filter.unit {
        q.push(" AND unit = ").push_bind(unit.as_str());
    }
    if let Some(parent_id) = filter.parent_id {
        q.push(" AND parent_id = ").push_bind(parent_id);
    }
    if let Some(relaunch_of) = filter.relaunch_of {
        q.push(" AND relaunch_of = ").push_bind(relaunch_of);
    }
    if let Some((key, value)) = &filter.label {
        q.push(" AND EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.id AND l.key = ")
            .push_bind(key.as_str());
        if let Some(value) = value {
            q.push(" AND l.value = ").push_bind(value.as_str());
        }
        q.push(")");
    }
    if let Some(before) = page.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
    q
}

fn version_from(row: &PgRow) -> StoreResult<RunVersion> {
    Ok(RunVersion {
        id: get(row, "id")?,
        version: get(row, "version")?,
    })
}

const EVENT_COLS: &str = "counter, uuid, event, parent_uuid, created, stdout, start_line, \
     end_line, event_data::text AS event_data";

fn event_from(row: &PgRow) -> StoreResult<Event> {
    Ok(Event {
        counter: get(row, "counter")?,
        uuid: get(row, "uuid")?,
        event: get(row, "event")?,
        parent_uuid: get(row, "parent_uuid")?,
        created: get(row, "created")?,
        stdout: get(row, "stdout")?,
        start_line: get(row, "start_line")?,
        end_line: get(row, "end_line")?,
        event_data: EventData::from_json(get(row, "event_data")?)
            .map_err(|e| invalid(format_args!("column event_data: {e}")))?,
    })
}

const JOB_COLS: &str = "id, tag, project_id, created_at";

/// A job from its row and its units (in order).
fn job_from(row: &PgRow, units: Vec<Unit>) -> StoreResult<Job> {
    Ok(Job {
        id: get(row, "id")?,
        tag: get(row, "tag")?,
        project_id: get(row, "project_id")?,
        units,
        created_at: get(row, "created_at")?,
    })
}

/// A unit from a row selecting `name, source::text AS source`.
fn unit_from(row: &PgRow) -> StoreResult<Unit> {
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

const TEMPLATE_COLS: &str = "id, name, project_id, playbook, inventory_id, \
     defaults::text AS defaults, allow_overrides::text AS allow_overrides, \
     labels::text AS labels, created_at";

fn template_from(row: &PgRow) -> StoreResult<Template> {
    Ok(Template {
        id: get(row, "id")?,
        name: get(row, "name")?,
        project_id: get(row, "project_id")?,
        playbook: get(row, "playbook")?,
        inventory_id: get(row, "inventory_id")?,
        defaults: json(row, "defaults")?,
        allow_overrides: json(row, "allow_overrides")?,
        labels: json(row, "labels")?,
        created_at: get(row, "created_at")?,
    })
}

/// `NotFound(what, id)` unless `table` holds a row with this id, as `conn` sees it.
async fn require_row(
    conn: &mut PgConnection,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> StoreResult<()> {
    row_exists(
        conn,
        format!("SELECT 1 FROM {table} WHERE id = $1"),
        what,
        id,
    )
    .await
}

/// Like [`require_row`], and holds a `KEY SHARE` lock on the row until the transaction ends: a
/// concurrent delete of it waits, and then sees what this transaction stored.
async fn share_row(
    conn: &mut PgConnection,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> StoreResult<()> {
    let sql = format!("SELECT 1 FROM {table} WHERE id = $1 FOR KEY SHARE");
    row_exists(conn, sql, what, id).await
}

async fn row_exists(
    conn: &mut PgConnection,
    sql: String,
    what: &'static str,
    id: i64,
) -> StoreResult<()> {
    let found = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found(what, id)),
    }
}

/// Where a run comes from besides its request: the inbound event whose rule started it and
/// that rule's concurrency key.
#[derive(Debug, Clone, Copy, Default)]
struct RunOrigin<'a> {
    event_id: Option<i64>,
    concurrency_key: Option<&'a str>,
}

/// Checks the references of `new` and stores it, queued, on `conn` (inside the caller's
/// transaction), announcing it to listeners on commit: what `create_run` does. `NotFound`
/// names the missing reference; nothing is written then.
async fn insert_run(
    conn: &mut PgConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    let options = to_json(&new.options)?;
    let labels = to_json(&new.labels)?;
    let project = sqlx::query("SELECT 1 FROM projects WHERE id = $1")
        .bind(new.project_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    if project.is_none() {
        return Err(StoreError::not_found("project", new.project_id));
    }
    if let Some(inventory_id) = new.inventory_id {
        // KEY SHARE: a concurrent delete_inventory waits for this run to be stored, and
        // then sees it.
        share_row(&mut *conn, "inventories", "inventory", inventory_id).await?;
    }
    if let Some((job_id, unit)) = new.origin.job_unit() {
        require_row(conn, "jobs", "job", job_id).await?;
        let found = sqlx::query("SELECT 1 FROM job_units WHERE job_id = $1 AND name = $2")
            .bind(job_id)
            .bind(unit)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if found.is_none() {
            return Err(unit_not_found(job_id, unit));
        }
    }
    if let Some(relaunch_of) = new.origin.relaunch_of() {
        require_row(conn, "runs", "run", relaunch_of).await?;
    }
    if let Some(template_id) = new.origin.template_id() {
        require_row(conn, "templates", "template", template_id).await?;
    }
    if let Some(slice_of) = new.origin.slice_of() {
        require_row(conn, "runs", "run", slice_of.parent_id).await?;
    }
    let (job_id, unit) = new
        .origin
        .job_unit()
        .map(|(j, u)| (Some(j), Some(u)))
        .unwrap_or_default();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO runs (project_id, playbook, inventory_id, inventory_format, \
         inventory_hosts, inventory_vars, options, labels, tag, status, created_at, \
         job_id, unit, relaunch_of, template_id, parent_id, slice, slice_count, event_id, \
         concurrency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::jsonb, $9, 'queued', $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING {RUN_COLS}"
    )))
    .bind(new.project_id)
    .bind(new.playbook.as_str())
    .bind(new.inventory_id)
    .bind(new.inventory.format.as_str())
    .bind(pg_text(&new.inventory.hosts).into_owned())
    .bind(
        new.inventory
            .vars
            .as_deref()
            .map(|v| pg_text(v).into_owned()),
    )
    .bind(options)
    .bind(labels)
    .bind(&new.tag)
    .bind(now())
    .bind(job_id)
    .bind(unit)
    .bind(new.origin.relaunch_of())
    .bind(new.origin.template_id())
    .bind(new.origin.slice_of().map(|s| s.parent_id))
    .bind(new.origin.slice_of().map(|s| s.slice))
    .bind(new.origin.slice_of().map(|s| s.count))
    .bind(origin.event_id)
    .bind(origin.concurrency_key.map(|k| pg_text(k).into_owned()))
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    let run = run_from(&row)?;
    if !new.labels.is_empty() {
        let mut q = QueryBuilder::<Postgres>::new("INSERT INTO run_labels (run_id, key, value) ");
        q.push_values(&new.labels, |mut b, (k, v)| {
            b.push_bind(run.id)
                .push_bind(k.as_str())
                .push_bind(v.as_str());
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    // Delivered on commit.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WORK_CHANNEL)
        .bind(run.id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(run)
}

/// The status of an event with proposals, from what its rules did: `accepted` if one started
/// a run, else `failed` if every one failed, else `skipped`.
fn decided_status(outcomes: &[RuleOutcome]) -> EventStatus {
    if outcomes
        .iter()
        .any(|o| matches!(o.result, RuleResult::Started { .. }))
    {
        EventStatus::Accepted
    } else if outcomes
        .iter()
        .all(|o| matches!(o.result, RuleResult::Failed { .. }))
    {
        EventStatus::Failed
    } else {
        EventStatus::Skipped
    }
}

/// The advisory locks an ingest takes, as text (hashed to lock keys by [`lock_all`]): one per
/// thing two concurrent ingests must not both decide on at once (the delivery, the content
/// within a redelivery window, each gate, each concurrency key). Parts of variable length are
/// prefixed with their length, so different parts never make the same text.
fn ingest_locks(new: &NewEventRecord) -> Vec<String> {
    let source = format!("{}:{}", new.source.len(), new.source);
    let mut locks = Vec::new();
    if let Some(delivery_id) = &new.delivery_id {
        locks.push(format!("troupe:delivery:{source}:{delivery_id}"));
    }
    if new.redelivery_window.is_some() {
        locks.push(format!("troupe:content:{source}:{}", new.content_hash));
    }
    for p in new.proposals.iter().filter(|p| p.run.is_ok()) {
        for g in &p.gates {
            locks.push(format!(
                "troupe:gate:{}:{}:{}:{}",
                p.rule.len(),
                p.rule,
                g.kind.as_str(),
                g.key
            ));
        }
        if let Some(c) = &p.concurrency {
            locks.push(format!("troupe:concurrency:{}", c.key));
        }
    }
    locks
        .into_iter()
        .map(|l| pg_text(&l).into_owned())
        .collect()
}

/// Takes a transaction-scoped advisory lock per text in `locks`, in the order of their keys:
/// every transaction locking in one order, none waits on another in a cycle.
async fn lock_all(conn: &mut PgConnection, locks: &[String]) -> StoreResult<()> {
    if locks.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT hashtextextended(l, 0) AS k FROM UNNEST($1::text[]) AS l ORDER BY k",
    )
    .bind(locks)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Carries out one proposal of event `event_id` (received at `received`) on `conn`, inside
/// the ingest transaction and under its locks: gates, concurrency policy, then the run and
/// its gate marks. Returns what the rule did and the run it started, if any.
async fn propose(
    conn: &mut PgConnection,
    proposal: &Proposal,
    event_id: i64,
    received: DateTime<Utc>,
) -> StoreResult<(RuleResult, Option<Run>)> {
    let new = match &proposal.run {
        Ok(new) => new,
        Err(error) => {
            return Ok((
                RuleResult::Failed {
                    error: error.clone(),
                },
                None,
            ));
        }
    };
    let rule = pg_text(&proposal.rule);
    for gate in &proposal.gates {
        let closed_by: Option<i64> = sqlx::query_scalar(
            "SELECT event_id FROM rule_gates WHERE rule = $1 AND kind = $2 AND key = $3 \
             AND expires_at > $4 ORDER BY expires_at DESC LIMIT 1",
        )
        .bind(rule.as_ref())
        .bind(gate.kind.as_str())
        .bind(pg_text(&gate.key).as_ref())
        .bind(received)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if let Some(by_event) = closed_by {
            return Ok((
                RuleResult::Gated {
                    gate: gate.kind,
                    key: gate.key.clone(),
                    by_event,
                },
                None,
            ));
        }
    }
    let concurrency_key = proposal.concurrency.as_ref().map(|c| pg_text(&c.key));
    let mut canceled = Vec::new();
    if let (Some(c), Some(key)) = (&proposal.concurrency, &concurrency_key) {
        let active: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE concurrency_key = $1 \
             AND status IN ('queued', 'running') ORDER BY id",
        )
        .bind(key.as_ref())
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        match (c.policy, active.first()) {
            (ConcurrencyPolicy::Skip, Some(&active_run)) => {
                return Ok((RuleResult::Skipped { active_run }, None));
            }
            (ConcurrencyPolicy::Cancel, _) => canceled = active,
            _ => {}
        }
    }
    let origin = RunOrigin {
        event_id: Some(event_id),
        concurrency_key: proposal.concurrency.as_ref().map(|c| c.key.as_str()),
    };
    let run = match insert_run(conn, new, origin).await {
        Ok(run) => run,
        // A missing project, inventory or template fails this rule only; nothing was written.
        Err(e @ StoreError::NotFound { .. }) => {
            return Ok((
                RuleResult::Failed {
                    error: e.to_string(),
                },
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    for gate in &proposal.gates {
        sqlx::query(
            "INSERT INTO rule_gates (rule, kind, key, started_at, expires_at, event_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(rule.as_ref())
        .bind(gate.kind.as_str())
        .bind(pg_text(&gate.key).as_ref())
        .bind(received)
        .bind(plus(received, gate.within))
        .bind(event_id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok((
        RuleResult::Started {
            run_id: run.id,
            canceled,
        },
        Some(run),
    ))
}

/// The recorded event this one repeats, if any: the same delivery of the same source, or
/// (with a redelivery window) the latest event of the same source and content received
/// within the window.
async fn earlier_delivery(
    conn: &mut PgConnection,
    new: &NewEventRecord,
) -> StoreResult<Option<EventRecord>> {
    let source = pg_text(&new.source);
    if let Some(delivery_id) = &new.delivery_id {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records \
             WHERE source = $1 AND delivery_id = $2"
        )))
        .bind(source.as_ref())
        .bind(pg_text(delivery_id).as_ref())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from(&row).map(Some);
        }
    }
    if let Some(window) = new.redelivery_window {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE source = $1 \
             AND content_hash = $2 AND received_at >= $3 \
             ORDER BY received_at DESC, id DESC LIMIT 1"
        )))
        .bind(source.as_ref())
        .bind(pg_text(&new.content_hash).as_ref())
        .bind(minus(micros(new.received_at), window))
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from(&row).map(Some);
        }
    }
    Ok(None)
}

/// The `Conflict` for a worker acting on a run it does not hold; `run` is the run as it is.
fn not_held(run_id: i64, worker_id: &str, run: Run) -> StoreError {
    StoreError::Conflict(format!(
        "run {run_id} is not running under worker {worker_id:?} (it is {}{})",
        run.status,
        run.worker_id
            .map(|w| format!(", worker {w:?}"))
            .unwrap_or_default()
    ))
}

fn unit_not_found(job_id: i64, unit: &str) -> StoreError {
    StoreError::not_found("unit", format!("{unit:?} of job {job_id}"))
}

const EVENT_RECORD_COLS: &str = "id, received_at, source, routing_key, delivery_id, \
     payload_size, payload, payload_truncated, status, reason, rules::text AS rules, run_ids";

fn event_record_from(row: &PgRow) -> StoreResult<EventRecord> {
    let status: String = get(row, "status")?;
    Ok(EventRecord {
        id: get(row, "id")?,
        received_at: get(row, "received_at")?,
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
        run_ids: get(row, "run_ids")?,
    })
}

const RULES_DOC_COLS: &str = "revision, text, updated_at";

fn rules_doc_from(row: &PgRow) -> StoreResult<RulesDoc> {
    Ok(RulesDoc {
        revision: get(row, "revision")?,
        text: get(row, "text")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// The earliest time a window reaches back to (year 1): valid for PostgreSQL and chrono.
fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest time a window reaches to (the end of year 9999).
fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t` plus `d`, at most [`latest`].
fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .map_or_else(latest, |end| end.min(latest()))
}

/// `t` minus `d`, at least [`earliest`].
fn minus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .map_or_else(earliest, |start| start.max(earliest()))
}

fn token_from(row: &PgRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        hash: get(row, "hash")?,
        created_at: get(row, "created_at")?,
    })
}

/// A batch of events as one array per column, for `UNNEST`.
struct EventColumns {
    counter: Vec<i64>,
    uuid: Vec<String>,
    event: Vec<String>,
    parent_uuid: Vec<Option<String>>,
    host: Vec<Option<String>>,
    task: Vec<Option<String>>,
    created: Vec<DateTime<Utc>>,
    stdout: Vec<String>,
    start_line: Vec<i64>,
    end_line: Vec<i64>,
    event_data: Vec<String>,
}

/// Inserts events (skipping stored counters) and adds what was stored to the run's event count.
/// Call it inside a transaction: a missing run shows as no run updated, after the events were
/// inserted, and only the rollback takes them out again (no foreign key checks each row).
///
/// Columns travel as arrays through UNNEST: one statement text whatever the batch size
/// (prepared once), no parameter limit, and far less parsing than a VALUES list. The insert and
/// the event_count update are one statement.
async fn insert_events(conn: &mut PgConnection, run_id: i64, events: &[Event]) -> StoreResult<()> {
    // An empty batch still runs once, to report a missing run.
    let empty: &[Event] = &[];
    let batches = events
        .chunks(EVENTS_PER_STATEMENT)
        .chain(events.is_empty().then_some(empty));
    for batch in batches {
        let mut cols = EventColumns::with_capacity(batch.len());
        for e in batch {
            cols.push(e)?;
        }
        let updated = sqlx::query(
            "WITH stored AS ( \
               INSERT INTO events (run_id, counter, uuid, event, parent_uuid, host, task, \
                 created, stdout, start_line, end_line, event_data) \
               SELECT $1, t.counter, t.uuid, t.event, t.parent_uuid, t.host, t.task, \
                 t.created, t.stdout, t.start_line, t.end_line, t.event_data::json \
               FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::timestamptz[], $9::text[], $10::bigint[], $11::bigint[], \
                 $12::text[]) AS t(counter, uuid, event, parent_uuid, host, task, created, \
                 stdout, start_line, end_line, event_data) \
               ON CONFLICT (run_id, counter) DO NOTHING RETURNING 1) \
             UPDATE runs SET event_count = event_count + (SELECT count(*) FROM stored) \
             WHERE id = $1 RETURNING id",
        )
        .bind(run_id)
        .bind(cols.counter)
        .bind(cols.uuid)
        .bind(cols.event)
        .bind(cols.parent_uuid)
        .bind(cols.host)
        .bind(cols.task)
        .bind(cols.created)
        .bind(cols.stdout)
        .bind(cols.start_line)
        .bind(cols.end_line)
        .bind(cols.event_data)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if updated.is_none() {
            return Err(StoreError::not_found("run", run_id));
        }
    }
    Ok(())
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            counter: Vec::with_capacity(n),
            uuid: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            parent_uuid: Vec::with_capacity(n),
            host: Vec::with_capacity(n),
            task: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            stdout: Vec::with_capacity(n),
            start_line: Vec::with_capacity(n),
            end_line: Vec::with_capacity(n),
            event_data: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &Event) -> StoreResult<()> {
        let text = |s: &str| pg_text(s).into_owned();
        self.counter.push(e.counter);
        self.uuid.push(text(&e.uuid));
        self.event.push(text(&e.event));
        self.parent_uuid.push(e.parent_uuid.as_deref().map(text));
        self.host.push(e.host().map(text));
        self.task.push(e.task().map(text));
        self.created.push(e.created);
        self.stdout.push(text(&e.stdout));
        self.start_line.push(e.start_line);
        self.end_line.push(e.end_line);
        self.event_data.push(e.event_data.json().to_owned());
        Ok(())
    }
}

/// Wakes a worker when runs are created (`LISTEN troupe_runs`).
#[derive(Debug)]
pub struct WorkListener {
    listener: PgListener,
}

impl WorkListener {
    /// Waits for the next new run and returns its id. Notifications sent while the connection
    /// was being re-established are lost, so poll the queue now and then too.
    pub async fn recv(&mut self) -> StoreResult<i64> {
        loop {
            let n = self.listener.recv().await.map_err(backend)?;
            if let Ok(id) = n.payload().parse() {
                return Ok(id);
            }
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(backend)?;
        Self::connect_with(options).await
    }

    /// Connects with `options` and brings the schema up to date.
    pub async fn connect_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(backend)?;
        // The migrator takes an advisory lock: several processes may start at once.
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(PgStore { pool })
    }

    /// Subscribes to new-run notifications, on a connection of its own.
    pub async fn listen_for_work(&self) -> StoreResult<WorkListener> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(backend)?;
        listener.listen(WORK_CHANNEL).await.map_err(backend)?;
        Ok(WorkListener { listener })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn require_run(&self, run_id: i64) -> StoreResult<()> {
        let found = sqlx::query("SELECT 1 FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("run", run_id)),
        }
    }

    /// After a conditional update matched nothing: `NotFound` if the run is missing, else the
    /// run as it is now.
    async fn current_run(&self, run_id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM runs WHERE id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", run_id))?;
        run_from(&row)
    }

    /// The jobs of `rows` (selected with [`JOB_COLS`]), in the same order, with their units.
    async fn jobs_from(&self, rows: &[PgRow]) -> StoreResult<Vec<Job>> {
        let ids = rows
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut units: HashMap<i64, Vec<Unit>> = HashMap::new();
        if !ids.is_empty() {
            let found = sqlx::query(
                "SELECT job_id, name, source::text AS source FROM job_units \
                 WHERE job_id = ANY($1) ORDER BY job_id, position",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            for row in &found {
                units
                    .entry(get(row, "job_id")?)
                    .or_default()
                    .push(unit_from(row)?);
            }
        }
        rows.iter()
            .zip(ids)
            .map(|(row, id)| job_from(row, units.remove(&id).unwrap_or_default()))
            .collect()
    }

    /// Moves every running run matching `condition` (on placeholder `$3`, bound to `arg`) to
    /// `error` with `reason`; returns their ids in order.
    async fn fail_running<T>(&self, condition: &str, arg: T, reason: &str) -> StoreResult<Vec<i64>>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        debug_assert!(RunStatus::Running.can_become(RunStatus::Error));
        let sql = format!(
            "UPDATE runs SET status = 'error', status_reason = $1, finished_at = $2, \
             cancel_requested = NULL WHERE status = 'running' AND ({condition}) RETURNING id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(pg_text(reason).into_owned())
            .bind(now())
            .bind(arg)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let mut ids = rows
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        ids.sort_unstable();
        Ok(ids)
    }
}

/// A table of named resources, read the same three ways: by id, by name, all.
struct Named<T> {
    table: &'static str,
    cols: &'static str,
    what: &'static str,
    from: fn(&PgRow) -> StoreResult<T>,
}

const PROJECTS: Named<Project> = Named {
    table: "projects",
    cols: PROJECT_COLS,
    what: "project",
    from: project_from,
};

const INVENTORIES: Named<Inventory> = Named {
    table: "inventories",
    cols: INVENTORY_COLS,
    what: "inventory",
    from: inventory_from,
};

const TEMPLATES: Named<Template> = Named {
    table: "templates",
    cols: TEMPLATE_COLS,
    what: "template",
    from: template_from,
};

impl PgStore {
    async fn by_id<T>(&self, n: &Named<T>, id: i64) -> StoreResult<T> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE id = $1",
            n.cols, n.table
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found(n.what, id))?;
        (n.from)(&row)
    }

    async fn by_name<T>(&self, n: &Named<T>, name: &str) -> StoreResult<Option<T>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE name = $1",
            n.cols, n.table
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(n.from)
        .transpose()
    }

    async fn all<T>(&self, n: &Named<T>) -> StoreResult<Vec<T>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} ORDER BY id",
            n.cols, n.table
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(n.from)
        .collect()
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn server_version(&self) -> StoreResult<String> {
        sqlx::query_scalar("SELECT version()")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn create_project(&self, new: &NewProject) -> StoreResult<Project> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO projects (name, source, created_at) VALUES ($1, $2::jsonb, $3) \
             RETURNING {PROJECT_COLS}"
        )))
        .bind(&new.name)
        .bind(to_json(&new.source)?)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_or_backend(e, || format!("project name {:?} is taken", new.name)))?;
        project_from(&row)
    }

    async fn get_project(&self, id: i64) -> StoreResult<Project> {
        self.by_id(&PROJECTS, id).await
    }

    async fn find_project(&self, name: &str) -> StoreResult<Option<Project>> {
        self.by_name(&PROJECTS, name).await
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        self.all(&PROJECTS).await
    }

    async fn set_project_sync(&self, id: i64, sync: &ProjectSync) -> StoreResult<Project> {
        let text = |s: &Option<String>| s.as_deref().map(|s| pg_text(s).into_owned());
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE projects SET \"commit\" = $1, synced_at = $2, sync_error = $3, \
             requirements_error = $4 WHERE id = $5 RETURNING {PROJECT_COLS}"
        )))
        .bind(text(&sync.commit))
        .bind(sync.synced_at.map(micros))
        .bind(text(&sync.error))
        .bind(text(&sync.requirements_error))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("project", id))?;
        project_from(&row)
    }

    async fn create_inventory(
        &self,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO inventories (name, env, version, format, hosts, vars, host_count, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {INVENTORY_COLS}"
        )))
        .bind(&new.name)
        .bind(&new.env)
        .bind(&new.version)
        .bind(new.format.as_str())
        .bind(&new.hosts)
        .bind(&new.vars)
        .bind(host_count)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_or_backend(e, || format!("inventory name {:?} is taken", new.name)))?;
        inventory_from(&row)
    }

    async fn get_inventory(&self, id: i64) -> StoreResult<Inventory> {
        self.by_id(&INVENTORIES, id).await
    }

    async fn find_inventory(&self, name: &str) -> StoreResult<Option<Inventory>> {
        self.by_name(&INVENTORIES, name).await
    }

    async fn list_inventories(&self) -> StoreResult<Vec<Inventory>> {
        self.all(&INVENTORIES).await
    }

    async fn update_inventory(
        &self,
        id: i64,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE inventories SET name = $1, env = $2, version = $3, format = $4, \
             hosts = $5, vars = $6, host_count = $7, revision = revision + 1 WHERE id = $8 \
             RETURNING {INVENTORY_COLS}"
        )))
        .bind(&new.name)
        .bind(&new.env)
        .bind(&new.version)
        .bind(new.format.as_str())
        .bind(&new.hosts)
        .bind(&new.vars)
        .bind(host_count)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unique_or_backend(e, || format!("inventory name {:?} is taken", new.name)))?
        .ok_or_else(|| StoreError::not_found("inventory", id))?;
        inventory_from(&row)
    }

    async fn delete_inventory(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // FOR UPDATE waits for runs and templates being created with this inventory (they
        // hold KEY SHARE on it), so the checks below see them.
        let name: String =
            sqlx::query_scalar("SELECT name FROM inventories WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("inventory", id))?;
        let active = sqlx::query(
            "SELECT id, status FROM runs WHERE inventory_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(run) = active {
            return Err(StoreError::Conflict(format!(
                "inventory {name:?} is used by {} run {}",
                get::<String>(&run, "status")?,
                get::<i64>(&run, "id")?
            )));
        }
        let template: Option<String> = sqlx::query_scalar(
            "SELECT name FROM templates WHERE inventory_id = $1 ORDER BY id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(template) = template {
            return Err(StoreError::Conflict(format!(
                "inventory {name:?} is named by template {template:?}"
            )));
        }
        // Finished runs lose the reference through ON DELETE SET NULL.
        sqlx::query("DELETE FROM inventories WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let run = insert_run(&mut tx, new, RunOrigin::default()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn get_run(&self, id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", id))?;
        run_from(&row)
    }

    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent> {
        let row = sqlx::query(
            "SELECT inventory_format, inventory_hosts, inventory_vars FROM runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", id))?;
        run_inventory_from(&row)
    }

    async fn get_run_launch(&self, id: i64) -> StoreResult<(Project, InventoryContent)> {
        let row = sqlx::query(AssertSqlSafe(format!(
            // The run's side is a subquery of columns projects does not have, so the
            // project's columns need no table prefix.
            "SELECT {PROJECT_COLS}, r.inventory_format, r.inventory_hosts, r.inventory_vars \
             FROM projects JOIN (SELECT project_id, inventory_format, inventory_hosts, \
             inventory_vars FROM runs WHERE id = $1) r ON projects.id = r.project_id"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", id))?;
        Ok((project_from(&row)?, run_inventory_from(&row)?))
    }

    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query(RUN_COLS, filter, page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(run_from)
            .collect()
    }

    async fn list_run_versions(
        &self,
        filter: &RunFilter,
        page: Page,
    ) -> StoreResult<Vec<RunVersion>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query("id, version", filter, page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(version_from)
            .collect()
    }

    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(AssertSqlSafe(format!(
            "SELECT version, {RUN_COLS} FROM runs WHERE id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| Ok((version_from(row)?, run_from(row)?)))
        .collect()
    }

    async fn claim_runs(
        &self,
        worker_id: &str,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        debug_assert_eq!(
            RunStatus::sources_of(RunStatus::Running),
            [RunStatus::Queued]
        );
        if limit == 0 {
            return Ok(Vec::new());
        }
        // SKIP LOCKED: runs another claimer has locked are passed over, not waited for; the
        // outer `status = 'queued'` is re-checked on the locked rows.
        let now = now();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH picked AS (SELECT id AS pick FROM runs WHERE status = 'queued' ORDER BY id \
                              LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE runs SET status = 'running', started_at = $1, worker_id = $2, \
             lease_expires_at = $3, cancel_requested = NULL \
             FROM picked WHERE runs.id = picked.pick AND runs.status = 'queued' \
             RETURNING {RUN_COLS}"
        )))
        .bind(now)
        .bind(worker_id)
        .bind(lease_end(now, lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut runs = rows.iter().map(run_from).collect::<StoreResult<Vec<_>>>()?;
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    async fn mark_launched(
        &self,
        run_id: i64,
        worker_id: &str,
        at: DateTime<Utc>,
        commit: Option<&str>,
    ) -> StoreResult<()> {
        let row = sqlx::query(
            "UPDATE runs SET launched_at = $1, \"commit\" = $2 \
             WHERE id = $3 AND worker_id = $4 AND status = 'running' RETURNING id",
        )
        .bind(micros(at))
        .bind(commit.map(|c| pg_text(c).into_owned()))
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if row.is_some() {
            return Ok(());
        }
        Err(not_held(run_id, worker_id, self.current_run(run_id).await?))
    }

    async fn renew_lease(
        &self,
        run_id: i64,
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<Lease> {
        let row = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1 \
             WHERE id = $2 AND worker_id = $3 AND status = 'running' RETURNING cancel_requested",
        )
        .bind(lease_end(now(), lease))
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match row {
            None => Ok(Lease::Lost),
            Some(row) => Ok(Lease::Held {
                cancel_requested: cancel_mode(get(&row, "cancel_requested")?)?,
            }),
        }
    }

    async fn finish_run(
        &self,
        run_id: i64,
        worker_id: &str,
        outcome: &RunOutcome,
    ) -> StoreResult<Run> {
        if !RunStatus::Running.can_become(outcome.status) {
            return Err(StoreError::Conflict(format!(
                "a run cannot finish as {}",
                outcome.status
            )));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = $1, rc = $2, status_reason = $3, summary = $4::jsonb, \
             finished_at = $5, cancel_requested = NULL \
             WHERE id = $6 AND worker_id = $7 AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(outcome.status.as_str())
        .bind(outcome.rc)
        .bind(outcome.reason.as_deref().map(|r| pg_text(r).into_owned()))
        .bind(to_json(&outcome.summary)?)
        .bind(now())
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match row {
            Some(row) => run_from(&row),
            None => Err(not_held(run_id, worker_id, self.current_run(run_id).await?)),
        }
    }

    async fn request_cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        debug_assert!(RunStatus::Queued.can_become(RunStatus::Canceled));
        // Each step is one conditional statement; a run that moves between them (queued ->
        // running) is caught by the next one.
        let queued = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'canceled', status_reason = 'canceled before start', \
             finished_at = $1 WHERE id = $2 AND status = 'queued' RETURNING {RUN_COLS}"
        )))
        .bind(now())
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = queued {
            return run_from(&row);
        }
        // Force overrides graceful; graceful never weakens force.
        let running = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET cancel_requested = CASE WHEN $1 = 'force' THEN 'force' \
             ELSE coalesce(cancel_requested, 'graceful') END \
             WHERE id = $2 AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(mode.as_str())
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if let Some(row) = running {
            return run_from(&row);
        }
        let run = self.current_run(run_id).await?;
        Err(StoreError::Conflict(format!(
            "run {run_id} has already finished ({})",
            run.status
        )))
    }

    async fn fail_runs_of_workers(
        &self,
        worker_prefix: &str,
        reason: &str,
    ) -> StoreResult<Vec<i64>> {
        self.fail_running(
            "worker_id LIKE $3 ESCAPE '\\'",
            like_prefix(worker_prefix),
            reason,
        )
        .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>> {
        self.fail_running("lease_expires_at < $3", now, reason)
            .await
    }

    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let events = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLS} FROM events WHERE run_id = $1 AND counter > $2 \
             ORDER BY counter LIMIT $3"
        )))
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(event_from)
        .collect::<StoreResult<Vec<_>>>()?;
        if events.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(events)
    }

    async fn host_failures(&self, run_id: i64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLS} FROM events WHERE run_id = $1 \
             AND event IN ('runner_on_failed', 'runner_on_unreachable') ORDER BY counter"
        )))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut failures = Vec::new();
        for row in &rows {
            let e = event_from(row)?;
            if e.is_host_failure() {
                failures.push(e);
            }
        }
        if rows.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(failures)
    }

    async fn append_batch(
        &self,
        run_id: i64,
        events: &[Event],
        chunks: &[OutputChunk],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The run is checked once per batch (no foreign key checks each row): the events'
        // statement updates its row, or, for output alone, the row is locked against deletion.
        if !events.is_empty() || chunks.is_empty() {
            insert_events(&mut tx, run_id, events).await?;
        } else {
            share_row(&mut tx, "runs", "run", run_id).await?;
        }
        for part in chunks.chunks(MAX_PARAMS / OUTPUT_PARAMS) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO run_output (run_id, seq, stream, text) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(run_id)
                    .push_bind(c.seq)
                    .push_bind(c.stream.as_str())
                    .push_bind(pg_text(&c.text).into_owned());
            });
            q.push(" ON CONFLICT (run_id, seq) DO NOTHING");
            q.build().execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn read_output(&self, run_id: i64, stream: Stream) -> StoreResult<String> {
        let rows = sqlx::query(
            "SELECT text FROM run_output WHERE run_id = $1 AND stream = $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(stream.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out = String::new();
        for row in &rows {
            out.push_str(&get::<String>(row, "text")?);
        }
        if rows.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(out)
    }

    async fn create_job(&self, new: &NewJob) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(project_id) = new.project_id {
            require_row(&mut tx, "projects", "project", project_id).await?;
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO jobs (tag, project_id, created_at) VALUES ($1, $2, $3) \
             RETURNING {JOB_COLS}"
        )))
        .bind(&new.tag)
        .bind(new.project_id)
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let job_id: i64 = get(&row, "id")?;
        // Positions follow the list: WITH ORDINALITY numbers the names as given.
        sqlx::query(
            "INSERT INTO job_units (job_id, position, name) \
             SELECT $1, u.position - 1, u.name \
             FROM UNNEST($2::text[]) WITH ORDINALITY AS u(name, position)",
        )
        .bind(job_id)
        .bind(&new.units)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or_backend(e, || "a job cannot have two units of one name".into()))?;
        tx.commit().await.map_err(backend)?;
        let units = new
            .units
            .iter()
            .map(|name| Unit {
                name: name.clone(),
                source: None,
            })
            .collect();
        job_from(&row, units)
    }

    async fn get_job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("job", id))?;
        let mut jobs = self.jobs_from(std::slice::from_ref(&row)).await?;
        jobs.pop().ok_or_else(|| StoreError::not_found("job", id))
    }

    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE tag = $1 ORDER BY id DESC LIMIT 1"
        )))
        .bind(tag)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(self.jobs_from(&rows).await?.pop())
    }

    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE TRUE"));
        if let Some(tag) = tag {
            q.push(" AND tag = ").push_bind(tag);
        }
        if let Some(before) = page.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        self.jobs_from(&rows).await
    }

    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit> {
        let encoded = to_json(source)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        require_row(&mut tx, "jobs", "job", job_id).await?;
        if let UnitSource::Project(project_id) = source {
            require_row(&mut tx, "projects", "project", *project_id).await?;
        }
        let row = sqlx::query(
            "UPDATE job_units SET source = $1::jsonb WHERE job_id = $2 AND name = $3 \
             RETURNING name, source::text AS source",
        )
        .bind(encoded)
        .bind(job_id)
        .bind(unit)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or_else(|| unit_not_found(job_id, unit))?;
        let unit = unit_from(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(unit)
    }

    async fn create_template(&self, new: &NewTemplate) -> StoreResult<Template> {
        let defaults = to_json(&new.defaults)?;
        let allow_overrides = to_json(&new.allow_overrides)?;
        let labels = to_json(&new.labels)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        require_row(&mut tx, "projects", "project", new.project_id).await?;
        // KEY SHARE, as in create_run: a concurrent delete_inventory then sees the template.
        let inventory = sqlx::query("SELECT 1 FROM inventories WHERE id = $1 FOR KEY SHARE")
            .bind(new.inventory_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if inventory.is_none() {
            return Err(StoreError::not_found("inventory", new.inventory_id));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO templates (name, project_id, playbook, inventory_id, defaults, \
             allow_overrides, labels, created_at) \
             VALUES ($1, $2, $3, $4, $5::json, $6::jsonb, $7::jsonb, $8) \
             RETURNING {TEMPLATE_COLS}"
        )))
        .bind(&new.name)
        .bind(new.project_id)
        .bind(&new.playbook)
        .bind(new.inventory_id)
        .bind(defaults)
        .bind(allow_overrides)
        .bind(labels)
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unique_or_backend(e, || format!("template name {:?} is taken", new.name)))?;
        let template = template_from(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(template)
    }

    async fn get_template(&self, id: i64) -> StoreResult<Template> {
        self.by_id(&TEMPLATES, id).await
    }

    async fn find_template(&self, name: &str) -> StoreResult<Option<Template>> {
        self.by_name(&TEMPLATES, name).await
    }

    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        self.all(&TEMPLATES).await
    }

    async fn ingest_event(&self, new: &NewEventRecord) -> StoreResult<Ingested> {
        let received = micros(new.received_at);
        let text = |s: &Option<String>| s.as_deref().map(|s| pg_text(s).into_owned());
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Concurrent ingests of the same delivery, or sharing a gate or concurrency key, wait
        // here for each other; after the locks every check sees what they committed.
        lock_all(&mut tx, &ingest_locks(new)).await?;
        if let Some(earlier) = earlier_delivery(&mut tx, new).await? {
            return Ok(Ingested::Duplicate(earlier));
        }
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO event_records (received_at, source, routing_key, delivery_id, \
             content_hash, payload_size, payload, payload_truncated, status, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(received)
        .bind(pg_text(&new.source).as_ref())
        .bind(pg_text(&new.routing_key).as_ref())
        .bind(text(&new.delivery_id))
        .bind(pg_text(&new.content_hash).as_ref())
        .bind(new.payload_size)
        .bind(text(&new.payload))
        .bind(new.payload_truncated)
        .bind(new.status.as_str())
        .bind(text(&new.reason))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let mut outcomes = Vec::with_capacity(new.proposals.len());
        let mut runs = Vec::new();
        for proposal in &new.proposals {
            let (result, run) = propose(&mut tx, proposal, event_id, received).await?;
            outcomes.push(RuleOutcome {
                rule: proposal.rule.clone(),
                result,
            });
            runs.extend(run);
        }
        let status = if new.proposals.is_empty() {
            new.status
        } else {
            decided_status(&outcomes)
        };
        let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE event_records SET status = $1, rules = $2::json, run_ids = $3 \
             WHERE id = $4 RETURNING {EVENT_RECORD_COLS}"
        )))
        .bind(status.as_str())
        .bind(to_json(&outcomes)?)
        .bind(&run_ids)
        .bind(event_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let record = event_record_from(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(Ingested::Recorded { record, runs })
    }

    async fn get_event_record(&self, id: i64) -> StoreResult<EventRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("event", id))?;
        event_record_from(&row)
    }

    async fn list_event_records(
        &self,
        filter: &EventRecordFilter,
        page: Page,
    ) -> StoreResult<Vec<EventRecord>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE TRUE"
        ));
        if let Some(source) = &filter.source {
            q.push(" AND source = ")
                .push_bind(pg_text(source).into_owned());
        }
        if let Some(routing_key) = &filter.routing_key {
            q.push(" AND routing_key = ")
                .push_bind(pg_text(routing_key).into_owned());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = page.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(event_record_from)
            .collect()
    }

    async fn prune_event_records(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query("DELETE FROM event_records WHERE received_at < $1")
            .bind(micros(before))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM rule_gates WHERE expires_at < $1")
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn get_rules(&self) -> StoreResult<Option<RulesDoc>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {RULES_DOC_COLS} FROM rules_doc WHERE id = 1"
        )))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rules_doc_from)
        .transpose()
    }

    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc> {
        // Each case is one statement, so the check and the write are one step even with
        // several troupe processes.
        let (sql, revision) = match expected_revision {
            None => (
                "INSERT INTO rules_doc (id, revision, text, updated_at) VALUES (1, 1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET revision = rules_doc.revision + 1, \
                 text = excluded.text, updated_at = excluded.updated_at",
                None,
            ),
            Some(0) => (
                "INSERT INTO rules_doc (id, revision, text, updated_at) VALUES (1, 1, $1, $2) \
                 ON CONFLICT (id) DO NOTHING",
                None,
            ),
            Some(r) => (
                "UPDATE rules_doc SET revision = revision + 1, text = $1, updated_at = $2 \
                 WHERE id = 1 AND revision = $3",
                Some(r),
            ),
        };
        let mut q = sqlx::query(AssertSqlSafe(format!("{sql} RETURNING {RULES_DOC_COLS}")))
            .bind(pg_text(text).into_owned())
            .bind(now());
        if let Some(r) = revision {
            q = q.bind(r);
        }
        if let Some(row) = q.fetch_optional(&self.pool).await.map_err(backend)? {
            return rules_doc_from(&row);
        }
        let stored: Option<i64> = sqlx::query_scalar("SELECT revision FROM rules_doc WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Err(StoreError::Conflict(format!(
            "the rules were changed meanwhile: their revision is {}, not {}",
            stored.unwrap_or(0),
            expected_revision.unwrap_or(0)
        )))
    }

    async fn create_token(&self, name: &str, hash: &str) -> StoreResult<TokenRecord> {
        let row = sqlx::query(
            "INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3) \
             RETURNING id, name, hash, created_at",
        )
        .bind(pg_text(name).into_owned())
        .bind(hash)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_or_backend(e, || "a token with this hash is already stored".into()))?;
        token_from(&row)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query("SELECT id, name, hash, created_at FROM tokens ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
        assert_eq!(like_prefix(""), "%");
    }

    #[test]
    fn nul_is_replaced() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("ab"), Cow::Borrowed("ab")));
    }
}
