//! The rows a new run refers to, checked in one order on every backend, so `NotFound` names
//! the same missing reference everywhere. The lookups are the backend's, through
//! [`References`], run inside the transaction that stores the run.

use super::unit_not_found;
use crate::StoreResult;
use std::future::Future;
use troupe_core::run::NewRun;

/// The lookups of [`check_references`], on one backend's transaction.
pub trait References {
    /// `NotFound(what, id)` unless `table` has a row with this id.
    fn require(
        &mut self,
        table: &'static str,
        what: &'static str,
        id: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// `NotFound` unless the inventory exists. A backend shared by several processes also
    /// keeps it from being deleted until the transaction ends.
    fn require_inventory(&mut self, id: i64) -> impl Future<Output = StoreResult<()>> + Send;
    /// Whether job `job_id` has a unit named `unit`.
    fn unit_exists(
        &mut self,
        job_id: i64,
        unit: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Every row `new` refers to exists, or `NotFound` naming the first that does not: project,
/// inventory, job and unit, relaunched run, template, parent of a slice.
pub async fn check_references<R: References + Send>(refs: &mut R, new: &NewRun) -> StoreResult<()> {
    refs.require("projects", "project", new.project_id).await?;
    if let Some(inventory_id) = new.inventory_id {
        refs.require_inventory(inventory_id).await?;
    }
    if let Some((job_id, unit)) = new.origin.job_unit() {
        refs.require("jobs", "job", job_id).await?;
        if !refs.unit_exists(job_id, unit).await? {
            return Err(unit_not_found(job_id, unit));
        }
    }
    if let Some(relaunch_of) = new.origin.relaunch_of() {
        refs.require("runs", "run", relaunch_of).await?;
    }
    if let Some(template_id) = new.origin.template_id() {
        refs.require("templates", "template", template_id).await?;
    }
    if let Some(slice_of) = new.origin.slice_of() {
        refs.require("runs", "run", slice_of.parent_id).await?;
    }
    Ok(())
}
