-- Events and output are written thousands of rows a second per run. A foreign key to runs made
-- PostgreSQL look the run up once per row (an RI trigger running a query per row: a quarter of
-- the backend's time while a run streamed events). The run is checked once per batch instead:
-- every batch updates the run's event_count (or output) in the same transaction and is rolled
-- back when no run was updated. Runs are never deleted; whatever deletes one later must delete
-- its events and output in the same transaction, after the run's row (whose lock a concurrent
-- append holds until it commits).
ALTER TABLE events DROP CONSTRAINT events_run_id_fkey;
ALTER TABLE run_output DROP CONSTRAINT run_output_run_id_fkey;
