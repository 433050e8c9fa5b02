-- Split runs: a slice points at its parent run, with its number and the slice count.
ALTER TABLE runs
    ADD COLUMN parent_id   BIGINT REFERENCES runs (id),
    ADD COLUMN slice       INTEGER,
    ADD COLUMN slice_count INTEGER;
CREATE INDEX runs_by_parent ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
