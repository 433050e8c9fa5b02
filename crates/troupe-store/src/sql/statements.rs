//! Statement text both backends send as it is. Parameters are numbered (`$1`); sqlx's SQLite
//! driver binds `$N` to the N-th bound value, as PostgreSQL does. Statements that name a
//! [`Dialect`]'s column list are functions of it.

use super::Dialect;
use crate::{OutputChunk, StoreResult};
use sqlx::{Database, Encode, QueryBuilder, Type};
use troupe_core::inventory::Inventory;
use troupe_core::project::Project;
use troupe_core::run::Labels;
use troupe_core::template::Template;

// The shared column lists as literals, so statements can be put together at compile time.
macro_rules! inventory_cols {
    () => {
        "id, name, env, version, format, hosts, vars, host_count, revision, created_at"
    };
}
macro_rules! job_cols {
    () => {
        "id, tag, project_id, created_at"
    };
}
macro_rules! rules_doc_cols {
    () => {
        "revision, text, updated_at"
    };
}
macro_rules! token_cols {
    () => {
        "id, name, hash, created_at, role, projects, expires_at, revoked_at"
    };
}

/// The columns of `inventories` read by [`inventory_from`](super::inventory_from).
pub const INVENTORY_COLS: &str = inventory_cols!();
/// The columns of `jobs` read by [`job_from`](super::job_from).
pub const JOB_COLS: &str = job_cols!();
/// The columns of `rules_doc` read by [`rules_doc_from`](super::rules_doc_from).
pub const RULES_DOC_COLS: &str = rules_doc_cols!();
/// The columns of `tokens` read by [`token_from`](super::token_from).
pub const TOKEN_COLS: &str = token_cols!();

/// How many runs there are in each status (an index-only scan of `runs_by_status`).
pub const COUNT_RUNS_BY_STATUS: &str = "SELECT status, COUNT(*) FROM runs GROUP BY status";
/// Whether a run exists.
pub const RUN_EXISTS: &str = "SELECT 1 FROM runs WHERE id = $1";
/// Whether a job has a unit of this name.
pub const UNIT_EXISTS: &str = "SELECT 1 FROM job_units WHERE job_id = $1 AND name = $2";
/// A run's inventory snapshot.
pub const RUN_INVENTORY: &str =
    "SELECT inventory_format, inventory_hosts, inventory_vars FROM runs WHERE id = $1";
/// Records that a held run's ansible-playbook started (`$1` when, `$2` the commit).
pub const MARK_LAUNCHED: &str = "UPDATE runs SET launched_at = $1, \"commit\" = $2 \
     WHERE id = $3 AND worker_id = $4 AND status = 'running' RETURNING id";
/// Extends a held run's lease to `$1`, returning a cancel asked for meanwhile.
pub const RENEW_LEASE: &str = "UPDATE runs SET lease_expires_at = $1 \
     WHERE id = $2 AND worker_id = $3 AND status = 'running' RETURNING cancel_requested";
/// A run's output on one stream, in order.
pub const READ_OUTPUT: &str =
    "SELECT text FROM run_output WHERE run_id = $1 AND stream = $2 ORDER BY seq";
/// The first active run using an inventory.
pub const ACTIVE_RUN_OF_INVENTORY: &str = "SELECT id, status FROM runs WHERE inventory_id = $1 \
     AND status IN ('queued', 'running') ORDER BY id LIMIT 1";
/// Deletes an inventory.
pub const DELETE_INVENTORY: &str = "DELETE FROM inventories WHERE id = $1";
/// The inbound event whose gate mark still closes a rule's gate at `$4`.
pub const GATE_CLOSED_BY: &str = "SELECT event_id FROM rule_gates WHERE rule = $1 AND kind = $2 \
     AND key = $3 AND expires_at > $4 ORDER BY expires_at DESC LIMIT 1";
/// Closes a rule's gate until `$5`.
pub const INSERT_GATE: &str = "INSERT INTO rule_gates (rule, kind, key, started_at, expires_at, \
     event_id) VALUES ($1, $2, $3, $4, $5, $6)";
/// The active runs sharing a concurrency key, oldest first.
pub const ACTIVE_RUNS_OF_KEY: &str = "SELECT id FROM runs WHERE concurrency_key = $1 \
     AND status IN ('queued', 'running') ORDER BY id";
