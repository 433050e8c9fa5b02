//! Templates: saved run definitions that users launch, overriding only what is allowed.

use super::{IdOrName, check_playbook, find_inventory, find_project, to_ref};
use crate::AppState;
use crate::audit::AuditTarget;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Map, Value};
use troupe_core::overrides::Overrides;
use troupe_core::run::{Labels, Origin, Run};
use troupe_core::template::{NewTemplate, OVERRIDABLE, Template};
use troupe_launch::{InventorySource, LaunchRequest, Ref};
use troupe_wire::templates::{CreateTemplate, TemplateList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_template, list_templates))
        .routes(routes!(get_template))
        .routes(routes!(launch_template))
}

/// Save a run definition.
#[utoipa::path(post, path = "/api/v1/templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_template(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Template>)> {
    let project = find_project(&state, &req.project, "project").await?;
    let inventory = find_inventory(&state, &req.inventory, "inventory").await?;
    check_playbook(&state, &project, &req.playbook).await?;
    let notify = state.launcher.seal_notify(&req.notify, "notify")?;
    let mut defaults = req.defaults;
    state.launcher.seal_extra_vars(&mut defaults.extra_vars)?;
    let new = NewTemplate {
        name: req.name,
        project_id: project.id,
        playbook: req.playbook,
        inventory_id: inventory.id,
        defaults,
        allow_overrides: req.allow_overrides,
        labels: req.labels,
        notify,
    };
    new.validate()?;
    let t = state.store.create_template(&new).await?;
    let target = AuditTarget::new("template", t.id).named(t.name.clone());
    Ok((StatusCode::CREATED, target, Json(t)))
}

/// List templates.
#[utoipa::path(get, path = "/api/v1/templates", responses((status = 200, body = TemplateList)))]
async fn list_templates(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TemplateList>> {
    let mut templates = state.store.list_templates().await?;
    templates.retain(|t| caller.sees(t.project_id));
    Ok(Json(TemplateList { templates }))
}

/// One template.
#[utoipa::path(get, path = "/api/v1/templates/{id}", params(("id" = i64, Path)), responses((status = 200, body = Template), (status = 404, body = crate::error::ErrorBody)))]
async fn get_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Template>> {
    Ok(Json(state.store.get_template(id).await?))
}

/// Launch a template. The body is an object of overrides (`extra_vars`, `limit`, `tags`,
/// `skip_tags`, `check`, `diff`, `forks`, `verbosity`, `timeout_s`, `start_at_task`,
/// `inventory`, `labels`), each only if the template allows it; `extra_vars` and `labels`
/// are merged over the template's, the others replace them.
#[utoipa::path(post, path = "/api/v1/templates/{id}/launch", params(("id" = i64, Path)), request_body = Object,
    responses((status = 201, body = Run), (status = 422, body = crate::error::ErrorBody)))]
async fn launch_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, AuditTarget, Json<Run>)> {
    let template = state.store.get_template(id).await?;
    let overrides: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ApiError::invalid(
                    "invalid_body",
                    "overrides",
                    "the launch body must be a JSON object of overrides",
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    e.to_string(),
                ));
            }
        }
    };
    for key in overrides.keys() {
        if !OVERRIDABLE.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                "invalid_body",
                key,
                format!(
                    "{key:?} is not a launch option (one of: {})",
                    OVERRIDABLE.join(", ")
                ),
            ));
        }
        if !template.allow_overrides.iter().any(|a| a == key) {
            return Err(ApiError::invalid(
                "override_not_allowed",
                key,
                format!(
                    "template {:?} does not allow overriding {key}",
                    template.name
                ),
            ));
        }
    }
    let mut overrides = overrides;
    let inventory = match overrides.remove("inventory") {
        None => None,
        Some(v) => Some(InventorySource::Stored(to_ref(
            &serde_json::from_value::<IdOrName>(v).map_err(|_| {
                ApiError::invalid(
                    "invalid_body",
                    "inventory",
                    "inventory must be an id or a name",
                )
            })?,
        ))),
    };
    let labels: Labels = match overrides.remove("labels") {
        None => Labels::new(),
        Some(v) => serde_json::from_value(v).map_err(|_| {
            ApiError::invalid(
                "invalid_body",
                "labels",
                "labels must be an object of strings",
            )
        })?,
    };
    let request = LaunchRequest {
        inventory,
        labels,
        ..LaunchRequest::template(Ref::Id(template.id), Overrides::from_map(overrides)?)
    };
    let run = state.launcher.launch(request, Origin::Api).await?;
    Ok((StatusCode::CREATED, super::runs::audited(&run), Json(run)))
}
