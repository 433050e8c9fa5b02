//! Issuing more API tokens.

use crate::AppState;
use crate::auth::{generate_token, hash_token};
use crate::error::ApiResult;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use troupe_wire::tokens::{IssuedToken, NewToken, StreamToken};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token))
        .routes(routes!(create_stream_token))
}

/// Issue a new API token. The secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 201, body = IssuedToken)))]
async fn create_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    troupe_core::project::validate_name(&req.name, "name")?;
    let token = generate_token();
    let hash = hash_token(&token);
    let rec = state.store.create_token(&req.name, &hash, req.role).await?;
    state.tokens.insert_hex(&hash, rec.role);
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            id: rec.id,
            name: rec.name,
            role: rec.role,
            token,
        }),
    ))
}

/// Issue a short-lived token for the `access_token` query parameter of stream routes (for
/// browsers' EventSource and WebSocket, which cannot send an Authorization header).
#[utoipa::path(post, path = "/api/v1/stream-tokens", responses((status = 201, body = StreamToken)))]
async fn create_stream_token(State(state): State<AppState>) -> (StatusCode, Json<StreamToken>) {
    (
        StatusCode::CREATED,
        Json(StreamToken {
            token: state.tokens.issue_stream_token(),
            expires_in_s: crate::auth::STREAM_TOKEN_TTL.as_secs(),
        }),
    )
}
