//! Pansible's playbook entries and apps on PostgreSQL.

use crate::catalog::insert_project;
use crate::{PgDialect, PgStore};
use async_trait::async_trait;
use troupe_core::project::{NewProject, Project};
use troupe_store::pansible::{
    AppLink, PansibleApp, PansiblePlaybook, PansibleStore, missing_link_end,
};
use troupe_store::sql::pansible as sql;
use troupe_store::sql::{backend, foreign_key_violated, unique_or_backend};
use troupe_store::{StoreError, StoreResult};

#[async_trait]
impl PansibleStore for PgStore {
    async fn create_pansible_playbook(
        &self,
        project: &NewProject,
        entry: &str,
    ) -> StoreResult<Project> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let stored = insert_project(&mut *tx, project).await?;
        sqlx::query(sql::INSERT_PLAYBOOK)
            .bind(stored.id)
            .bind(entry)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn get_pansible_playbook(&self, project_id: i64) -> StoreResult<PansiblePlaybook> {
        let row = sqlx::query(sql::GET_PLAYBOOK)
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("playbook", project_id))?;
        sql::playbook_from::<PgDialect>(&row)
    }

    async fn list_pansible_playbooks(&self) -> StoreResult<Vec<PansiblePlaybook>> {
        sqlx::query(sql::LIST_PLAYBOOKS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(sql::playbook_from::<PgDialect>)
            .collect()
    }

    async fn create_pansible_app(&self, appid: &str) -> StoreResult<PansibleApp> {
        let row = sqlx::query(sql::INSERT_APP)
            .bind(appid)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unique_or_backend(e, || format!("app {appid:?} already exists")))?;
        sql::app_from::<PgDialect>(&row)
    }

    async fn get_pansible_app(&self, id: i64) -> StoreResult<PansibleApp> {
        let row = sqlx::query(sql::GET_APP)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("app", id))?;
        let mut apps = vec![sql::app_from::<PgDialect>(&row)?];
        let links = sqlx::query(sql::LINKS_OF_APP)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        sql::add_links::<PgDialect>(&mut apps, &links)?;
        apps.pop().ok_or_else(|| StoreError::not_found("app", id))
    }

    async fn list_pansible_apps(&self) -> StoreResult<Vec<PansibleApp>> {
        let mut apps = sqlx::query(sql::LIST_APPS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(sql::app_from::<PgDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        let links = sqlx::query(sql::ALL_LINKS)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        sql::add_links::<PgDialect>(&mut apps, &links)?;
        Ok(apps)
    }

    async fn link_pansible_app(&self, app_id: i64, link: AppLink) -> StoreResult<PansibleApp> {
        let (statement, target) = sql::link_statement(link);
        let inserted = sqlx::query(statement)
            .bind(app_id)
            .bind(target)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if foreign_key_violated(&e) => {
                return Err(missing_link_end(self, app_id, link).await);
            }
            Err(e) => return Err(backend(e)),
        }
        self.get_pansible_app(app_id).await
    }
}
