//! Notifications of runs and executions: where each end was told, and how that went.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiPath;
use axum::Json;
use axum::extract::State;
use troupe_core::notify::Subject;
use troupe_wire::notifications::NotificationList;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_notifications))
        .routes(routes!(execution_notifications))
}

/// A run's notifications (from its template or rule), oldest first: target (URL shown as
/// scheme and host), state (`pending`, `sent`, `failed`, `skipped`), attempts, last error.
#[utoipa::path(get, path = "/api/v1/runs/{id}/notifications", params(("id" = i64, Path)),
    responses((status = 200, body = NotificationList), (status = 404, body = crate::error::ErrorBody)))]
async fn run_notifications(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<NotificationList>> {
    // 404 for a run that does not exist, not an empty list.
    state.store.get_run(id).await?;
    Ok(Json(NotificationList {
        notifications: state.store.list_notifications(Subject::Run(id)).await?,
    }))
}

/// An execution's notifications (from its flow's `notify`), oldest first.
#[utoipa::path(get, path = "/api/v1/executions/{id}/notifications", params(("id" = i64, Path)),
    responses((status = 200, body = NotificationList), (status = 404, body = crate::error::ErrorBody)))]
async fn execution_notifications(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<NotificationList>> {
    state.store.get_execution(id).await?;
    Ok(Json(NotificationList {
        notifications: state
            .store
            .list_notifications(Subject::Execution(id))
            .await?,
    }))
}
