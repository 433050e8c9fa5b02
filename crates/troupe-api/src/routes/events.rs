//! Inbound events: webhooks in, the record of every event received, and the rules document.

use crate::AppState;
use crate::auth::Lookup;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;
use troupe_core::inbound::EventStatus;
use troupe_events::sink::{Inbound, Sink};
use troupe_events::sources::webhook;
use troupe_events::{ApplyError, EventService};
use troupe_store::{EventRecordFilter, Page, StoreError};
use troupe_wire::events::{
    EventList, EventView, EventsQuery, HookResponse, PutRulesQuery, RulesView, SourceState,
    SourceView,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Routes that need an API token.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(get_event))
        .routes(routes!(get_rules, put_rules))
        .routes(routes!(list_sources))
}

/// Webhook routes: they authenticate themselves (signature, source token, or API token).
pub(crate) fn hooks_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hook))
        .routes(routes!(hook_with_key))
}

/// Headers that identify a delivery, so a sender's retry is not run twice.
const DELIVERY_HEADERS: [&str; 3] = [
    "x-github-delivery",
    "x-gitlab-event-uuid",
    "idempotency-key",
];

/// Deliver an event to a webhook source; the routing key comes from the source's
/// configuration (a header or a JSON pointer).
#[utoipa::path(post, path = "/api/v1/hooks/{source}", request_body = Object,
    params(("source" = String, Path, description = "The webhook source's name")),
    security(("bearer" = []), ()),
    responses((status = 202, body = HookResponse), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
async fn hook(
    State(state): State<AppState>,
    uri: Uri,
    ApiPath(source): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let api_token = intake_token(&state, &uri, &headers).await?;
    deliver_hook(&state, &source, None, &headers, body, api_token).await
}

/// Deliver an event to a webhook source with the routing key in the path.
#[utoipa::path(post, path = "/api/v1/hooks/{source}/{routing_key}", request_body = Object,
    params(("source" = String, Path, description = "The webhook source's name"),
        ("routing_key" = String, Path, description = "The event's routing key")),
    security(("bearer" = []), ()),
    responses((status = 202, body = HookResponse), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
async fn hook_with_key(
    State(state): State<AppState>,
    uri: Uri,
    ApiPath((source, routing_key)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let api_token = intake_token(&state, &uri, &headers).await?;
    deliver_hook(
        &state,
        &source,
        Some(&routing_key),
        &headers,
        body,
        api_token,
    )
    .await
}

/// Whether the request carries an API token that may deliver events (webhook, operator or
/// admin; `access::RULES`). A token of ours that may not is refused (401 expired, 403 wrong
/// role or project-scoped); a bearer that is not one of ours leaves the decision to the
/// source's own signature or token.
async fn intake_token(state: &AppState, uri: &Uri, headers: &HeaderMap) -> ApiResult<bool> {
    let Some(presented) = crate::auth::bearer(headers) else {
        return Ok(false);
    };
    if state.tokens.lookup_fresh(&*state.store, presented).await == Lookup::Unknown {
        return Ok(false);
    }
    crate::auth::authorize(state, &Method::POST, uri.path(), presented)
        .await
        .map(|_| true)
}

async fn deliver_hook(
    state: &AppState,
    source: &str,
    path_key: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    api_token: bool,
) -> ApiResult<Response> {
    let events = &state.events;
    let Some(cfg) = events.webhook(source) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no webhook source named {source:?} is configured"),
        ));
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if body.len() > cfg.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is {} bytes; source {source:?} accepts at most {}",
                body.len(),
                cfg.max_body_bytes
            ),
        ));
    }
    // An intake API token is always enough; otherwise the source's own signature or token.
    if !api_token {
        webhook::authenticate(&cfg, header, &body).map_err(|why| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string())
        })?;
    }
    // After authentication, so that nobody else can use up a sender's rate.
    state.limits.admit_webhook(source, cfg.rate)?;
    let routing_key = webhook::routing_key(&cfg, path_key, header, &body)
        .map_err(|why| ApiError::invalid("missing_routing_key", "routing_key", why.to_string()))?;
    let mut inbound = Inbound::json(source, &routing_key, body);
    inbound.delivery_id = DELIVERY_HEADERS.iter().find_map(|h| header(h));
    inbound.headers = forwarded_headers(headers);
    let delivered = events.ingestor().deliver(inbound).await.map_err(|e| {
        tracing::warn!(source, error = %e, "webhook event not stored");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event could not be stored; retry later",
        )
    })?;
    events.note_delivered(source);
    let body = HookResponse {
        event: delivered.record.into(),
        duplicate: delivered.duplicate,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The request headers a rule may look at (`event.headers`): `x-*` ones and the content
/// type, never credentials or signatures.
fn forwarded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            (n.starts_with("x-") || n == "content-type" || n == "user-agent")
                && !webhook::SIGNATURE_HEADERS.contains(&n)
                && n != webhook::TOKEN_HEADER
                && n != webhook::GITLAB_TOKEN_HEADER
        })
        .filter_map(|(name, v)| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .take(32)
        .collect()
}

