//! Inventories: hosts and group variables (Pansible's shape).

use serde::{Deserialize, Serialize};

pub use troupe_core::inventory::{Inventory, InventoryContent, InventoryFormat, NewInventory};

/// The query of `GET /api/v1/inventories`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InventoriesQuery {
    /// Only the inventory with this name.
    pub name: Option<String>,
}

// The answer to `GET /api/v1/inventories`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InventoryList {
    pub inventories: Vec<Inventory>,
}

/// The query of `GET /api/v1/inventories/{id}/ansible`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnsibleQuery {
    /// Only this host's variables (`ansible-inventory --host`).
    pub host: Option<String>,
}
