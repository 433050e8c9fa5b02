//! Leader leases on PostgreSQL.

use crate::{PgDialect, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use troupe_store::sql::backend;
use troupe_store::sql::leases::{
    ACQUIRE_SOURCE_LEASE, LIST_SOURCE_LEASES, RELEASE_SOURCE_LEASE, RENEW_SOURCE_LEASE, lease_from,
};
use troupe_store::{SourceLease, SourceLeaseStore, StoreResult};

#[async_trait]
impl SourceLeaseStore for PgStore {
    async fn acquire_source_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let row = sqlx::query(ACQUIRE_SOURCE_LEASE)
            .bind(name)
            .bind(holder)
            .bind(now)
            .bind(until)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn renew_source_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let row = sqlx::query(RENEW_SOURCE_LEASE)
            .bind(name)
            .bind(holder)
            .bind(until)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn release_source_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query(RELEASE_SOURCE_LEASE)
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list_source_leases(&self) -> StoreResult<Vec<SourceLease>> {
        sqlx::query(LIST_SOURCE_LEASES)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(lease_from::<PgDialect>)
            .collect()
    }
}
