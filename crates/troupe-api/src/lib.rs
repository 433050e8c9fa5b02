//! troupe's HTTP API (v1): projects, inventories, runs and tokens over JSON, with bearer-token
//! auth on everything but health checks and the web UI's static files, and an OpenAPI document
//! generated from the handlers.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;
use troupe_store::Store;
use troupe_worker::{LiveHub, WorkerPool};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod access;
mod artifacts;
pub mod audit;
pub mod auth;
pub mod bundle;
pub mod error;
mod extract;
pub mod limits;
mod routes;
pub mod run_json;
mod ui;

pub use auth::{Caller, TokenSet, generate_token, hash_token};
pub use limits::ApiConfig;
pub use routes::pansible::PansibleSettings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Where everything is kept.
    pub store: Arc<dyn Store>,
    /// The embedded workers (woken on new runs, told of cancels).
    pub pool: Arc<WorkerPool>,
    /// Starts runs: every route that creates one goes through it.
    pub launcher: Arc<troupe_launch::Launcher>,
    /// Valid API token hashes.
    pub tokens: Arc<TokenSet>,
    /// Where stored events and run changes are announced to live subscribers.
    pub hub: Arc<LiveHub>,
    /// Messages a live subscriber may have queued before it counts as not keeping up.
    pub stream_buffer_events: usize,
    /// Where git projects are checked out.
    pub projects_dir: std::path::PathBuf,
    /// Clones and syncs git projects (one sync per project at a time).
    pub git: Arc<troupe_worker::git::ProjectSyncer>,
    /// Event sources, rules and the ingest path.
    pub events: Arc<troupe_events::EventService>,
    /// Runs executions of flows.
    pub flows: Arc<troupe_flow::engine::Engine>,
    /// The JSON of runs, by version, for the runs list.
    pub run_json: Arc<run_json::RunJsonCache>,
    /// Seals credentials' secrets before they are stored.
    pub sealer: Arc<dyn troupe_core::secret::Sealer>,
    /// Project bundles remote workers fetch.
    pub bundles: Arc<bundle::Bundles>,
    /// Body sizes, webhook rates and streams per token.
    pub limits: Arc<limits::Limits>,
    /// Runs pruned per batch by `POST /api/v1/runs/prune`.
    pub retention_batch: u32,
    /// What Pansible's API (`/pansible/api/v1`) is configured with.
    pub pansible: PansibleSettings,
    /// troupe's metrics (`GET /metrics`) and traces.
    pub telemetry: Arc<troupe_telemetry::Telemetry>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "troupe", description = "Ansible as a service: run ansible-playbook over HTTP, with every event captured."),
    components(schemas(error::ErrorBody, troupe_wire::notifications::Ended)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().merge(open_routes()).split_for_parts().1;
    document_common_errors(&mut doc);
    doc
}

/// Adds to every operation the errors any route can answer before its handler runs (the
/// token check, the extractors), unless the operation documents that status itself.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let add = |op: &mut Operation, status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description).into());
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_params = path.contains('{');
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            add(
                op,
                "401",
                "No token, or one that is unknown, revoked or expired",
            );
            add(
                op,
                "403",
                "The token's role or project scope does not allow this",
            );
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if has_params || op.request_body.is_some() {
                add(
                    op,
                    "400",
                    "A path or query parameter of the wrong type, or a body that is not JSON",
                );
            }
            if has_path_params {
                add(op, "404", "Nothing has that id or name");
            }
            if op.request_body.is_some() {
                add(op, "413", "The body is larger than `max_body_bytes`");
                add(
                    op,
                    "415",
                    "The body is not of the media type this route takes",
                );
                add(
                    op,
                    "422",
                    "The body does not have the fields this route takes",
                );
            }
        }
    }
}

/// Routes that authenticate requests themselves (webhooks: signatures or source tokens).
fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(routes::events::hooks_router())
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::projects::router())
        .merge(routes::inventories::router())
        .merge(routes::runs::router())
        .merge(routes::artifacts::router())
        .merge(routes::tokens::router())
        .merge(routes::stream::router())
        .merge(routes::templates::router())
        .merge(routes::jobs::router())
        .merge(routes::events::router())
        .merge(routes::flows::router())
        .merge(routes::schedules::router())
        .merge(routes::notifications::router())
        .merge(routes::credentials::router())
        .merge(routes::workers::router())
        .merge(routes::audit::router())
        .merge(routes::pansible::router())
        .merge(routes::metrics::router())
}

/// The whole HTTP application. Every request's body is bounded by `state.limits`.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    // The whole document, webhooks included.
    let doc = Arc::new(openapi());
    let api = api
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let (hooks, _) = open_routes().split_for_parts();
    Router::new()
        .merge(routes::health::router())
        .merge(ui::router())
        .merge(hooks)
        .merge(api)
        // Outside auth, so refused requests are recorded too; per route, so it sees the
        // route's pattern.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        // `limit_body` bounds bodies per route, and answers in JSON.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.limits),
            limits::limit_body,
        ))
        .with_state(state)
}