/// Events received, newest first.
#[utoipa::path(get, path = "/api/v1/events", params(EventsQuery),
    responses((status = 200, body = EventList), (status = 400, body = crate::error::ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventList>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "unknown status {s:?} (one of: {})",
                    EventStatus::ALL.map(EventStatus::as_str).join(", ")
                ),
            )
            .field("status")
        })?),
    };
    let limit = super::page_limit(q.limit)?;
    let filter = EventRecordFilter {
        source: q.source,
        routing_key: q.routing_key,
        status,
    };
    let records = state
        .store
        .list_event_records(
            &filter,
            Page {
                before: q.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    Ok(Json(EventList {
        events: records.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

/// One event's record.
#[utoipa::path(get, path = "/api/v1/events/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = EventView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(state.store.get_event_record(id).await?.into()))
}

async fn rules_view(events: &EventService) -> ApiResult<RulesView> {
    let doc = events.store().get_rules().await?;
    let rules = events.rules();
    let document = serde_json::to_value(rules.file().redacted())
        .map_err(|e| ApiError::internal("could not show the rules", &e))?;
    Ok(RulesView {
        revision: doc.as_ref().map_or(0, |d| d.revision),
        in_force_revision: events.revision_in_force(),
        updated_at: doc.map(|d| d.updated_at),
        document,
        explain: rules.rules().iter().map(|r| r.explain()).collect(),
        sources: sources_view(events),
    })
}

fn sources_view(events: &EventService) -> BTreeMap<String, SourceView> {
    events
        .source_states()
        .into_iter()
        .map(|(name, (kind, s))| {
            // troupe-events keeps a state of its own (the sources update it in place); the
            // wire's has the same fields.
            let state = SourceState {
                state: s.state,
                last_error: s.last_error,
                delivered: s.delivered,
                holder: s.holder,
            };
            (name, SourceView { kind, state })
        })
        .collect()
}

/// The rules in force and their sources' states.
#[utoipa::path(get, path = "/api/v1/rules", responses((status = 200, body = RulesView)))]
async fn get_rules(State(state): State<AppState>) -> ApiResult<Json<RulesView>> {
    Ok(Json(rules_view(&state.events).await?))
}

/// Replace the rules (YAML or JSON body). Sources restart with the new configuration; events
/// arriving meanwhile wait in their brokers.
#[utoipa::path(put, path = "/api/v1/rules", params(PutRulesQuery), request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, body = RulesView), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
async fn put_rules(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PutRulesQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<RulesView>> {
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the rules must be UTF-8 text",
        )
    })?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"'))
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_header",
                    "If-Match must be a rules revision number",
                )
            })
        })
        .transpose()?;
    let expected = q.revision.or(if_match);
    match state.events.apply(text, expected).await {
        Ok(_) => Ok(Json(rules_view(&state.events).await?)),
        Err(ApplyError::Invalid(errors)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rules",
            errors.join("\n"),
        )),
        Err(ApplyError::Store(StoreError::Conflict(msg))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "revision_conflict",
            msg,
        )),
        Err(ApplyError::Store(e)) => Err(e.into()),
    }
}

/// Each configured source's state.
#[utoipa::path(get, path = "/api/v1/sources", responses((status = 200, body = Object)))]
async fn list_sources(State(state): State<AppState>) -> Json<BTreeMap<String, SourceView>> {
    Json(sources_view(&state.events))
}
