//! troupe's PostgreSQL store, for several troupe processes sharing one database.
//!
//! Workers claim runs with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on
//! each other nor take the same run; every new run is announced with `NOTIFY troupe_runs`
//! (see [`PgStore::listen_for_work`]) so idle workers need not poll hard.
//!
//! PostgreSQL text cannot hold the NUL character; where ansible output may contain one (event
//! text, output chunks), it is stored as U+FFFD. JSON keeps it (as `\u0000` in `json` columns).
//!
//! This file holds the pool and what every aggregate uses; each aggregate's trait is
//! implemented in a module of its own (`catalog`, `runs`, `claims`, `events`, `output`,
//! `jobs`, `inbound`, `tokens`, `flows`, `executions`, `schedules`). Row mapping, column
//! lists and the statements PostgreSQL sends as SQLite does are written once, in
//! [`troupe_store::sql`]; what is PostgreSQL's own (`timestamptz`, `jsonb` casts, `SKIP
//! LOCKED`, `KEY SHARE`, advisory locks, `UNNEST` batches, NOTIFY) stays here.

use async_trait::async_trait;
pub use bus::{LIVE_CHANNEL, PgBus};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use std::borrow::Cow;
use std::time::Duration;
use troupe_core::run::Run;
use troupe_store::sql::{Dialect, backend, run_from, statements};
use troupe_store::{StoreBackend, StoreError, StoreResult};

/// PostgreSQL's limit on bound parameters per statement.
const MAX_PARAMS: usize = 65_535;
/// Events sent in one statement (as arrays, so not bound by `MAX_PARAMS`; this only bounds
/// the size of one message).
const EVENTS_PER_STATEMENT: usize = 5_000;
/// Columns bound per output row.
const OUTPUT_PARAMS: usize = 4;
/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel new runs are announced on; the payload is the run id.
pub const WORK_CHANNEL: &str = "troupe_runs";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A [`Store`](troupe_store::Store) in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

mod audit;
mod bus;
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

/// How PostgreSQL stores what the shared row mapping reads: times as `timestamptz`, JSON as
/// `json`/`jsonb` (selected `::text`, so it arrives as written), lists of ids as `bigint[]`.
#[derive(Debug)]
struct PgDialect;

impl Dialect for PgDialect {
    type Row = PgRow;
    const PROJECT_COLS: &'static str = "id, name, source::text AS source, \"commit\", synced_at, \
         sync_error, requirements_error, created_at";
    const RUN_COLS: &'static str = "id, project_id, playbook, inventory_id, options::text AS options, \
         labels::text AS labels, tag, status, status_reason, rc, created_at, started_at, \
         finished_at, worker_id, cancel_requested, summary::text AS summary, event_count, \
         launched_at, \"commit\", job_id, unit, relaunch_of, template_id, parent_id, slice, \
         slice_count, event_id";
    const EVENT_COLS: &'static str = "counter, uuid, event, parent_uuid, created, stdout, \
         start_line, end_line, event_data::text AS event_data";
    const TEMPLATE_COLS: &'static str = "id, name, project_id, playbook, inventory_id, \
         defaults::text AS defaults, allow_overrides::text AS allow_overrides, \
         labels::text AS labels, notify, created_at";
    const EVENT_RECORD_COLS: &'static str = "id, received_at, source, routing_key, delivery_id, \
         payload_size, payload, payload_truncated, status, reason, rules::text AS rules, run_ids";
    const EXECUTION_COLS: &'static str = "id, flow, version, status, inputs::text AS inputs, \
         sealed_secrets, concurrency_key, parent_execution_id, parent_step, started_by, round, \
         error, cancel_requested, owner, lease_until, created_at, started_at, finished_at";
    const STEP_COLS: &'static str = "execution_id, round, key, phase, position, kind, status, \
         attempts, started_at, finished_at, result::text AS result, \
         published::text AS published, error, run_ids, execution_ids";
    const SCHEDULE_COLS: &'static str = "id, name, cron, timezone, target::text AS target, \
         missed, next_fire_at, last_fire_at, last_result, created_at";
    const JSON_PARAM: &'static str = "::json";

    fn time(row: &PgRow, col: &str) -> StoreResult<DateTime<Utc>> {
        row.try_get(col).map_err(backend)
    }

    fn opt_time(row: &PgRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        row.try_get(col).map_err(backend)
    }

    fn ids(row: &PgRow, col: &str) -> StoreResult<Vec<i64>> {
        row.try_get(col).map_err(backend)
    }
}

/// The columns of `runs` (what [`PgDialect::RUN_COLS`] names), for statements of this backend
/// alone.
const RUN_COLS: &str = PgDialect::RUN_COLS;

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

/// `NotFound(what, id)` unless `table` holds a row with this id, as `conn` sees it.
async fn require_row(
    conn: &mut PgConnection,
    table: &'static str,
    what: &'static str,
    id: i64,
) -> StoreResult<()> {
    row_exists(conn, statements::row_exists(table), what, id).await
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
            // While PostgreSQL is away a query waits this long before failing: short enough
            // that a webhook sender (GitHub gives up after 10 s) gets its 503 and retries.
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
        let found = sqlx::query(statements::RUN_EXISTS)
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
        let row = sqlx::query(AssertSqlSafe(statements::get_run::<PgDialect>()))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("run", run_id))?;
        run_from::<PgDialect>(&row)
    }
}

#[async_trait]
impl StoreBackend for PgStore {
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
