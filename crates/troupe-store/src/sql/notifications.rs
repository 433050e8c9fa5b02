//! Notifications, the same on every backend: the columns, the row mapping, which statuses
//! count as an end, and what each outcome writes.

use super::{Dialect, get, invalid, json};
use crate::{NotifyOutcome, StoreError, StoreResult};
use troupe_core::RunStatus;
use troupe_core::flow::ExecutionStatus;
use troupe_core::notify::{Notification, NotificationState, Subject};

/// The columns of `notifications` read by [`notification_from`].
pub const NOTIFICATION_COLS: &str = "id, run_id, execution_id, target, state, attempts, \
     last_error, next_attempt_at, created_at, finished_at";

/// Inserts one pending notification: `$1` the subject's id (in `column`), `$2` the target's
/// JSON, `$3` the time.
pub fn insert(column: &str) -> String {
    format!(
        "INSERT INTO notifications ({column}, target, created_at) VALUES ($1, $2, $3) \
         RETURNING {NOTIFICATION_COLS}"
    )
}

/// The notifications of the subject `$1` (in `column`), oldest first.
pub fn list(column: &str) -> String {
    format!("SELECT {NOTIFICATION_COLS} FROM notifications WHERE {column} = $1 ORDER BY id")
}

/// One notification, `$1`.
pub fn get_one() -> String {
    format!("SELECT {NOTIFICATION_COLS} FROM notifications WHERE id = $1")
}

/// Records an attempt while `$7` holds notification `$6` and it is pending: `$1` the state,
/// `$2` 1 when the attempt counts, `$3` the error (kept from before when NULL), `$4` the next
/// attempt's time, `$5` the finishing time.
pub fn record() -> String {
    format!(
        "UPDATE notifications SET state = $1, attempts = attempts + $2, \
         last_error = COALESCE($3, last_error), next_attempt_at = $4, owner = NULL, \
         lease_until = NULL, finished_at = $5 \
         WHERE id = $6 AND owner = $7 AND state = 'pending' RETURNING {NOTIFICATION_COLS}"
    )
}

/// The due notifications at `$1`, at most `$2`, that `$3` may claim, with their subject's
/// status (`subject_status`), oldest first. `lock` ends the statement (`FOR UPDATE OF n SKIP
/// LOCKED` on PostgreSQL).
pub fn due(lock: &str) -> String {
    format!(
        "SELECT n.id AS due_id, COALESCE(r.status, e.status) AS subject_status \
         FROM notifications n \
         LEFT JOIN runs r ON r.id = n.run_id \
         LEFT JOIN executions e ON e.id = n.execution_id \
         WHERE n.state = 'pending' \
           AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= $1) \
           AND (n.lease_until IS NULL OR n.lease_until < $1 OR n.owner = $3) \
           AND (r.status IN ({}) OR e.status IN ({})) \
         ORDER BY n.id {limit} {lock}",
        finished_runs(),
        finished_executions(),
        limit = super::limit("$2"),
    )
}

/// A notification, from a row selected with [`NOTIFICATION_COLS`].
pub fn notification_from<D: Dialect>(row: &D::Row) -> StoreResult<Notification> {
    let state: String = get(row, "state")?;
    Ok(Notification {
        id: get(row, "id")?,
        run_id: get(row, "run_id")?,
        execution_id: get(row, "execution_id")?,
        target: json(row, "target")?,
        state: NotificationState::parse(&state)
            .ok_or_else(|| invalid(format_args!("notification state {state:?}")))?,
        attempts: get(row, "attempts")?,
        last_error: get(row, "last_error")?,
        next_attempt_at: D::opt_time(row, "next_attempt_at")?,
        created_at: D::time(row, "created_at")?,
        finished_at: D::opt_time(row, "finished_at")?,
    })
}

/// The finished statuses of runs, for `status IN (...)`.
pub fn finished_runs() -> String {
    RunStatus::ALL
        .iter()
        .filter(|s| s.is_finished())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The finished statuses of executions, for `status IN (...)`.
pub fn finished_executions() -> String {
    ExecutionStatus::ALL
        .iter()
        .filter(|s| s.is_finished())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column naming a subject, and its id.
pub fn subject_column(subject: Subject) -> (&'static str, i64) {
    match subject {
        Subject::Run(id) => ("run_id", id),
        Subject::Execution(id) => ("execution_id", id),
    }
}

/// The `NotFound` of a missing subject.
pub fn subject_not_found(subject: Subject) -> StoreError {
    match subject {
        Subject::Run(id) => StoreError::not_found("run", id),
        Subject::Execution(id) => StoreError::not_found("execution", id),
    }
}

/// What an outcome writes: the state, whether the attempt counts, the error, and whether the
/// notification is finished (a retry stays pending).
pub fn outcome_columns(outcome: &NotifyOutcome) -> (NotificationState, i32, Option<&str>, bool) {
    match outcome {
        NotifyOutcome::Sent => (NotificationState::Sent, 1, None, true),
        NotifyOutcome::Skipped => (NotificationState::Skipped, 0, None, true),
        NotifyOutcome::Retry { error, .. } => (NotificationState::Pending, 1, Some(error), false),
        NotifyOutcome::Failed { error } => (NotificationState::Failed, 1, Some(error), true),
    }
}

/// The `Conflict` of recording an attempt `owner` does not hold.
pub fn not_claimed(id: i64, owner: &str, n: &Notification) -> StoreError {
    if n.state == NotificationState::Pending {
        StoreError::Conflict(format!(
            "notification {id} is not held by {owner:?} (any more)"
        ))
    } else {
        StoreError::Conflict(format!("notification {id} is already {}", n.state.as_str()))
    }
}
