//! One module per resource.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use troupe_core::inventory::Inventory;
use troupe_core::project::{PlaybookRef, Project};
use troupe_core::run::{NewRun, Run};
use troupe_store::StoreError;
use troupe_worker::playbooks::{PlaybookError, project_root, resolve_playbook};

pub(crate) mod artifacts;
pub(crate) mod events;
pub(crate) mod git;
pub(crate) mod health;
pub(crate) mod inventories;
pub(crate) mod jobs;
pub(crate) mod projects;
pub(crate) mod runs;
pub(crate) mod stream;
pub(crate) mod templates;
pub(crate) mod tokens;

/// Unknown paths under the API answer in the API's error shape.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

/// A listing's page size: 50 by default, 1 to 500; 400 naming `limit` otherwise.
pub(crate) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and 500, got {limit}"),
        )
        .field("limit"));
    }
    Ok(limit)
}

pub(crate) use troupe_wire::IdOrName;

/// The project a request names; 422 naming `field` when there is none.
pub(crate) async fn find_project(
    state: &AppState,
    r: &IdOrName,
    field: &str,
) -> ApiResult<Project> {
    let found = match r {
        IdOrName::Id(id) => state.store.get_project(*id).await.map(Some),
        IdOrName::Name(name) => state.store.find_project(name).await,
    };
    match found {
        Ok(Some(p)) => Ok(p),
        Ok(None) | Err(StoreError::NotFound { .. }) => Err(ApiError::invalid(
            "unknown_project",
            field,
            format!("no project {r}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The inventory a request names; 422 naming `field` when there is none.
pub(crate) async fn find_inventory(
    state: &AppState,
    r: &IdOrName,
    field: &str,
) -> ApiResult<Inventory> {
    let found = match r {
        IdOrName::Id(id) => state.store.get_inventory(*id).await.map(Some),
        IdOrName::Name(name) => state.store.find_inventory(name).await,
    };
    match found {
        Ok(Some(i)) => Ok(i),
        Ok(None) | Err(StoreError::NotFound { .. }) => Err(ApiError::invalid(
            "unknown_inventory",
            field,
            format!("no inventory {r}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Checks that `playbook` is a file inside the project (symlinks followed).
pub(crate) async fn check_playbook(
    state: &AppState,
    project: &Project,
    playbook: &str,
) -> ApiResult<PlaybookRef> {
    let pb = PlaybookRef::parse(playbook)?;
    let root = project_root(project, &state.projects_dir);
    resolve_playbook(&root, pb.as_str())
        .await
        .map_err(playbook_error)?;
    Ok(pb)
}

pub(crate) fn playbook_error(e: PlaybookError) -> ApiError {
    match e {
        PlaybookError::Invalid(v) => v.into(),
        PlaybookError::Missing(_) => {
            ApiError::invalid("playbook_not_found", "playbook", e.to_string())
        }
        PlaybookError::Escapes(_) | PlaybookError::NotAFile(_) => {
            ApiError::invalid("invalid_playbook", "playbook", e.to_string())
        }
        PlaybookError::ProjectDir(_) => {
            ApiError::new(StatusCode::CONFLICT, "project_unavailable", e.to_string())
        }
    }
}

/// Validates and stores a run, wakes the workers and announces it: every way of starting a
/// run ends here.
pub(crate) async fn submit(state: &AppState, new: NewRun) -> ApiResult<Run> {
    new.validate()?;
    let run = state.store.create_run(&new).await?;
    state.pool.run_created(&run);
    Ok(run)
}

/// A project as the API shows it: credentials in a git URL (`https://user:token@host/...`) are
/// kept for cloning but never sent back.
pub(crate) fn shown(mut project: Project) -> Project {
    if let troupe_core::project::ProjectSource::Git { url, .. } = &mut project.source {
        *url = troupe_worker::git::redact_credentials(url);
    }
    project
}

#[cfg(test)]
mod tests {
    use super::shown;
    use troupe_core::project::{Project, ProjectSource};

    #[test]
    fn git_credentials_are_not_shown() {
        let p = Project {
            id: 1,
            name: "p".into(),
            source: ProjectSource::Git {
                url: "https://deploy:s3cret@git.example.com/org/repo.git".into(),
                git_ref: None,
            },
            sync: Default::default(),
            created_at: chrono::Utc::now(),
        };
        let shown = serde_json::to_string(&shown(p)).unwrap_or_default();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("git.example.com/org/repo.git"), "{shown}");
    }
}
