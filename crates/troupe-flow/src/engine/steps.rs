//! One step: whether it runs at all, its attempts and retries, what it publishes, its record.

use chrono::Utc;
use serde_json::{Map, Value, json};
use std::time::Duration;
use troupe_core::flow::{Phase, StepRecord, StepStatus};
use troupe_store::StoreError;

use super::actions::{Attempt, attempt};
use super::drive::{Ctx, Stop};
use crate::doc::{Action, Step};
use crate::expr;

/// How a step ended, for the list it is in.
pub(crate) enum StepEnd {
    /// Succeeded, was skipped, or failed with `continue_on_error`.
    Done,
    /// Failed: the list stops here.
    Failed {
        /// The step's key.
        key: String,
        /// Why.
        error: String,
    },
    /// The execution must stop.
    Stopped(Stop),
}

/// The key of a step: `<phase>/<id>`, or `<phase>/<position>` without an id.
pub(crate) fn key_of(phase: Phase, position: usize, step: &Step) -> String {
    match &step.id {
        Some(id) => format!("{phase}/{id}"),
        None => format!("{phase}/{position}"),
    }
}

/// Whether a phase's successes carry over to the next round (a resume): the flow's body does,
/// handlers run again.
fn carries_over(phase: Phase) -> bool {
    matches!(phase, Phase::Pre | Phase::Steps)
}

/// Runs a step, or takes its outcome from its record when it already ran.
pub(crate) async fn run_step(
    ctx: &mut Ctx<'_>,
    phase: Phase,
    position: usize,
    step: &Step,
) -> Result<StepEnd, StoreError> {
    let key = key_of(phase, position, step);
    let round = ctx.execution.round;
    // Done before: in this round (a restart), or succeeded in an earlier one (a resume).
    let earlier = ctx
        .prior
        .iter()
        .filter(|r| r.key == key)
        .filter(|r| {
            (r.round == round && r.status.is_finished())
                || (carries_over(phase) && r.status == StepStatus::Successful)
        })
        .max_by_key(|r| r.round)
        .cloned();
    if let Some(record) = earlier {
        remember(ctx, step, &record);
        if record.round != round {
            ctx.log(&format!(
                "step {key}: succeeded in round {}, not run again",
                record.round
            ));
        }
        return Ok(end_of(&record, step));
    }
    let in_flight = ctx
        .prior
        .iter()
        .find(|r| r.key == key && r.round == round && !r.status.is_finished())
        .cloned();

    let mut record = in_flight.clone().unwrap_or_else(|| StepRecord {
        execution_id: ctx.execution.id,
        round,
        key: key.clone(),
        phase,
        position: position as i32,
        kind: step.action.kind().to_owned(),
        status: StepStatus::Running,
        attempts: 0,
        started_at: None,
        finished_at: None,
        result: Value::Object(Map::new()),
        published: Map::new(),
        error: None,
        run_ids: vec![],
        execution_ids: vec![],
    });

    if in_flight.is_none() {
        if let Some(stop) = ctx.stops.now() {
            return Ok(StepEnd::Stopped(stop));
        }
        let skip_reason = match skipped(ctx, step) {
            Ok(reason) => reason,
            Err(error) => {
                record.status = StepStatus::Failed;
                record.error = Some(error.clone());
                record.finished_at = Some(Utc::now());
                ctx.put(&mut record).await?;
                remember(ctx, step, &record);
                return Ok(end_of(&record, step));
            }
        };
        if let Some(reason) = skip_reason {
            record.status = StepStatus::Skipped;
            record.result = json!({"reason": reason});
            record.finished_at = Some(Utc::now());
            ctx.put(&mut record).await?;
            ctx.log(&format!("step {key}: skipped ({reason})"));
            remember(ctx, step, &record);
            return Ok(StepEnd::Done);
        }
        record.started_at = Some(Utc::now());
    }

    let attempts = step.retry.as_ref().map(|r| r.attempts.max(1)).unwrap_or(1) as i32;
    let mut resumed_waiting = in_flight
        .as_ref()
        .is_some_and(|r| r.status == StepStatus::Waiting);
    if let Some(r) = &in_flight
        && !resumed_waiting
        && r.attempts > 0
    {
        // The attempt in flight when the last holder stopped is lost: it counts as a failure,
        // and the retry policy decides.
        ctx.log(&format!(
            "step {key}: attempt {} was interrupted (troupe stopped); the retry policy decides",
            r.attempts
        ));
        record.error = Some(format!(
            "attempt {} was interrupted: troupe stopped",
            r.attempts
        ));
        if r.attempts >= attempts {
            record.status = StepStatus::Failed;
            record.finished_at = Some(Utc::now());
            ctx.put(&mut record).await?;
            remember(ctx, step, &record);
            return Ok(end_of(&record, step));
        }
        if let Err(stop) = ctx
            .stops
            .sleep(delay_before(step, r.attempts as u32 + 1))
            .await
        {
            return stopped(ctx, &mut record, stop).await;
        }
    }

    loop {
        if !resumed_waiting {
            record.attempts += 1;
            record.status = StepStatus::Running;
            ctx.put(&mut record).await?;
            if attempts > 1 {
                ctx.log(&format!(
                    "step {key}: attempt {} of {attempts}",
                    record.attempts
                ));
            } else {
                ctx.log(&format!("step {key}: {}", step.action.kind()));
            }
        }
        resumed_waiting = false;
        let outcome = attempt(ctx, step, &mut record).await?;
        let (ok, error) = match outcome {
            Attempt::Stopped(stop) => return stopped(ctx, &mut record, stop).await,
            Attempt::Ended { ok, error } => (ok, error),
        };
        let (ok, error) = if ok {
            match until_holds(ctx, step, &record.result) {
                Ok(true) => (true, None),
                Ok(false) => (false, Some("its `until` condition is not met".to_owned())),
                Err(e) => (false, Some(e)),
            }
        } else {
            (false, error)
        };
        if ok {
            match publish(ctx, step, &record.result) {
                Ok(published) => {
                    record.published = published;
                    record.status = StepStatus::Successful;
                    record.error = None;
                }
                Err(e) => {
                    record.status = StepStatus::Failed;
                    record.error = Some(e);
                }
            }
            break;
        }
        record.error = error;
        let timed_out = record.status == StepStatus::Timeout;
        if record.attempts >= attempts {
            if !timed_out {
                record.status = StepStatus::Failed;
            }
            break;
        }
        let wait = delay_before(step, record.attempts as u32 + 1);
        ctx.log(&format!(
            "step {key}: attempt {} failed ({}); next in {}",
            record.attempts,
            record.error.as_deref().unwrap_or("no reason given"),
            humantime::format_duration(wait)
        ));
        record.status = StepStatus::Running;
        ctx.put(&mut record).await?;
        if let Err(stop) = ctx.stops.sleep(wait).await {
            return stopped(ctx, &mut record, stop).await;
        }
    }
    record.finished_at = Some(Utc::now());
    ctx.put(&mut record).await?;
    ctx.log(&format!(
        "step {key}: {}{}",
        record.status,
        record
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    ));
    remember(ctx, step, &record);
    Ok(end_of(&record, step))
}

