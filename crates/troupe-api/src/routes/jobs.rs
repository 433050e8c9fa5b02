//! RedRunner's jobs and units: a tagged set of named units; an action on a unit runs
//! `<action>-<unit>.yml` from the unit's playbooks; an action on the job runs it for every unit
//! at once, each in its own run.

use super::find_project;
use crate::AppState;
use crate::audit::AuditTarget;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use troupe_core::job::{
    Job, NewJob, Unit, UnitSource, aggregate_status, resolve_job_action, resolve_unit_action,
    validate_unit_name,
};
use troupe_core::run::Run;
use troupe_launch::jobs::Action;
use troupe_store::{Page, RunFilter};
use troupe_wire::jobs::JobsQuery as ListQuery;
use troupe_wire::jobs::{
    ActionRequest, CreateJob, JobActionResult, JobList, JobView, SetUnit, UnitError, UnitView,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(set_unit))
        .routes(routes!(unit_action))
        .routes(routes!(job_action))
        .routes(routes!(job_inventory))
}

/// Create a job: a tag and named units. Many jobs may share a tag.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = CreateJob,
    responses((status = 201, body = Job), (status = 422, body = crate::error::ErrorBody)))]
async fn create_job(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateJob>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Job>)> {
    let project_id = match &req.project {
        Some(r) => Some(find_project(&state, r, "project").await?.id),
        None => None,
    };
    let new = NewJob {
        tag: req.tag,
        units: req.units,
        project_id,
    };
    new.validate()?;
    let job = state.store.create_job(&new).await?;
    Ok((
        StatusCode::CREATED,
        AuditTarget::new("job", job.id),
        Json(job),
    ))
}

/// List jobs, newest first; `?tag=T&latest=true` returns the latest job with tag T.
#[utoipa::path(get, path = "/api/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 404, body = crate::error::ErrorBody)))]
async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    if q.latest {
        let Some(tag) = q.tag else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "latest=true needs a tag",
            )
            .field("tag"));
        };
        return match state.store.latest_job(&tag).await? {
            Some(job) => Ok(Json(job).into_response()),
            None => Err(ApiError::not_found("job with tag", format!("{tag:?}"))),
        };
    }
    let limit = super::page_limit(q.limit)?;
    let jobs = state
        .store
        .list_jobs(
            q.tag.as_deref(),
            Page {
                before: q.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(Json(JobList { jobs, next_cursor }).into_response())
}

/// One job, its units and their runs.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = i64, Path)), responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<JobView>> {
    let job = state.store.get_job(id).await?;
    let mut units = Vec::new();
    for unit in job.units {
        let filter = RunFilter {
            job_id: Some(job.id),
            unit: Some(unit.name.clone()),
            ..Default::default()
        };
        let runs = state
            .store
            .list_runs(
                &filter,
                Page {
                    before: None,
                    limit: 50,
                },
            )
            .await?;
        let status = runs
            .first()
            .map_or_else(|| "idle".to_owned(), |r| r.status.as_str().to_owned());
        units.push(UnitView {
            name: unit.name,
            source: unit.source,
            status,
            runs,
        });
    }
    let status = aggregate_status(units.iter().map(|u| u.status.as_str()));
    Ok(Json(JobView {
        id: job.id,
        tag: job.tag,
        project_id: job.project_id,
        created_at: job.created_at,
        status: status.to_owned(),
        units,
    }))
}

/// Set where a unit's playbooks are: a project, or a data_dir with a `project/` (or the seed's
/// `projects/`) subdirectory, absolute or relative to the server's `unit_data_dir_base`.
#[utoipa::path(put, path = "/api/v1/jobs/{id}/units/{unit}", params(("id" = i64, Path), ("unit" = String, Path)), request_body = SetUnit,
    responses((status = 200, body = Unit), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn set_unit(
    State(state): State<AppState>,
    ApiPath((id, unit)): ApiPath<(i64, String)>,
    ApiJson(req): ApiJson<SetUnit>,
) -> ApiResult<Json<Unit>> {
    validate_unit_name(&unit)?;
    let source = match (req.project, req.data_dir) {
        (Some(r), None) => UnitSource::Project(find_project(&state, &r, "project").await?.id),
        (None, Some(dir)) => {
            state.launcher.unit_playbook_dir(&dir).await?;
            UnitSource::DataDir(dir)
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_body",
                "project",
                "give either project or data_dir",
            ));
        }
    };
    Ok(Json(state.store.set_unit_source(id, &unit, &source).await?))
}

