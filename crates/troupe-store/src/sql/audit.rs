//! The audit log's statements, filter and rows, the same on both backends.

use super::{Dialect, get, invalid};
use crate::{Page, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};
use troupe_core::audit::{AuditEntry, AuditFilter, NewAuditEntry};

/// The columns of `audit` read by [`entry_from`] (`detail` is text on both backends).
pub const COLS: &str = "id, at, actor, token_id, token_name, role, action, method, route, \
     target_kind, target_id, target_name, status, client_addr, user_agent, detail";

/// Appends one entry (`$1`..`$15` in the order of [`COLS`] after `id`).
pub const INSERT: &str = "INSERT INTO audit (at, actor, token_id, token_name, role, action, \
     method, route, target_kind, target_id, target_name, status, client_addr, user_agent, \
     detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Deletes the entries from before `$1`.
pub const PRUNE: &str = "DELETE FROM audit WHERE at < $1";

/// `entry`'s `detail` as the text stored.
pub fn detail_text(entry: &NewAuditEntry) -> StoreResult<String> {
    super::to_json(&entry.detail)
}

/// A `LIKE` pattern (escape `\`) matching texts that start with `prefix`.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Pushes `filter`'s conditions (each ` AND ...`) onto `q`, whose text ends in a `WHERE`
/// clause over `audit`, then `page`. `time` turns a time into what the backend's `at` column
/// compares with.
pub fn push_audit_filter<'a, DB, T>(
    q: &mut QueryBuilder<DB>,
    filter: &'a AuditFilter,
    page: Page,
    time: impl Fn(DateTime<Utc>) -> T,
) where
    DB: Database,
    T: Encode<'a, DB> + Type<DB> + 'a,
    &'a str: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(actor) = &filter.actor {
        q.push(" AND (actor = ")
            .push_bind(actor.as_str())
            .push(" OR token_name = ")
            .push_bind(actor.as_str())
            .push(")");
    }
    if let Some(action) = &filter.action {
        if action.ends_with('.') {
            q.push(" AND action LIKE ")
                .push_bind(like_prefix(action))
                .push(" ESCAPE '\\'");
        } else {
            q.push(" AND action = ").push_bind(action.as_str());
        }
    }
    if let Some((kind, id)) = filter.target_parts() {
        q.push(" AND target_kind = ").push_bind(kind);
        if let Some(id) = id {
            q.push(" AND target_id = ").push_bind(id);
        }
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(time(since));
    }
    if let Some(until) = filter.until {
        q.push(" AND at < ").push_bind(time(until));
    }
    super::push_page(q, page);
}

/// An entry, from a row of [`COLS`].
pub fn entry_from<D: Dialect>(row: &D::Row) -> StoreResult<AuditEntry> {
    let detail: String = get(row, "detail")?;
    Ok(AuditEntry {
        id: get(row, "id")?,
        at: D::time(row, "at")?,
        actor: get(row, "actor")?,
        token_id: get(row, "token_id")?,
        token_name: get(row, "token_name")?,
        role: get(row, "role")?,
        action: get(row, "action")?,
        method: get(row, "method")?,
        route: get(row, "route")?,
        target_kind: get(row, "target_kind")?,
        target_id: get(row, "target_id")?,
        target_name: get(row, "target_name")?,
        status: get(row, "status")?,
        client_addr: get(row, "client_addr")?,
        user_agent: get(row, "user_agent")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| invalid(format_args!("audit detail: {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(super::like_prefix("run."), "run.%");
        assert_eq!(super::like_prefix("a_b%\\"), "a\\_b\\%\\\\%");
    }
}
