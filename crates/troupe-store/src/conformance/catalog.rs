//! Conformance cases: Projects, inventories and templates.

use super::*;

/// Projects are stored, found by id and name, and listed by id.
pub async fn projects_round_trip(store: &dyn Store) {
    let b = project(store, "b-proj").await;
    let a = project(store, "a-proj").await;
    assert!(a.id > b.id);
    assert_eq!(b.name, "b-proj");
    assert_eq!(
        b.source,
        ProjectSource::Dir {
            path: "/srv/b-proj".into()
        }
    );
    assert_recent(b.created_at, "created_at");
    assert_eq!(store.get_project(b.id).await.expect("get"), b);
    assert_eq!(
        store.find_project("a-proj").await.expect("find"),
        Some(a.clone())
    );
    assert_eq!(store.find_project("nope").await.expect("find"), None);
    assert_eq!(
        store.list_projects().await.expect("list"),
        vec![b, a.clone()]
    );
    assert_not_found(store.get_project(a.id + 100).await, "project");
}

/// A taken project name is a conflict that names it, and nothing is stored.
pub async fn project_name_conflict(store: &dyn Store) {
    project(store, "dup").await;
    let again = store
        .create_project(&NewProject {
            name: "dup".into(),
            source: ProjectSource::Dir {
                path: "/elsewhere".into(),
            },
        })
        .await;
    assert_conflict(again, "\"dup\"");
    assert_eq!(store.list_projects().await.expect("list").len(), 1);
}

/// Inventories keep every field, are found by id and name, and listed by id.
pub async fn inventories_round_trip(store: &dyn Store) {
    let new = new_inventory("inv-1");
    let inv = store.create_inventory(&new, 2).await.expect("create");
    assert_eq!(inv.name, "inv-1");
    assert_eq!(inv.env.as_deref(), Some("prod"));
    assert_eq!(inv.version.as_deref(), Some("v3"));
    assert_eq!(inv.content, new.content());
    assert_eq!(inv.host_count, 2);
    assert_recent(inv.created_at, "created_at");
    let bare = NewInventory {
        name: "inv-0".into(),
        env: None,
        version: None,
        format: InventoryFormat::Ini,
        hosts: "h1\n".into(),
        vars: None,
    };
    let inv2 = store.create_inventory(&bare, 1).await.expect("create");
    assert!(inv2.id > inv.id);
    assert_eq!(inv2.env, None);
    assert_eq!(inv2.content.vars, None);
    assert_eq!(store.get_inventory(inv.id).await.expect("get"), inv);
    assert_eq!(
        store.find_inventory("inv-0").await.expect("find"),
        Some(inv2.clone())
    );
    assert_eq!(store.find_inventory("zzz").await.expect("find"), None);
    assert_eq!(
        store.list_inventories().await.expect("list"),
        vec![inv.clone(), inv2]
    );
    assert_not_found(store.get_inventory(inv.id + 100).await, "inventory");
}

/// A taken inventory name is a conflict that names it.
pub async fn inventory_name_conflict(store: &dyn Store) {
    store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("create");
    assert_conflict(
        store.create_inventory(&new_inventory("inv"), 2).await,
        "\"inv\"",
    );
    assert_eq!(store.list_inventories().await.expect("list").len(), 1);
}

/// A project starts with no sync state; `set_project_sync` stores all of it and can clear it.
pub async fn project_sync_round_trip(store: &dyn Store) {
    let p = project(store, "git-proj").await;
    assert_eq!(p.sync, ProjectSync::default());
    let sync = ProjectSync {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        synced_at: Some(precise_time()),
        error: Some("fetch failed: exit 128".into()),
        requirements_error: Some("collection x not found".into()),
    };
    let updated = store.set_project_sync(p.id, &sync).await.expect("set sync");
    let expected = ProjectSync {
        synced_at: Some(micros(precise_time())),
        ..sync
    };
    assert_eq!(updated.sync, expected);
    assert_eq!((updated.id, &updated.name), (p.id, &p.name));
    assert_eq!(updated.source, p.source);
    assert_eq!(updated.created_at, p.created_at);
    assert_eq!(store.get_project(p.id).await.expect("get"), updated);
    assert_eq!(
        store.find_project("git-proj").await.expect("find"),
        Some(updated.clone())
    );
    assert_eq!(
        store.list_projects().await.expect("list"),
        vec![updated.clone()]
    );
    let cleared = store
        .set_project_sync(p.id, &ProjectSync::default())
        .await
        .expect("clear");
    assert_eq!(cleared.sync, ProjectSync::default());
    assert_eq!(store.get_project(p.id).await.expect("get"), cleared);
    assert_not_found(
        store
            .set_project_sync(p.id + 100, &ProjectSync::default())
            .await,
        "project",
    );
}

