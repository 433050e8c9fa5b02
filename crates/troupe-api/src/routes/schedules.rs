//! Schedules: cron expressions in a time zone that start a flow, a template or a playbook.
//! Each target is checked when the schedule is created (and again at every fire, since what it
//! names may change).

use crate::AppState;
use crate::audit::AuditTarget;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use troupe_core::flow::{MissedFires, NewSchedule, Schedule};
use troupe_flow::engine::StartError;
use troupe_flow::schedule::{Cadence, CadenceError, TargetError, check_target};
use troupe_wire::errors::Problem;
use troupe_wire::schedules::{CreateSchedule, ScheduleList, ScheduleView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How many fire times a schedule is shown with.
const NEXT_FIRES: usize = 5;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, delete_schedule))
}

/// A schedule with its next fire times (none when its cron no longer parses).
fn view(schedule: Schedule) -> ScheduleView {
    let next_fires = match Cadence::parse(&schedule.cron, &schedule.timezone) {
        Ok(c) => std::iter::once(schedule.next_fire_at)
            .chain(c.upcoming(schedule.next_fire_at, NEXT_FIRES - 1))
            .collect(),
        Err(_) => Vec::new(),
    };
    ScheduleView {
        schedule,
        next_fires,
    }
}

impl From<CadenceError> for ApiError {
    fn from(e: CadenceError) -> Self {
        let code = match e {
            CadenceError::Timezone(_) => "invalid_timezone",
            CadenceError::Cron { .. } | CadenceError::Never(_) => "invalid_cron",
        };
        ApiError::invalid(code, e.field(), e.to_string())
    }
}

/// The field of a target's error, named from the body's root.
fn in_target(mut e: ApiError) -> ApiError {
    e.field = Some(match e.field.take() {
        Some(f) => format!("target.{f}"),
        None => "target".to_owned(),
    });
    for p in &mut e.problems {
        p.field = format!("target.{}", p.field);
    }
    e
}

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Flow(StartError::UnknownFlow(name)) => ApiError::invalid(
                "unknown_flow",
                "target.flow",
                format!("no flow named {name:?}"),
            ),
            TargetError::Flow(StartError::Inputs(problems)) => {
                let message = problems
                    .iter()
                    .map(|p| format!("target.{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs", message).problems(
                    problems
                        .into_iter()
                        .map(|p| Problem {
                            field: format!("target.{}", p.field),
                            message: p.message,
                        })
                        .collect(),
                )
            }
            TargetError::Flow(e) => e.into(),
            TargetError::SecretInput(ref name) => ApiError::invalid(
                "secret_input",
                &format!("target.inputs.{name}"),
                e.to_string(),
            ),
            TargetError::Options(v) => in_target(ApiError::invalid(
                v.code,
                &format!("options.{}", v.field),
                v.message,
            )),
            TargetError::Launch(e) => in_target(e.into()),
        }
    }
}

/// Create a schedule. Its cron expression, time zone and target are checked (the flow and
/// its inputs, or the template, project, playbook and inventory must exist); 409 when the
/// name is taken.
#[utoipa::path(post, path = "/api/v1/schedules", request_body = CreateSchedule,
    responses((status = 201, body = ScheduleView), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
async fn create_schedule(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateSchedule>,
) -> ApiResult<(StatusCode, AuditTarget, Json<ScheduleView>)> {
    troupe_core::project::validate_name(&req.name, "name")?;
    let cadence = Cadence::parse(&req.cron, &req.timezone)?;
    check_target(&req.target, &state.flows, state.launcher.as_ref()).await?;
    let next_fire_at = cadence
        .next_after(Utc::now())
        .ok_or_else(|| ApiError::from(CadenceError::Never(req.cron.clone())))?;
    let schedule = state
        .store
        .create_schedule(&NewSchedule {
            name: req.name,
            cron: req.cron.trim().to_owned(),
            timezone: req.timezone.trim().to_owned(),
            target: req.target,
            missed: req.missed.unwrap_or(MissedFires::Skip),
            next_fire_at,
        })
        .await?;
    let target = AuditTarget::new("schedule", schedule.id).named(schedule.name.clone());
    Ok((StatusCode::CREATED, target, Json(view(schedule))))
}

/// Every schedule, by name, with its next fire times and what its last fire started.
#[utoipa::path(get, path = "/api/v1/schedules", responses((status = 200, body = ScheduleList)))]
async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<ScheduleList>> {
    let schedules = state
        .store
        .list_schedules()
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(ScheduleList { schedules }))
}

/// One schedule: its next fire times, and what its last fire started (`execution:<id>`,
/// `run:<id>`), skipped or why it failed.
#[utoipa::path(get, path = "/api/v1/schedules/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(view(state.store.get_schedule(id).await?)))
}

/// Delete a schedule: it fires no more (what it started goes on).
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn delete_schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_schedule(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