/// Records a step stopped by its execution (a cancel, the time limit), or leaves it as it is
/// when this replica lets go.
async fn stopped(
    ctx: &mut Ctx<'_>,
    record: &mut StepRecord,
    stop: Stop,
) -> Result<StepEnd, StoreError> {
    if stop == Stop::Released {
        return Ok(StepEnd::Stopped(stop));
    }
    record.status = match stop {
        Stop::Canceled => StepStatus::Canceled,
        _ => StepStatus::Timeout,
    };
    record.finished_at = Some(Utc::now());
    ctx.put(record).await?;
    ctx.log(&format!("step {}: {}", record.key, record.status));
    Ok(StepEnd::Stopped(stop))
}

/// The wait before attempt `next` (2 or more).
fn delay_before(step: &Step, next: u32) -> Duration {
    let Some(retry) = &step.retry else {
        return Duration::ZERO;
    };
    let factor = retry.backoff.max(1.0).powi(next.saturating_sub(2) as i32);
    // Saturating: a delay the document allows (any u64 of seconds) times the backoff may not
    // fit a Duration, where `mul_f64` would panic; such a wait is as good as forever.
    let wait = Duration::try_from_secs_f64(retry.delay.0.as_secs_f64() * factor.min(1e6))
        .unwrap_or(Duration::MAX);
    match retry.max_delay {
        Some(max) => wait.min(max.0),
        None => wait,
    }
}

/// Why the step is skipped, if it is: its `when` is false, or it uses a node set found empty
/// with `when_empty: skip`. An error when `when` cannot be evaluated.
fn skipped(ctx: &Ctx<'_>, step: &Step) -> Result<Option<String>, String> {
    if let Action::Playbook(p) = &step.action
        && let Some(set) = &p.nodes
        && ctx.skipped_sets.contains(set)
    {
        return Ok(Some(format!("node set {set} is empty")));
    }
    match &step.when {
        Some(when) => match expr::is_true(when, &ctx.scope) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(format!("when: {when}"))),
            Err(e) => Err(format!("when: {e}")),
        },
        None => Ok(None),
    }
}

