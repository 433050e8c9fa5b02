//! Schedules: a cron expression read in a time zone ([`Cadence`]), what a due schedule does
//! ([`plan`]), and the loop that fires due schedules ([`Scheduler`]).
//!
//! **Exactly once, across replicas.** Every replica scans the store for due schedules; a fire
//! starts something only after [`ScheduleStore::claim_fire`] said this replica, and no other,
//! holds it (the claim moves the schedule's next time on in the same transaction). A replica
//! that stops between the claim and the start loses that fire: a fire is never started twice,
//! at the cost of, rarely, not at all.
//!
//! **Missed fires.** When troupe starts, its first scan finds the fires that came due while no
//! troupe was running: a schedule whose next time is more than [`SchedulerConfig::grace`] in the
//! past. `missed: skip` starts nothing (the schedule's last result says the fire was skipped);
//! `missed: once` starts its target once, however many times were missed. Either way the
//! schedule then fires next at its first time after now. A running troupe that comes late to a
//! fire (a slow store, a busy machine) fires it once when it can, and never makes up a series
//! of fires in a burst.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use troupe_core::ValidationError;
use troupe_core::flow::{MissedFires, Schedule, ScheduleTarget};
use troupe_core::overrides::Overrides;
use troupe_core::run::{Labels, Origin};
use troupe_launch::{
    InventorySource, Launch, LaunchError, LaunchOptions, LaunchRequest, ProjectRef, Ref, Target,
};
use troupe_store::Store;

use crate::engine::{Engine, StartError, StartRequest};
use crate::inputs::Inputs;

/// Why a cron expression and time zone make no schedule. Each names its field.
#[derive(Debug, thiserror::Error)]
pub enum CadenceError {
    /// The expression does not parse.
    #[error("{cron:?} is not a cron expression (5 fields, or 6 with seconds first): {source}")]
    Cron {
        /// The expression.
        cron: String,
        /// Why croner refuses it.
        #[source]
        source: croner::errors::CronError,
    },
    /// The expression parses but names no time that exists (`0 0 31 2 *`).
    #[error("{0:?} never fires")]
    Never(String),
    /// The time zone is not in the IANA database.
    #[error("{0:?} is not an IANA time zone (UTC, Europe/Paris, America/New_York...)")]
    Timezone(String),
}

impl CadenceError {
    /// The field at fault: `cron` or `timezone`.
    pub fn field(&self) -> &'static str {
        match self {
            CadenceError::Cron { .. } | CadenceError::Never(_) => "cron",
            CadenceError::Timezone(_) => "timezone",
        }
    }
}

/// When a schedule fires: a cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    tz: Tz,
}

impl Cadence {
    /// Reads `cron` (5 fields, or 6 with seconds first; `@daily` and the like) in `timezone`
    /// (an IANA name). An expression that never fires is refused.
    pub fn parse(cron: &str, timezone: &str) -> Result<Cadence, CadenceError> {
        let tz: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| CadenceError::Timezone(timezone.to_owned()))?;
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|source| CadenceError::Cron {
                cron: cron.to_owned(),
                source,
            })?;
        let cadence = Cadence { cron: parsed, tz };
        if cadence.next_after(Utc::now()).is_none() {
            return Err(CadenceError::Never(cron.to_owned()));
        }
        Ok(cadence)
    }

    /// The first time strictly after `after`; `None` when there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The `n` first times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(n);
        let mut at = after;
        while times.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    times.push(t);
                    at = t;
                }
                None => break,
            }
        }
        times
    }
}

/// What a scan does with a due fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the target.
    Fire,
    /// Start nothing: the fire was missed while no troupe ran, and the schedule says `skip`.
    Skip,
}

/// What a scan does with a due schedule: claim the fire at `fire_at`, move the schedule to
/// `next`, and fire or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The fire claimed: the schedule's `next_fire_at` as read.
    pub fire_at: DateTime<Utc>,
    /// Its next time: the first after `now` (not after `fire_at`), so late fires are not made
    /// up in a burst.
    pub next: DateTime<Utc>,
    /// Fire or skip.
    pub decision: Decision,
}

/// What to do with a schedule at `now`. `missed_before`: on the first scan after a start,
/// fires before it (`now - grace`) count as missed; `None` on later scans, where a running
/// troupe that is late still fires. `None` when the schedule is not due, or its cron has no
/// next time.
pub fn plan(
    schedule: &Schedule,
    cadence: &Cadence,
    now: DateTime<Utc>,
    missed_before: Option<DateTime<Utc>>,
) -> Option<Plan> {
    let fire_at = schedule.next_fire_at;
    if fire_at > now {
        return None;
    }
    let next = cadence.next_after(now)?;
    let missed = missed_before.is_some_and(|before| fire_at < before);
    let decision = match (missed, schedule.missed) {
        (true, MissedFires::Skip) => Decision::Skip,
        (true, MissedFires::Once) | (false, _) => Decision::Fire,
    };
    Some(Plan {
        fire_at,
        next,
        decision,
    })
}

