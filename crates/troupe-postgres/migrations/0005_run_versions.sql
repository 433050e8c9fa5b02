-- Every change to a run's row bumps its version, so (id, version) names one state of the run:
-- readers key what they build from a run (its JSON) by it. A trigger, so that no UPDATE can
-- forget it.
ALTER TABLE runs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE FUNCTION runs_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$;
CREATE TRIGGER runs_version BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION runs_bump_version();
