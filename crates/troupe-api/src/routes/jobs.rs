//! RedRunner's jobs and units: a tagged set of named units; an action on a unit runs
//! `<action>-<unit>.yml` from the unit's playbooks; an action on the job runs it for every unit
//! at once, each in its own run.

use super::{find_project, submit};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::job::{Job, NewJob, Unit, UnitSource, validate_action, validate_unit_name};
use troupe_core::project::{NewProject, PlaybookRef, Project, ProjectSource};
use troupe_core::run::{NewRun, Run, RunOptions};
use troupe_store::{Page, RunFilter, StoreError};
use troupe_wire::jobs::JobsQuery as ListQuery;
use troupe_wire::jobs::{
    ActionRequest, CreateJob, JobActionResult, JobList, JobView, SetUnit, UnitError, UnitView,
};
use troupe_worker::playbooks::{PlaybookError, project_root, resolve_playbook};
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
) -> ApiResult<(StatusCode, Json<Job>)> {
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
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_job(&new).await?),
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
#[utoipa::path(get, path = "/api/v1/jobs/{id}", responses((status = 200, body = JobView), (status = 404, body = crate::error::ErrorBody)))]
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
    let status = aggregate(units.iter().map(|u| u.status.as_str()));
    Ok(Json(JobView {
        id: job.id,
        tag: job.tag,
        project_id: job.project_id,
        created_at: job.created_at,
        status: status.to_owned(),
        units,
    }))
}

/// A job's status from its units' latest statuses.
fn aggregate<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let all: Vec<&str> = statuses.collect();
    if all.iter().all(|s| *s == "idle") {
        "idle"
    } else if all.iter().any(|s| matches!(*s, "queued" | "running")) {
        "running"
    } else if all.iter().any(|s| !matches!(*s, "successful" | "idle")) {
        "failed"
    } else {
        "successful"
    }
}

/// Set where a unit's playbooks are: a project, or a data_dir with a `project/` (or the seed's
/// `projects/`) subdirectory.
#[utoipa::path(put, path = "/api/v1/jobs/{id}/units/{unit}", request_body = SetUnit,
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
            playbook_dir_of(Path::new(&dir)).await?;
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

/// The playbooks directory of a data_dir: `project/`, else `projects/`.
async fn playbook_dir_of(data_dir: &Path) -> ApiResult<PathBuf> {
    if !data_dir.is_absolute() {
        return Err(ApiError::invalid(
            "invalid_data_dir",
            "data_dir",
            format!(
                "data_dir must be an absolute path, got {}",
                data_dir.display()
            ),
        ));
    }
    for sub in ["project", "projects"] {
        let dir = data_dir.join(sub);
        if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Ok(dir);
        }
    }
    Err(ApiError::invalid(
        "invalid_data_dir",
        "data_dir",
        format!(
            "{} has no project/ or projects/ directory of playbooks",
            data_dir.display()
        ),
    ))
}

/// Run `<action>-<unit>.yml` for one unit.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/units/{unit}/actions", request_body = ActionRequest,
    responses((status = 201, body = Run), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn unit_action(
    State(state): State<AppState>,
    ApiPath((id, unit)): ApiPath<(i64, String)>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let job = state.store.get_job(id).await?;
    let unit = job
        .units
        .iter()
        .find(|u| u.name == unit)
        .ok_or_else(|| ApiError::not_found("unit", format!("{unit:?} of job {id}")))?;
    let run = launch_action(&state, &job, unit, &req).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// Run `<action>-<unit>.yml` for every unit of the job, each in its own run, in parallel. A
/// unit that cannot start (its playbook is missing, say) is reported for that unit only.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/actions", request_body = ActionRequest,
    responses((status = 201, body = JobActionResult), (status = 422, body = JobActionResult)))]