/// Records an inbound event (its outcome is set once its proposals are carried out).
pub const INSERT_EVENT_RECORD: &str = "INSERT INTO event_records (received_at, source, \
     routing_key, delivery_id, content_hash, payload_size, payload, payload_truncated, status, \
     reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
/// Deletes the event records received before `$1`.
pub const PRUNE_EVENT_RECORDS: &str = "DELETE FROM event_records WHERE received_at < $1";
/// Deletes the gate marks whose window ended before `$1`.
pub const PRUNE_GATES: &str = "DELETE FROM rule_gates WHERE expires_at < $1";
/// The rules document.
pub const GET_RULES: &str = concat!("SELECT ", rules_doc_cols!(), " FROM rules_doc WHERE id = 1");
/// The rules document's revision.
pub const RULES_REVISION: &str = "SELECT revision FROM rules_doc WHERE id = 1";
/// Stores the rules (`$1` text, `$2` when) whatever the revision.
pub const PUT_RULES: &str = concat!(
    "INSERT INTO rules_doc (id, revision, text, updated_at) \
     VALUES (1, 1, $1, $2) ON CONFLICT (id) DO UPDATE SET revision = rules_doc.revision + 1, \
     text = excluded.text, updated_at = excluded.updated_at RETURNING ",
    rules_doc_cols!()
);
/// Stores the first rules (`$1` text, `$2` when), nothing when some are stored.
pub const PUT_FIRST_RULES: &str = concat!(
    "INSERT INTO rules_doc (id, revision, text, updated_at) \
     VALUES (1, 1, $1, $2) ON CONFLICT (id) DO NOTHING RETURNING ",
    rules_doc_cols!()
);
/// Replaces the rules (`$1` text, `$2` when) if their revision is `$3`.
pub const REPLACE_RULES: &str = concat!(
    "UPDATE rules_doc SET revision = revision + 1, text = $1, \
     updated_at = $2 WHERE id = 1 AND revision = $3 RETURNING ",
    rules_doc_cols!()
);
/// Stores a token (`$1`..`$6`: name, hash, when, role, projects JSON or NULL, expiry or NULL).
pub const INSERT_TOKEN: &str = concat!(
    "INSERT INTO tokens (name, hash, created_at, role, projects, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    token_cols!()
);
/// Every token.
pub const LIST_TOKENS: &str = concat!("SELECT ", token_cols!(), " FROM tokens ORDER BY id");
/// One token.
pub const GET_TOKEN: &str = concat!("SELECT ", token_cols!(), " FROM tokens WHERE id = $1");
/// Revokes token `$2` at `$1`, unless it is revoked already or it is the last live unscoped
/// admin token (then nothing is returned and the caller reads the token to tell which).
pub const REVOKE_TOKEN: &str = concat!(
    "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
     AND (role <> 'admin' OR projects IS NOT NULL OR EXISTS (SELECT 1 FROM tokens o \
     WHERE o.id <> $2 AND o.role = 'admin' AND o.projects IS NULL AND o.revoked_at IS NULL \
     AND (o.expires_at IS NULL OR o.expires_at > $1))) RETURNING ",
    token_cols!()
);

/// Stores an inventory (`$1`..`$8`: name, env, version, format, hosts, vars, host count, when).
pub const INSERT_INVENTORY: &str = concat!(
    "INSERT INTO inventories (name, env, version, format, hosts, \
     vars, host_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
    inventory_cols!()
);
/// Replaces inventory `$8` (`$1`..`$7` as in [`INSERT_INVENTORY`]) and bumps its revision.
pub const UPDATE_INVENTORY: &str = concat!(
    "UPDATE inventories SET name = $1, env = $2, version = $3, \
     format = $4, hosts = $5, vars = $6, host_count = $7, revision = revision + 1 WHERE id = $8 \
     RETURNING ",
    inventory_cols!()
);
/// Stores a job (`$1` tag, `$2` project, `$3` when).
pub const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (tag, project_id, created_at) VALUES ($1, $2, $3) RETURNING ",
    job_cols!()
);
/// A job by id.
pub const GET_JOB: &str = concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1");
/// The newest job with a tag.
pub const LATEST_JOB: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM jobs WHERE tag = $1 ORDER BY id DESC LIMIT 1"
);

