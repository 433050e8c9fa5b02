//! Pansible's playbook entries and apps.

use super::{assert_conflict, assert_not_found};
use crate::Store;
use crate::pansible::AppLink;
use troupe_core::inventory::{InventoryFormat, NewInventory};
use troupe_core::project::{NewProject, ProjectSource};

fn git_project(name: &str) -> NewProject {
    NewProject {
        name: name.into(),
        source: ProjectSource::Git {
            url: "/srv/git/site.git".into(),
            git_ref: None,
            credential: None,
        },
    }
}

/// A playbook is stored with its project, or not at all; only projects stored that way are
/// playbooks.
pub async fn pansible_playbooks_round_trip(store: &dyn Store) {
    let project = store
        .create_pansible_playbook(&git_project("site"), "deploy/site.yml")
        .await
        .expect("create");
    assert_eq!(
        store.get_project(project.id).await.expect("project"),
        project
    );
    let playbook = store
        .get_pansible_playbook(project.id)
        .await
        .expect("playbook");
    assert_eq!(
        (playbook.project_id, playbook.entry.as_str()),
        (project.id, "deploy/site.yml")
    );
    // A name taken stores neither.
    assert_conflict(
        store
            .create_pansible_playbook(&git_project("site"), "other.yml")
            .await,
        "site",
    );
    assert_eq!(store.list_projects().await.expect("projects").len(), 1);
    let plain = store
        .create_project(&git_project("plain"))
        .await
        .expect("plain project");
    assert_not_found(store.get_pansible_playbook(plain.id).await, "playbook");
    assert_eq!(
        store.list_pansible_playbooks().await.expect("list"),
        vec![playbook]
    );
}

/// Apps are unique by appid; links are made once, name what exists, and go with their
/// inventory.
pub async fn pansible_apps_and_links(store: &dyn Store) {
    let app = store.create_pansible_app("web").await.expect("app");
    assert_eq!(app.appid, "web");
    assert!(app.playbooks.is_empty() && app.inventories.is_empty());
    assert_conflict(store.create_pansible_app("web").await, "web");
    let playbook = store
        .create_pansible_playbook(&git_project("site"), "site.yml")
        .await
        .expect("playbook");
    let inventory = store
        .create_inventory(
            &NewInventory {
                name: "hosts".into(),
                env: Some("alpha".into()),
                version: None,
                format: InventoryFormat::Ini,
                hosts: "h1\n".into(),
                vars: None,
            },
            1,
        )
        .await
        .expect("inventory");
    for _ in 0..2 {
        store
            .link_pansible_app(app.id, AppLink::Playbook(playbook.id))
            .await
            .expect("link playbook");
    }
    let linked = store
        .link_pansible_app(app.id, AppLink::Inventory(inventory.id))
        .await
        .expect("link inventory");
    assert_eq!(linked.playbooks, vec![playbook.id]);
    assert_eq!(linked.inventories, vec![inventory.id]);
    assert_eq!(store.get_pansible_app(app.id).await.expect("get"), linked);
    let other = store.create_pansible_app("db").await.expect("other app");
    assert_eq!(
        store.list_pansible_apps().await.expect("list"),
        vec![linked.clone(), other.clone()]
    );
    assert_not_found(
        store
            .link_pansible_app(app.id + other.id, AppLink::Inventory(inventory.id))
            .await,
        "app",
    );
    assert_not_found(
        store
            .link_pansible_app(app.id, AppLink::Playbook(playbook.id + 100))
            .await,
        "playbook",
    );
    assert_not_found(
        store
            .link_pansible_app(app.id, AppLink::Inventory(inventory.id + 100))
            .await,
        "inventory",
    );
    assert_not_found(store.get_pansible_app(app.id + other.id).await, "app");
    store.delete_inventory(inventory.id).await.expect("delete");
    assert!(
        store
            .get_pansible_app(app.id)
            .await
            .expect("get")
            .inventories
            .is_empty()
    );
}
