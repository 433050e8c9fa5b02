//! Runs as they are created and read: the queue's entries, their inventory snapshot, and the
//! versions readers key what they derive from a run by.

use crate::{Page, StoreResult};
use async_trait::async_trait;
use troupe_core::RunStatus;
use troupe_core::inventory::InventoryContent;
use troupe_core::project::Project;
use troupe_core::run::{NewRun, Run};

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RunFilter {
    /// Only runs in one of these statuses (any when empty).
    pub statuses: Vec<RunStatus>,
    /// Only runs of this project.
    pub project_id: Option<i64>,
    /// Only runs of one of these projects (a project-scoped token's view); `None` for any.
    pub projects: Option<Vec<i64>>,
    /// Only runs carrying this label key (and value, when given).
    pub label: Option<(String, Option<String>)>,
    /// Only runs with this tag.
    pub tag: Option<String>,
    /// Only actions of this job.
    pub job_id: Option<i64>,
    /// Only actions on this unit (of `job_id`).
    pub unit: Option<String>,
    /// Only relaunches of this run.
    pub relaunch_of: Option<i64>,
    /// Only slices of this split run.
    pub parent_id: Option<i64>,
}

/// One state of a run: its id and its version, a counter the store bumps on every change to
/// the run. Readers key what they derive from a run (its JSON, say) by it, and ask for the
/// whole run again only when the version moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunVersion {
    /// The run.
    pub id: i64,
    /// Grows with every change to the run; never goes back.
    pub version: i64,
}

/// Creating and reading runs (their life after creation is [`ClaimStore`](crate::ClaimStore)'s).
#[async_trait]
pub trait RunStore {
    /// Stores a new run, `queued`. The project (and inventory, job unit, relaunched run and
    /// template, if any) must exist: `NotFound` names the one that does not.
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run>;
    /// A run by id.
    async fn get_run(&self, id: i64) -> StoreResult<Run>;
    /// The inventory a run was created with.
    async fn get_run_inventory(&self, id: i64) -> StoreResult<InventoryContent>;
    /// What starting a run reads, in one trip: its project as it is now, and the inventory
    /// the run was created with.
    async fn get_run_launch(&self, id: i64) -> StoreResult<(Project, InventoryContent)>;
    /// How many runs there are in each status; statuses without runs are left out.
    async fn count_runs_by_status(&self) -> StoreResult<Vec<(RunStatus, u64)>>;
    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter, page: Page) -> StoreResult<Vec<Run>>;
    /// A number that moves after every committed change to runs and their labels, whoever made
    /// it; `None` while the store cannot promise that (the default; and while a change is being
    /// made, for a backend that sees changes before they commit). Read before a list query,
    /// an unchanged number later means the query would still answer the same, so the answer
    /// can be reused without asking. It may also move when nothing listed changed.
    fn runs_generation(&self) -> Option<u64> {
        None
    }
    /// What [`RunStore::list_runs`] would return, as ids and versions only (same order).
    async fn list_run_versions(
        &self,
        filter: &RunFilter,
        page: Page,
    ) -> StoreResult<Vec<RunVersion>>;
    /// The runs with these ids, each with its version, in no particular order; ids with no
    /// run are left out.
    async fn get_runs(&self, ids: &[i64]) -> StoreResult<Vec<(RunVersion, Run)>>;
}