/// Whether `table` has a row with id `$1`.
pub fn row_exists(table: &str) -> String {
    format!("SELECT 1 FROM {table} WHERE id = $1")
}

/// Admission at create: claims the run just stored (`$4`) for worker `$2` (`started_at` `$1`,
/// lease until `$3`) if the claimant may take it and no older queued run it may take waits.
/// `takes(table)` is the backend's condition on a row named `table` for the runs the claimant
/// may take (its labels, as JSON, are `$5`).
pub fn claim_created<D: Dialect>(takes: impl Fn(&str) -> String) -> String {
    format!(
        "UPDATE runs SET status = 'running', started_at = $1, worker_id = $2, \
         lease_expires_at = $3, cancel_requested = NULL \
         WHERE id = $4 AND status = 'queued' AND {} \
         AND NOT EXISTS (SELECT 1 FROM runs AS older \
           WHERE older.status = 'queued' AND older.id < $4 AND {}) \
         RETURNING {}",
        takes("runs"),
        takes("older"),
        D::RUN_COLS
    )
}

/// A run by id.
pub fn get_run<D: Dialect>() -> String {
    format!("SELECT {} FROM runs WHERE id = $1", D::RUN_COLS)
}

/// A run's project as it is now and the inventory the run was created with.
pub fn run_launch<D: Dialect>() -> String {
    // The run's side is a subquery of columns projects does not have, so the project's
    // columns need no table prefix.
    format!(
        "SELECT {}, r.inventory_format, r.inventory_hosts, r.inventory_vars \
         FROM projects JOIN (SELECT project_id, inventory_format, inventory_hosts, \
         inventory_vars FROM runs WHERE id = $1) r ON projects.id = r.project_id",
        D::PROJECT_COLS
    )
}

/// Records project `$5`'s sync (`$1` commit, `$2` when, `$3` error, `$4` requirements error).
pub fn set_project_sync<D: Dialect>() -> String {
    format!(
        "UPDATE projects SET \"commit\" = $1, synced_at = $2, sync_error = $3, \
         requirements_error = $4 WHERE id = $5 RETURNING {}",
        D::PROJECT_COLS
    )
}

/// Cancels run `$2` at `$1` if it is still queued.
pub fn cancel_queued<D: Dialect>() -> String {
    format!(
        "UPDATE runs SET status = 'canceled', status_reason = 'canceled before start', \
         finished_at = $1 WHERE id = $2 AND status = 'queued' RETURNING {}",
        D::RUN_COLS
    )
}

/// Flags running run `$2` for cancel with mode `$1`: force overrides graceful; graceful never
/// weakens force.
pub fn cancel_running<D: Dialect>() -> String {
    format!(
        "UPDATE runs SET cancel_requested = CASE WHEN $1 = 'force' THEN 'force' \
         ELSE coalesce(cancel_requested, 'graceful') END \
         WHERE id = $2 AND status = 'running' RETURNING {}",
        D::RUN_COLS
    )
}

/// Moves every running run matching `condition` (on `$3`) to `error` with reason `$1` at `$2`.
/// Puts back in the queue every running run matching `condition` (on placeholder `$1`) whose
/// ansible-playbook never started, that nobody asked to cancel and that queued no slices: its
/// worker died before anything ran, so another may take it. Returns their ids.
pub fn requeue_unlaunched(condition: &str) -> String {
    format!(
        "UPDATE runs SET status = 'queued', worker_id = NULL, started_at = NULL, \
         lease_expires_at = NULL WHERE status = 'running' AND launched_at IS NULL \
         AND cancel_requested IS NULL \
         AND NOT EXISTS (SELECT 1 FROM runs AS slice WHERE slice.parent_id = runs.id) \
         AND ({condition}) RETURNING id"
    )
}

/// Fails every running run matching `condition` (on placeholder `$3`), with reason `$1` at
/// `$2`.
pub fn fail_running(condition: &str) -> String {
    format!(
        "UPDATE runs SET status = 'error', status_reason = $1, finished_at = $2, \
         cancel_requested = NULL WHERE status = 'running' AND ({condition}) RETURNING id"
    )
}

/// Run `$1`'s events after counter `$2`, at most `$3`.
pub fn list_events<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM events WHERE run_id = $1 AND counter > $2 ORDER BY counter {}",
        D::EVENT_COLS,
        super::limit("$3")
    )
}

