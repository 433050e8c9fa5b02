//! Inventories: hosts and group variables (Pansible's shape).

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use troupe_core::inventory::{Inventory, NewInventory};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_inventory, list_inventories))
        .routes(routes!(get_inventory))
}

/// Store an inventory. `hosts` is Ansible YAML or INI text, `vars` a YAML mapping of group to
/// variables; both are checked, with line and column on errors.
#[utoipa::path(post, path = "/api/v1/inventories", request_body = NewInventory,
    responses((status = 201, body = Inventory), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn create_inventory(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewInventory>,
) -> ApiResult<(StatusCode, Json<Inventory>)> {
    let summary = new.validate()?;
    let count = i64::try_from(summary.hosts.len()).unwrap_or(i64::MAX);
    let inv = state.store.create_inventory(&new, count).await?;
    Ok((StatusCode::CREATED, Json(inv)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only the inventory with this name.
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct InventoryList {
    inventories: Vec<Inventory>,
}

/// List inventories.
#[utoipa::path(get, path = "/api/v1/inventories", params(ListQuery), responses((status = 200, body = InventoryList)))]
async fn list_inventories(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
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
#[utoipa::path(get, path = "/api/v1/inventories/{id}", responses((status = 200, body = Inventory), (status = 404, body = crate::error::ErrorBody)))]
async fn get_inventory(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Inventory>> {
    Ok(Json(state.store.get_inventory(id).await?))
}
