//! Git projects: cloning on create, `POST /projects/{id}/sync`.
//!
//! A git failure (unreachable or unknown repository, missing ref, time limit) is
//! `422 sync_failed` with git's own message, credentials removed: the project's source cannot
//! be used as given, and retrying the same request without changing the repository or the
//! source will not help. For a sync, the failure is also recorded in the project's
//! `sync.error`, and the last good checkout stays in place.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use troupe_core::credential::CredentialKind;
use troupe_core::project::{NewProject, Project, ProjectSource};
use troupe_worker::git::GitAuth;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sync_project))
}

fn sync_failed(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "sync_failed", message)
}

/// What a git project's credential gives git: its token or key, opened. A credential that
/// does not exist or is not a `git` one is 422 naming `source.credential`.
async fn git_auth(state: &AppState, credential: Option<&str>) -> ApiResult<GitAuth> {
    let Some(name) = credential else {
        return Ok(GitAuth::none());
    };
    let Some(stored) = state.store.sealed_credential(name).await? else {
        return Err(ApiError::invalid(
            "unknown_credential",
            "source.credential",
            format!("there is no credential {name:?} (troupe credentials list)"),
        ));
    };
    if stored.credential.kind != CredentialKind::Git {
        return Err(ApiError::invalid(
            "wrong_credential_kind",
            "source.credential",
            format!(
                "credential {name:?} is a {} credential; a git project needs a git credential",
                stored.credential.kind
            ),
        ));
    }
    let secret = troupe_core::credential::open(state.sealer.as_ref(), &stored.sealed)
        .map_err(|e| ApiError::internal("could not open the project's credential", &e))?;
    GitAuth::from_secret(&secret).ok_or_else(|| {
        ApiError::invalid(
            "wrong_credential_kind",
            "source.credential",
            format!("credential {name:?} is not a git credential"),
        )
    })
}

/// Creates a git project: clones it first (so a bad URL or ref stores nothing), then stores
/// it and moves the clone into its checkout directory.
pub(crate) async fn create_git_project(state: &AppState, new: &NewProject) -> ApiResult<Project> {
    let staged = stage_git_project(state, new).await?;
    // The staged clone is removed if storing fails.
    let project = state.store.create_project(new).await?;
    place_git_project(state, staged, project).await
}

/// The first half of creating a git project: checks that the name is free and clones the
/// repository into a staging directory (removed when the result is dropped). 422
/// `sync_failed` naming `source` when git cannot clone it.
pub(crate) async fn stage_git_project(
    state: &AppState,
    new: &NewProject,
) -> ApiResult<troupe_worker::git::Staged> {
    let ProjectSource::Git {
        url,
        git_ref,
        credential,
    } = &new.source
    else {
        return Err(ApiError::invalid(
            "invalid_source",
            "source.type",
            "not a git project",
        ));
    };
    if state.store.find_project(&new.name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("project {:?} already exists", new.name),
        ));
    }
    let auth = git_auth(state, credential.as_deref()).await?;
    state
        .git
        .stage(url, git_ref.as_deref(), &auth)
        .await
        .map_err(|e| sync_failed(format!("could not clone the project: {e}")).field("source"))
}

/// The second half: moves the staged clone into the checkout of `project`, just stored, and
/// records the sync.
pub(crate) async fn place_git_project(
    state: &AppState,
    staged: troupe_worker::git::Staged,
    project: Project,
) -> ApiResult<Project> {
    let sync = match state.git.adopt(staged, project.id).await {
        Ok(sync) => sync,
        Err(e) => {
            let failed = troupe_core::project::ProjectSync {
                error: Some(e.0.clone()),
                synced_at: Some(chrono::Utc::now()),
                ..Default::default()
            };
            state.store.set_project_sync(project.id, &failed).await?;
            return Err(ApiError::internal(
                "could not place the project's checkout",
                &e,
            ));
        }
    };
    if let Some(why) = &sync.requirements_error {
        tracing::warn!(project = project.id, %why, "requirements were not installed");
    }
    Ok(state.store.set_project_sync(project.id, &sync).await?)
}

/// Fetch a git project again and check out its ref (a branch moves to its newest commit).
/// Installs `requirements.yml` roles and collections; their failure is reported in
/// `sync.requirements_error`, never fatal. A git failure is `422 sync_failed` and is recorded
/// in `sync.error`; runs keep using the last good checkout.
#[utoipa::path(post, path = "/api/v1/projects/{id}/sync", params(("id" = i64, Path)),
    responses((status = 200, body = Project), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn sync_project(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Project>> {
    let project = state.store.get_project(id).await?;
    let ProjectSource::Git { credential, .. } = &project.source else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_git_project",
            format!(
                "project {:?} is a directory on the server; only git projects are synced",
                project.name
            ),
        ));
    };
    let auth = git_auth(&state, credential.as_deref()).await?;
    let sync = state.git.sync(&project, &auth).await;
    let project = state.store.set_project_sync(id, &sync).await?;
    match &sync.error {
        Some(e) => Err(sync_failed(format!(
            "could not sync project {:?}: {e}",
            project.name
        ))),
        None => {
            tracing::info!(project = id, commit = ?sync.commit, "project synced");
            Ok(Json(super::shown(project)))
        }
    }
}
