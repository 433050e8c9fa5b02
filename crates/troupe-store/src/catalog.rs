//! What runs are made from: projects, inventories and templates. Each is a named resource,
//! read by id, by name or all at once.

use crate::StoreResult;
use async_trait::async_trait;
use troupe_core::inventory::{Inventory, NewInventory};
use troupe_core::project::{NewProject, Project, ProjectSync};
use troupe_core::template::{NewTemplate, Template};

/// Projects: where playbooks live.
#[async_trait]
pub trait ProjectStore {
    /// Creates a project; `Conflict` when the name is taken.
    async fn create_project(&self, new: &NewProject) -> StoreResult<Project>;
    /// A project by id.
    async fn get_project(&self, id: i64) -> StoreResult<Project>;
    /// A project by name.
    async fn find_project(&self, name: &str) -> StoreResult<Option<Project>>;
    /// All projects, by id.
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// Records the outcome of a git project's sync (replacing the last one); `NotFound` for a
    /// missing project.
    async fn set_project_sync(&self, id: i64, sync: &ProjectSync) -> StoreResult<Project>;
}

/// Inventories: the hosts runs are played against. Runs keep a snapshot of theirs.
#[async_trait]
pub trait InventoryStore {
    /// Creates an inventory that the caller has validated; `Conflict` when the name is taken.
    async fn create_inventory(&self, new: &NewInventory, host_count: i64)
    -> StoreResult<Inventory>;
    /// An inventory by id.
    async fn get_inventory(&self, id: i64) -> StoreResult<Inventory>;
    /// An inventory by name.
    async fn find_inventory(&self, name: &str) -> StoreResult<Option<Inventory>>;
    /// All inventories, by id.
    async fn list_inventories(&self) -> StoreResult<Vec<Inventory>>;
    /// Replaces an inventory's content and labels (validated by the caller) and bumps its
    /// revision. Queued runs keep the snapshot they were created with.
    async fn update_inventory(
        &self,
        id: i64,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory>;
    /// Deletes an inventory. `Conflict` while a queued or running run uses it, or a template
    /// names it; finished runs keep their snapshot and lose only the reference.
    async fn delete_inventory(&self, id: i64) -> StoreResult<()>;
}

/// Templates: saved run definitions.
#[async_trait]
pub trait TemplateStore {
    /// Creates a template (references checked by the caller, and again here: `NotFound` for a
    /// missing project or inventory); `Conflict` on a taken name.
    async fn create_template(&self, new: &NewTemplate) -> StoreResult<Template>;
    /// A template by id.
    async fn get_template(&self, id: i64) -> StoreResult<Template>;
    /// A template by name.
    async fn find_template(&self, name: &str) -> StoreResult<Option<Template>>;
    /// All templates, by id.
    async fn list_templates(&self) -> StoreResult<Vec<Template>>;
}
