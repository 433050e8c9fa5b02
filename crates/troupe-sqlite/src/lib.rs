//! troupe's SQLite store: one database file in WAL mode, the default backend.
//!
//! SQLite allows one writer at a time, so the store keeps a single writer connection (writes
//! queue in-process, first come first served, instead of fighting over the file lock and
//! retrying on `SQLITE_BUSY`) and a pool of read-only connections, which WAL lets run alongside
//! the writer. Every multi-statement write is a `BEGIN IMMEDIATE` transaction, so it holds the
//! write lock from its first statement even if another process opens the same file.
//!
//! Each connection answers on a thread of its own, so every statement is a trip to that thread
//! and back. Connections are handed out without being asked first whether they are alive (a
//! connection to a local file cannot be hung up on): sqlx's pool pings a connection before and
//! after each use, which tripled the trips of a one-statement write.
//!
//! One process at a time: the store holds an exclusive lock on `<file>.lock` while it is open,
//! so every write to the file goes through this store's writer, which is what lets it tell
//! when runs changed ([`Store::runs_generation`]) without asking the database.
//!
//! Timestamps are stored as integer microseconds since the Unix epoch (UTC).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection,
};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// SQLite's limit on bound parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMS: usize = 32_766;
/// Columns bound per event row.
const EVENT_PARAMS: usize = 12;
/// Columns bound per output row.
const OUTPUT_PARAMS: usize = 4;
/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Reader connections; WAL readers never block the writer nor each other.
const READERS: usize = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Tables whose rows never show in a runs list: written many times a second while runs are
/// going, they would otherwise move [`RunChanges`] on every flush. Any other table counts.
const NOT_RUNS: [&str; 3] = ["events", "run_output", "event_records"];

/// A [`Store`] in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The single connection every write goes through.
    writer: Arc<Writer>,
    /// Connections for reads, opened as needed up to [`READERS`].
    reader: deadpool::managed::Pool<Readers>,
    /// The exclusive lock on `<file>.lock`, released when the last clone is dropped.
    _lock: Arc<std::fs::File>,
}

/// Counts changes to runs, all of which go through the writer connection.
///
/// SQLite's update hook sees a change as it is made, before it commits: it marks the change in
/// flight and moves the generation. The writer goes back to its pool only once its statement
/// or transaction has ended; that clears the mark and moves the generation again. While a
/// change is in flight there is no generation to offer (a list read then might not see it
/// yet); otherwise a list read after reading the generation sees every change made before it,
/// and any later change moves the generation. (SQLite does not call the hook for a `DELETE`
/// without `WHERE`, its truncate optimization: the store issues none on these tables.)
#[derive(Debug, Default)]
struct RunChanges {
    in_flight: AtomicBool,
    generation: AtomicU64,
}

impl RunChanges {
    fn touch(&self, table: &str) {
        if !NOT_RUNS.contains(&table) {
            self.in_flight.store(true, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn released(&self) {
        if self.in_flight.swap(false, Ordering::SeqCst) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn current(&self) -> Option<u64> {
        let generation = self.generation.load(Ordering::SeqCst);
        (!self.in_flight.load(Ordering::SeqCst)).then_some(generation)
    }
}

/// The connection every write goes through, one write at a time (in the order they asked).
#[derive(Debug)]
struct Writer {
    conn: tokio::sync::Mutex<SqliteConnection>,
    changes: Arc<RunChanges>,
}

impl Writer {
    async fn lock(&self) -> Write<'_> {
        Write {
            conn: self.conn.lock().await,
            changes: &self.changes,
        }
    }
}

/// The writer, held by one write; letting go of it tells [`RunChanges`] the write has ended.
struct Write<'a> {
    conn: tokio::sync::MutexGuard<'a, SqliteConnection>,
    changes: &'a RunChanges,
}

impl Write<'_> {
    /// Starts a transaction that holds SQLite's write lock from its first statement.
    async fn begin(&mut self) -> StoreResult<sqlx::Transaction<'_, Sqlite>> {
        self.conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }
}

impl Deref for Write<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for Write<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        self.changes.released();
    }
}

/// Opens the read-only connections of the reader pool. A connection is handed out again
/// without a check: it talks to a local file, and a check is a trip to its thread.
#[derive(Debug)]
struct Readers(SqliteConnectOptions);

impl deadpool::managed::Manager for Readers {
    type Type = SqliteConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<SqliteConnection, sqlx::Error> {
        self.0.connect().await
    }

    async fn recycle(
        &self,
        _: &mut SqliteConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        Ok(())
    }
}

/// Takes the exclusive lock that makes this process the file's only user.
fn lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Conflict(format!(
            "{} is in use by another troupe process (it holds {})",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Backend(Box::new(e))),
    }
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

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(backend)
}