/// `update_inventory` replaces every field and bumps the revision; a taken name is a conflict;
/// runs keep the snapshot they were created with.
pub async fn update_inventory_bumps_revision(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("create");
    assert_eq!(inv.revision, 1);
    let mut run = new_run(p.id);
    run.inventory_id = Some(inv.id);
    run.inventory = inv.content.clone();
    let run = store.create_run(&run).await.expect("run");

    let replacement = NewInventory {
        name: "inv-renamed".into(),
        env: None,
        version: Some("v4".into()),
        format: InventoryFormat::Ini,
        hosts: "[db]\ndb1\ndb2\ndb3\n".into(),
        vars: None,
    };
    let v2 = store
        .update_inventory(inv.id, &replacement, 3)
        .await
        .expect("update");
    assert_eq!(v2.id, inv.id);
    assert_eq!(v2.name, "inv-renamed");
    assert_eq!(v2.env, None);
    assert_eq!(v2.version.as_deref(), Some("v4"));
    assert_eq!(v2.content, replacement.content());
    assert_eq!(v2.host_count, 3);
    assert_eq!(v2.revision, 2);
    assert_eq!(v2.created_at, inv.created_at);
    assert_eq!(store.get_inventory(inv.id).await.expect("get"), v2);
    assert_eq!(store.find_inventory("inv").await.expect("find"), None);
    assert_eq!(
        store.find_inventory("inv-renamed").await.expect("find"),
        Some(v2.clone())
    );
    let v3 = store
        .update_inventory(inv.id, &replacement, 3)
        .await
        .expect("same name again");
    assert_eq!(v3.revision, 3);
    assert_eq!(
        store.get_run_inventory(run.id).await.expect("snapshot"),
        inv.content,
        "the run keeps the inventory it was created with"
    );

    let other = store
        .create_inventory(&new_inventory("other"), 2)
        .await
        .expect("other");
    let taken = NewInventory {
        name: "inv-renamed".into(),
        ..new_inventory("x")
    };
    assert_conflict(
        store.update_inventory(other.id, &taken, 2).await,
        "\"inv-renamed\"",
    );
    assert_eq!(
        store.get_inventory(other.id).await.expect("get"),
        other,
        "a refused update changes nothing"
    );
    assert_eq!(other.revision, 1);
    assert_not_found(
        store
            .update_inventory(other.id + 100, &new_inventory("y"), 2)
            .await,
        "inventory",
    );
}

/// An inventory in use by a queued or running run, or named by a template, is not deleted;
/// once the runs are over it is, and they keep their snapshot without the reference.
pub async fn delete_inventory_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("used"), 2)
        .await
        .expect("create");
    let mut new = new_run(p.id);
    new.inventory_id = Some(inv.id);
    new.inventory = inv.content.clone();
    let queued = store.create_run(&new).await.expect("run");
    let msg = assert_conflict(store.delete_inventory(inv.id).await, "queued");
    assert!(
        msg.contains(&queued.id.to_string()),
        "{msg:?} names the run"
    );
    let running = store
        .claim_run("w", Duration::from_secs(600))
        .await
        .expect("claim")
        .expect("the queued run");
    assert_eq!(running.id, queued.id);
    assert_conflict(store.delete_inventory(inv.id).await, "running");
    store
        .finish_run(running.id, "w", &ok_outcome())
        .await
        .expect("finish");
    // A canceled run (finished too) does not hold it either.
    let canceled = store.create_run(&new).await.expect("run");
    store
        .request_cancel(canceled.id, CancelMode::Force)
        .await
        .expect("cancel");

    store.delete_inventory(inv.id).await.expect("delete");
    assert_not_found(store.get_inventory(inv.id).await, "inventory");
    assert_eq!(store.find_inventory("used").await.expect("find"), None);
    for id in [running.id, canceled.id] {
        let run = store.get_run(id).await.expect("run");
        assert_eq!(run.inventory_id, None, "the reference is gone");
        assert_eq!(
            store.get_run_inventory(id).await.expect("snapshot"),
            inv.content,
            "the snapshot stays"
        );
    }
    assert_not_found(store.delete_inventory(inv.id).await, "inventory");

    // A template naming an inventory holds it.
    let held = store
        .create_inventory(&new_inventory("held"), 2)
        .await
        .expect("create");
    store
        .create_template(&new_template("nightly", p.id, held.id))
        .await
        .expect("template");
    assert_conflict(store.delete_inventory(held.id).await, "\"nightly\"");
    assert_eq!(store.get_inventory(held.id).await.expect("kept"), held);
    // The name is free again after a delete.
    store
        .create_inventory(&new_inventory("used"), 2)
        .await
        .expect("name reused");
}

/// Templates keep every field, are found by id and name, listed by id; names are unique and
/// references must exist.
pub async fn templates_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let new = new_template("deploy", p.id, inv.id);
    let t = store.create_template(&new).await.expect("create");
    assert_eq!(t.name, "deploy");
    assert_eq!(t.project_id, p.id);
    assert_eq!(t.playbook, "plays/site.yml");
    assert_eq!(t.inventory_id, inv.id);
    assert_eq!(t.defaults, new.defaults);
    assert_eq!(t.defaults.start_at_task.as_deref(), Some("deploy the app"));
    assert_eq!(t.allow_overrides, ["limit", "extra_vars"]);
    assert_eq!(t.labels, new.labels);
    assert_recent(t.created_at, "created_at");
    let bare = store
        .create_template(&NewTemplate {
            name: "adhoc".into(),
            defaults: RunOptions::default(),
            allow_overrides: Vec::new(),
            labels: Labels::new(),
            ..new.clone()
        })
        .await
        .expect("create");
    assert!(bare.id > t.id);
    assert_eq!(bare.defaults, RunOptions::default());
    assert!(bare.allow_overrides.is_empty() && bare.labels.is_empty());
    assert_eq!(store.get_template(t.id).await.expect("get"), t);
    assert_eq!(
        store.find_template("adhoc").await.expect("find"),
        Some(bare.clone())
    );
    assert_eq!(store.find_template("nope").await.expect("find"), None);
    assert_eq!(
        store.list_templates().await.expect("list"),
        vec![t.clone(), bare.clone()]
    );
    assert_not_found(store.get_template(bare.id + 100).await, "template");

    assert_conflict(store.create_template(&new).await, "\"deploy\"");
    assert_not_found(
        store
            .create_template(&new_template("x", p.id + 100, inv.id))
            .await,
        "project",
    );
    assert_not_found(
        store
            .create_template(&new_template("y", p.id, inv.id + 100))
            .await,
        "inventory",
    );
    assert_eq!(store.list_templates().await.expect("list").len(), 2);
}