/// Run `$1`'s events that may mean a host failed.
pub fn host_failures<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM events WHERE run_id = $1 \
         AND event IN ('runner_on_failed', 'runner_on_unreachable') ORDER BY counter",
        D::EVENT_COLS
    )
}

/// An event record by id.
pub fn get_event_record<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM event_records WHERE id = $1",
        D::EVENT_RECORD_COLS
    )
}

/// The event record of source `$1` with delivery id `$2`.
pub fn delivered<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM event_records WHERE source = $1 AND delivery_id = $2",
        D::EVENT_RECORD_COLS
    )
}

/// The latest event record of source `$1` with content hash `$2` received from `$3` on.
pub fn redelivered<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM event_records WHERE source = $1 AND content_hash = $2 \
         AND received_at >= $3 ORDER BY received_at DESC, id DESC LIMIT 1",
        D::EVENT_RECORD_COLS
    )
}

/// The `INSERT` of a run's labels.
pub fn insert_labels<'a, DB>(run_id: i64, labels: &'a Labels) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new("INSERT INTO run_labels (run_id, key, value) ");
    q.push_values(labels, |mut b, (k, v)| {
        b.push_bind(run_id)
            .push_bind(k.as_str())
            .push_bind(v.as_str());
    });
    q
}

/// A table of named resources, read the same three ways: by id, by name, all.
pub struct Named<D: Dialect, T> {
    /// The table.
    pub table: &'static str,
    /// The columns `from` reads.
    pub cols: &'static str,
    /// What a missing row is called in `NotFound`.
    pub what: &'static str,
    /// The row mapping.
    pub from: fn(&D::Row) -> StoreResult<T>,
}

impl<D: Dialect, T> Named<D, T> {
    /// One row by id (`$1`).
    pub fn by_id(&self) -> String {
        format!("SELECT {} FROM {} WHERE id = $1", self.cols, self.table)
    }
    /// One row by name (`$1`).
    pub fn by_name(&self) -> String {
        format!("SELECT {} FROM {} WHERE name = $1", self.cols, self.table)
    }
    /// Every row, by id.
    pub fn all(&self) -> String {
        format!("SELECT {} FROM {} ORDER BY id", self.cols, self.table)
    }
}

/// The projects table.
pub fn projects<D: Dialect>() -> Named<D, Project> {
    Named {
        table: "projects",
        cols: D::PROJECT_COLS,
        what: "project",
        from: super::project_from::<D>,
    }
}

/// The inventories table.
pub fn inventories<D: Dialect>() -> Named<D, Inventory> {
    Named {
        table: "inventories",
        cols: INVENTORY_COLS,
        what: "inventory",
        from: super::inventory_from::<D>,
    }
}

/// The templates table.
pub fn templates<D: Dialect>() -> Named<D, Template> {
    Named {
        table: "templates",
        cols: D::TEMPLATE_COLS,
        what: "template",
        from: super::template_from::<D>,
    }
}

/// The `INSERT` of output chunks of run `run_id`, skipping the seqs already stored. `text`
/// prepares a chunk's text for binding (the backend's own rules for what its text can hold).
pub fn insert_output<'a, DB, T>(
    run_id: i64,
    chunks: &'a [OutputChunk],
    text: impl Fn(&'a str) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    T: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new("INSERT INTO run_output (run_id, seq, stream, text) ");
    q.push_values(chunks, |mut b, c| {
        b.push_bind(run_id)
            .push_bind(c.seq)
            .push_bind(c.stream.as_str())
            .push_bind(text(&c.text));
    });
    q.push(" ON CONFLICT (run_id, seq) DO NOTHING");
    q
}

/// The statement that stores the rules as `expected_revision` asks (see
/// [`InboundStore::put_rules`](crate::InboundStore::put_rules)), with the revision it binds as
/// `$3`, if any. Each case is one statement, so the check and the write are one step even
/// with several troupe processes.
pub fn put_rules(expected_revision: Option<i64>) -> (&'static str, Option<i64>) {
    match expected_revision {
        None => (PUT_RULES, None),
        Some(0) => (PUT_FIRST_RULES, None),
        Some(r) => (REPLACE_RULES, Some(r)),
    }
}

// Flows: versions, executions and their steps, slots, schedules and fires.

macro_rules! flow_version_cols {
    () => {
        "name, version, document, created_at"
    };
}