fn json<T: serde::de::DeserializeOwned>(row: &SqliteRow, col: &str) -> StoreResult<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| invalid(format_args!("column {col}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| invalid(format_args!("cannot encode JSON: {e}")))
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_ts(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| invalid(format_args!("timestamp {us}")))
}

fn time(row: &SqliteRow, col: &str) -> StoreResult<DateTime<Utc>> {
    from_ts(get(row, col)?)
}

fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, col)?.map(from_ts).transpose()
}

fn now_us() -> i64 {
    ts(Utc::now())
}

fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX))
}

fn format_of(s: &str) -> StoreResult<InventoryFormat> {
    match s {
        "yaml" => Ok(InventoryFormat::Yaml),
        "ini" => Ok(InventoryFormat::Ini),
        other => Err(invalid(format_args!("inventory format {other:?}"))),
    }
}

const PROJECT_COLS: &str =
    "id, name, source, \"commit\", synced_at, sync_error, requirements_error, created_at";

fn project_from(row: &SqliteRow) -> StoreResult<Project> {
    Ok(Project {
        id: get(row, "id")?,
        name: get(row, "name")?,
        source: json(row, "source")?,
        sync: ProjectSync {
            commit: get(row, "commit")?,
            synced_at: opt_time(row, "synced_at")?,
            error: get(row, "sync_error")?,
            requirements_error: get(row, "requirements_error")?,
        },
        created_at: time(row, "created_at")?,
    })
}

/// The inventory a run row was created with.
fn run_inventory_from(row: &SqliteRow) -> StoreResult<InventoryContent> {
    Ok(InventoryContent {
        format: format_of(&get::<String>(row, "inventory_format")?)?,
        hosts: get(row, "inventory_hosts")?,
        vars: get(row, "inventory_vars")?,
    })
}

const INVENTORY_COLS: &str =
    "id, name, env, version, format, hosts, vars, host_count, revision, created_at";

fn inventory_from(row: &SqliteRow) -> StoreResult<Inventory> {
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
        created_at: time(row, "created_at")?,
    })
}

const RUN_COLS: &str = "id, project_id, playbook, inventory_id, options, labels, tag, status, \
     status_reason, rc, created_at, started_at, finished_at, worker_id, cancel_requested, \
     summary, event_count, launched_at, \"commit\", job_id, unit, relaunch_of, template_id, \
     parent_id, slice, slice_count, event_id";

fn run_from(row: &SqliteRow) -> StoreResult<Run> {
    let status: String = get(row, "status")?;
    let cancel: Option<String> = get(row, "cancel_requested")?;
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
        created_at: time(row, "created_at")?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        worker_id: get(row, "worker_id")?,
        cancel_requested: cancel
            .map(|c| {
                CancelMode::parse(&c).ok_or_else(|| invalid(format_args!("cancel mode {c:?}")))
            })
            .transpose()?,
        summary: json(row, "summary")?,
        event_count: get(row, "event_count")?,
        launched_at: opt_time(row, "launched_at")?,
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

/// `select` (which ends in `FROM runs`) with `filter` and `page` applied, newest first.
fn runs_query(select: &str, filter: &RunFilter, page: Page) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(select);
    q.push(" WHERE 1 = 1");
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
        q.push(" AND tag = ").push_bind(tag.clone());
    }
    if let Some(job_id) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job_id);
    }
    if let Some(unit) = &filter.unit {
        q.push(" AND unit = ").push_bind(unit.clone());
    }
    if let Some(parent_id) = filter.parent_id {
        q.push(" AND parent_id = ").push_bind(parent_id);
    }
    if let Some(relaunch_of) = filter.relaunch_of {
        q.push(" AND relaunch_of = ").push_bind(relaunch_of);
    }
    if let Some((key, value)) = &filter.label {
        q.push(" AND EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.id AND l.key = ")
            .push_bind(key.clone());
        if let Some(value) = value {
            q.push(" AND l.value = ").push_bind(value.clone());
        }
        q.push(")");
    }
    if let Some(before) = page.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
    q
}

fn version_from(row: &SqliteRow) -> StoreResult<RunVersion> {
    Ok(RunVersion {
        id: get(row, "id")?,
        version: get(row, "version")?,
    })
}

const EVENT_COLS: &str =
    "counter, uuid, event, parent_uuid, created, stdout, start_line, end_line, event_data";

fn event_from(row: &SqliteRow) -> StoreResult<Event> {
    Ok(Event {
        counter: get(row, "counter")?,
        uuid: get(row, "uuid")?,
        event: get(row, "event")?,
        parent_uuid: get(row, "parent_uuid")?,
        created: time(row, "created")?,
        stdout: get(row, "stdout")?,
        start_line: get(row, "start_line")?,
        end_line: get(row, "end_line")?,
        event_data: EventData::from_json(get(row, "event_data")?)
            .map_err(|e| invalid(format_args!("column event_data: {e}")))?,
    })
}

