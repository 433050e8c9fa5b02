//! Retention's statements, written once with holes for what the backends write differently
//! (how a list of ids is bound, how a step's run ids are unnested).

use crate::RunRetention;

/// The finished runs that are not slices, as [`crate::retention`] describes which go, oldest
/// first: `what` is `r.id` or `COUNT(*)`. `needed` is a subquery of the run ids the steps of
/// unfinished executions started. Parameters, in order, only those `policy` sets: the
/// `finished_before` time, the `keep_per_project` count; then, with `limited`, the limit.
pub fn prunable_runs(policy: &RunRetention, what: &str, needed: &str, limited: bool) -> String {
    let mut params = 0;
    let mut next = || {
        params += 1;
        format!("${params}")
    };
    let mut which = Vec::new();
    if policy.finished_before.is_some() {
        which.push(format!(
            "COALESCE(r.finished_at, r.created_at) < {}",
            next()
        ));
    }
    if policy.keep_per_project.is_some() {
        which.push(format!(
            "r.id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
             (PARTITION BY project_id ORDER BY id DESC) AS newer FROM runs \
             WHERE parent_id IS NULL) ranked WHERE newer > {})",
            next()
        ));
    }
    if which.is_empty() {
        which.push("1 = 0".to_owned());
    }
    let tail = if limited {
        format!(" ORDER BY r.id {}", super::limit(&next()))
    } else {
        String::new()
    };
    format!(
        "SELECT {what} FROM runs r \
         WHERE r.parent_id IS NULL \
         AND r.status IN ('successful', 'failed', 'canceled', 'timeout', 'error') \
         AND ({which}) \
         AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent_id = r.id \
             AND c.status IN ('queued', 'running')) \
         AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.run_id = r.id \
             AND n.state = 'pending') \
         AND (r.job_id IS NULL OR EXISTS (SELECT 1 FROM runs l WHERE l.job_id = r.job_id \
             AND l.unit = r.unit AND l.id > r.id)) \
         AND r.id NOT IN ({needed}){tail}",
        which = which.join(" OR ")
    )
}

/// How many runs, slices included, [`prunable_runs`] names (selected as `n`); parameters as
/// there, without the limit.
pub fn count_prunable_runs(policy: &RunRetention, needed: &str) -> String {
    let top = prunable_runs(policy, "r.id", needed, false);
    format!("SELECT COUNT(*) AS n FROM runs WHERE id IN ({top}) OR parent_id IN ({top})")
}

/// The steps of the executions that may still wait for a run they started (`s`), for a
/// backend to unnest their `run_ids` from.
pub const UNFINISHED_EXECUTION_STEPS: &str = "executions e \
     JOIN execution_steps s ON s.execution_id = e.id";
/// The condition that goes with [`UNFINISHED_EXECUTION_STEPS`].
pub const UNFINISHED: &str = "e.status IN ('queued', 'running')";

/// Rows deleted per statement of a batch: short enough that other writers get the store
/// between two of them.
pub const ROWS_PER_DELETE: i64 = 5000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_by_what_is_set() {
        let both = RunRetention {
            finished_before: Some(chrono::Utc::now()),
            keep_per_project: Some(3),
        };
        let sql = prunable_runs(&both, "r.id", "SELECT 0", true);
        assert!(
            sql.contains("< $1")
                && sql.contains("newer > $2")
                && sql.ends_with("LIMIT CAST($3 AS BIGINT)")
        );
        let keep = RunRetention {
            keep_per_project: Some(3),
            ..RunRetention::default()
        };
        let sql = prunable_runs(&keep, "COUNT(*)", "SELECT 0", false);
        assert!(sql.contains("newer > $1") && !sql.contains("$2") && !sql.contains("LIMIT"));
        let off = prunable_runs(&RunRetention::default(), "r.id", "SELECT 0", true);
        assert!(off.contains("(1 = 0)") && off.ends_with("LIMIT CAST($1 AS BIGINT)"));
    }
}
