//! Why a launch was refused. Turned into text only at the edge: the API's error body (with a
//! status and code per variant), an event record's reason, a log line.

use crate::request::Ref;
use troupe_ansible::PlaybookError;
use troupe_core::ValidationError;
use troupe_store::StoreError;

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A field of the request is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The project named does not exist.
    #[error("no project {0}")]
    UnknownProject(Ref),
    /// The inventory named does not exist.
    #[error("no inventory {0}")]
    UnknownInventory(Ref),
    /// The template named does not exist.
    #[error("no template {0}")]
    UnknownTemplate(Ref),
    /// The template's own inventory has been deleted since it was saved.
    #[error("the inventory of template {0:?} no longer exists")]
    TemplateInventoryGone(String),
    /// A credential named does not exist.
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    /// A playbook target without an inventory.
    #[error("give an inventory (id or name) or inline hosts")]
    MissingInventory,
    /// The playbook is not a file inside its project.
    #[error("{source} (project {project:?})")]
    Playbook {
        /// The project's name.
        project: String,
        /// What is wrong with the playbook.
        #[source]
        source: PlaybookError,
    },
    /// A job's unit has no `<action>-<unit>.yml`.
    #[error("unit {unit:?} has no playbook {playbook} in {dir}")]
    UnitPlaybookMissing {
        /// The unit.
        unit: String,
        /// The playbook looked for.
        playbook: String,
        /// Where it was looked for.
        dir: String,
    },
    /// A job's unit has no project or data_dir, and neither has its job.
    #[error(
        "unit {0:?} has no playbooks: PUT a project or data_dir on it, or give the job a project"
    )]
    UnitWithoutPlaybooks(String),
    /// A unit's data_dir is not usable.
    #[error("{0}")]
    InvalidDataDir(String),
    /// Notification targets cannot be sealed: no secret key was given to the launcher, or
    /// sealing failed (the message says nothing of the targets).
    #[error("notification targets cannot be stored: {0}")]
    Seal(String),
    /// The store failed or refused.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A launch's result.
pub type LaunchResult<T> = Result<T, LaunchError>;
