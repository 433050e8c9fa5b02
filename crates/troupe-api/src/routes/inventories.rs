//! Inventories: hosts and group variables (Pansible's shape).

use crate::AppState;
use crate::audit::AuditTarget;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use troupe_core::inventory::ansible::AnsibleInventory;
use troupe_core::inventory::{Inventory, NewInventory};
use troupe_wire::inventories::{AnsibleQuery, InventoriesQuery, InventoryList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_inventory, list_inventories))
        .routes(routes!(get_inventory, update_inventory, delete_inventory))
        .routes(routes!(ansible_inventory))
}

/// Checks an inventory as Ansible would read it; returns its host count.
pub(crate) fn check(new: &NewInventory) -> ApiResult<i64> {
    let summary = new.validate()?;
    AnsibleInventory::load(&new.content())?;
    Ok(i64::try_from(summary.hosts.len()).unwrap_or(i64::MAX))
}

/// Store an inventory. `hosts` is Ansible YAML or INI text, `vars` a YAML mapping of group to
/// variables; both are checked, with line and column on errors.
#[utoipa::path(post, path = "/api/v1/inventories", request_body = NewInventory,
    responses((status = 201, body = Inventory), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_inventory(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewInventory>,
) -> ApiResult<(StatusCode, AuditTarget, Json<Inventory>)> {
    let count = check(&new)?;
    let inv = state.store.create_inventory(&new, count).await?;
    let target = AuditTarget::new("inventory", inv.id).named(inv.name.clone());
    Ok((StatusCode::CREATED, target, Json(inv)))
}

/// List inventories.
#[utoipa::path(get, path = "/api/v1/inventories", params(InventoriesQuery), responses((status = 200, body = InventoryList)))]
async fn list_inventories(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<InventoriesQuery>,
) -> ApiResult<Json<InventoryList>> {
    let inventories = match q.name {
        Some(name) => state
            .store
            .find_inventory(&name)
            .await?
            .into_iter()
            .collect(),
        None => state.store.list_inventories().await?,
    };
    Ok(Json(InventoryList { inventories }))
}

/// One inventory.
#[utoipa::path(get, path = "/api/v1/inventories/{id}", params(("id" = i64, Path)), responses((status = 200, body = Inventory), (status = 404, body = crate::error::ErrorBody)))]
async fn get_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Inventory>> {
    Ok(Json(state.store.get_inventory(id).await?))
}

/// Replace an inventory (same body as creating one, checked the same way). Its `revision` is
/// bumped; runs already queued keep the inventory they were created with.
#[utoipa::path(put, path = "/api/v1/inventories/{id}", params(("id" = i64, Path)), request_body = NewInventory,
    responses((status = 200, body = Inventory), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn update_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(new): ApiJson<NewInventory>,
) -> ApiResult<Json<Inventory>> {
    let count = check(&new)?;
    Ok(Json(state.store.update_inventory(id, &new, count).await?))
}

/// Delete an inventory. Refused (409) while a queued or running run or a template uses it;
/// finished runs keep their own copy.
#[utoipa::path(delete, path = "/api/v1/inventories/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
async fn delete_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_inventory(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The inventory in Ansible's dynamic inventory JSON: exactly what `ansible-inventory --list`
/// prints for it (groups with `hosts` and `children`, `_meta.hostvars` with every host's
/// variables, group variables merged in), or with `?host=` one host's variables.
#[utoipa::path(get, path = "/api/v1/inventories/{id}/ansible", params(("id" = i64, Path), AnsibleQuery),
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)))]
async fn ansible_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<AnsibleQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let inv = state.store.get_inventory(id).await?;
    let loaded = AnsibleInventory::load(&inv.content)?;
    match q.host {
        None => Ok(Json(loaded.to_list_json())),
        Some(host) => match loaded.host_vars(&host) {
            Some(vars) => Ok(Json(serde_json::Value::Object(vars))),
            None => Err(ApiError::not_found(
                "host",
                format!("{host:?} in inventory {id}"),
            )),
        },
    }
}
