-- Jobs and units (RedRunner), templates, git project sync state, inventory revisions and
-- the links a run keeps (job/unit, relaunch, template, launch time and commit).

ALTER TABLE projects
    ADD COLUMN "commit"            TEXT,
    ADD COLUMN synced_at           TIMESTAMPTZ,
    ADD COLUMN sync_error          TEXT,
    ADD COLUMN requirements_error  TEXT;

ALTER TABLE inventories ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;

CREATE TABLE jobs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag         TEXT        NOT NULL,
    project_id  BIGINT      REFERENCES projects (id),
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_by_tag ON jobs (tag, id);

CREATE TABLE job_units (
    job_id    BIGINT  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position  BIGINT  NOT NULL,
    name      TEXT    NOT NULL,
    -- `UnitSource`, once set.
    source    JSONB,
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, name)
);

CREATE TABLE templates (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT        NOT NULL UNIQUE,
    project_id       BIGINT      NOT NULL REFERENCES projects (id),
    playbook         TEXT        NOT NULL,
    inventory_id     BIGINT      NOT NULL REFERENCES inventories (id),
    defaults         JSON        NOT NULL,
    allow_overrides  JSONB       NOT NULL DEFAULT '[]',
    labels           JSONB       NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX templates_by_inventory ON templates (inventory_id);

-- A deleted inventory leaves finished runs with their snapshot and no reference.
ALTER TABLE runs
    DROP CONSTRAINT runs_inventory_id_fkey,
    ADD CONSTRAINT runs_inventory_id_fkey FOREIGN KEY (inventory_id)
        REFERENCES inventories (id) ON DELETE SET NULL;

ALTER TABLE runs
    ADD COLUMN launched_at  TIMESTAMPTZ,
    ADD COLUMN "commit"     TEXT,
    ADD COLUMN job_id       BIGINT REFERENCES jobs (id),
    ADD COLUMN unit         TEXT,
    ADD COLUMN relaunch_of  BIGINT REFERENCES runs (id),
    ADD COLUMN template_id  BIGINT REFERENCES templates (id),
    ADD CONSTRAINT runs_job_unit_fkey FOREIGN KEY (job_id, unit)
        REFERENCES job_units (job_id, name),
    ADD CONSTRAINT runs_job_unit_both CHECK ((job_id IS NULL) = (unit IS NULL));

CREATE INDEX runs_by_job ON runs (job_id, unit, id) WHERE job_id IS NOT NULL;
CREATE INDEX runs_by_relaunch ON runs (relaunch_of, id) WHERE relaunch_of IS NOT NULL;
CREATE INDEX runs_by_template ON runs (template_id, id) WHERE template_id IS NOT NULL;
-- delete_inventory looks for the runs that use an inventory, and so does ON DELETE SET NULL.
CREATE INDEX runs_by_inventory ON runs (inventory_id, status) WHERE inventory_id IS NOT NULL;
