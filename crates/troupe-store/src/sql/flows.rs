//! What the flow stores decide the same way on every backend: which statuses a statement
//! accepts, whether an execution's slots can all be taken, how an approval is written into a
//! step's result, the order of step records, and the errors naming what was refused. The
//! statements are the backend's, through [`Slots`], run inside its transaction.

use crate::{SlotRequest, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::future::Future;
use troupe_core::flow::{Approval, Execution, ExecutionStatus, Phase, StepRecord, StepStatus};

/// The statuses an execution may be resumed from: it ran and did not succeed. (`skipped`
/// never ran: there is nothing to resume.)
pub const RESUMABLE: [ExecutionStatus; 3] = [
    ExecutionStatus::Failed,
    ExecutionStatus::Canceled,
    ExecutionStatus::Timeout,
];

/// The statuses of `ExecutionStatus` that `keep` keeps, as a list of SQL strings for `IN (...)`.
fn status_list(keep: impl Fn(ExecutionStatus) -> bool) -> String {
    ExecutionStatus::ALL
        .iter()
        .filter(|s| keep(**s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The unfinished statuses, for `status IN (...)`.
pub fn unfinished() -> String {
    status_list(|s| !s.is_finished())
}

/// The statuses in [`RESUMABLE`], for `status IN (...)`.
pub fn resumable() -> String {
    status_list(|s| RESUMABLE.contains(&s))
}

/// The `NotFound` of a flow version that does not exist (`None`: no version at all).
pub fn flow_not_found(name: &str, version: Option<i64>) -> StoreError {
    match version {
        Some(v) => StoreError::not_found("flow", format!("{name:?} version {v}")),
        None => StoreError::not_found("flow", format!("{name:?}")),
    }
}

/// The `Conflict` of changing an execution that has finished; `execution` is as it is now.
pub fn execution_finished(execution: &Execution) -> StoreError {
    StoreError::Conflict(format!(
        "execution {} has already finished ({})",
        execution.id, execution.status
    ))
}

/// The `Conflict` of resuming an execution that is not in a [`RESUMABLE`] status.
pub fn not_resumable(execution: &Execution) -> StoreError {
    StoreError::Conflict(format!(
        "execution {} cannot be resumed: it is {} (only a failed, canceled or timed out \
         execution can)",
        execution.id, execution.status
    ))
}

/// The `NotFound` of a step an execution's round has no record of.
pub fn step_not_found(execution_id: i64, round: i32, key: &str) -> StoreError {
    StoreError::not_found(
        "step",
        format!("{key:?} of execution {execution_id} (round {round})"),
    )
}

/// The `NotFound` of a fire of schedule `id` at `fire_at` that was never claimed.
pub fn fire_not_found(id: i64, fire_at: DateTime<Utc>) -> StoreError {
    StoreError::not_found("fire", format!("{fire_at} of schedule {id}"))
}

/// The result of `record` once `approval` answers it: its result with `approval` set.
/// `Conflict` when the step is not waiting, was answered already, or its result is not an
/// object (not an approval step's).
pub fn answered(record: &StepRecord, approval: &Approval) -> StoreResult<Value> {
    let what = || format!("step {:?} of execution {}", record.key, record.execution_id);
    if record.status != StepStatus::Waiting {
        return Err(StoreError::Conflict(format!(
            "{} is not waiting for an approval (it is {})",
            what(),
            record.status
        )));
    }
    let mut result = match &record.result {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(StoreError::Conflict(format!(
                "{} is not an approval step",
                what()
            )));
        }
    };
    if result.contains_key("approval") {
        return Err(StoreError::Conflict(format!(
            "{} was already answered",
            what()
        )));
    }
    let approval = serde_json::to_value(approval)
        .map_err(|e| super::invalid(format_args!("cannot encode an approval: {e}")))?;
    result.insert("approval".into(), approval);
    Ok(Value::Object(result))
}

/// Where a phase comes in an execution: `pre`, `steps`, `on_success`, `on_failure`,
/// `finally`.
fn phase_rank(phase: Phase) -> usize {
    Phase::ALL
        .iter()
        .position(|p| *p == phase)
        .unwrap_or(Phase::ALL.len())
}

/// `steps` in the order `list_steps` gives them: by round, then phase order, then position.
pub fn steps_in_order(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
    steps.sort_by(|a, b| {
        (a.round, phase_rank(a.phase), a.position, &a.key).cmp(&(
            b.round,
            phase_rank(b.phase),
            b.position,
            &b.key,
        ))
    });
    steps
}

/// The slots of one backend's `acquire_slots` transaction: whatever it does, no other
/// transaction adds a holder to these keys until it ends.
pub trait Slots {
    /// The executions holding a slot of `key`.
    fn holders(&mut self, key: &str) -> impl Future<Output = StoreResult<Vec<i64>>> + Send;
    /// Gives execution `execution_id` a slot of `key`.
    fn hold(
        &mut self,
        key: &str,
        execution_id: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// `slots` by key, each key once (with the lowest limit asked for it): the order keys are
/// locked and taken in, the same for every caller.
pub fn slot_requests(slots: &[SlotRequest]) -> Vec<SlotRequest> {
    let mut sorted = slots.to_vec();
    sorted.sort_by(|a, b| (&a.key, a.limit).cmp(&(&b.key, b.limit)));
    sorted.dedup_by(|later, first| later.key == first.key);
    sorted
}

/// Takes every slot of `requests` (as [`slot_requests`] gives them) for `execution_id`, or
/// none: false, with nothing written, when a key already has its limit of other holders.
pub async fn take_slots<S: Slots + Send>(
    tx: &mut S,
    execution_id: i64,
    requests: &[SlotRequest],
) -> StoreResult<bool> {
    let mut missing = Vec::new();
    for request in requests {
        let holders = tx.holders(&request.key).await?;
        if holders.contains(&execution_id) {
            continue;
        }
        if i64::try_from(holders.len()).unwrap_or(i64::MAX) >= request.limit {
            return Ok(false);
        }
        missing.push(request.key.as_str());
    }
    for key in missing {
        tx.hold(key, execution_id).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_lists() {
        assert_eq!(unfinished(), "'queued', 'running'");
        assert_eq!(resumable(), "'failed', 'canceled', 'timeout'");
    }

    #[test]
    fn requests_sorted_and_deduplicated() {
        let r = |key: &str, limit| SlotRequest {
            key: key.into(),
            limit,
        };
        assert_eq!(
            slot_requests(&[r("lock:b", 1), r("flow:a", 3), r("flow:a", 2)]),
            [r("flow:a", 2), r("lock:b", 1)]
        );
    }

    fn waiting(result: Value) -> StepRecord {
        StepRecord {
            execution_id: 7,
            round: 0,
            key: "steps/ok".into(),
            phase: Phase::Steps,
            position: 0,
            kind: "approval".into(),
            status: StepStatus::Waiting,
            attempts: 1,
            started_at: None,
            finished_at: None,
            result,
            published: Map::new(),
            error: None,
            run_ids: Vec::new(),
            execution_ids: Vec::new(),
        }
    }

    #[test]
    fn approval_goes_into_the_result() {
        let yes = Approval {
            approved: true,
            by: "ops".into(),
            comment: None,
        };
        let got = answered(&waiting(json!({"prompt": "go?"})), &yes).ok();
        assert_eq!(
            got,
            Some(json!({"prompt": "go?", "approval": {"approved": true, "by": "ops"}}))
        );
        assert!(answered(&waiting(Value::Null), &yes).is_ok());
        for refused in [
            waiting(json!({"approval": {"approved": false, "by": "x"}})),
            waiting(json!([1])),
            StepRecord {
                status: StepStatus::Successful,
                ..waiting(json!({}))
            },
        ] {
            assert!(matches!(
                answered(&refused, &yes),
                Err(StoreError::Conflict(_))
            ));
        }
    }
}
