//! API tokens: issue (with a role, a project scope, an expiry), list, revoke.

use crate::AppState;
use crate::audit::AuditTarget;
use crate::auth::{Caller, generate_token, hash_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use troupe_store::{NewTokenRecord, TokenRecord};
use troupe_wire::tokens::{IssuedToken, NewToken, StreamToken, TokenList, TokenView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(create_stream_token))
}

/// The longest `expires_in_s` taken: ten years.
const MAX_EXPIRES_IN_S: u64 = 10 * 366 * 24 * 3600;

/// Issue a new API token. The secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 422, body = crate::error::ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, AuditTarget, Json<IssuedToken>)> {
    troupe_core::project::validate_name(&req.name, "name")?;
    let expires_at = expiry(&req, Utc::now())?;
    let projects = match &req.projects {
        None => None,
        Some(_) if !req.role.scopable() => {
            return Err(ApiError::invalid(
                "invalid_projects",
                "projects",
                format!(
                    "a {} token cannot be limited to projects (only admin, operator and viewer \
                     tokens can)",
                    req.role.as_str()
                ),
            ));
        }
        Some(refs) => {
            let mut ids = Vec::with_capacity(refs.len());
            for r in refs {
                let id = super::find_project(&state, r, "projects").await?.id;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Some(ids)
        }
    };
    let token = generate_token();
    let rec = state
        .store
        .insert_token(&NewTokenRecord {
            name: req.name,
            hash: hash_token(&token),
            role: req.role,
            projects,
            expires_at,
        })
        .await?;
    state.tokens.insert(&rec);
    Ok((
        StatusCode::CREATED,
        AuditTarget::new("token", rec.id)
            .named(rec.name.clone())
            .detail(serde_json::json!({"role": rec.role.as_str()})),
        Json(IssuedToken {
            id: rec.id,
            name: rec.name,
            role: rec.role,
            projects: rec.projects,
            expires_at: rec.expires_at,
            token,
        }),
    ))
}

/// When a new token expires: `expires_in_s` or `expires_at` (not both), in the future.
fn expiry(req: &NewToken, now: DateTime<Utc>) -> ApiResult<Option<DateTime<Utc>>> {
    match (req.expires_in_s, req.expires_at) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "invalid_expiry",
            "expires_at",
            "give expires_in_s or expires_at, not both",
        )),
        (Some(s), None) => {
            if s == 0 || s > MAX_EXPIRES_IN_S {
                return Err(ApiError::invalid(
                    "invalid_expiry",
                    "expires_in_s",
                    format!("expires_in_s must be between 1 and {MAX_EXPIRES_IN_S}, got {s}"),
                ));
            }
            // In range, so the cast and the addition cannot overflow.
            Ok(Some(now + chrono::Duration::seconds(s as i64)))
        }
        (None, Some(at)) if at <= now => Err(ApiError::invalid(
            "invalid_expiry",
            "expires_at",
            format!("expires_at {at} is not in the future"),
        )),
        (None, at) => Ok(at),
    }
}

fn view(t: TokenRecord, now: DateTime<Utc>) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name,
        role: t.role,
        projects: t.projects,
        created_at: t.created_at,
        expired: t.expires_at.is_some_and(|e| e <= now),
        expires_at: t.expires_at,
    }
}

/// List the tokens that are not revoked (expired ones included, marked), oldest first. Never
/// shows a secret or its hash.
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = TokenList)))]
async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    let now = Utc::now();
    let tokens = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| view(t, now))
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// Revoke a token: it is refused from now on (by this process at once, by other replicas
/// within 30 s). The last admin token that is limited to no project cannot be revoked (409).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let rec = state.store.revoke_token(id, Utc::now()).await?;
    state.tokens.remove(rec.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a short-lived token for the `access_token` query parameter of stream routes (for
/// browsers' EventSource and WebSocket, which cannot send an Authorization header).
#[utoipa::path(post, path = "/api/v1/stream-tokens", responses((status = 201, body = StreamToken)))]
async fn create_stream_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> (StatusCode, Json<StreamToken>) {
    (
        StatusCode::CREATED,
        Json(StreamToken {
            token: state.tokens.issue_stream_token(caller.token_id),
            expires_in_s: crate::auth::STREAM_TOKEN_TTL.as_secs(),
        }),
    )
}
