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