const JOB_COLS: &str = "id, tag, project_id, created_at";

/// A job from its row and its units (in order).
fn job_from(row: &SqliteRow, units: Vec<Unit>) -> StoreResult<Job> {
    Ok(Job {
        id: get(row, "id")?,
        tag: get(row, "tag")?,
        project_id: get(row, "project_id")?,
        units,
        created_at: time(row, "created_at")?,
    })
}

fn unit_from(row: &SqliteRow) -> StoreResult<Unit> {
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

const TEMPLATE_COLS: &str = "id, name, project_id, playbook, inventory_id, defaults, \
     allow_overrides, labels, created_at";

fn template_from(row: &SqliteRow) -> StoreResult<Template> {
    Ok(Template {
        id: get(row, "id")?,
        name: get(row, "name")?,
        project_id: get(row, "project_id")?,
        playbook: get(row, "playbook")?,
        inventory_id: get(row, "inventory_id")?,
        defaults: json(row, "defaults")?,
        allow_overrides: json(row, "allow_overrides")?,
        labels: json(row, "labels")?,
        created_at: time(row, "created_at")?,
    })
}

const EVENT_RECORD_COLS: &str = "id, received_at, source, routing_key, delivery_id, \
     payload_size, payload, payload_truncated, status, reason, rules, run_ids";

fn event_record_from(row: &SqliteRow) -> StoreResult<EventRecord> {
    let status: String = get(row, "status")?;
    Ok(EventRecord {
        id: get(row, "id")?,
        received_at: time(row, "received_at")?,
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
        run_ids: json(row, "run_ids")?,
    })
}

const RULES_DOC_COLS: &str = "revision, text, updated_at";

fn rules_doc_from(row: &SqliteRow) -> StoreResult<RulesDoc> {
    Ok(RulesDoc {
        revision: get(row, "revision")?,
        text: get(row, "text")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// The latest time stored for a gate's end (year 9999): far enough for any window, and still
/// a valid date for every reader.
const MAX_TS: i64 = 253_402_300_799_000_000;

/// `t` plus `d` in microseconds, at most [`MAX_TS`].
fn ts_plus(t: i64, d: Duration) -> i64 {
    t.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .min(MAX_TS)
}

/// `t` minus `d` in microseconds, at least 0001-01-01.
fn ts_minus(t: i64, d: Duration) -> i64 {
    t.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .max(-62_135_596_800_000_000)
}

fn token_from(row: &SqliteRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        hash: get(row, "hash")?,
        created_at: time(row, "created_at")?,
    })
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` and brings its schema up to
    /// date. `Conflict` if another process has it open.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let lock = lock_file(path)?;
        let changes = Arc::new(RunChanges::default());
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer opens first: it creates the file and switches it to WAL, which readers
        // then share.
        let mut conn = options.connect().await.map_err(backend)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        {
            let changes = changes.clone();
            conn.lock_handle()
                .await
                .map_err(backend)?
                .set_update_hook(move |change| changes.touch(change.table));
        }
        let reader = deadpool::managed::Pool::builder(Readers(options.read_only(true)))
            .max_size(READERS)
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(SqliteStore {
            writer: Arc::new(Writer {
                conn: tokio::sync::Mutex::new(conn),
                changes,
            }),
            reader,
            _lock: Arc::new(lock),
        })
    }

    /// Writes the WAL back into the database file and closes the read connections. The write
    /// connection closes when the last clone of the store is dropped.
    pub async fn close(&self) {
        self.reader.close();
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *self.write().await)
            .await
        {
            tracing::warn!(error = %e, "could not checkpoint the SQLite WAL");
        }
    }

    /// Waits for the writer.
    async fn write(&self) -> Write<'_> {
        self.writer.lock().await
    }

    /// A read connection, waiting for one when all are in use.
    async fn read(&self) -> StoreResult<deadpool::managed::Object<Readers>> {
        self.reader
            .get()
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    async fn run_exists(&self, run_id: i64) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .is_some())
    }

    /// `NotFound` for a run that does not exist (used when a read came back empty).
    async fn require_run(&self, run_id: i64) -> StoreResult<()> {
        if self.run_exists(run_id).await? {
            Ok(())
        } else {
            Err(StoreError::not_found("run", run_id))
        }
    }

    /// After a conditional update matched nothing: `NotFound` if the run is missing, else the
    /// run as it is now.
    async fn current_run(&self, run_id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM runs WHERE id = ?"
        )))
        .bind(run_id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", run_id))?;
        run_from(&row)
    }

    /// The jobs of `rows` (selected with [`JOB_COLS`]), in the same order, with their units.
    async fn jobs_from(&self, rows: &[SqliteRow]) -> StoreResult<Vec<Job>> {
        let ids = rows
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut units: HashMap<i64, Vec<Unit>> = HashMap::new();
        for part in ids.chunks(1000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT job_id, name, source FROM job_units WHERE job_id IN (",
            );
            let mut list = q.separated(", ");
            for id in part {
                list.push_bind(*id);
            }
            q.push(") ORDER BY job_id, position");
            for row in q
                .build()
                .fetch_all(&mut *self.read().await?)
                .await
                .map_err(backend)?
            {
                units
                    .entry(get(&row, "job_id")?)
                    .or_default()
                    .push(unit_from(&row)?);
            }
        }
        rows.iter()
            .zip(ids)
            .map(|(row, id)| job_from(row, units.remove(&id).unwrap_or_default()))
            .collect()
    }

    /// Moves every running run matching `condition` (whose placeholders take `binds`) to
    /// `error` with `reason`; returns their ids in order.
    async fn fail_running(
        &self,
        condition: &str,
        binds: &[SqliteArg<'_>],
        reason: &str,
    ) -> StoreResult<Vec<i64>> {
        debug_assert!(RunStatus::Running.can_become(RunStatus::Error));
        let sql = format!(
            "UPDATE runs SET status = 'error', status_reason = ?, finished_at = ?, \
             cancel_requested = NULL WHERE status = 'running' AND ({condition}) RETURNING id"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(reason).bind(now_us());
        for b in binds {
            q = match b {
                SqliteArg::Int(i) => q.bind(*i),
                SqliteArg::Text(s) => q.bind(*s),
            };
        }
        let rows = q
            .fetch_all(&mut *self.write().await)
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

/// Whether `table` holds a row with this id, as `conn` sees it.
async fn row_exists(
    conn: &mut SqliteConnection,
    table: &'static str,
    id: i64,
) -> StoreResult<bool> {
    Ok(
        sqlx::query(AssertSqlSafe(format!("SELECT 1 FROM {table} WHERE id = ?")))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(backend)?
            .is_some(),
    )
}

/// `NotFound(what, id)` unless `table` holds a row with this id.
async fn require_row(
    conn: &mut SqliteConnection,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> StoreResult<()> {
    if row_exists(conn, table, id).await? {
        Ok(())
    } else {
        Err(StoreError::not_found(what, id))
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
/// transaction): what `create_run` does. `NotFound` names the missing reference; nothing is
/// written then.
async fn insert_run(
    conn: &mut SqliteConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    check_references(conn, new).await?;
    let run = insert_run_row(conn, new, origin).await?;
    if !new.labels.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO run_labels (run_id, key, value) ");
        q.push_values(&new.labels, |mut b, (k, v)| {
            b.push_bind(run.id)
                .push_bind(k.as_str())
                .push_bind(v.as_str());
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(run)
}

/// Whether a run can be stored with [`insert_run_row`] alone, outside a transaction: it has no
/// labels (a second table) and no job unit (the one reference no foreign key checks), so the
/// foreign keys check all it refers to.
fn one_statement_run(new: &NewRun) -> bool {
    new.labels.is_empty() && new.origin.job_unit().is_none()
}

/// Every row `new` refers to exists, or `NotFound` naming the first that does not.
async fn check_references(conn: &mut SqliteConnection, new: &NewRun) -> StoreResult<()> {
    let project = sqlx::query("SELECT 1 FROM projects WHERE id = ?")
        .bind(new.project_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    if project.is_none() {
        return Err(StoreError::not_found("project", new.project_id));
    }
    if let Some(inventory_id) = new.inventory_id {
        let inventory = sqlx::query("SELECT 1 FROM inventories WHERE id = ?")
            .bind(inventory_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if inventory.is_none() {
            return Err(StoreError::not_found("inventory", inventory_id));
        }
    }
    if let Some((job_id, unit)) = new.origin.job_unit() {
        require_row(conn, "jobs", "job", job_id).await?;
        let found = sqlx::query("SELECT 1 FROM job_units WHERE job_id = ? AND name = ?")
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
    Ok(())
}

/// The `runs` row of `new`, and nothing else.
async fn insert_run_row(
    conn: &mut SqliteConnection,
    new: &NewRun,
    origin: RunOrigin<'_>,
) -> StoreResult<Run> {
    let options = to_json(&new.options)?;
    let labels = to_json(&new.labels)?;
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
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         RETURNING {RUN_COLS}"
    )))
    .bind(new.project_id)
    .bind(new.playbook.as_str())
    .bind(new.inventory_id)
    .bind(new.inventory.format.as_str())
    .bind(&new.inventory.hosts)
    .bind(&new.inventory.vars)
    .bind(options)
    .bind(labels)
    .bind(&new.tag)
    .bind(now_us())
    .bind(job_id)
    .bind(unit)
    .bind(new.origin.relaunch_of())
    .bind(new.origin.template_id())
    .bind(new.origin.slice_of().map(|s| s.parent_id))
    .bind(new.origin.slice_of().map(|s| s.slice))
    .bind(new.origin.slice_of().map(|s| s.count))
    .bind(origin.event_id)
    .bind(origin.concurrency_key)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    run_from(&row)
}

/// Whether SQLite refused a write because a foreign key had no row to point at.
fn foreign_key_violated(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
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

/// Carries out one proposal of event `event_id` (received at `received`, microseconds) on
/// `conn`, inside the ingest transaction: gates, concurrency policy, then the run and its gate
/// marks. Returns what the rule did and the run it started, if any.
async fn propose(
    conn: &mut SqliteConnection,
    proposal: &Proposal,
    event_id: i64,
    received: i64,
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
    for gate in &proposal.gates {
        let closed_by: Option<i64> = sqlx::query_scalar(
            "SELECT event_id FROM rule_gates WHERE rule = ? AND kind = ? AND key = ? \
             AND expires_at > ? ORDER BY expires_at DESC LIMIT 1",
        )
        .bind(&proposal.rule)
        .bind(gate.kind.as_str())
        .bind(&gate.key)
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
    let mut canceled = Vec::new();
    if let Some(c) = &proposal.concurrency {
        let active: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE concurrency_key = ? \
             AND status IN ('queued', 'running') ORDER BY id",
        )
        .bind(&c.key)
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
        // A missing project, inventory or template fails this rule only.
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
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&proposal.rule)
        .bind(gate.kind.as_str())
        .bind(&gate.key)
        .bind(received)
        .bind(ts_plus(received, gate.within))
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
    conn: &mut SqliteConnection,
    new: &NewEventRecord,
) -> StoreResult<Option<EventRecord>> {
    if let Some(delivery_id) = &new.delivery_id {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE source = ? AND delivery_id = ?"
        )))
        .bind(&new.source)
        .bind(delivery_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from(&row).map(Some);
        }
    }
    if let Some(window) = new.redelivery_window {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE source = ? \
             AND content_hash = ? AND received_at >= ? \
             ORDER BY received_at DESC, id DESC LIMIT 1"
        )))
        .bind(&new.source)
        .bind(&new.content_hash)
        .bind(ts_minus(ts(new.received_at), window))
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

enum SqliteArg<'a> {
    Int(i64),
    Text(&'a str),
}

/// A table of named resources, read the same three ways: by id, by name, all.
struct Named<T> {
    table: &'static str,
    cols: &'static str,
    what: &'static str,
    from: fn(&SqliteRow) -> StoreResult<T>,
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

impl SqliteStore {
    async fn by_id<T>(&self, n: &Named<T>, id: i64) -> StoreResult<T> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE id = ?",
            n.cols, n.table
        )))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found(n.what, id))?;
        (n.from)(&row)
    }

    async fn by_name<T>(&self, n: &Named<T>, name: &str) -> StoreResult<Option<T>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE name = ?",
            n.cols, n.table
        )))
        .bind(name)
        .fetch_optional(&mut *self.read().await?)
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
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .iter()
        .map(n.from)
        .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn runs_generation(&self) -> Option<u64> {
        self.writer.changes.current()
    }

    async fn server_version(&self) -> StoreResult<String> {
        let v: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        Ok(format!("SQLite {v}"))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn create_project(&self, new: &NewProject) -> StoreResult<Project> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO projects (name, source, created_at) VALUES (?, ?, ?) \
             RETURNING {PROJECT_COLS}"
        )))
        .bind(&new.name)
        .bind(to_json(&new.source)?)
        .bind(now_us())
        .fetch_one(&mut *self.write().await)
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
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE projects SET \"commit\" = ?, synced_at = ?, sync_error = ?, \
             requirements_error = ? WHERE id = ? RETURNING {PROJECT_COLS}"
        )))
        .bind(&sync.commit)
        .bind(sync.synced_at.map(ts))
        .bind(&sync.error)
        .bind(&sync.requirements_error)
        .bind(id)
        .fetch_optional(&mut *self.write().await)
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
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {INVENTORY_COLS}"
        )))
        .bind(&new.name)
        .bind(&new.env)
        .bind(&new.version)
        .bind(new.format.as_str())
        .bind(&new.hosts)
        .bind(&new.vars)
        .bind(host_count)
        .bind(now_us())
        .fetch_one(&mut *self.write().await)
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
            "UPDATE inventories SET name = ?, env = ?, version = ?, format = ?, hosts = ?, \
             vars = ?, host_count = ?, revision = revision + 1 WHERE id = ? \
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
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(|e| unique_or_backend(e, || format!("inventory name {:?} is taken", new.name)))?
        .ok_or_else(|| StoreError::not_found("inventory", id))?;
        inventory_from(&row)
    }

    async fn delete_inventory(&self, id: i64) -> StoreResult<()> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let name: String = sqlx::query_scalar("SELECT name FROM inventories WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("inventory", id))?;
        let active = sqlx::query(
            "SELECT id, status FROM runs WHERE inventory_id = ? \
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
        let template: Option<String> =
            sqlx::query_scalar("SELECT name FROM templates WHERE inventory_id = ? ORDER BY id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some(template) = template {
            return Err(StoreError::Conflict(format!(
                "inventory {name:?} is named by template {template:?}"
            )));
        }
        // What ON DELETE SET NULL would do (see the migration).
        sqlx::query("UPDATE runs SET inventory_id = NULL WHERE inventory_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM inventories WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        // Most runs are one statement, one trip to SQLite's thread instead of four (begin,
        // check, insert, commit). A violated foreign key sends the run the long way, whose
        // checks name what is missing.
        if one_statement_run(new) {
            let mut conn = self.write().await;
            match insert_run_row(&mut conn, new, RunOrigin::default()).await {
                Err(StoreError::Backend(e))
                    if e.downcast_ref().is_some_and(foreign_key_violated) => {}
                done => return done,
            }
        }
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let run = insert_run(&mut tx, new, RunOrigin::default()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn get_run(&self, id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLS} FROM runs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", id))?;
        run_from(&row)
    }

    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent> {
        let row = sqlx::query(
            "SELECT inventory_format, inventory_hosts, inventory_vars FROM runs WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
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
             inventory_vars FROM runs WHERE id = ?) r ON projects.id = r.project_id"
        )))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("run", id))?;
        Ok((project_from(&row)?, run_inventory_from(&row)?))
    }

    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        runs_query(&format!("SELECT {RUN_COLS} FROM runs"), filter, page)
            .build()
            .fetch_all(&mut *self.read().await?)
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
        // One row holding them all: rows cross from SQLite's thread one message (and often one
        // wake-up) each, which costs more than the rows themselves.
        let mut q = runs_query(
            "SELECT json_group_array(json_array(id, version) ORDER BY id DESC) \
             FROM (SELECT id, version FROM runs",
            filter,
            page,
        );
        q.push(")");
        let text: String = q
            .build()
            .fetch_one(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        let pairs: Vec<(i64, i64)> = serde_json::from_str(&text).map_err(invalid)?;
        Ok(pairs
            .into_iter()
            .map(|(id, version)| RunVersion { id, version })
            .collect())
    }

    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT version, {RUN_COLS} FROM runs WHERE id IN ("
        ));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(")");
        q.build()
            .fetch_all(&mut *self.read().await?)
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
        // One statement: SQLite runs it under the write lock, so the runs it picks cannot be
        // picked by anyone else. The clock is read once the writer is ours, so `started_at` is
        // when the claim happened, not when it started waiting behind other writes.
        let mut conn = self.write().await;
        let now = now_us();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'running', started_at = ?, worker_id = ?, \
             lease_expires_at = ?, cancel_requested = NULL \
             WHERE id IN (SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT ?) \
             AND status = 'queued' RETURNING {RUN_COLS}"
        )))
        .bind(now)
        .bind(worker_id)
        .bind(lease_end(now, lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
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
            "UPDATE runs SET launched_at = ?, \"commit\" = ? \
             WHERE id = ? AND worker_id = ? AND status = 'running' RETURNING id",
        )
        .bind(ts(at))
        .bind(commit)
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&mut *self.write().await)
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
            "UPDATE runs SET lease_expires_at = ? \
             WHERE id = ? AND worker_id = ? AND status = 'running' RETURNING cancel_requested",
        )
        .bind(lease_end(now_us(), lease))
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(Lease::Lost);
        };
        let cancel: Option<String> = get(&row, "cancel_requested")?;
        Ok(Lease::Held {
            cancel_requested: cancel
                .map(|c| {
                    CancelMode::parse(&c).ok_or_else(|| invalid(format_args!("cancel mode {c:?}")))
                })
                .transpose()?,
        })
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
            "UPDATE runs SET status = ?, rc = ?, status_reason = ?, summary = ?, \
             finished_at = ?, cancel_requested = NULL \
             WHERE id = ? AND worker_id = ? AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(outcome.status.as_str())
        .bind(outcome.rc)
        .bind(&outcome.reason)
        .bind(to_json(&outcome.summary)?)
        .bind(now_us())
        .bind(run_id)
        .bind(worker_id)
        .fetch_optional(&mut *self.write().await)
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
             finished_at = ? WHERE id = ? AND status = 'queued' RETURNING {RUN_COLS}"
        )))
        .bind(now_us())
        .bind(run_id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?;
        if let Some(row) = queued {
            return run_from(&row);
        }
        // Force overrides graceful; graceful never weakens force.
        let running = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET cancel_requested = CASE WHEN ? = 'force' THEN 'force' \
             ELSE coalesce(cancel_requested, 'graceful') END \
             WHERE id = ? AND status = 'running' RETURNING {RUN_COLS}"
        )))
        .bind(mode.as_str())
        .bind(run_id)
        .fetch_optional(&mut *self.write().await)
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
        // Not LIKE: SQLite's LIKE ignores ASCII case, and worker ids are case-sensitive.
        self.fail_running(
            "substr(worker_id, 1, length(?)) = ?",
            &[
                SqliteArg::Text(worker_prefix),
                SqliteArg::Text(worker_prefix),
            ],
            reason,
        )
        .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, reason: &str) -> StoreResult<Vec<i64>> {
        self.fail_running("lease_expires_at < ?", &[SqliteArg::Int(ts(now))], reason)
            .await
    }

    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let events = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLS} FROM events WHERE run_id = ? AND counter > ? \
             ORDER BY counter LIMIT ?"
        )))
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.read().await?)
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
            "SELECT {EVENT_COLS} FROM events WHERE run_id = ? \
             AND event IN ('runner_on_failed', 'runner_on_unreachable') ORDER BY counter"
        )))
        .bind(run_id)
        .fetch_all(&mut *self.read().await?)
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
        // Every statement is a round trip to the connection's thread, so the run's existence
        // is not read first: a row for a missing run is a foreign key violation. Only an empty
        // batch asks.
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if events.is_empty() && chunks.is_empty() {
            require_row(&mut tx, "runs", "run", run_id).await?;
        }
        let missing = |e: sqlx::Error| {
            if foreign_key_violated(&e) {
                StoreError::not_found("run", run_id)
            } else {
                backend(e)
            }
        };
        let mut stored: i64 = 0;
        for chunk in events.chunks(MAX_PARAMS / EVENT_PARAMS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (run_id, counter, uuid, event, parent_uuid, host, task, \
                 created, stdout, start_line, end_line, event_data) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(run_id)
                    .push_bind(e.counter)
                    .push_bind(e.uuid.as_str())
                    .push_bind(e.event.as_str())
                    .push_bind(e.parent_uuid.as_deref())
                    .push_bind(e.host())
                    .push_bind(e.task())
                    .push_bind(ts(e.created))
                    .push_bind(e.stdout.as_str())
                    .push_bind(e.start_line)
                    .push_bind(e.end_line)
                    .push_bind(e.event_data.json());
            });
            q.push(" ON CONFLICT (run_id, counter) DO NOTHING");
            let done = q.build().execute(&mut *tx).await.map_err(missing)?;
            stored += i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        }
        if stored > 0 {
            sqlx::query("UPDATE runs SET event_count = event_count + ? WHERE id = ?")
                .bind(stored)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for part in chunks.chunks(MAX_PARAMS / OUTPUT_PARAMS) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO run_output (run_id, seq, stream, text) ");
            q.push_values(part, |mut b, c| {
                b.push_bind(run_id)
                    .push_bind(c.seq)
                    .push_bind(c.stream.as_str())
                    .push_bind(c.text.as_str());
            });
            q.push(" ON CONFLICT (run_id, seq) DO NOTHING");
            q.build().execute(&mut *tx).await.map_err(missing)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn read_output(&self, run_id: i64, stream: Stream) -> StoreResult<String> {
        let rows =
            sqlx::query("SELECT text FROM run_output WHERE run_id = ? AND stream = ? ORDER BY seq")
                .bind(run_id)
                .bind(stream.as_str())
                .fetch_all(&mut *self.read().await?)
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
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if let Some(project_id) = new.project_id {
            require_row(&mut tx, "projects", "project", project_id).await?;
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO jobs (tag, project_id, created_at) VALUES (?, ?, ?) RETURNING {JOB_COLS}"
        )))
        .bind(&new.tag)
        .bind(new.project_id)
        .bind(now_us())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let job_id: i64 = get(&row, "id")?;
        let positioned: Vec<(i64, &String)> = (0..).zip(&new.units).collect();
        for part in positioned.chunks(MAX_PARAMS / 3) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO job_units (job_id, position, name) ");
            q.push_values(part, |mut b, (position, name)| {
                b.push_bind(job_id)
                    .push_bind(*position)
                    .push_bind(name.as_str());
            });
            q.build().execute(&mut *tx).await.map_err(|e| {
                unique_or_backend(e, || "a job cannot have two units of one name".into())
            })?;
        }
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
            "SELECT {JOB_COLS} FROM jobs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("job", id))?;
        let mut jobs = self.jobs_from(std::slice::from_ref(&row)).await?;
        jobs.pop().ok_or_else(|| StoreError::not_found("job", id))
    }

    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs WHERE tag = ? ORDER BY id DESC LIMIT 1"
        )))
        .bind(tag)
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(backend)?;
        Ok(self.jobs_from(&rows).await?.pop())
    }

    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE 1 = 1"));
        if let Some(tag) = tag {
            q.push(" AND tag = ").push_bind(tag.to_owned());
        }
        if let Some(before) = page.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
        let rows = q
            .build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?;
        self.jobs_from(&rows).await
    }

    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit> {
        let encoded = to_json(source)?;
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        require_row(&mut tx, "jobs", "job", job_id).await?;
        if let UnitSource::Project(project_id) = source {
            require_row(&mut tx, "projects", "project", *project_id).await?;
        }
        let row = sqlx::query(
            "UPDATE job_units SET source = ? WHERE job_id = ? AND name = ? \
             RETURNING name, source",
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
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        require_row(&mut tx, "projects", "project", new.project_id).await?;
        require_row(&mut tx, "inventories", "inventory", new.inventory_id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO templates (name, project_id, playbook, inventory_id, defaults, \
             allow_overrides, labels, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING {TEMPLATE_COLS}"
        )))
        .bind(&new.name)
        .bind(new.project_id)
        .bind(&new.playbook)
        .bind(new.inventory_id)
        .bind(defaults)
        .bind(allow_overrides)
        .bind(labels)
        .bind(now_us())
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
        let received = ts(new.received_at);
        // One writer: nothing else is decided between the checks and the writes.
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if let Some(earlier) = earlier_delivery(&mut tx, new).await? {
            return Ok(Ingested::Duplicate(earlier));
        }
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO event_records (received_at, source, routing_key, delivery_id, \
             content_hash, payload_size, payload, payload_truncated, status, reason) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(received)
        .bind(&new.source)
        .bind(&new.routing_key)
        .bind(&new.delivery_id)
        .bind(&new.content_hash)
        .bind(new.payload_size)
        .bind(&new.payload)
        .bind(new.payload_truncated)
        .bind(new.status.as_str())
        .bind(&new.reason)
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
            "UPDATE event_records SET status = ?, rules = ?, run_ids = ? WHERE id = ? \
             RETURNING {EVENT_RECORD_COLS}"
        )))
        .bind(status.as_str())
        .bind(to_json(&outcomes)?)
        .bind(to_json(&run_ids)?)
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
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
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
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_RECORD_COLS} FROM event_records WHERE 1 = 1"
        ));
        if let Some(source) = &filter.source {
            q.push(" AND source = ").push_bind(source.clone());
        }
        if let Some(routing_key) = &filter.routing_key {
            q.push(" AND routing_key = ").push_bind(routing_key.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = page.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
        q.build()
            .fetch_all(&mut *self.read().await?)
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
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let done = sqlx::query("DELETE FROM event_records WHERE received_at < ?")
            .bind(ts(before))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM rule_gates WHERE expires_at < ?")
            .bind(ts(now))
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
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .as_ref()
        .map(rules_doc_from)
        .transpose()
    }

    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc> {
        // Each case is one statement, so the check and the write are one step.
        let (sql, revision) = match expected_revision {
            None => (
                "INSERT INTO rules_doc (id, revision, text, updated_at) VALUES (1, 1, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET revision = rules_doc.revision + 1, \
                 text = excluded.text, updated_at = excluded.updated_at",
                None,
            ),
            Some(0) => (
                "INSERT INTO rules_doc (id, revision, text, updated_at) VALUES (1, 1, ?, ?) \
                 ON CONFLICT (id) DO NOTHING",
                None,
            ),
            Some(r) => (
                "UPDATE rules_doc SET revision = revision + 1, text = ?, updated_at = ? \
                 WHERE id = 1 AND revision = ?",
                Some(r),
            ),
        };
        let mut q = sqlx::query(AssertSqlSafe(format!("{sql} RETURNING {RULES_DOC_COLS}")))
            .bind(text)
            .bind(now_us());
        if let Some(r) = revision {
            q = q.bind(r);
        }
        let row = q
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return rules_doc_from(&row);
        }
        let stored: Option<i64> = sqlx::query_scalar("SELECT revision FROM rules_doc WHERE id = 1")
            .fetch_optional(&mut *self.write().await)
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
            "INSERT INTO tokens (name, hash, created_at) VALUES (?, ?, ?) \
             RETURNING id, name, hash, created_at",
        )
        .bind(name)
        .bind(hash)
        .bind(now_us())
        .fetch_one(&mut *self.write().await)
        .await
        .map_err(|e| unique_or_backend(e, || "a token with this hash is already stored".into()))?;
        token_from(&row)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query("SELECT id, name, hash, created_at FROM tokens ORDER BY id")
            .fetch_all(&mut *self.read().await?)
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
    use troupe_core::run::Labels;

    #[test]
    fn labels_type_is_a_map() {
        // The labels column holds the JSON of `Labels`; an empty map is `{}`.
        assert_eq!(to_json(&Labels::new()).ok().as_deref(), Some("{}"));
    }
}