/// Run `<action>-<unit>.yml` for one unit. `action` is an action name or the playbook's file
/// name (`<action>-<unit>.yml`, or `<action>-each.yml`).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/units/{unit}/actions", params(("id" = i64, Path), ("unit" = String, Path)), request_body = ActionRequest,
    responses((status = 201, body = Run), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn unit_action(
    State(state): State<AppState>,
    ApiPath((id, unit)): ApiPath<(i64, String)>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Run>)> {
    let job = state.store.get_job(id).await?;
    let unit = job
        .units
        .iter()
        .find(|u| u.name == unit)
        .ok_or_else(|| ApiError::not_found("unit", format!("{unit:?} of job {id}")))?;
    let action = resolve_unit_action(&req.action, &unit.name)?;
    let run = launch_action(&state, &job, unit, &action, &req).await?;
    Ok((StatusCode::CREATED, super::runs::audited(&run), Json(run)))
}

/// A job action's 422, as the OpenAPI document describes it: the request itself is wrong (an
/// invalid action name, say), or it is right and no unit could start.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only described, never built: the handler answers with either part
enum JobActionRefused {
    /// No unit could start; each says why.
    Units(JobActionResult),
    /// The request was refused before any unit was tried.
    Error(crate::error::ErrorBody),
}

/// Run `<action>-<unit>.yml` for every unit of the job, each in its own run, in parallel. A
/// unit that cannot start (its playbook is missing, say) is reported for that unit only.
/// `action` is an action name or `<action>-each.yml`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/actions", params(("id" = i64, Path)), request_body = ActionRequest,
    responses((status = 201, body = JobActionResult), (status = 422, body = JobActionRefused)))]
async fn job_action(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<(StatusCode, Json<JobActionResult>)> {
    let action = resolve_job_action(&req.action)?;
    let job = state.store.get_job(id).await?;
    let mut result = JobActionResult {
        runs: Vec::new(),
        errors: Vec::new(),
    };
    for unit in &job.units {
        match launch_action(&state, &job, unit, &action, &req).await {
            Ok(run) => result.runs.push(run),
            Err(e) if e.status.is_client_error() => result.errors.push(UnitError {
                unit: unit.name.clone(),
                code: e.code.to_owned(),
                message: e.message,
            }),
            Err(e) => return Err(e),
        }
    }
    let status = if result.runs.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(result)))
}

async fn launch_action(
    state: &AppState,
    job: &Job,
    unit: &Unit,
    action: &str,
    req: &ActionRequest,
) -> ApiResult<Run> {
    let action = Action {
        action: action.to_owned(),
        extra_vars: super::runs::extra_vars_object(req.extra_vars.clone())?,
        hosts: req.hosts.clone(),
    };
    Ok(state.launcher.unit_action(job, unit, &action).await?)
}

/// The job's units as an Ansible dynamic inventory (`--list` shape): group `units` (and the
/// tag), with each unit's job id, tag and name in `_meta.hostvars`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/inventory", params(("id" = i64, Path)), responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)))]
async fn job_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let job = state.store.get_job(id).await?;
    let names: Vec<&str> = job.units.iter().map(|u| u.name.as_str()).collect();
    let mut hostvars = Map::new();
    for u in &job.units {
        hostvars.insert(
            u.name.clone(),
            json!({
                "troupe_job_id": job.id,
                "troupe_job_tag": job.tag,
                "troupe_unit": u.name,
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            }),
        );
    }
    let mut doc = json!({
        "all": {"children": ["ungrouped", "units"]},
        "units": {"hosts": names},
        "_meta": {"hostvars": hostvars},
    });
    // The tag is also a group when it is a valid group name.
    if job
        .tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && job.tag != "units"
        && job.tag != "all"
    {
        doc[job.tag.as_str()] = json!({"hosts": names});
        if let Some(children) = doc["all"]["children"].as_array_mut() {
            children.push(json!(job.tag));
        }
    }
    Ok(Json(doc))
}
