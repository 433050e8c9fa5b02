//! Jobs: named sets of units, whose actions are ordinary runs.

use crate::{Page, StoreResult};
use async_trait::async_trait;
use troupe_core::job::{Job, NewJob, Unit, UnitSource};

/// Jobs and their units.
#[async_trait]
pub trait JobStore {
    /// Creates a job with its units, in the order given (no source set yet); `NotFound` for a
    /// missing project.
    async fn create_job(&self, new: &NewJob) -> StoreResult<Job>;
    /// A job with its units.
    async fn get_job(&self, id: i64) -> StoreResult<Job>;
    /// The most recently created job with this tag.
    async fn latest_job(&self, tag: &str) -> StoreResult<Option<Job>>;
    /// Jobs, newest first, optionally only those with `tag`.
    async fn list_jobs(&self, tag: Option<&str>, page: Page) -> StoreResult<Vec<Job>>;
    /// Sets where a unit's playbooks are. `NotFound` when the job, the unit or the project the
    /// source names is missing.
    async fn set_unit_source(
        &self,
        job_id: i64,
        unit: &str,
        source: &UnitSource,
    ) -> StoreResult<Unit>;
}
