//! Liveness and readiness (`/healthz`, `/readyz`), the only answers sent without a token.

use serde::{Deserialize, Serialize};

/// How the service is: `ok` (alive), `ready` (its store answers) or `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// The store's backend (`sqlite`, `postgres`); readiness only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}
