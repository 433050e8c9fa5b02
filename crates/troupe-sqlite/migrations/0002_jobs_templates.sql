-- Jobs and units (RedRunner), templates, git project sync state, inventory revisions and
-- the links a run keeps (job/unit, relaunch, template, launch time and commit).

ALTER TABLE projects ADD COLUMN "commit" TEXT;
ALTER TABLE projects ADD COLUMN synced_at INTEGER;
ALTER TABLE projects ADD COLUMN sync_error TEXT;
ALTER TABLE projects ADD COLUMN requirements_error TEXT;

ALTER TABLE inventories ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;

CREATE TABLE jobs (
    -- AUTOINCREMENT: ids keep increasing, so "latest" and paging follow creation order.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tag         TEXT    NOT NULL,
    project_id  INTEGER REFERENCES projects (id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX jobs_by_tag ON jobs (tag, id);

CREATE TABLE job_units (
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    -- JSON of `UnitSource`, once set.
    source    TEXT,
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, name)
);

CREATE TABLE templates (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL UNIQUE,
    project_id       INTEGER NOT NULL REFERENCES projects (id),
    playbook         TEXT    NOT NULL,
    inventory_id     INTEGER NOT NULL REFERENCES inventories (id),
    defaults         TEXT    NOT NULL,
    allow_overrides  TEXT    NOT NULL DEFAULT '[]',
    labels           TEXT    NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL
);
CREATE INDEX templates_by_inventory ON templates (inventory_id);

-- SQLite cannot change the foreign key of runs.inventory_id to ON DELETE SET NULL without
-- rebuilding the table; delete_inventory clears the references itself, in its transaction.
ALTER TABLE runs ADD COLUMN launched_at INTEGER;
ALTER TABLE runs ADD COLUMN "commit" TEXT;
ALTER TABLE runs ADD COLUMN job_id INTEGER REFERENCES jobs (id);
ALTER TABLE runs ADD COLUMN unit TEXT;
ALTER TABLE runs ADD COLUMN relaunch_of INTEGER REFERENCES runs (id);
ALTER TABLE runs ADD COLUMN template_id INTEGER REFERENCES templates (id);

CREATE INDEX runs_by_job ON runs (job_id, unit, id) WHERE job_id IS NOT NULL;
CREATE INDEX runs_by_relaunch ON runs (relaunch_of, id) WHERE relaunch_of IS NOT NULL;
CREATE INDEX runs_by_template ON runs (template_id, id) WHERE template_id IS NOT NULL;
-- delete_inventory looks for the runs that use an inventory.
CREATE INDEX runs_by_inventory ON runs (inventory_id, status) WHERE inventory_id IS NOT NULL;
