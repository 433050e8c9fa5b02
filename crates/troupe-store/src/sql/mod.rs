//! What the SQL backends share, written once against sqlx without a driver: decoding rows
//! into troupe's types, the column lists and statements both send as they are, the query
//! builders of the listings, and the errors and checks around them.
//!
//! Where the backends really differ (SQLite keeps times as integer microseconds and JSON as
//! text, PostgreSQL as `timestamptz` and `json`/`jsonb` selected `::text`; PostgreSQL's
//! `FOR UPDATE SKIP LOCKED` and `KEY SHARE` locks, SQLite's single writer), each backend says
//! so through its [`Dialect`] or keeps the statement to itself. Statements written here use
//! numbered parameters (`$1`), which sqlx's SQLite driver binds by number too.

use crate::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use troupe_core::RunStatus;
use troupe_core::inbound::{EventStatus, RuleOutcome, RuleResult};
use troupe_core::inventory::InventoryFormat;
use troupe_core::run::{CancelMode, Run};

/// A `LIMIT` of bound parameter `param` (`$2`): `LIMIT CAST($2 AS BIGINT)`. A bare `LIMIT $2`
/// makes SQLite (3.44 on) read the bound value while it plans, so the statement is parsed and
/// planned again every time it is bound, which is every time it runs; an expression is not
/// read, and the cached plan is used as it is. PostgreSQL takes either. Every bound `LIMIT`
/// is written this way (troupe-sqlite's `no_statement_binds_a_bare_limit` checks the
/// statement sources).
pub fn limit(param: &str) -> String {
    format!("LIMIT CAST({param} AS BIGINT)")
}

pub mod audit;
pub mod credentials;
mod filters;
pub mod flows;
mod ingest;
pub mod leases;
pub mod notifications;
pub mod pansible;
mod references;
pub mod retention;
mod rows;
pub mod sealed;
pub mod statements;

pub use filters::{push_event_record_filter, push_execution_filter, push_page, push_run_filter};
pub use ingest::{Proposals, Proposed, propose_all};
pub use references::{References, check_references};
pub use rows::{
    event_from, event_record_from, execution_from, flow_version_from, fresh_units,
    host_failures_from, inventory_from, job_from, joined_text, project_from, rules_doc_from,
    run_from, run_inventory_from, schedule_from, sorted_ids, step_from, template_from, token_from,
    unit_from, version_from, worker_from,
};

/// How one backend stores what the shared row mapping reads differently.
pub trait Dialect {
    /// The driver's row.
    type Row: Readable;
    /// The columns of `projects` read by [`project_from`].
    const PROJECT_COLS: &'static str;
    /// The columns of `runs` read by [`run_from`].
    const RUN_COLS: &'static str;
    /// The columns of `events` read by [`event_from`].
    const EVENT_COLS: &'static str;
    /// The columns of `templates` read by [`template_from`].
    const TEMPLATE_COLS: &'static str;
    /// The columns of `event_records` read by [`event_record_from`].
    const EVENT_RECORD_COLS: &'static str;
    /// The columns of `executions` read by [`execution_from`].
    const EXECUTION_COLS: &'static str;
    /// The columns of `execution_steps` read by [`step_from`].
    const STEP_COLS: &'static str;
    /// The columns of `schedules` read by [`schedule_from`].
    const SCHEDULE_COLS: &'static str;
    /// What follows a parameter bound as JSON text so a JSON column takes it (`::json` on
    /// PostgreSQL, whose driver says the text is `text`; nothing on SQLite).
    const JSON_PARAM: &'static str;
    /// A timestamp column.
    fn time(row: &Self::Row, col: &str) -> StoreResult<DateTime<Utc>>;
    /// A timestamp column that may be NULL.
    fn opt_time(row: &Self::Row, col: &str) -> StoreResult<Option<DateTime<Utc>>>;
    /// A column holding a list of ids.
    fn ids(row: &Self::Row, col: &str) -> StoreResult<Vec<i64>>;
}

/// A row any sqlx driver returns, read by column name as the plain types troupe stores.
/// (Generic code cannot name a driver's `Decode` impls itself; this trait carries them.)
pub trait Readable {
    /// A BIGINT/INTEGER column.
    fn int(&self, col: &str) -> StoreResult<i64>;
    /// A nullable BIGINT/INTEGER column.
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    /// An INTEGER column that fits 32 bits.
    fn int32(&self, col: &str) -> StoreResult<i32>;
    /// A nullable INTEGER column that fits 32 bits.
    fn opt_int32(&self, col: &str) -> StoreResult<Option<i32>>;
    /// A text column.
    fn text(&self, col: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    /// A boolean column.
    fn flag(&self, col: &str) -> StoreResult<bool>;
}

impl<R> Readable for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, col: &str) -> StoreResult<i64> {
        self.try_get(col).map_err(backend)
    }
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        self.try_get(col).map_err(backend)
    }
    fn int32(&self, col: &str) -> StoreResult<i32> {
        self.try_get(col).map_err(backend)
    }
    fn opt_int32(&self, col: &str) -> StoreResult<Option<i32>> {
        self.try_get(col).map_err(backend)
    }
    fn text(&self, col: &str) -> StoreResult<String> {
        self.try_get(col).map_err(backend)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.try_get(col).map_err(backend)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.try_get(col).map_err(backend)
    }
}

/// A plain type a [`Readable`] row holds, so row mapping reads `get(row, "id")` whatever the
/// column's type.
pub trait Column: Sized {
    /// Reads `col` of `row`.
    fn read(row: &impl Readable, col: &str) -> StoreResult<Self>;
}

