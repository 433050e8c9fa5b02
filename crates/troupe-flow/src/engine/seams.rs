//! What the engine needs from the rest of troupe, as small capabilities: finding nodes, waiting
//! for a run's end, sealing secrets, and telling watchers what changed.

use async_trait::async_trait;
use serde_json::{Map, Value};
use troupe_core::flow::{Execution, StepRecord};
use troupe_core::run::Run;
use troupe_core::secret::Sealer;
use troupe_store::StoreResult;

use crate::doc::NodeSet;

/// What discovery found for one node set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// These nodes (possibly none, when the set says `when_empty: continue`).
    Found(Vec<String>),
    /// None, and the set says `when_empty: skip`: steps using it are skipped.
    Skip,
}

/// Finds the nodes of a node set (whose strings are already rendered).
#[async_trait]
pub trait FindNodes: Send + Sync {
    /// The nodes of set `name`, or why they could not be found.
    async fn find(&self, name: &str, set: &NodeSet) -> Result<Nodes, String>;
}

/// Waits for runs to end.
#[async_trait]
pub trait WaitRun: Send + Sync {
    /// The run once it has a final status.
    async fn finished(&self, run_id: i64) -> StoreResult<Run>;
}

/// Hears what executions do, to stream it live.
pub trait Observe: Send + Sync {
    /// An execution changed status.
    fn execution(&self, execution: &Execution);
    /// A step's record changed.
    fn step(&self, record: &StepRecord);
    /// A line of an execution's log.
    fn log(&self, execution_id: i64, line: &str);
}

/// Observes nothing.
pub struct Unobserved;

impl Observe for Unobserved {
    fn execution(&self, _: &Execution) {}
    fn step(&self, _: &StepRecord) {}
    fn log(&self, _: i64, _: &str) {}
}

/// Secret inputs as a JSON object, sealed.
pub(crate) fn seal_map(
    seal: &dyn Sealer,
    secrets: &Map<String, Value>,
) -> Result<Option<String>, String> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let bytes = serde_json::to_vec(secrets).map_err(|e| e.to_string())?;
    seal.seal(&bytes).map(Some).map_err(|e| e.to_string())
}

/// The secret inputs a sealed text holds.
pub(crate) fn open_map(
    seal: &dyn Sealer,
    sealed: Option<&str>,
) -> Result<Map<String, Value>, String> {
    let Some(sealed) = sealed else {
        return Ok(Map::new());
    };
    let bytes = seal.open(sealed).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("sealed inputs: {e}"))
}

#[async_trait]
impl FindNodes for crate::discovery::Discovery {
    async fn find(&self, name: &str, set: &NodeSet) -> Result<Nodes, String> {
        match self.discover(name, set).await {
            Ok(crate::discovery::Found::Nodes(nodes)) => Ok(Nodes::Found(nodes)),
            Ok(crate::discovery::Found::Skip) => Ok(Nodes::Skip),
            Err(e) => Err(e.to_string()),
        }
    }
}
