//! Flow documents, one row per version, on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us};
use async_trait::async_trait;
use troupe_core::flow::FlowVersion;
use troupe_store::sql::flows::flow_not_found;
use troupe_store::sql::{backend, flow_version_from, statements};
use troupe_store::{FlowStore, StoreResult};

#[async_trait]
impl FlowStore for SqliteStore {
    async fn put_flow(&self, name: &str, document: &str) -> StoreResult<FlowVersion> {
        // Under the write lock the newest version cannot change between reading and adding.
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let newest = sqlx::query(statements::NEWEST_FLOW)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .as_ref()
            .map(flow_version_from::<SqliteDialect>)
            .transpose()?;
        let version = match newest {
            Some(newest) if newest.document == document => return Ok(newest),
            Some(newest) => newest.version + 1,
            None => 1,
        };
        let row = sqlx::query(statements::INSERT_FLOW_VERSION)
            .bind(name)
            .bind(version)
            .bind(document)
            .bind(now_us())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let stored = flow_version_from::<SqliteDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn get_flow(&self, name: &str, version: Option<i64>) -> StoreResult<FlowVersion> {
        let q = match version {
            Some(v) => sqlx::query(statements::GET_FLOW_VERSION).bind(name).bind(v),
            None => sqlx::query(statements::NEWEST_FLOW).bind(name),
        };
        let row = q
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| flow_not_found(name, version))?;
        flow_version_from::<SqliteDialect>(&row)
    }

    async fn list_flows(&self) -> StoreResult<Vec<FlowVersion>> {
        sqlx::query(statements::LIST_FLOWS)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(flow_version_from::<SqliteDialect>)
            .collect()
    }

    async fn flow_versions(&self, name: &str) -> StoreResult<Vec<FlowVersion>> {
        sqlx::query(statements::FLOW_VERSIONS)
            .bind(name)
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(flow_version_from::<SqliteDialect>)
            .collect()
    }
}
