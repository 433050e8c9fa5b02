//! Flows: versions of flow documents, their executions with a record per step, the slots and
//! locks executions hold, and schedules.
//!
//! Everything an execution needs to go on after a restart, or on another replica, is here: the
//! engine keeps no state of its own that the store does not have.

use crate::{Page, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_core::flow::{
    Approval, Execution, ExecutionFilter, ExecutionStatus, FlowVersion, NewExecution, NewSchedule,
    Schedule, StepRecord,
};

/// Flow documents, one row per version.
#[async_trait]
pub trait FlowStore {
    /// Stores `document` as the newest version of flow `name`. When it is byte-for-byte the
    /// newest version already stored, nothing is added and that version is returned.
    async fn put_flow(&self, name: &str, document: &str) -> StoreResult<FlowVersion>;
    /// One version of a flow; the newest when `version` is `None`. `NotFound` when missing.
    async fn get_flow(&self, name: &str, version: Option<i64>) -> StoreResult<FlowVersion>;
    /// The newest version of every flow, by name.
    async fn list_flows(&self) -> StoreResult<Vec<FlowVersion>>;
    /// Every version of one flow, newest first (empty when there is none).
    async fn flow_versions(&self, name: &str) -> StoreResult<Vec<FlowVersion>>;
}

/// A request for a place in a concurrency group or a named lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The group's key (`lock:<name>` for a named lock, `flow:<key>` for concurrency).
    pub key: String,
    /// How many executions may hold it at once (1 for a lock).
    pub limit: i64,
}

/// Executions and their steps.
#[async_trait]
pub trait ExecutionStore {
    /// Creates an execution, `queued`, round 0. `NotFound` when the flow version (or the
    /// parent execution) is missing.
    async fn create_execution(&self, new: &NewExecution) -> StoreResult<Execution>;
    /// One execution. `NotFound` when missing.
    async fn get_execution(&self, id: i64) -> StoreResult<Execution>;
    /// Executions, newest first.
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<Vec<Execution>>;

    /// Takes an unfinished execution for `owner` until `until`: succeeds (returning it) when it
    /// has no owner, is already `owner`'s, or its lease ended before `now`. `None` when another
    /// owner holds it, or it is finished; `NotFound` when it does not exist. The one way an engine starts or takes over an
    /// execution, so two replicas never run the same one.
    async fn claim_execution(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Option<Execution>>;
    /// Extends `owner`'s leases on these executions to `until`; returns the ids it still owns
    /// (one missing from the answer was taken over and must be let go).
    async fn renew_executions(
        &self,
        owner: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>>;
    /// Unfinished executions nobody holds: no owner, or a lease that ended before `now`.
    /// Oldest first, at most `limit`.
    async fn unclaimed_executions(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Execution>>;

    /// Moves an execution to `status` (setting `started_at` on its first `running`,
    /// `finished_at` and dropping the owner and its slots on a finished status, and `error`).
    /// Only from an unfinished status; `Conflict` otherwise.
    async fn set_execution_status(
        &self,
        id: i64,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> StoreResult<Execution>;
    /// Asks an unfinished execution to stop; a `queued` one nobody holds (no owner, or a lease
    /// that has ended) is `canceled` at once, letting go of its slots. `Conflict` when it is
    /// already finished. (Not `request_cancel`: a `dyn Store` has `ClaimStore`'s of that
    /// name, for runs.)
    async fn cancel_execution(&self, id: i64) -> StoreResult<Execution>;
    /// Makes a `failed`, `canceled` or `timeout` execution `queued` again, one round later,
    /// with no owner, no error, no `finished_at` and `cancel_requested` cleared. `Conflict`
    /// when it is unfinished, successful or skipped (it never ran).
    async fn resume_execution(&self, id: i64) -> StoreResult<Execution>;

    /// Writes a step's record: inserted, or replacing the record with the same execution,
    /// round and key. `NotFound` when the execution is missing.
    async fn put_step(&self, record: &StepRecord) -> StoreResult<()>;
    /// Every step record of an execution, in every round: by round, then phase order, then
    /// position.
    async fn list_steps(&self, execution_id: i64) -> StoreResult<Vec<StepRecord>>;
    /// Answers the approval step `key` of the execution's current round: stores `approval`
    /// in the record's `result.approval`, only while the record is `waiting` and has no answer
    /// yet (the status stays `waiting`: the engine moves it on). `Conflict` when it is not
    /// waiting, already answered, or not an approval; `NotFound` when missing.
    async fn answer_approval(
        &self,
        execution_id: i64,
        key: &str,
        approval: &Approval,
    ) -> StoreResult<StepRecord>;

    /// Takes every slot in `slots` for the execution, or none: true when each key had fewer
    /// than its limit holders (holding one already counts as having it). Atomic across
    /// replicas. `NotFound` when the execution is missing.
    async fn acquire_slots(&self, execution_id: i64, slots: &[SlotRequest]) -> StoreResult<bool>;
    /// The executions holding a slot of `key`, oldest first.
    async fn slot_holders(&self, key: &str) -> StoreResult<Vec<i64>>;
    /// Lets go of every slot the execution holds.
    async fn release_slots(&self, execution_id: i64) -> StoreResult<()>;
}

/// Schedules, and the fires that make each of them start something exactly once.
#[async_trait]
pub trait ScheduleStore {
    /// Creates a schedule. `Conflict` when the name is taken.
    async fn create_schedule(&self, new: &NewSchedule) -> StoreResult<Schedule>;
    /// One schedule.
    async fn get_schedule(&self, id: i64) -> StoreResult<Schedule>;
    /// Every schedule, by name.
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;
    /// Deletes a schedule (and its fires). `NotFound` when missing.
    async fn delete_schedule(&self, id: i64) -> StoreResult<()>;
    /// Schedules whose `next_fire_at` is at or before `now`.
    async fn due_schedules(&self, now: DateTime<Utc>) -> StoreResult<Vec<Schedule>>;
    /// Claims the fire of schedule `id` planned for `fire_at`, moving its `next_fire_at` to
    /// `next`: true for exactly one caller, however many replicas try (the fire is recorded
    /// once, and only while `next_fire_at` is still `fire_at`). False when the schedule is
    /// gone.
    async fn claim_fire(
        &self,
        id: i64,
        fire_at: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records what a claimed fire started, or why it could not (shown as the schedule's
    /// `last_result` while it is its last fire). `NotFound` when no such fire was claimed.
    async fn record_fire(&self, id: i64, fire_at: DateTime<Utc>, result: &str) -> StoreResult<()>;
}
