//! Projects: directories of playbooks, on the server or cloned from git.

use crate::AppState;
use crate::audit::AuditTarget;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use troupe_core::project::{NewProject, Project, ProjectSource};
use troupe_wire::projects::{PlaybookList, ProjectList, ProjectsQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project))
        .routes(routes!(list_playbooks))
        .merge(super::git::router())
}

/// Register a project.
#[utoipa::path(post, path = "/api/v1/projects", request_body = NewProject,
    responses((status = 201, body = Project), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_project(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewProject>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Project>)> {
    new.validate()?;
    match &new.source {
        ProjectSource::Git { .. } => {
            let project = super::git::create_git_project(&state, &new).await?;
            return Ok((
                StatusCode::CREATED,
                AuditTarget::new("project", project.id).named(project.name.clone()),
                Json(super::shown(project)),
            ));
        }
        ProjectSource::Dir { path } => {
            let is_dir = tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir());
            if !is_dir {
                return Err(ApiError::invalid(
                    "invalid_source",
                    "source.path",
                    format!("{path} is not a directory the server can read"),
                ));
            }
        }
    }
    let project = state.store.create_project(&new).await?;
    Ok((
        StatusCode::CREATED,
        AuditTarget::new("project", project.id).named(project.name.clone()),
        Json(super::shown(project)),
    ))
}

/// List projects.
#[utoipa::path(get, path = "/api/v1/projects", params(ProjectsQuery), responses((status = 200, body = ProjectList)))]
async fn list_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ProjectsQuery>,
) -> ApiResult<Json<ProjectList>> {
    let projects: Vec<Project> = match q.name {
        Some(name) => state.store.find_project(&name).await?.into_iter().collect(),
        None => state.store.list_projects().await?,
    };
    let projects = projects
        .into_iter()
        .filter(|p| caller.sees(p.id))
        .map(super::shown)
        .collect();
    Ok(Json(ProjectList { projects }))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/projects/{id}", params(("id" = i64, Path)), responses((status = 200, body = Project), (status = 404, body = crate::error::ErrorBody)))]
async fn get_project(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Project>> {
    Ok(Json(super::shown(state.store.get_project(id).await?)))
}

/// The playbooks a project holds.
#[utoipa::path(get, path = "/api/v1/projects/{id}/playbooks", params(("id" = i64, Path)), responses((status = 200, body = PlaybookList), (status = 404, body = crate::error::ErrorBody)))]
async fn list_playbooks(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<PlaybookList>> {
    let project = state.store.get_project(id).await?;
    let dir = troupe_launch::playbooks::project_root(&project, &state.projects_dir);
    let path = dir.display().to_string();
    let listed =
        tokio::task::spawn_blocking(move || troupe_launch::playbooks::list_playbooks(&dir))
            .await
            .map_err(|e| ApiError::internal("listing playbooks failed", &e))?;
    match listed {
        Ok(playbooks) => Ok(Json(PlaybookList { playbooks })),
        Err(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "project_unavailable",
            format!("project directory {path} cannot be read"),
        )),
    }
}
