//! API tokens and the short-lived tokens of stream routes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// The body of `POST /api/v1/tokens`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for ("ci", "alice"...).
    pub name: String,
    /// What it may do: `admin` (the default), `operator`, `viewer`, `worker` (only the worker
    /// protocol) or `webhook` (only event intake). See docs/security.md.
    #[serde(default)]
    pub role: troupe_core::worker::TokenRole,
    /// Limit the token to these projects (ids or names); admin, operator and viewer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<crate::IdOrName>>,
    /// Seconds until the token expires (at most ten years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// When the token expires (RFC 3339); not with `expires_in_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

// The answer to `POST /api/v1/tokens`: the only time the secret is sent.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: i64,
    pub name: String,
    /// What it may do.
    pub role: troupe_core::worker::TokenRole,
    /// The ids of the projects it is limited to; absent for every project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<i64>>,
    /// When it expires; absent for never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The secret: shown once, only its hash is kept.
    pub token: String,
}

// A token as `GET /api/v1/tokens` lists it: never its secret nor its hash.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub role: troupe_core::worker::TokenRole,
    /// The ids of the projects it is limited to; `null` for every project.
    pub projects: Option<Vec<i64>>,
    pub created_at: DateTime<Utc>,
    /// When it expires; `null` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// True once `expires_at` has passed.
    pub expired: bool,
}

// The answer to `GET /api/v1/tokens`: every token not revoked, oldest first.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

// The answer to `POST /api/v1/stream-tokens`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamToken {
    /// Pass as `access_token=` on stream routes.
    pub token: String,
    /// Seconds it stays valid.
    pub expires_in_s: u64,
}