/// The columns of `flow_versions` read by [`flow_version_from`](super::flow_version_from).
pub const FLOW_VERSION_COLS: &str = flow_version_cols!();
/// The newest version of flow `$1`.
pub const NEWEST_FLOW: &str = concat!(
    "SELECT ",
    flow_version_cols!(),
    " FROM flow_versions WHERE name = $1 ORDER BY version DESC LIMIT 1"
);
/// Version `$2` of flow `$1`.
pub const GET_FLOW_VERSION: &str = concat!(
    "SELECT ",
    flow_version_cols!(),
    " FROM flow_versions WHERE name = $1 AND version = $2"
);
/// Stores a flow version (`$1` name, `$2` version, `$3` document, `$4` when).
pub const INSERT_FLOW_VERSION: &str = concat!(
    "INSERT INTO flow_versions (name, version, document, created_at) VALUES ($1, $2, $3, $4) \
     RETURNING ",
    flow_version_cols!()
);
/// The newest version of every flow, by name.
pub const LIST_FLOWS: &str = concat!(
    "SELECT ",
    flow_version_cols!(),
    " FROM flow_versions f WHERE version = \
     (SELECT max(version) FROM flow_versions g WHERE g.name = f.name) ORDER BY name"
);
/// Every version of flow `$1`, newest first.
pub const FLOW_VERSIONS: &str = concat!(
    "SELECT ",
    flow_version_cols!(),
    " FROM flow_versions WHERE name = $1 ORDER BY version DESC"
);

/// Execution `$1`'s current round.
pub const EXECUTION_ROUND: &str = "SELECT round FROM executions WHERE id = $1";
/// The executions holding a slot of key `$1`, oldest first.
pub const SLOT_HOLDERS: &str =
    "SELECT execution_id FROM execution_slots WHERE key = $1 ORDER BY execution_id";
/// Gives execution `$2` a slot of key `$1` (nothing if it holds one).
pub const HOLD_SLOT: &str = "INSERT INTO execution_slots (key, execution_id) VALUES ($1, $2) \
     ON CONFLICT (key, execution_id) DO NOTHING";
/// Lets go of every slot of execution `$1`.
pub const RELEASE_SLOTS: &str = "DELETE FROM execution_slots WHERE execution_id = $1";

/// Deletes schedule `$1` (its fires go with it).
pub const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE id = $1 RETURNING id";
/// Moves schedule `$1`'s next fire from `$2` to `$3`, if it is still `$2`.
pub const ADVANCE_SCHEDULE: &str = "UPDATE schedules SET next_fire_at = $3, last_fire_at = $2, \
     last_result = NULL WHERE id = $1 AND next_fire_at = $2 RETURNING id";
/// Records the fire of schedule `$1` at `$2`, claimed at `$3`, unless it is recorded already.
pub const INSERT_FIRE: &str = "INSERT INTO schedule_fires (schedule_id, fire_at, claimed_at) \
     VALUES ($1, $2, $3) ON CONFLICT (schedule_id, fire_at) DO NOTHING RETURNING schedule_id";
/// Deletes schedule `$1`'s fires but the latest 100: the fire log stays small however often a
/// schedule fires (a claim needs none but the fire it claims).
pub const PRUNE_FIRES: &str = "DELETE FROM schedule_fires WHERE schedule_id = $1 AND fire_at < \
     (SELECT fire_at FROM schedule_fires WHERE schedule_id = $1 \
     ORDER BY fire_at DESC LIMIT 1 OFFSET 99)";
/// Stores result `$3` of schedule `$1`'s fire at `$2`.
pub const RECORD_FIRE: &str = "UPDATE schedule_fires SET result = $3 \
     WHERE schedule_id = $1 AND fire_at = $2 RETURNING schedule_id";
/// Shows result `$3` as schedule `$1`'s last, if its last fire is the one at `$2`.
pub const RECORD_LAST_RESULT: &str =
    "UPDATE schedules SET last_result = $3 WHERE id = $1 AND last_fire_at = $2";

/// An execution by id.
pub fn get_execution<D: Dialect>() -> String {
    format!("SELECT {} FROM executions WHERE id = $1", D::EXECUTION_COLS)
}

