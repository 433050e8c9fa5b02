//! Validation errors that name the offending field, so the API can answer with a 4xx that
//! says exactly what is wrong.

use serde::Serialize;

/// Input that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// A stable machine-readable code, e.g. `invalid_playbook`.
    pub code: &'static str,
    /// The request field at fault (dotted path), e.g. `extra_vars` or `hosts`.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field` with `code` and `message`.
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}
