//! Projects, inventories and templates on SQLite.

use crate::{SqliteDialect, SqliteStore, now_us, ts};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, SqliteConnection};
use troupe_core::inventory::{Inventory, NewInventory};
use troupe_core::project::{NewProject, Project, ProjectSync};
use troupe_core::template::{NewTemplate, Template};
use troupe_store::sql::Dialect;
use troupe_store::sql::statements::{self, Named};
use troupe_store::sql::{
    backend, inventory_from, inventory_in_use, inventory_named_by, project_from, template_from,
    to_json, unique_or_backend,
};
use troupe_store::{InventoryStore, ProjectStore, StoreError, StoreResult, TemplateStore};

#[async_trait]
impl ProjectStore for SqliteStore {
    async fn create_project(&self, new: &NewProject) -> StoreResult<Project> {
        insert_project(&mut *self.write().await, new).await
    }

    async fn get_project(&self, id: i64) -> StoreResult<Project> {
        self.by_id(&statements::projects(), id).await
    }

    async fn find_project(&self, name: &str) -> StoreResult<Option<Project>> {
        self.by_name(&statements::projects(), name).await
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        self.all(&statements::projects()).await
    }

    async fn set_project_sync(&self, id: i64, sync: &ProjectSync) -> StoreResult<Project> {
        let row = sqlx::query(AssertSqlSafe(
            statements::set_project_sync::<SqliteDialect>(),
        ))
        .bind(&sync.commit)
        .bind(sync.synced_at.map(ts))
        .bind(&sync.error)
        .bind(&sync.requirements_error)
        .bind(id)
        .fetch_optional(&mut *self.write().await)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("project", id))?;
        project_from::<SqliteDialect>(&row)
    }
}

/// Stores a project on `conn` (the writer, or a transaction of it).
pub(crate) async fn insert_project(
    conn: &mut SqliteConnection,
    new: &NewProject,
) -> StoreResult<Project> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO projects (name, source, created_at) VALUES (?, ?, ?) RETURNING {}",
        SqliteDialect::PROJECT_COLS
    )))
    .bind(&new.name)
    .bind(to_json(&new.source)?)
    .bind(now_us())
    .fetch_one(conn)
    .await
    .map_err(|e| unique_or_backend(e, || format!("project name {:?} is taken", new.name)))?;
    project_from::<SqliteDialect>(&row)
}

#[async_trait]
impl InventoryStore for SqliteStore {
    async fn create_inventory(
        &self,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory> {
        let row = sqlx::query(statements::INSERT_INVENTORY)
            .bind(&new.name)
            .bind(&new.env)
            .bind(&new.version)
            .bind(new.format.as_str())
            .bind(&new.hosts)
            .bind(&new.vars)
            .bind(host_count)
            .bind(now_us())
            .fetch_one(&mut *self.write().await)
            .await
            .map_err(|e| {
                unique_or_backend(e, || format!("inventory name {:?} is taken", new.name))
            })?;
        inventory_from::<SqliteDialect>(&row)
    }

    async fn get_inventory(&self, id: i64) -> StoreResult<Inventory> {
        self.by_id(&statements::inventories(), id).await
    }

    async fn find_inventory(&self, name: &str) -> StoreResult<Option<Inventory>> {
        self.by_name(&statements::inventories(), name).await
    }

    async fn list_inventories(&self) -> StoreResult<Vec<Inventory>> {
        self.all(&statements::inventories()).await
    }

    async fn update_inventory(
        &self,
        id: i64,
        new: &NewInventory,
        host_count: i64,
    ) -> StoreResult<Inventory> {
        let row = sqlx::query(statements::UPDATE_INVENTORY)
            .bind(&new.name)
            .bind(&new.env)
            .bind(&new.version)
            .bind(new.format.as_str())
            .bind(&new.hosts)
            .bind(&new.vars)
            .bind(host_count)
            .bind(id)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(|e| {
                unique_or_backend(e, || format!("inventory name {:?} is taken", new.name))
            })?
            .ok_or_else(|| StoreError::not_found("inventory", id))?;
        inventory_from::<SqliteDialect>(&row)
    }

    async fn delete_inventory(&self, id: i64) -> StoreResult<()> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let name: String = sqlx::query_scalar("SELECT name FROM inventories WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("inventory", id))?;
        let active = sqlx::query(statements::ACTIVE_RUN_OF_INVENTORY)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(run) = active {
            return Err(inventory_in_use(&name, &run));
        }
        let template: Option<String> =
            sqlx::query_scalar("SELECT name FROM templates WHERE inventory_id = ? ORDER BY id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some(template) = template {
            return Err(inventory_named_by(&name, &template));
        }
        // What ON DELETE SET NULL would do (see the migration).
        sqlx::query("UPDATE runs SET inventory_id = NULL WHERE inventory_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(statements::DELETE_INVENTORY)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn create_template(&self, new: &NewTemplate) -> StoreResult<Template> {
        let defaults = to_json(&new.defaults)?;
        let allow_overrides = to_json(&new.allow_overrides)?;
        let labels = to_json(&new.labels)?;
        let notify = to_json(&new.notify)?;
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        crate::require_row(&mut tx, "projects", "project", new.project_id).await?;
        crate::require_row(&mut tx, "inventories", "inventory", new.inventory_id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO templates (name, project_id, playbook, inventory_id, defaults, \
             allow_overrides, labels, notify, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING {}",
            SqliteDialect::TEMPLATE_COLS
        )))
        .bind(&new.name)
        .bind(new.project_id)
        .bind(&new.playbook)
        .bind(new.inventory_id)
        .bind(defaults)
        .bind(allow_overrides)
        .bind(labels)
        .bind(notify)
        .bind(now_us())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unique_or_backend(e, || format!("template name {:?} is taken", new.name)))?;
        let template = template_from::<SqliteDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(template)
    }

    async fn get_template(&self, id: i64) -> StoreResult<Template> {
        self.by_id(&statements::templates(), id).await
    }

    async fn find_template(&self, name: &str) -> StoreResult<Option<Template>> {
        self.by_name(&statements::templates(), name).await
    }

    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        self.all(&statements::templates()).await
    }
}

impl SqliteStore {
    /// One of `n`'s rows by id.
    async fn by_id<T>(&self, n: &Named<SqliteDialect, T>, id: i64) -> StoreResult<T> {
        let row = sqlx::query(AssertSqlSafe(n.by_id()))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found(n.what, id))?;
        (n.from)(&row)
    }

    /// One of `n`'s rows by name.
    async fn by_name<T>(&self, n: &Named<SqliteDialect, T>, name: &str) -> StoreResult<Option<T>> {
        sqlx::query(AssertSqlSafe(n.by_name()))
            .bind(name)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .as_ref()
            .map(n.from)
            .transpose()
    }

    /// All of `n`'s rows, by id.
    async fn all<T>(&self, n: &Named<SqliteDialect, T>) -> StoreResult<Vec<T>> {
        sqlx::query(AssertSqlSafe(n.all()))
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(n.from)
            .collect()
    }
}