/// Creates an execution of flow `$1` version `$2`, `queued`: `$3` inputs, `$4` sealed
/// secrets, `$5` concurrency key, `$6` parent execution, `$7` parent step, `$8` started by,
/// `$9` when. No row when that version does not exist.
pub fn insert_execution<D: Dialect>() -> String {
    format!(
        "INSERT INTO executions (flow, version, status, inputs, sealed_secrets, \
         concurrency_key, parent_execution_id, parent_step, started_by, created_at) \
         SELECT name, version, 'queued', $3{j}, $4, $5, $6, $7, $8, $9 FROM flow_versions \
         WHERE name = $1 AND version = $2 RETURNING {cols}",
        j = D::JSON_PARAM,
        cols = D::EXECUTION_COLS
    )
}

/// Gives execution `$1` to owner `$2` until `$4`, if it is unfinished and has no owner, is
/// `$2`'s already, or its lease ended before `$3`.
pub fn claim_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET owner = $2, lease_until = $4 WHERE id = $1 \
         AND status IN ({unfinished}) AND (owner IS NULL OR owner = $2 OR lease_until < $3) \
         RETURNING {cols}",
        unfinished = super::flows::unfinished(),
        cols = D::EXECUTION_COLS
    )
}

/// Unfinished executions nobody holds at `$1` (no owner, or a lease ended before), oldest
/// first, at most `$2`.
pub fn unclaimed_executions<D: Dialect>() -> String {
    format!(
        "SELECT {cols} FROM executions WHERE status IN ({unfinished}) \
         AND (owner IS NULL OR lease_until < $1) ORDER BY id {limit}",
        limit = super::limit("$2"),
        unfinished = super::flows::unfinished(),
        cols = D::EXECUTION_COLS
    )
}

/// Moves unfinished execution `$1` to finished status `$2` with error `$3` at `$4`, dropping
/// its owner.
pub fn finish_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = $2, error = $3, finished_at = $4, owner = NULL, \
         lease_until = NULL WHERE id = $1 AND status IN ({unfinished}) RETURNING {cols}",
        unfinished = super::flows::unfinished(),
        cols = D::EXECUTION_COLS
    )
}

/// Moves unfinished execution `$1` to unfinished status `$2` with error `$3`; the first move
/// to `running` sets `started_at` to `$4`.
pub fn move_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = $2, error = $3, started_at = CASE \
         WHEN $2 = 'running' THEN coalesce(started_at, $4) ELSE started_at END \
         WHERE id = $1 AND status IN ({unfinished}) RETURNING {cols}",
        unfinished = super::flows::unfinished(),
        cols = D::EXECUTION_COLS
    )
}

/// Cancels execution `$1` at `$2` if it is queued and nobody holds it at `$2`.
pub fn cancel_queued_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = 'canceled', cancel_requested = TRUE, finished_at = $2, \
         owner = NULL, lease_until = NULL WHERE id = $1 AND status = 'queued' \
         AND (owner IS NULL OR lease_until < $2) RETURNING {}",
        D::EXECUTION_COLS
    )
}

/// Asks unfinished execution `$1` to stop.
pub fn flag_cancel_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET cancel_requested = TRUE WHERE id = $1 \
         AND status IN ({unfinished}) RETURNING {cols}",
        unfinished = super::flows::unfinished(),
        cols = D::EXECUTION_COLS
    )
}

/// Queues execution `$1` again, one round later, if it ended in a status it may be resumed
/// from.
pub fn resume_execution<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = 'queued', round = round + 1, owner = NULL, \
         lease_until = NULL, error = NULL, cancel_requested = FALSE, finished_at = NULL \
         WHERE id = $1 AND status IN ({resumable}) RETURNING {cols}",
        resumable = super::flows::resumable(),
        cols = D::EXECUTION_COLS
    )
}

/// Stores a step record (`$1`..`$15` in the order of [`Dialect::STEP_COLS`]), replacing the
/// one of the same execution, round and key.
pub fn put_step<D: Dialect>() -> String {
    format!(
        "INSERT INTO execution_steps (execution_id, round, key, phase, position, kind, status, \
         attempts, started_at, finished_at, result, published, error, run_ids, execution_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11{j}, $12{j}, $13, $14, $15) \
         ON CONFLICT (execution_id, round, key) DO UPDATE SET phase = excluded.phase, \
         position = excluded.position, kind = excluded.kind, status = excluded.status, \
         attempts = excluded.attempts, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, result = excluded.result, \
         published = excluded.published, error = excluded.error, run_ids = excluded.run_ids, \
         execution_ids = excluded.execution_ids",
        j = D::JSON_PARAM
    )
}