/// The run a template or playbook target asks for (`None` for a flow). Its options are
/// checked here; what they name is checked by [`Launch::prepare`].
pub fn launch_request(target: &ScheduleTarget) -> Result<Option<LaunchRequest>, ValidationError> {
    let (target, inventory, options) = match target {
        ScheduleTarget::Flow { .. } => return Ok(None),
        ScheduleTarget::Template { template, options } => {
            (Target::Template(Ref::Name(template.clone())), None, options)
        }
        ScheduleTarget::Playbook {
            project,
            playbook,
            inventory,
            options,
        } => (
            Target::Playbook {
                project: ProjectRef::Ref(Ref::Name(project.clone())),
                playbook: playbook.clone(),
            },
            Some(InventorySource::Stored(Ref::Name(inventory.clone()))),
            options,
        ),
    };
    Ok(Some(LaunchRequest {
        target,
        inventory,
        options: LaunchOptions::Over(Overrides::from_map(options.clone())?),
        labels: Labels::new(),
        tag: None,
        // A template's own targets apply; a schedule adds none.
        notify: Vec::new(),
    }))
}

/// Why a schedule's target cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The flow, or its inputs.
    #[error(transparent)]
    Flow(#[from] StartError),
    /// A value is given for a secret input: schedules are stored in clear.
    #[error(
        "input {0:?} is secret: a schedule is stored in clear, so it cannot hold one (give the input a default in the flow, or leave it out)"
    )]
    SecretInput(String),
    /// The run options.
    #[error(transparent)]
    Options(#[from] ValidationError),
    /// The template, project, playbook or inventory.
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// The request that starts a flow target.
fn start_request(
    flow: &str,
    inputs: &Map<String, Value>,
    schedule_id: Option<i64>,
) -> StartRequest {
    StartRequest {
        flow: flow.to_owned(),
        version: None,
        inputs: inputs.clone(),
        started_by: schedule_id
            .map_or_else(|| "schedule".to_owned(), |id| format!("schedule:{id}")),
        parent: None,
    }
}

/// Checks, when a schedule is created, that its target can start: the flow exists and takes
/// these inputs (none of them secret), or the template, project, playbook and inventory exist
/// and the options are run options. Nothing is started.
pub async fn check_target(
    target: &ScheduleTarget,
    flows: &Engine,
    launch: &dyn Launch,
) -> Result<(), TargetError> {
    if let ScheduleTarget::Flow { flow, inputs } = target {
        let checked: Inputs = flows.check(&start_request(flow, inputs, None)).await?;
        if let Some(secret) = inputs.keys().find(|name| checked.is_secret(name)) {
            return Err(TargetError::SecretInput(secret.clone()));
        }
        return Ok(());
    }
    if let Some(request) = launch_request(target)? {
        launch.prepare(request, Origin::Api).await?;
    }
    Ok(())
}

/// The time now, as the scheduler sees it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often it looks for due schedules.
    pub tick: Duration,
    /// On the first scan after a start, how late a fire may be before it counts as missed.
    pub grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick: Duration::from_millis(500),
            grace: Duration::from_secs(2),
        }
    }
}

/// What one fire came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule.
    pub schedule_id: i64,
    /// The time fired.
    pub fire_at: DateTime<Utc>,
    /// What it started (`execution:<id>`, `run:<id>`), `skipped: ...` or `error: ...`: the
    /// schedule's `last_result`.
    pub result: String,
}

/// Fires due schedules: starts flows through the engine and runs through the launcher.
pub struct Scheduler {
    store: Arc<dyn Store>,
    flows: Arc<Engine>,
    launch: Arc<dyn Launch>,
    clock: Arc<dyn Clock>,
    cfg: SchedulerConfig,
}

impl Scheduler {
    /// A scheduler; call [`Scheduler::run`] to have it fire schedules.
    pub fn new(
        store: Arc<dyn Store>,
        flows: Arc<Engine>,
        launch: Arc<dyn Launch>,
        clock: Arc<dyn Clock>,
        cfg: SchedulerConfig,
    ) -> Scheduler {
        Scheduler {
            store,
            flows,
            launch,
            clock,
            cfg,
        }
    }

