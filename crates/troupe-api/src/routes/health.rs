//! Liveness and readiness, the only routes without a token.

use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use troupe_wire::health::Health;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        store: None,
    })
}

/// How long readiness waits for the store. A store that is down can make a query wait for
/// its pool's whole acquire timeout (PostgreSQL refusing connections: 30 s of retries), and a
/// probe that hangs that long is taken for a dead process, not for a store that is away.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (code, status) = match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "readiness check: the store did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let health = Health {
        status: status.into(),
        store: Some(state.store.backend().to_owned()),
    };
    (code, Json(health))
}
