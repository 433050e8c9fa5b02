//! The audit log on SQLite.

use crate::{SqliteDialect, SqliteStore, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use troupe_core::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use troupe_store::sql::audit::{self as sql, detail_text, entry_from, push_audit_filter};
use troupe_store::sql::backend;
use troupe_store::{AuditStore, Page, StoreResult};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let details = entries
            .iter()
            .map(detail_text)
            .collect::<StoreResult<Vec<_>>>()?;
        // One statement for the whole batch: one trip to the writer.
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit (at, actor, token_id, token_name, role, action, method, route, \
             target_kind, target_id, target_name, status, client_addr, user_agent, detail) ",
        );
        q.push_values(entries.iter().zip(&details), |mut b, (e, detail)| {
            b.push_bind(ts(e.at))
                .push_bind(e.actor.as_str())
                .push_bind(e.token_id)
                .push_bind(e.token_name.as_deref())
                .push_bind(e.role.as_deref())
                .push_bind(e.action.as_str())
                .push_bind(e.method.as_deref())
                .push_bind(e.route.as_deref())
                .push_bind(e.target_kind.as_deref())
                .push_bind(e.target_id.as_deref())
                .push_bind(e.target_name.as_deref())
                .push_bind(e.status)
                .push_bind(e.client_addr.as_deref())
                .push_bind(e.user_agent.as_deref())
                .push_bind(detail.as_str());
        });
        q.build()
            .execute(&mut *self.write().await)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter, page: Page) -> StoreResult<Vec<AuditEntry>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {} FROM audit WHERE 1 = 1", sql::COLS));
        push_audit_filter(&mut q, filter, page, ts);
        q.build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(entry_from::<SqliteDialect>)
            .collect()
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(sql::PRUNE)
            .bind(ts(before))
            .execute(&mut *self.write().await)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