    /// Fires due schedules every tick until `stop` is canceled. The first scan applies each
    /// schedule's policy for fires missed while no troupe was running.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // A scan that failed to read the store has not looked at missed fires yet.
            if self.scan(first).await.is_ok() {
                first = false;
            }
        }
    }

    /// One scan: every due schedule claimed by this replica fires (or skips) once. `first`:
    /// the first scan since this troupe started, which treats fires older than the grace as
    /// missed. What each fire claimed here came to, in order.
    pub async fn scan(&self, first: bool) -> Result<Vec<Fired>, troupe_store::StoreError> {
        let now = self.clock.now();
        let missed_before = first.then(|| {
            now - chrono::Duration::from_std(self.cfg.grace)
                .unwrap_or_else(|_| chrono::Duration::zero())
        });
        let due = self.store.due_schedules(now).await.inspect_err(|e| {
            tracing::warn!(error = %e, "scheduler: listing due schedules failed");
        })?;
        let mut fired = Vec::new();
        for schedule in due {
            if let Some(f) = self.fire(&schedule, now, missed_before).await {
                fired.push(f);
            }
        }
        Ok(fired)
    }

    /// Claims and fires one due schedule; `None` when another replica claimed it (or the
    /// store failed).
    async fn fire(
        &self,
        schedule: &Schedule,
        now: DateTime<Utc>,
        missed_before: Option<DateTime<Utc>>,
    ) -> Option<Fired> {
        let cadence = match Cadence::parse(&schedule.cron, &schedule.timezone) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %e, "scheduler: schedule cannot fire");
                return None;
            }
        };
        let plan = plan(schedule, &cadence, now, missed_before)?;
        match self
            .store
            .claim_fire(schedule.id, plan.fire_at, plan.next)
            .await
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %e, "scheduler: claiming a fire failed");
                return None;
            }
        }
        let result = match plan.decision {
            Decision::Skip => format!(
                "skipped: missed while no troupe was running (missed: skip); next at {}",
                plan.next.to_rfc3339()
            ),
            Decision::Fire => match self.start(schedule, plan.fire_at).await {
                Ok(started) => started,
                Err(e) => format!("error: {e}"),
            },
        };
        tracing::info!(schedule = %schedule.name, fire_at = %plan.fire_at, %result, "schedule fired");
        if let Err(e) = self
            .store
            .record_fire(schedule.id, plan.fire_at, &result)
            .await
        {
            tracing::warn!(schedule = %schedule.name, error = %e, "scheduler: recording a fire failed");
        }
        Some(Fired {
            schedule_id: schedule.id,
            fire_at: plan.fire_at,
            result,
        })
    }

    /// Starts a schedule's target: `execution:<id>` or `run:<id>`.
    async fn start(
        &self,
        schedule: &Schedule,
        fire_at: DateTime<Utc>,
    ) -> Result<String, TargetError> {
        if let ScheduleTarget::Flow { flow, inputs } = &schedule.target {
            let execution = self
                .flows
                .start(start_request(flow, inputs, Some(schedule.id)))
                .await?;
            return Ok(format!("execution:{}", execution.id));
        }
        let Some(mut request) = launch_request(&schedule.target)? else {
            return Err(TargetError::Options(ValidationError::new(
                "invalid_target",
                "target",
                "the schedule's target starts no run",
            )));
        };
        request
            .labels
            .insert("troupe.schedule".to_owned(), schedule.name.clone());
        if let LaunchOptions::Over(overrides) = &mut request.options {
            overrides.add_extra_vars(Map::from_iter([(
                "troupe_schedule".to_owned(),
                json!({
                    "id": schedule.id,
                    "name": schedule.name,
                    "fire_at": fire_at.to_rfc3339(),
                }),
            )]));
        }
        let actor = format!("schedule:{}", schedule.name);
        let run = self.launch.launch_by(request, Origin::Api, &actor).await?;
        Ok(format!("run:{}", run.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    fn schedule(next: &str, missed: MissedFires) -> Schedule {
        Schedule {
            id: 1,
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            timezone: "UTC".into(),
            target: ScheduleTarget::Flow {
                flow: "f".into(),
                inputs: Map::new(),
            },
            missed,
            next_fire_at: at(next),
            last_fire_at: None,
            last_result: None,
            created_at: at("2026-01-01T00:00:00Z"),
        }
    }

    #[test]
    fn reads_five_and_six_fields_in_a_time_zone() -> Result<(), CadenceError> {
        let paris = Cadence::parse("0 2 * * *", "Europe/Paris")?;
        // 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
        assert_eq!(
            paris.next_after(at("2026-11-22T00:00:00Z")),
            Some(at("2026-11-22T01:00:00Z"))
        );
        assert_eq!(
            paris.next_after(at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-02T00:00:00Z"))
        );
        let every_second = Cadence::parse("* * * * * *", "UTC")?;
        assert_eq!(
            every_second.upcoming(at("2026-01-01T00:00:00.500Z"), 3),
            vec![
                at("2026-01-01T00:00:01Z"),
                at("2026-01-01T00:00:02Z"),
                at("2026-01-01T00:00:03Z")
            ]
        );
        // Strictly after: a time on the schedule is not its own next.
        let hourly = Cadence::parse("@hourly", "UTC")?;
        assert_eq!(
            hourly.next_after(at("2026-01-01T05:00:00Z")),
            Some(at("2026-01-01T06:00:00Z"))
        );
        Ok(())
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let field = |cron: &str, tz: &str| Cadence::parse(cron, tz).err().map(|e| e.field());
        assert_eq!(field("61 * * * *", "UTC"), Some("cron"));
        assert_eq!(field("every day", "UTC"), Some("cron"));
        assert_eq!(field("", "UTC"), Some("cron"));
        // Seven fields (a year) are not taken.
        assert_eq!(field("0 0 0 1 1 * 2030", "UTC"), Some("cron"));
        assert_eq!(field("0 0 31 2 *", "UTC"), Some("cron"));
        assert_eq!(field("0 2 * * *", "Mars/Olympus"), Some("timezone"));
        assert_eq!(field("0 2 * * *", ""), Some("timezone"));
        assert!(Cadence::parse("*/5 * * * *", "America/New_York").is_ok());
    }

    #[test]
    fn a_due_fire_fires_and_moves_on_past_now() -> Result<(), CadenceError> {
        let c = Cadence::parse("0 2 * * *", "UTC")?;
        let s = schedule("2026-03-01T02:00:00Z", MissedFires::Skip);
        assert_eq!(plan(&s, &c, at("2026-03-01T01:59:59Z"), None), None);
        assert_eq!(
            plan(&s, &c, at("2026-03-01T02:00:00.300Z"), None),
            Some(Plan {
                fire_at: at("2026-03-01T02:00:00Z"),
                next: at("2026-03-02T02:00:00Z"),
                decision: Decision::Fire,
            })
        );
        // A running troupe three days late fires once (whatever the policy) and does not
        // make up the days between.
        assert_eq!(
            plan(&s, &c, at("2026-03-04T03:00:00Z"), None),
            Some(Plan {
                fire_at: at("2026-03-01T02:00:00Z"),
                next: at("2026-03-05T02:00:00Z"),
                decision: Decision::Fire,
            })
        );
        Ok(())
    }

    #[test]
    fn fires_missed_while_down_follow_the_policy_on_the_first_scan() -> Result<(), CadenceError> {
        let c = Cadence::parse("0 2 * * *", "UTC")?;
        let now = at("2026-03-04T03:00:00Z");
        let missed_before = Some(now - chrono::Duration::seconds(2));
        let skip = plan(
            &schedule("2026-03-01T02:00:00Z", MissedFires::Skip),
            &c,
            now,
            missed_before,
        );
        assert_eq!(
            skip.map(|p| (p.decision, p.next)),
            Some((Decision::Skip, at("2026-03-05T02:00:00Z")))
        );
        let once = plan(
            &schedule("2026-03-01T02:00:00Z", MissedFires::Once),
            &c,
            now,
            missed_before,
        );
        assert_eq!(
            once.map(|p| (p.decision, p.fire_at, p.next)),
            Some((
                Decision::Fire,
                at("2026-03-01T02:00:00Z"),
                at("2026-03-05T02:00:00Z")
            ))
        );
        // Within the grace, a fire is late, not missed: it fires even with `skip`.
        let late = plan(
            &schedule("2026-03-04T02:59:59Z", MissedFires::Skip),
            &Cadence::parse("* * * * * *", "UTC")?,
            now,
            missed_before,
        );
        assert_eq!(late.map(|p| p.decision), Some(Decision::Fire));
        Ok(())
    }

    #[test]
    fn run_targets_become_launch_requests_and_bad_options_are_refused()
    -> Result<(), ValidationError> {
        let flow = ScheduleTarget::Flow {
            flow: "f".into(),
            inputs: Map::new(),
        };
        assert_eq!(launch_request(&flow)?, None);
        let playbook = ScheduleTarget::Playbook {
            project: "ops".into(),
            playbook: "site.yml".into(),
            inventory: "web".into(),
            options: Map::from_iter([("limit".to_owned(), json!("h1"))]),
        };
        let request = launch_request(&playbook)?;
        assert_eq!(
            request.as_ref().map(|r| &r.inventory),
            Some(&Some(InventorySource::Stored(Ref::Name("web".into()))))
        );
        let bad = ScheduleTarget::Template {
            template: "t".into(),
            options: Map::from_iter([("colour".to_owned(), json!("red"))]),
        };
        let err = launch_request(&bad).err();
        assert_eq!(err.map(|e| e.field), Some("colour".to_owned()));
        Ok(())
    }
}
