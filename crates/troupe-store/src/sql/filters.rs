//! The conditions of the listings, pushed onto a query the backend started (its select list
//! and its `WHERE` opener are its own). Placeholders are the driver's, so the same builder
//! serves both.

use crate::{EventRecordFilter, Page, RunFilter};
use sqlx::{Database, Encode, QueryBuilder, Type};
use troupe_core::flow::ExecutionFilter;

/// Pushes `filter`'s conditions (each ` AND ...`) onto `q`, whose text ends in a `WHERE`
/// clause over `runs`, then `page` as [`push_page`] does.
pub fn push_run_filter<'a, DB>(q: &mut QueryBuilder<DB>, filter: &'a RunFilter, page: Page)
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    if !filter.statuses.is_empty() {
        q.push(" AND status IN (");
        let mut list = q.separated(", ");
        for s in &filter.statuses {
            list.push_bind(s.as_str());
        }
        q.push(")");
    }
    if let Some(project_id) = filter.project_id {
        q.push(" AND project_id = ").push_bind(project_id);
    }
    if let Some(projects) = &filter.projects {
        // An empty scope matches nothing (`IN ()` is not SQL).
        q.push(" AND project_id IN (");
        let mut ids = q.separated(", ");
        ids.push_bind(-1_i64);
        for id in projects {
            ids.push_bind(*id);
        }
        q.push(")");
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND tag = ").push_bind(tag.as_str());
    }
    if let Some(job_id) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job_id);
    }
    if let Some(unit) = &filter.unit {
        q.push(" AND unit = ").push_bind(unit.as_str());
    }
    if let Some(parent_id) = filter.parent_id {
        q.push(" AND parent_id = ").push_bind(parent_id);
    }
    if let Some(relaunch_of) = filter.relaunch_of {
        q.push(" AND relaunch_of = ").push_bind(relaunch_of);
    }
    if let Some((key, value)) = &filter.label {
        q.push(" AND EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.id AND l.key = ")
            .push_bind(key.as_str());
        if let Some(value) = value {
            q.push(" AND l.value = ").push_bind(value.as_str());
        }
        q.push(")");
    }
    push_page(q, page);
}

/// Pushes `filter`'s conditions (each ` AND ...`) onto `q`, whose text ends in a `WHERE`
/// clause over `event_records`, then `page`. `text` prepares a text value for binding (the
/// backend's own rules for what its text can hold).
pub fn push_event_record_filter<'a, DB, T>(
    q: &mut QueryBuilder<DB>,
    filter: &'a EventRecordFilter,
    page: Page,
    text: impl Fn(&'a str) -> T,
) where
    DB: Database,
    T: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(source) = &filter.source {
        q.push(" AND source = ").push_bind(text(source));
    }
    if let Some(routing_key) = &filter.routing_key {
        q.push(" AND routing_key = ").push_bind(text(routing_key));
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    push_page(q, page);
}

/// Pushes `filter`'s conditions (each ` AND ...`) onto `q`, whose text ends in a `WHERE`
/// clause over `executions`, then `page` as [`push_page`] does.
pub fn push_execution_filter<'a, DB>(
    q: &mut QueryBuilder<DB>,
    filter: &'a ExecutionFilter,
    page: Page,
) where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(flow) = &filter.flow {
        q.push(" AND flow = ").push_bind(flow.as_str());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(parent) = filter.parent {
        q.push(" AND parent_execution_id = ").push_bind(parent);
    }
    push_page(q, page);
}

/// Pushes ` AND id < before` (when paging on) and the newest-first order and limit.
pub fn push_page<'a, DB>(q: &mut QueryBuilder<DB>, page: Page)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(before) = page.before {
        q.push(" AND id < ").push_bind(before);
    }
    // `LIMIT CAST(? AS BIGINT)`, as [`super::limit`] says why.
    q.push(" ORDER BY id DESC LIMIT CAST(")
        .push_bind(page.limit)
        .push(" AS BIGINT)");
}
