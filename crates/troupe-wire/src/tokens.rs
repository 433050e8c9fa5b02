//! API tokens and the short-lived tokens of stream routes.

use serde::{Deserialize, Serialize};

// The body of `POST /api/v1/tokens`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for ("ci", "alice"...).
    pub name: String,
}

// The answer to `POST /api/v1/tokens`: the only time the secret is sent.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: i64,
    pub name: String,
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
