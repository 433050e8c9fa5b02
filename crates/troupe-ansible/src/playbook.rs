//! Finding a playbook inside its project, never outside it.

use std::path::{Path, PathBuf};
use troupe_core::ValidationError;
use troupe_core::project::PlaybookRef;

/// Why a playbook cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The path is malformed (absolute, `..`, not YAML...).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The project's directory is missing or unreadable.
    #[error("project directory {0} is not accessible")]
    ProjectDir(String),
    /// No such file in the project.
    #[error("playbook {0:?} does not exist in the project")]
    Missing(String),
    /// The path resolves (through a symlink) to somewhere outside the project.
    #[error("playbook {0:?} resolves to a path outside the project directory")]
    Escapes(String),
    /// The path is a directory or something else that is not a file.
    #[error("playbook {0:?} is not a regular file")]
    NotAFile(String),
}

/// Resolves `playbook` inside `project_dir`, following symlinks, and refuses anything that
/// ends up outside the project. Returns the canonical path. Blocks on the filesystem.
pub fn resolve_playbook_blocking(
    project_dir: &Path,
    playbook: &str,
) -> Result<PathBuf, PlaybookError> {
    let pb = PlaybookRef::parse(playbook)?;
    let root = std::fs::canonicalize(project_dir)
        .map_err(|_| PlaybookError::ProjectDir(project_dir.display().to_string()))?;
    let full = std::fs::canonicalize(root.join(pb.as_str()))
        .map_err(|_| PlaybookError::Missing(playbook.to_owned()))?;
    if !full.starts_with(&root) {
        return Err(PlaybookError::Escapes(playbook.to_owned()));
    }
    let meta = std::fs::metadata(&full).map_err(|_| PlaybookError::Missing(playbook.to_owned()))?;
    if !meta.is_file() {
        return Err(PlaybookError::NotAFile(playbook.to_owned()));
    }
    Ok(full)
}
