//! Projects: directories of playbooks, on the server or cloned from git.

use serde::{Deserialize, Serialize};

pub use troupe_core::project::{NewProject, Project, ProjectSource, ProjectSync};

/// The query of `GET /api/v1/projects`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProjectsQuery {
    /// Only the project with this name.
    pub name: Option<String>,
}

// The answer to `GET /api/v1/projects`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

// The answer to `GET /api/v1/projects/{id}/playbooks`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookList {
    /// Playbook paths relative to the project.
    pub playbooks: Vec<String>,
}
