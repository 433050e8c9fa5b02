//! Pansible's playbook entries and apps: statements and row mapping, the same on both backends.

use super::{Dialect, get};
use crate::StoreResult;
use crate::pansible::{AppLink, PansibleApp, PansiblePlaybook};

/// `$1` project id, `$2` entry.
pub const INSERT_PLAYBOOK: &str =
    "INSERT INTO pansible_playbooks (project_id, entry) VALUES ($1, $2)";

/// `$1` project id.
pub const GET_PLAYBOOK: &str =
    "SELECT project_id, entry FROM pansible_playbooks WHERE project_id = $1";

/// Every playbook.
pub const LIST_PLAYBOOKS: &str =
    "SELECT project_id, entry FROM pansible_playbooks ORDER BY project_id";

/// `$1` appid.
pub const INSERT_APP: &str = "INSERT INTO pansible_apps (appid) VALUES ($1) RETURNING id, appid";

/// `$1` app id.
pub const GET_APP: &str = "SELECT id, appid FROM pansible_apps WHERE id = $1";

/// Every app.
pub const LIST_APPS: &str = "SELECT id, appid FROM pansible_apps ORDER BY id";

/// The links of every app: `app_id`, `kind` (`playbook` or `inventory`), `target`.
pub const ALL_LINKS: &str = "SELECT app_id, 'playbook' AS kind, project_id AS target \
     FROM pansible_app_playbooks \
     UNION ALL SELECT app_id, 'inventory' AS kind, inventory_id AS target \
     FROM pansible_app_inventories \
     ORDER BY app_id, kind, target";

/// The links of app `$1`, as [`ALL_LINKS`].
pub const LINKS_OF_APP: &str = "SELECT app_id, 'playbook' AS kind, project_id AS target \
     FROM pansible_app_playbooks WHERE app_id = $1 \
     UNION ALL SELECT app_id, 'inventory' AS kind, inventory_id AS target \
     FROM pansible_app_inventories WHERE app_id = $1 \
     ORDER BY app_id, kind, target";

/// `$1` app id, `$2` playbook (project) id; nothing when already linked.
pub const LINK_PLAYBOOK: &str = "INSERT INTO pansible_app_playbooks (app_id, project_id) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// `$1` app id, `$2` inventory id; nothing when already linked.
pub const LINK_INVENTORY: &str = "INSERT INTO pansible_app_inventories (app_id, inventory_id) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// The statement that makes `link` (`$1` app id, `$2` the target), and the target's id.
pub fn link_statement(link: AppLink) -> (&'static str, i64) {
    match link {
        AppLink::Playbook(id) => (LINK_PLAYBOOK, id),
        AppLink::Inventory(id) => (LINK_INVENTORY, id),
    }
}

/// A playbook from a row of [`GET_PLAYBOOK`] or [`LIST_PLAYBOOKS`].
pub fn playbook_from<D: Dialect>(row: &D::Row) -> StoreResult<PansiblePlaybook> {
    Ok(PansiblePlaybook {
        project_id: get(row, "project_id")?,
        entry: get(row, "entry")?,
    })
}

/// An app without its links from a row of [`INSERT_APP`], [`GET_APP`] or [`LIST_APPS`].
pub fn app_from<D: Dialect>(row: &D::Row) -> StoreResult<PansibleApp> {
    Ok(PansibleApp {
        id: get(row, "id")?,
        appid: get(row, "appid")?,
        playbooks: Vec::new(),
        inventories: Vec::new(),
    })
}

/// Adds the links of [`LINKS`] rows to the apps they belong to (`apps` by id).
pub fn add_links<D: Dialect>(apps: &mut [PansibleApp], rows: &[D::Row]) -> StoreResult<()> {
    for row in rows {
        let app_id: i64 = get(row, "app_id")?;
        let kind: String = get(row, "kind")?;
        let target: i64 = get(row, "target")?;
        let Ok(i) = apps.binary_search_by_key(&app_id, |a| a.id) else {
            continue;
        };
        match kind.as_str() {
            "playbook" => apps[i].playbooks.push(target),
            _ => apps[i].inventories.push(target),
        }
    }
    Ok(())
}
