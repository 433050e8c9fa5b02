//! What can go wrong in a store, the same for every backend.

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing, e.g. `run`.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The change conflicts with what is stored (duplicate name, run already finished...).
    #[error("{0}")]
    Conflict(String),
    /// The backend failed (connection lost, disk full...). Retrying may help.
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A `NotFound` for `what` with `id`.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;