async fn job_action(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<(StatusCode, Json<JobActionResult>)> {
    validate_action(&req.action)?;
    let job = state.store.get_job(id).await?;
    let mut result = JobActionResult {
        runs: Vec::new(),
        errors: Vec::new(),
    };
    for unit in &job.units {
        match launch_action(&state, &job, unit, &req).await {
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

/// The default inventory of a unit action: this machine.
const LOCALHOST: &str = "localhost ansible_connection=local\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n";

async fn launch_action(
    state: &AppState,
    job: &Job,
    unit: &Unit,
    req: &ActionRequest,
) -> ApiResult<Run> {
    validate_action(&req.action)?;
    let project = unit_project(state, job, unit).await?;
    let playbook = format!("{}-{}.yml", req.action, unit.name);
    let root = project_root(&project, &state.projects_dir);
    match resolve_playbook(&root, &playbook).await {
        Ok(_) => {}
        Err(PlaybookError::Missing(_)) => {
            return Err(ApiError::invalid(
                "playbook_not_found",
                "action",
                format!(
                    "unit {:?} has no playbook {playbook} in {}",
                    unit.name,
                    root.display()
                ),
            ));
        }
        Err(e) => return Err(super::playbook_error(e)),
    }
    let mut extra_vars = match &req.extra_vars {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_extra_vars",
                "extra_vars",
                "extra_vars must be a JSON object",
            ));
        }
    };
    extra_vars.insert("troupe_job_id".into(), json!(job.id));
    extra_vars.insert("troupe_job_tag".into(), json!(job.tag));
    extra_vars.insert("troupe_unit".into(), json!(unit.name));
    extra_vars.insert("troupe_action".into(), json!(req.action));
    let hosts = req.hosts.clone().unwrap_or_else(|| LOCALHOST.to_owned());
    let inventory = InventoryContent {
        format: InventoryFormat::detect(&hosts),
        hosts,
        vars: None,
    };
    inventory.validate()?;
    let new = NewRun {
        project_id: project.id,
        playbook: PlaybookRef::parse(&playbook)?,
        inventory_id: None,
        inventory,
        options: RunOptions {
            extra_vars,
            ..Default::default()
        },
        labels: Default::default(),
        tag: Some(job.tag.clone()),
        origin: troupe_core::run::Origin::JobUnit {
            job_id: job.id,
            unit: unit.name.clone(),
        },
    };
    submit(state, new).await
}

/// The project holding a unit's playbooks: its own, else the job's. A data_dir is registered
/// as a project (once, named after its path) so runs can refer to it.
async fn unit_project(state: &AppState, job: &Job, unit: &Unit) -> ApiResult<Project> {
    match &unit.source {
        Some(UnitSource::Project(id)) => Ok(state.store.get_project(*id).await?),
        Some(UnitSource::DataDir(dir)) => {
            let pdir = playbook_dir_of(Path::new(dir)).await?;
            let path = pdir.display().to_string();
            let name = format!(
                "datadir-{}",
                hex::encode(&Sha256::digest(path.as_bytes())[..6])
            );
            if let Some(p) = state.store.find_project(&name).await? {
                return Ok(p);
            }
            let new = NewProject {
                name: name.clone(),
                source: ProjectSource::Dir { path },
            };
            match state.store.create_project(&new).await {
                Ok(p) => Ok(p),
                // Two actions registering the same data_dir at once: take the winner's.
                Err(StoreError::Conflict(_)) => state
                    .store
                    .find_project(&name)
                    .await?
                    .ok_or_else(|| ApiError::internal("registering a data_dir", &"lost a race")),
                Err(e) => Err(e.into()),
            }
        }
        None => match job.project_id {
            Some(id) => Ok(state.store.get_project(id).await?),
            None => Err(ApiError::invalid(
                "unit_without_playbooks",
                "unit",
                format!(
                    "unit {:?} has no playbooks: PUT a project or data_dir on it, or give the job a project",
                    unit.name
                ),
            )),
        },
    }
}

/// The job's units as an Ansible dynamic inventory (`--list` shape): group `units` (and the
/// tag), with each unit's job id, tag and name in `_meta.hostvars`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/inventory", responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)))]
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

#[cfg(test)]
mod tests {
    use super::aggregate;

    #[test]
    fn job_status_aggregates_unit_statuses() {
        assert_eq!(aggregate(["idle", "idle"].into_iter()), "idle");
        assert_eq!(aggregate(["successful", "running"].into_iter()), "running");
        assert_eq!(aggregate(["successful", "failed"].into_iter()), "failed");
        assert_eq!(aggregate(["successful", "idle"].into_iter()), "successful");
        assert_eq!(aggregate(["successful", "canceled"].into_iter()), "failed");
    }
}
