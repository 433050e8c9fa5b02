//! One module per resource.

use crate::error::ApiError;

pub(crate) mod artifacts;
pub(crate) mod health;
pub(crate) mod inventories;
pub(crate) mod projects;
pub(crate) mod runs;
pub(crate) mod stream;
pub(crate) mod tokens;

/// Unknown paths under the API answer in the API's error shape.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

/// A reference to a resource by id or by name.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum IdOrName {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}
