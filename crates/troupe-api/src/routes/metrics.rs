//! `GET /metrics`: this process's metrics in Prometheus' text format (see
//! docs/observability.md).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use troupe_telemetry::Snapshot;
use troupe_telemetry::metrics::CONTENT_TYPE;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// This process's metrics, for Prometheus to scrape: runs by status (from the store), the
/// queue, launch latency, events stored, live streams, event sources, store latency, ansible
/// processes. Each replica reports its own.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 503, body = crate::error::ErrorBody)))]
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let snapshot = Snapshot {
        runs: state.store.count_runs_by_status().await?,
        stream_subscribers: state.limits.streams_open_total() as u64,
    };
    let text = state
        .telemetry
        .metrics
        .encode(&snapshot)
        .map_err(|e| ApiError::internal("could not encode the metrics", &e))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
