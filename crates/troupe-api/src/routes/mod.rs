//! One module per resource.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use troupe_core::inventory::Inventory;
use troupe_core::project::{PlaybookRef, Project};
use troupe_launch::playbooks::{PlaybookError, project_root, resolve_playbook};
use troupe_launch::{LaunchError, Ref};
use troupe_store::StoreError;

pub(crate) mod artifacts;
pub(crate) mod audit;
pub(crate) mod credentials;
pub(crate) mod events;
pub(crate) mod flows;
pub(crate) mod git;
pub(crate) mod health;
pub(crate) mod inventories;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod notifications;
pub(crate) mod pansible;
pub(crate) mod projects;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod stream;
pub(crate) mod templates;
pub(crate) mod tokens;
pub(crate) mod workers;

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

impl From<LaunchError> for ApiError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Invalid(v) => v.into(),
            LaunchError::UnknownProject(_) => {
                ApiError::invalid("unknown_project", "project", e.to_string())
            }
            LaunchError::UnknownInventory(_) => {
                ApiError::invalid("unknown_inventory", "inventory", e.to_string())
            }
            LaunchError::UnknownTemplate(_) => {
                ApiError::invalid("unknown_template", "template", e.to_string())
            }
            LaunchError::TemplateInventoryGone(_) => ApiError::new(
                StatusCode::CONFLICT,
                "template_inventory_missing",
                e.to_string(),
            ),
            LaunchError::UnknownCredential(_) => {
                ApiError::invalid("unknown_credential", "credentials", e.to_string())
            }
            LaunchError::MissingInventory => {
                ApiError::invalid("missing_inventory", "inventory", e.to_string())
            }
            LaunchError::Playbook { source, .. } => playbook_error(source),
            LaunchError::UnitPlaybookMissing { .. } => {
                ApiError::invalid("playbook_not_found", "action", e.to_string())
            }
            LaunchError::UnitWithoutPlaybooks(_) => {
                ApiError::invalid("unit_without_playbooks", "unit", e.to_string())
            }
            LaunchError::InvalidDataDir(why) => {
                ApiError::invalid("invalid_data_dir", "data_dir", why)
            }
            LaunchError::Seal(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notify_unavailable",
                e.to_string(),
            ),
            LaunchError::Store(e) => e.into(),
        }
    }
}

/// The launch service's reference for what a request names by id or name.
pub(crate) fn to_ref(r: &IdOrName) -> Ref {
    match r {
        IdOrName::Id(id) => Ref::Id(*id),
        IdOrName::Name(n) => Ref::Name(n.clone()),
    }
}

/// A project as the API shows it: credentials in a git URL (`https://user:token@host/...`) are
/// kept for cloning but never sent back.
pub(crate) fn shown(mut project: Project) -> Project {
    if let troupe_core::project::ProjectSource::Git { url, .. } = &mut project.source {
        *url = troupe_core::url::redact_credentials(url);
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
                credential: None,
            },
            sync: Default::default(),
            created_at: chrono::Utc::now(),
        };
        let shown = serde_json::to_string(&shown(p)).unwrap_or_default();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("git.example.com/org/repo.git"), "{shown}");
    }
}
