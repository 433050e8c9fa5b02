//! The audit log: who changed or launched what, when, from where (admins only).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use troupe_core::audit::AuditFilter;
use troupe_store::Page;
use troupe_wire::audit::{AuditList, AuditQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// The audit log, newest first: every change and launch made through the API (refused
/// attempts included), and the runs event rules, flows and schedules started.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = crate::error::ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let limit = super::page_limit(q.limit)?;
    if let (Some(since), Some(until)) = (q.since, q.until)
        && since > until
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("since ({since}) is after until ({until})"),
        )
        .field("since"));
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let filter = AuditFilter {
        actor: nonempty(q.actor),
        action: nonempty(q.action),
        target: nonempty(q.target),
        since: q.since,
        until: q.until,
    };
    let entries = state
        .store
        .list_audit(
            &filter,
            Page {
                before: q.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditList {
        entries,
        next_cursor,
    }))
}
