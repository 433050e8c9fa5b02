//! What an ingest decides for its event's proposals, the same on every backend: gates first,
//! then the concurrency policy (runs only), then the run or execution and its gate marks. The statements are the
//! backend's, through [`Proposals`], run inside its ingest transaction.

use super::RunOrigin;
use crate::{Admission, Claimant, Gate, NewEventRecord, Proposal, Start, StoreError, StoreResult};
use std::future::Future;
use std::time::Duration;
use troupe_core::flow::{Execution, NewExecution};
use troupe_core::inbound::{ConcurrencyPolicy, EventStatus, RuleOutcome, RuleResult};
use troupe_core::run::{NewRun, Run};

/// The steps of carrying out proposals, on one backend's ingest transaction.
pub trait Proposals {
    /// How the backend binds a time.
    type Time: Copy + Send + Sync;
    /// The event whose gate mark still closes `rule`'s `gate` at `received`, if any.
    fn gate_closed_by(
        &mut self,
        rule: &str,
        gate: &Gate,
        received: Self::Time,
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send;
    /// The queued or running runs of a concurrency key, oldest first.
    fn active_runs(&mut self, key: &str) -> impl Future<Output = StoreResult<Vec<i64>>> + Send;
    /// Stores a run as `create_run` does (`NotFound` naming a missing reference).
    fn insert_run(
        &mut self,
        new: &NewRun,
        origin: RunOrigin<'_>,
    ) -> impl Future<Output = StoreResult<Run>> + Send;
    /// Claims the run `run_id` just stored, as `create_run_claimed` does: the run `running`
    /// under `claimant`'s lease when it may take it and nothing older it may take is queued;
    /// `None` (the run stays `queued`) otherwise.
    fn claim_created(
        &mut self,
        run_id: i64,
        claimant: &Claimant<'_>,
        lease: Duration,
    ) -> impl Future<Output = StoreResult<Option<Run>>> + Send;
    /// Stores an execution as `create_execution` does (`NotFound` when its flow version is
    /// gone).
    fn insert_execution(
        &mut self,
        new: &NewExecution,
    ) -> impl Future<Output = StoreResult<Execution>> + Send;
    /// Closes `rule`'s `gate` from `received` for the gate's window, marked by `event_id`.
    fn close_gate(
        &mut self,
        rule: &str,
        gate: &Gate,
        event_id: i64,
        received: Self::Time,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What an event's proposals did.
#[derive(Debug)]
pub struct Proposed {
    /// What each rule did, in rule order.
    pub outcomes: Vec<RuleOutcome>,
    /// The runs started, in proposal order.
    pub runs: Vec<Run>,
    /// The executions started, in proposal order.
    pub executions: Vec<Execution>,
    /// The event's status: `new.status` without proposals, else decided from the outcomes.
    pub status: EventStatus,
}

/// Carries out every proposal of `new`, recorded as `event_id` at `received`; with
/// `admission`, the runs started are claimed in proposal order while its slots last.
pub async fn propose_all<P: Proposals + Send>(
    tx: &mut P,
    new: &NewEventRecord,
    event_id: i64,
    received: P::Time,
    admission: Option<Admission<'_>>,
) -> StoreResult<Proposed> {
    let mut outcomes = Vec::with_capacity(new.proposals.len());
    let mut runs = Vec::new();
    let mut executions = Vec::new();
    let mut admission = admission;
    for proposal in &new.proposals {
        let (result, started) = propose(tx, proposal, event_id, received).await?;
        let started = match started {
            Some(Started::Run(run)) => Some(Started::Run(Box::new(
                admit(tx, *run, admission.as_mut()).await?,
            ))),
            other => other,
        };
        outcomes.push(RuleOutcome {
            rule: proposal.rule.clone(),
            result,
        });
        match started {
            Some(Started::Run(run)) => runs.push(*run),
            Some(Started::Flow(execution)) => executions.push(*execution),
            None => {}
        }
    }
    let status = if new.proposals.is_empty() {
        new.status
    } else {
        super::decided_status(&outcomes)
    };
    Ok(Proposed {
        outcomes,
        runs,
        executions,
        status,
    })
}

/// `run` claimed under `admission` if it has a slot left and the claim is allowed; `run` as
/// stored otherwise.
async fn admit<P: Proposals + Send>(
    tx: &mut P,
    run: Run,
    admission: Option<&mut Admission<'_>>,
) -> StoreResult<Run> {
    let Some(admission) = admission.filter(|a| a.slots > 0) else {
        return Ok(run);
    };
    match tx
        .claim_created(run.id, &admission.claimant, admission.lease)
        .await?
    {
        Some(claimed) => {
            admission.slots -= 1;
            Ok(claimed)
        }
        None => Ok(run),
    }
}

/// What a proposal started.
enum Started {
    Run(Box<Run>),
    Flow(Box<Execution>),
}

/// Carries out one proposal of event `event_id` (received at `received`): gates, concurrency
/// policy (runs only), then the run or execution and its gate marks. Returns what the rule did
/// and what it started, if anything.
async fn propose<P: Proposals + Send>(
    tx: &mut P,
    proposal: &Proposal,
    event_id: i64,
    received: P::Time,
) -> StoreResult<(RuleResult, Option<Started>)> {
    let start = match &proposal.start {
        Ok(start) => start,
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
        if let Some(by_event) = tx.gate_closed_by(&proposal.rule, gate, received).await? {
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
    let inserted = match start {
        Start::Run(new) => start_run(tx, proposal, new, event_id).await?,
        Start::Flow(new) => match tx.insert_execution(new).await {
            Ok(execution) => Ok((
                RuleResult::StartedFlow {
                    execution_id: execution.id,
                },
                Started::Flow(Box::new(execution)),
            )),
            Err(e @ StoreError::NotFound { .. }) => Err(RuleResult::Failed {
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        },
    };
    let (result, started) = match inserted {
        Ok(done) => done,
        Err(held_back) => return Ok((held_back, None)),
    };
    for gate in &proposal.gates {
        tx.close_gate(&proposal.rule, gate, event_id, received)
            .await?;
    }
    Ok((result, Some(started)))
}

/// The concurrency policy, then the run: what the rule did and the run, or why it was held
/// back or failed (nothing written then).
async fn start_run<P: Proposals + Send>(
    tx: &mut P,
    proposal: &Proposal,
    new: &NewRun,
    event_id: i64,
) -> StoreResult<Result<(RuleResult, Started), RuleResult>> {
    let mut canceled = Vec::new();
    if let Some(c) = &proposal.concurrency {
        let active = tx.active_runs(&c.key).await?;
        match (c.policy, active.first()) {
            (ConcurrencyPolicy::Skip, Some(&active_run)) => {
                return Ok(Err(RuleResult::Skipped { active_run }));
            }
            (ConcurrencyPolicy::Cancel, _) => canceled = active,
            _ => {}
        }
    }
    let origin = RunOrigin {
        event_id: Some(event_id),
        concurrency_key: proposal.concurrency.as_ref().map(|c| c.key.as_str()),
    };
    match tx.insert_run(new, origin).await {
        Ok(run) => Ok(Ok((
            RuleResult::Started {
                run_id: run.id,
                canceled,
            },
            Started::Run(Box::new(run)),
        ))),
        // A missing project, inventory or template fails this rule only; nothing was written.
        Err(e @ StoreError::NotFound { .. }) => Ok(Err(RuleResult::Failed {
            error: e.to_string(),
        })),
        Err(e) => Err(e),
    }
}