/// The scope with the attempt's `result`.
fn with_result(ctx: &Ctx<'_>, result: &Value) -> expr::Scope {
    let mut scope = ctx.scope.clone();
    scope.insert("result".into(), result.clone());
    scope
}

fn until_holds(ctx: &Ctx<'_>, step: &Step, result: &Value) -> Result<bool, String> {
    match step.retry.as_ref().and_then(|r| r.until.as_deref()) {
        Some(until) => {
            expr::is_true(until, &with_result(ctx, result)).map_err(|e| format!("until: {e}"))
        }
        None => Ok(true),
    }
}

fn publish(ctx: &Ctx<'_>, step: &Step, result: &Value) -> Result<Map<String, Value>, String> {
    let scope = with_result(ctx, result);
    step.publish
        .iter()
        .map(|(name, template)| {
            expr::render_value(&Value::String(template.clone()), &scope)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("publish {name}: {e}"))
        })
        .collect()
}

/// Puts a finished step where later expressions see it: `steps.<id>` and `published`.
fn remember(ctx: &mut Ctx<'_>, step: &Step, record: &StepRecord) {
    if let Some(Value::Object(published)) = ctx.scope.get_mut("published") {
        published.extend(record.published.clone());
    }
    let Some(id) = &step.id else {
        return;
    };
    let seen = json!({
        "status": record.status,
        "attempts": record.attempts,
        "result": record.result,
        "published": record.published,
        "error": record.error,
        "run_ids": record.run_ids,
        "execution_ids": record.execution_ids,
        "ok": record.status == StepStatus::Successful,
    });
    if let Some(Value::Object(steps)) = ctx.scope.get_mut("steps") {
        steps.insert(id.clone(), seen);
    }
}

fn end_of(record: &StepRecord, step: &Step) -> StepEnd {
    match record.status {
        StepStatus::Successful | StepStatus::Skipped => StepEnd::Done,
        _ if step.continue_on_error => StepEnd::Done,
        StepStatus::Canceled => StepEnd::Stopped(Stop::Canceled),
        _ => StepEnd::Failed {
            key: record.key.clone(),
            error: record
                .error
                .clone()
                .unwrap_or_else(|| format!("ended {}", record.status)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{Dur, Retry};

    fn step(retry: Option<Retry>) -> Step {
        Step {
            id: Some("s".into()),
            name: None,
            action: Action::Log("x".into()),
            when: None,
            timeout: None,
            retry,
            continue_on_error: false,
            publish: Default::default(),
        }
    }

    #[test]
    fn delays_grow_by_the_backoff_up_to_the_cap() {
        let s = step(Some(Retry {
            attempts: 5,
            delay: Dur(Duration::from_secs(2)),
            backoff: 3.0,
            max_delay: Some(Dur(Duration::from_secs(10))),
            until: None,
        }));
        let waits: Vec<u64> = (2..=5).map(|n| delay_before(&s, n).as_secs()).collect();
        assert_eq!(waits, [2, 6, 10, 10]);
        assert_eq!(delay_before(&step(None), 2), Duration::ZERO);
    }

    /// `retry: {attempts: 3, delay: 18446744073709551615, backoff: 2}` loads; its third
    /// attempt's wait overflowed `Duration::mul_f64`, a panic in the engine.
    #[test]
    fn a_delay_too_long_for_a_duration_waits_forever_instead_of_panicking() {
        let s = step(Some(Retry {
            attempts: 3,
            delay: Dur(Duration::from_secs(u64::MAX)),
            backoff: 2.0,
            max_delay: None,
            until: None,
        }));
        assert_eq!(delay_before(&s, 3), Duration::MAX);
        let doc = crate::load(
            "name: f\nsteps:\n  - log: x\n    retry: {attempts: 3, delay: 18446744073709551615, backoff: 2}\n",
        )
        .expect("the document allows it");
        assert_eq!(delay_before(&doc.steps[0], 3), Duration::MAX);
    }

    #[test]
    fn keys_use_the_id_or_the_position() {
        let mut s = step(None);
        assert_eq!(key_of(Phase::OnFailure, 3, &s), "on_failure/s");
        s.id = None;
        assert_eq!(key_of(Phase::Steps, 3, &s), "steps/3");
    }
}
