//! Errors of this crate.

use std::path::PathBuf;

/// What can go wrong finding, bootstrapping or launching ansible.
#[derive(Debug, thiserror::Error)]
pub enum AnsibleError {
    /// No `ansible-playbook` was found where troupe looked.
    #[error("ansible-playbook not found (looked in: {looked})")]
    NotFound {
        /// The places searched, for the message.
        looked: String,
    },
    /// A file exists but does not behave like `ansible-playbook`.
    #[error("{path} is not a working ansible-playbook: {reason}")]
    NotAnsible {
        /// The executable tried.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Bootstrapping the venv failed.
    #[error("bootstrapping ansible-core failed: {0}")]
    Bootstrap(String),
    /// The playbook is not (any more) a file inside the project.
    #[error(transparent)]
    Playbook(#[from] crate::PlaybookError),
    /// The inventory could not be turned into files ansible reads.
    #[error("invalid inventory: {0}")]
    Inventory(String),
    /// Preparing the run directory or spawning the process failed.
    #[error("{context}: {source}")]
    Io {
        /// What troupe was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AnsibleError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AnsibleError::Io {
            context: context.into(),
            source,
        }
    }
}
