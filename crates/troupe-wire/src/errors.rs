//! The error body every failing request is answered with.

use serde::{Deserialize, Serialize};

// `{"error": {"code", "message", "field"}}`. Undocumented here: see the crate's docs.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

// A stable machine-readable `code` (`not_found`, `invalid_extra_vars`...), a human `message`,
// and the request `field` at fault when there is one.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem found, when a document has several (a flow): each names its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// One problem in a document, at a field (`steps[2].retry.until`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Where.
    pub field: String,
    /// What is wrong.
    pub message: String,
}
