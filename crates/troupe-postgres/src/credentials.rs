//! Credentials on PostgreSQL.

use crate::{PgDialect, PgStore, now};
use async_trait::async_trait;
use troupe_core::credential::{Credential, SealedCredential};
use troupe_store::sql::credentials::{self as sql, credential_from, stored_from};
use troupe_store::sql::{backend, unique_or_backend};
use troupe_store::{CredentialStore, StoreError, StoreResult, StoredCredential};

#[async_trait]
impl CredentialStore for PgStore {
    async fn create_credential(&self, new: &SealedCredential) -> StoreResult<Credential> {
        let row = sqlx::query(sql::INSERT)
            .bind(&new.name)
            .bind(new.kind.as_str())
            .bind(&new.username)
            .bind(&new.vault_id)
            .bind(&new.sealed)
            .bind(now())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unique_or_backend(e, || sql::name_taken(&new.name)))?;
        credential_from::<PgDialect>(&row)
    }

    async fn get_credential(&self, id: i64) -> StoreResult<Credential> {
        let row = sqlx::query(sql::BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("credential", id))?;
        credential_from::<PgDialect>(&row)
    }

    async fn find_credential(&self, name: &str) -> StoreResult<Option<Credential>> {
        sqlx::query(sql::BY_NAME)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(credential_from::<PgDialect>)
            .transpose()
    }

    async fn list_credentials(&self) -> StoreResult<Vec<Credential>> {
        sqlx::query(sql::LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(credential_from::<PgDialect>)
            .collect()
    }

    async fn delete_credential(&self, id: i64) -> StoreResult<()> {
        sqlx::query(sql::DELETE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|_| ())
            .ok_or_else(|| StoreError::not_found("credential", id))
    }

    async fn sealed_credential(&self, name: &str) -> StoreResult<Option<StoredCredential>> {
        sqlx::query(sql::SEALED_BY_NAME)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(stored_from::<PgDialect>)
            .transpose()
    }
}
