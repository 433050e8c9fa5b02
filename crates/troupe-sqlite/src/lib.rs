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
//! when runs changed ([`RunStore::runs_generation`](troupe_store::RunStore::runs_generation))
//! without asking the database.
//!
//! Timestamps are stored as integer microseconds since the Unix epoch (UTC).
//!
//! This file holds the connections and what every aggregate uses; each aggregate's trait is
//! implemented in a module of its own (`catalog`, `runs`, `claims`, `events`, `output`,
//! `jobs`, `inbound`, `tokens`, `flows`, `executions`, `schedules`). Row mapping, column lists
//! and the statements SQLite sends as PostgreSQL does are written once, in
//! [`troupe_store::sql`]; what is SQLite's own (integer times, the one writer, one-statement
//! inserts) stays here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Sqlite, SqliteConnection};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use troupe_core::run::Run;
use troupe_store::sql::{Dialect, backend, get, invalid, json, run_from, statements};
use troupe_store::{StoreBackend, StoreError, StoreResult};

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

/// Tables whose rows never show in a runs list: written many times a second while runs (or
/// executions, renewing their leases and writing their steps) are going, they would otherwise
/// move [`RunChanges`] on every flush. Any other table counts.
const NOT_RUNS: [&str; 9] = [
    "events",
    "run_output",
    "event_records",
    "flow_versions",
    "executions",
    "execution_steps",
    "execution_slots",
    "schedules",
    "schedule_fires",
];

/// A [`Store`](troupe_store::Store) in one SQLite database file.
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
    // To open the writer again when its connection is beyond repair.
    options: SqliteConnectOptions,
}

impl Writer {
    async fn lock(&self) -> Write<'_> {
        Write {
            conn: self.conn.lock().await,
            changes: &self.changes,
            options: &self.options,
        }
    }
}

/// Opens the write connection, which tells `changes` about every row it writes.
async fn connect_writer(
    options: &SqliteConnectOptions,
    changes: &Arc<RunChanges>,
) -> StoreResult<SqliteConnection> {
    let mut conn = options.connect().await.map_err(backend)?;
    let changes = changes.clone();
    conn.lock_handle()
        .await
        .map_err(backend)?
        .set_update_hook(move |change| changes.touch(change.table));
    Ok(conn)
}

/// The writer, held by one write; letting go of it tells [`RunChanges`] the write has ended.
struct Write<'a> {
    conn: tokio::sync::MutexGuard<'a, SqliteConnection>,
    changes: &'a Arc<RunChanges>,
    options: &'a SqliteConnectOptions,
}

impl Write<'_> {
    /// Starts a transaction that holds SQLite's write lock from its first statement.
    async fn begin(&mut self) -> StoreResult<sqlx::Transaction<'_, Sqlite>> {
        if self.conn.is_in_transaction() {
            self.repair().await?;
        }
        self.conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    /// Nobody holds a transaction of the writer between writes, yet sqlx may count one: the
    /// rollback of a transaction dropped by an error is queued and has not run yet (any
    /// statement lets it run), or a COMMIT failed with `SQLITE_FULL` or `SQLITE_IOERR`, which
    /// SQLite answers by rolling the transaction back itself, so sqlx's own ROLLBACK fails and
    /// its count never comes down. Every later BEGIN would then be refused ("begin_with at
    /// non-zero transaction depth") until a restart: a full disk, freed, would leave the
    /// server unable to write. A fresh connection counts nothing.
    async fn repair(&mut self) -> StoreResult<()> {
        // Lets a queued rollback run; its error, if any, is the stale count's.
        let _ = sqlx::query("SELECT 1").execute(&mut *self.conn).await;
        if self.conn.is_in_transaction() {
            tracing::warn!(
                "the SQLite write connection lost track of its transaction; reopening it"
            );
            let fresh = connect_writer(self.options, self.changes).await?;
            *self.conn = fresh;
        }
        Ok(())
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

mod audit;
mod catalog;
mod claims;
mod credentials;
mod events;
mod executions;
mod flows;
mod inbound;
mod jobs;
mod leases;
mod notifications;
mod output;
mod pansible;
mod retention;
mod runs;
mod schedules;
mod sealed;
mod tokens;
mod workers;

/// How SQLite stores what the shared row mapping reads: times as integer microseconds since
/// the Unix epoch (UTC), JSON (and lists of ids) as text.
#[derive(Debug)]
struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Row = SqliteRow;
    const PROJECT_COLS: &'static str =
        "id, name, source, \"commit\", synced_at, sync_error, requirements_error, created_at";
    const RUN_COLS: &'static str = "id, project_id, playbook, inventory_id, options, labels, tag, \
         status, status_reason, rc, created_at, started_at, finished_at, worker_id, \
         cancel_requested, summary, event_count, launched_at, \"commit\", job_id, unit, \
         relaunch_of, template_id, parent_id, slice, slice_count, event_id";
    const EVENT_COLS: &'static str =
        "counter, uuid, event, parent_uuid, created, stdout, start_line, end_line, event_data";
    const TEMPLATE_COLS: &'static str = "id, name, project_id, playbook, inventory_id, defaults, \
         allow_overrides, labels, notify, created_at";
    const EVENT_RECORD_COLS: &'static str = "id, received_at, source, routing_key, delivery_id, \
         payload_size, payload, payload_truncated, status, reason, rules, run_ids";
    const EXECUTION_COLS: &'static str = "id, flow, version, status, inputs, sealed_secrets, \
         concurrency_key, parent_execution_id, parent_step, started_by, round, error, \
         cancel_requested, owner, lease_until, created_at, started_at, finished_at";
    const STEP_COLS: &'static str = "execution_id, round, key, phase, position, kind, status, \
         attempts, started_at, finished_at, result, published, error, run_ids, execution_ids";
    const SCHEDULE_COLS: &'static str = "id, name, cron, timezone, target, missed, \
         next_fire_at, last_fire_at, last_result, created_at";
    const JSON_PARAM: &'static str = "";

    fn time(row: &SqliteRow, col: &str) -> StoreResult<DateTime<Utc>> {
        from_ts(get(row, col)?)
    }

    fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        get::<Option<i64>>(row, col)?.map(from_ts).transpose()
    }

    fn ids(row: &SqliteRow, col: &str) -> StoreResult<Vec<i64>> {
        json(row, col)
    }
}

