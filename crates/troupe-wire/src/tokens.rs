//! API tokens and the short-lived tokens of stream routes.

use serde::{Deserialize, Serialize};

// The body of `POST /api/v1/tokens`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for ("ci", "alice"...).
    pub name: String,
    /// What it may do: `admin` (the default) or `worker` (only the worker protocol).
    #[serde(default)]
    pub role: troupe_core::worker::TokenRole,
}

// The answer to `POST /api/v1/tokens`: the only time the secret is sent.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: i64,
    pub name: String,
    /// What it may do.
    pub role: troupe_core::worker::TokenRole,
    /// The secret: shown once, only its hash is kept.
    pub token: String,
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