macro_rules! column {
    ($($t:ty => $read:ident),* $(,)?) => {
        $(impl Column for $t {
            fn read(row: &impl Readable, col: &str) -> StoreResult<Self> {
                row.$read(col)
            }
        })*
    };
}

column!(
    i64 => int,
    Option<i64> => opt_int,
    i32 => int32,
    Option<i32> => opt_int32,
    String => text,
    Option<String> => opt_text,
    bool => flag,
);

/// Column `col` of `row`.
pub fn get<T: Column>(row: &impl Readable, col: &str) -> StoreResult<T> {
    T::read(row, col)
}

/// Decodes a JSON column (text on SQLite, selected `::text` on PostgreSQL).
pub fn json<T: serde::de::DeserializeOwned>(row: &impl Readable, col: &str) -> StoreResult<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| invalid(format_args!("column {col}: {e}")))
}

/// `value` as JSON text, for a JSON column.
pub fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| invalid(format_args!("cannot encode JSON: {e}")))
}

/// Data in the database that does not decode into troupe's types.
#[derive(Debug, thiserror::Error)]
#[error("stored data is invalid: {0}")]
pub struct InvalidData(String);

/// A failure of the database itself.
pub fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Rows of [`statements::COUNT_RUNS_BY_STATUS`] as statuses and counts.
pub fn status_counts(rows: Vec<(String, i64)>) -> StoreResult<Vec<(RunStatus, u64)>> {
    rows.into_iter()
        .map(|(status, n)| {
            let status: RunStatus = status.parse().map_err(invalid)?;
            Ok((status, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
}

/// Stored data that does not decode (`what` says which).
pub fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(Box::new(InvalidData(what.to_string())))
}

/// Maps a unique violation to `Conflict(message())`, anything else to `Backend`.
pub fn unique_or_backend(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => backend(e),
    }
}

/// Whether the database refused a write because a foreign key had no row to point at.
pub fn foreign_key_violated(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// An inventory format as stored.
pub fn format_of(s: &str) -> StoreResult<InventoryFormat> {
    match s {
        "yaml" => Ok(InventoryFormat::Yaml),
        "ini" => Ok(InventoryFormat::Ini),
        other => Err(invalid(format_args!("inventory format {other:?}"))),
    }
}

/// A requested cancel as stored.
pub fn cancel_mode(mode: Option<String>) -> StoreResult<Option<CancelMode>> {
    mode.map(|c| CancelMode::parse(&c).ok_or_else(|| invalid(format_args!("cancel mode {c:?}"))))
        .transpose()
}

/// The `Conflict` for a worker acting on a run it does not hold; `run` is the run as it is.
pub fn not_held(run_id: i64, worker_id: &str, run: Run) -> StoreError {
    StoreError::Conflict(format!(
        "run {run_id} is not running under worker {worker_id:?} (it is {}{})",
        run.status,
        run.worker_id
            .map(|w| format!(", worker {w:?}"))
            .unwrap_or_default()
    ))
}

/// The `Conflict` for cancelling a run that has ended; `run` is the run as it is.
pub fn already_finished(run_id: i64, run: &Run) -> StoreError {
    StoreError::Conflict(format!(
        "run {run_id} has already finished ({})",
        run.status
    ))
}

/// The `NotFound` for a unit a job does not have.
pub fn unit_not_found(job_id: i64, unit: &str) -> StoreError {
    StoreError::not_found("unit", format!("{unit:?} of job {job_id}"))
}

/// The `Conflict` of a rules change made against a revision that is no longer the stored one.
pub fn rules_changed(stored: Option<i64>, expected_revision: Option<i64>) -> StoreError {
    StoreError::Conflict(format!(
        "the rules were changed meanwhile: their revision is {}, not {}",
        stored.unwrap_or(0),
        expected_revision.unwrap_or(0)
    ))
}

/// The status of an event with proposals, from what its rules did: `accepted` if one started
/// a run, else `failed` if every one failed, else `skipped`.
pub fn decided_status(outcomes: &[RuleOutcome]) -> EventStatus {
    if outcomes.iter().any(|o| {
        matches!(
            o.result,
            RuleResult::Started { .. } | RuleResult::StartedFlow { .. }
        )
    }) {
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

/// `Conflict` unless a running run may end in `status`.
pub fn finishable(status: RunStatus) -> StoreResult<()> {
    if RunStatus::Running.can_become(status) {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "a run cannot finish as {status}"
        )))
    }
}

/// The `Conflict` of deleting inventory `name` while the run of `row` (its `id` and `status`)
/// uses it.
pub fn inventory_in_use(name: &str, row: &impl Readable) -> StoreError {
    match (get::<String>(row, "status"), get::<i64>(row, "id")) {
        (Ok(status), Ok(id)) => {
            StoreError::Conflict(format!("inventory {name:?} is used by {status} run {id}"))
        }
        (Err(e), _) | (_, Err(e)) => e,
    }
}

/// The `Conflict` of deleting inventory `name` while a template names it.
pub fn inventory_named_by(name: &str, template: &str) -> StoreError {
    StoreError::Conflict(format!(
        "inventory {name:?} is named by template {template:?}"
    ))
}

/// Where a run comes from besides its request: the inbound event whose rule started it and
/// that rule's concurrency key.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOrigin<'a> {
    /// The inbound event.
    pub event_id: Option<i64>,
    /// The rule's concurrency key.
    pub concurrency_key: Option<&'a str>,
}