/// The columns of `runs` (what [`SqliteDialect::RUN_COLS`] names), for statements of this
/// backend alone.
const RUN_COLS: &str = SqliteDialect::RUN_COLS;

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_ts(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| invalid(format_args!("timestamp {us}")))
}

fn now_us() -> i64 {
    ts(Utc::now())
}

fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX))
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
            .busy_timeout(BUSY_TIMEOUT)
            // Deleted and replaced values are overwritten, not left in free space: a secret
            // moved out of a row (a git URL's token into a credential) leaves no copy.
            .pragma("secure_delete", "ON");
        // The writer opens first: it creates the file and switches it to WAL, which readers
        // then share.
        let mut conn = connect_writer(&options, &changes).await?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let reader = deadpool::managed::Pool::builder(Readers(options.clone().read_only(true)))
            .max_size(READERS)
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(SqliteStore {
            writer: Arc::new(Writer {
                conn: tokio::sync::Mutex::new(conn),
                changes,
                options,
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
        Ok(sqlx::query(statements::RUN_EXISTS)
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
        let row = sqlx::query(AssertSqlSafe(statements::get_run::<SqliteDialect>()))
            .bind(run_id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", run_id))?;
        run_from::<SqliteDialect>(&row)
    }
}

/// Whether `table` holds a row with this id, as `conn` sees it.
async fn row_exists(
    conn: &mut SqliteConnection,
    table: &'static str,
    id: i64,
) -> StoreResult<bool> {
    Ok(sqlx::query(AssertSqlSafe(statements::row_exists(table)))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?
        .is_some())
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

#[async_trait]
impl StoreBackend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use troupe_core::run::Labels;
    use troupe_store::sql::to_json;

    /// Every bound `LIMIT` of the statements SQLite runs (this backend's and the shared ones)
    /// is an expression (`troupe_store::sql::limit`): a bare `LIMIT ?` is planned again at
    /// every run.
    #[test]
    fn no_statement_binds_a_bare_limit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [root.join("src"), root.join("../troupe-store/src/sql")] {
            for entry in std::fs::read_dir(&dir).expect("source dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 10, "{files:?}");
        let mut bare = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).expect("source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for after in ["$", "?", "{}", "\").push_bind"] {
                    if code.contains(&format!("{} {after}", "LIMIT")) {
                        bare.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(bare.is_empty(), "bare LIMITs:\n{}", bare.join("\n"));
    }

    /// A write that fails because the database is full (`max_page_count` stands in for a
    /// full disk: both are `SQLITE_FULL`, which SQLite may answer by rolling the whole
    /// transaction back) must not leave the writer unable to begin again once there is room.
    #[tokio::test]
    async fn the_writer_begins_again_after_the_database_was_full()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("t.db")).await?;
        let mut w = store.write().await;
        sqlx::query("CREATE TABLE filler (x BLOB)")
            .execute(&mut *w)
            .await?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *w)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 2
        )))
        .execute(&mut *w)
        .await?;
        let mut failed = false;
        for _ in 0..3 {
            let mut tx = w.begin().await?;
            let insert = sqlx::query("INSERT INTO filler VALUES (zeroblob(1000000))")
                .execute(&mut *tx)
                .await;
            let commit = match insert {
                Ok(_) => tx.commit().await.map(|_| ()),
                Err(e) => Err(e),
            };
            failed |= commit.is_err();
        }
        assert!(failed, "the database never filled up");
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&mut *w)
            .await?;
        let mut tx = w.begin().await?;
        sqlx::query("INSERT INTO filler VALUES (x'00')")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[test]
    fn labels_type_is_a_map() {
        // The labels column holds the JSON of `Labels`; an empty map is `{}`.
        assert_eq!(to_json(&Labels::new()).ok().as_deref(), Some("{}"));
    }
}
