//! What Pansible's API keeps that troupe has no resource of its own for: the entry (the
//! playbook file) of a Pansible playbook, which is otherwise a git project, and apps with the
//! playbooks and inventories linked to them. A Pansible inventory is an inventory and a job is
//! a run: they need nothing here.

use crate::{InventoryStore, StoreError, StoreResult};
use async_trait::async_trait;
use troupe_core::project::{NewProject, Project};

/// A Pansible playbook: a git project and the playbook in it that its jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PansiblePlaybook {
    /// The project, whose id is also the playbook's.
    pub project_id: i64,
    /// The playbook file, relative to the project.
    pub entry: String,
}

/// A Pansible app: a name, with playbooks and inventories linked to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PansibleApp {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name.
    pub appid: String,
    /// The playbooks linked to it (their project ids), ascending.
    pub playbooks: Vec<i64>,
    /// The inventories linked to it, ascending.
    pub inventories: Vec<i64>,
}

/// What an app is linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppLink {
    /// A Pansible playbook, by its project id.
    Playbook(i64),
    /// An inventory.
    Inventory(i64),
}

/// Pansible's playbook entries and apps.
#[async_trait]
pub trait PansibleStore {
    /// Stores a project and `entry` as its Pansible playbook, together: both or neither.
    /// `Conflict` when the project name is taken.
    async fn create_pansible_playbook(
        &self,
        project: &NewProject,
        entry: &str,
    ) -> StoreResult<Project>;

    /// The Pansible playbook of a project; `NotFound` (`playbook`) when the project has none.
    async fn get_pansible_playbook(&self, project_id: i64) -> StoreResult<PansiblePlaybook>;

    /// Every Pansible playbook, by project id.
    async fn list_pansible_playbooks(&self) -> StoreResult<Vec<PansiblePlaybook>>;

    /// Stores an app with no links. `Conflict` when `appid` is taken.
    async fn create_pansible_app(&self, appid: &str) -> StoreResult<PansibleApp>;

    /// An app with its links; `NotFound` (`app`) when there is none.
    async fn get_pansible_app(&self, id: i64) -> StoreResult<PansibleApp>;

    /// Every app with its links, by id.
    async fn list_pansible_apps(&self) -> StoreResult<Vec<PansibleApp>>;

    /// Links an app to a playbook or an inventory (linking twice changes nothing); returns
    /// the app. `NotFound` names the app, playbook or inventory that does not exist. Deleting
    /// an inventory removes its links.
    async fn link_pansible_app(&self, app_id: i64, link: AppLink) -> StoreResult<PansibleApp>;
}

/// Why linking `app_id` to `link` found no row to point at: the `NotFound` of the app, the
/// playbook or the inventory that does not exist (backends call this after a foreign key
/// refused the link).
pub async fn missing_link_end<S>(store: &S, app_id: i64, link: AppLink) -> StoreError
where
    S: PansibleStore + InventoryStore + Sync + ?Sized,
{
    if let Err(e) = store.get_pansible_app(app_id).await {
        return e;
    }
    let missing = match link {
        AppLink::Playbook(id) => store.get_pansible_playbook(id).await.err(),
        AppLink::Inventory(id) => store.get_inventory(id).await.err(),
    };
    missing.unwrap_or_else(|| {
        StoreError::Conflict("what the link names was removed while it was made".into())
    })
}