/// Every step record of execution `$1` (put in order by
/// [`steps_in_order`](super::flows::steps_in_order)).
pub fn list_steps<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM execution_steps WHERE execution_id = $1 ORDER BY round, position, key",
        D::STEP_COLS
    )
}

/// The record of step `$3` of execution `$1` in round `$2`.
pub fn get_step<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM execution_steps WHERE execution_id = $1 AND round = $2 AND key = $3",
        D::STEP_COLS
    )
}

/// Sets the result of step `$3` of execution `$1` in round `$2` to `$4` while it is waiting.
pub fn set_waiting_step_result<D: Dialect>() -> String {
    format!(
        "UPDATE execution_steps SET result = $4{j} WHERE execution_id = $1 AND round = $2 \
         AND key = $3 AND status = 'waiting' RETURNING {cols}",
        j = D::JSON_PARAM,
        cols = D::STEP_COLS
    )
}

/// Creates a schedule (`$1` name, `$2` cron, `$3` time zone, `$4` target, `$5` missed fires,
/// `$6` next fire, `$7` when).
pub fn insert_schedule<D: Dialect>() -> String {
    format!(
        "INSERT INTO schedules (name, cron, timezone, target, missed, next_fire_at, created_at) \
         VALUES ($1, $2, $3, $4{j}, $5, $6, $7) RETURNING {cols}",
        j = D::JSON_PARAM,
        cols = D::SCHEDULE_COLS
    )
}

/// A schedule by id.
pub fn get_schedule<D: Dialect>() -> String {
    format!("SELECT {} FROM schedules WHERE id = $1", D::SCHEDULE_COLS)
}

/// Every schedule, by name.
pub fn list_schedules<D: Dialect>() -> String {
    format!("SELECT {} FROM schedules ORDER BY name", D::SCHEDULE_COLS)
}

/// The schedules due at `$1`, the earliest first.
pub fn due_schedules<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM schedules WHERE next_fire_at <= $1 ORDER BY next_fire_at, id",
        D::SCHEDULE_COLS
    )
}

macro_rules! worker_cols {
    () => {
        "id, name, kind, labels, capacity, active_runs, version, started_at, last_heartbeat, \
         draining, stopped_at"
    };
}
/// Registers a worker, or registers it again (`$1`..`$7`: id, name, kind, labels JSON,
/// capacity, version, now).
pub const REGISTER_WORKER: &str = concat!(
    "INSERT INTO workers (id, name, kind, labels, capacity, version, started_at, last_heartbeat) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
     labels = excluded.labels, capacity = excluded.capacity, version = excluded.version, \
     last_heartbeat = excluded.last_heartbeat, stopped_at = NULL RETURNING ",
    worker_cols!()
);
/// Marks the other incarnations of a node stopped (`$1` now, `$2` LIKE pattern of the node,
/// `$3` the incarnation that stays).
pub const STOP_OTHER_INCARNATIONS: &str = "UPDATE workers SET stopped_at = $1 \
     WHERE id LIKE $2 AND id <> $3 AND stopped_at IS NULL";
/// A heartbeat (`$1` now, `$2` active runs, `$3` id).
pub const HEARTBEAT_WORKER: &str = concat!(
    "UPDATE workers SET last_heartbeat = $1, active_runs = $2 \
     WHERE id = $3 AND stopped_at IS NULL RETURNING ",
    worker_cols!()
);
/// One worker.
pub const GET_WORKER: &str = concat!("SELECT ", worker_cols!(), " FROM workers WHERE id = $1");
/// Workers not stopped, or active after `$1`.
pub const LIST_WORKERS: &str = concat!(
    "SELECT ",
    worker_cols!(),
    " FROM workers WHERE stopped_at IS NULL OR last_heartbeat > $1 ORDER BY id"
);
/// Asks a worker to drain.
pub const DRAIN_WORKER: &str = concat!(
    "UPDATE workers SET draining = TRUE WHERE id = $1 RETURNING ",
    worker_cols!()
);
/// A worker said goodbye (`$1` now, `$2` id).
pub const STOP_WORKER: &str =
    "UPDATE workers SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL";
