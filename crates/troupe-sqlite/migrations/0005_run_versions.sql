-- Every change to a run's row bumps its version, so (id, version) names one state of the run:
-- readers key what they build from a run (its JSON) by it. A trigger, so that no UPDATE can
-- forget it; recursive triggers are off, and the WHEN clause stops the trigger's own update
-- from firing it again in any case.
ALTER TABLE runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER runs_version AFTER UPDATE ON runs FOR EACH ROW
WHEN NEW.version = OLD.version
BEGIN
    UPDATE runs SET version = OLD.version + 1 WHERE id = NEW.id;
END;
