//! Templates: saved run definitions that users launch, overriding only what is allowed.

use super::{IdOrName, check_playbook, find_inventory, find_project, submit};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use troupe_core::project::PlaybookRef;
use troupe_core::run::{Labels, NewRun, Run, RunOptions};
use troupe_core::template::{NewTemplate, OVERRIDABLE, Template};
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
) -> ApiResult<(StatusCode, Json<Template>)> {
    let project = find_project(&state, &req.project, "project").await?;
    let inventory = find_inventory(&state, &req.inventory, "inventory").await?;
    check_playbook(&state, &project, &req.playbook).await?;
    let new = NewTemplate {
        name: req.name,
        project_id: project.id,
        playbook: req.playbook,
        inventory_id: inventory.id,
        defaults: req.defaults,
        allow_overrides: req.allow_overrides,
        labels: req.labels,
    };
    new.validate()?;
    let t = state.store.create_template(&new).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// List templates.
#[utoipa::path(get, path = "/api/v1/templates", responses((status = 200, body = TemplateList)))]
async fn list_templates(State(state): State<AppState>) -> ApiResult<Json<TemplateList>> {
    Ok(Json(TemplateList {
        templates: state.store.list_templates().await?,
    }))
}

/// One template.
#[utoipa::path(get, path = "/api/v1/templates/{id}", responses((status = 200, body = Template), (status = 404, body = crate::error::ErrorBody)))]
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
#[utoipa::path(post, path = "/api/v1/templates/{id}/launch", request_body = Object,
    responses((status = 201, body = Run), (status = 422, body = crate::error::ErrorBody)))]
async fn launch_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Run>)> {
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
    let (options, labels, inventory_ref) = apply_overrides(&template, overrides)?;
    let inventory = match inventory_ref {
        Some(r) => find_inventory(&state, &r, "inventory").await?,
        None => state
            .store
            .get_inventory(template.inventory_id)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "template_inventory_missing",
                    format!(
                        "the inventory of template {:?} no longer exists",
                        template.name
                    ),
                )
            })?,
    };
    let new = NewRun {
        project_id: template.project_id,
        playbook: PlaybookRef::parse(&template.playbook)?,
        inventory_id: Some(inventory.id),
        inventory: inventory.content,
        options,
        labels,
        tag: None,
        origin: troupe_core::run::Origin::Template {
            template_id: template.id,
        },
    };
    let run = submit(&state, new).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// The template's defaults with the (allowed) overrides applied.
fn apply_overrides(
    template: &Template,
    mut overrides: Map<String, Value>,
) -> ApiResult<(RunOptions, Labels, Option<IdOrName>)> {
    let inventory = match overrides.remove("inventory") {
        None => None,
        Some(v) => Some(serde_json::from_value::<IdOrName>(v).map_err(|_| {
            ApiError::invalid(
                "invalid_body",
                "inventory",
                "inventory must be an id or a name",
            )
        })?),
    };
    let mut labels = template.labels.clone();
    if let Some(v) = overrides.remove("labels") {
        let extra: Labels = serde_json::from_value(v).map_err(|_| {
            ApiError::invalid(
                "invalid_body",
                "labels",
                "labels must be an object of strings",
            )
        })?;
        labels.extend(extra);
    }
    let mut extra_vars = template.defaults.extra_vars.clone();
    match overrides.remove("extra_vars") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => extra_vars.extend(m),
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_extra_vars",
                "extra_vars",
                format!(
                    "extra_vars must be a JSON object, got {}",
                    super::runs::json_kind(&other)
                ),
            ));
        }
    }
    // The remaining overrides replace the defaults field by field.
    let mut options = serde_json::to_value(&template.defaults)
        .map_err(|e| ApiError::internal("could not apply overrides", &e))?;
    if let Value::Object(o) = &mut options {
        o.remove("extra_vars");
        for (k, v) in overrides {
            o.insert(k, v);
        }
    }
    let mut options: RunOptions = serde_json::from_value(options)
        .map_err(|e| ApiError::invalid("invalid_body", "overrides", e.to_string()))?;
    options.extra_vars = extra_vars;
    options.validate()?;
    Ok((options, labels, inventory))
}
