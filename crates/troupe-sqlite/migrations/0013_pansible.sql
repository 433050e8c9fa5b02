-- Pansible's API (docs/pansible.md) keeps only what troupe has no resource for: a Pansible
-- playbook is a git project plus the file its jobs run (its entry), and apps link playbooks
-- and inventories. Pansible inventories are inventories and jobs are runs (labelled).
CREATE TABLE pansible_playbooks (
    project_id  INTEGER PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    entry       TEXT    NOT NULL
);

CREATE TABLE pansible_apps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    appid       TEXT    NOT NULL UNIQUE
);

CREATE TABLE pansible_app_playbooks (
    app_id      INTEGER NOT NULL REFERENCES pansible_apps (id) ON DELETE CASCADE,
    project_id  INTEGER NOT NULL REFERENCES pansible_playbooks (project_id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, project_id)
);
CREATE INDEX pansible_app_playbooks_project ON pansible_app_playbooks (project_id);

-- Deleting an inventory removes its links.
CREATE TABLE pansible_app_inventories (
    app_id       INTEGER NOT NULL REFERENCES pansible_apps (id) ON DELETE CASCADE,
    inventory_id INTEGER NOT NULL REFERENCES inventories (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, inventory_id)
);
CREATE INDEX pansible_app_inventories_inventory ON pansible_app_inventories (inventory_id);
