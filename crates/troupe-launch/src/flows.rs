//! Starting a flow's execution from outside the flow engine: the capability event rules (and
//! anything else that starts flows in a transaction of its own) depend on, instead of on the
//! engine itself.
//!
//! As with runs ([`crate::Launch::prepare`] then [`crate::Launch::announce`]), starting is two
//! steps so the caller can store the execution together with what caused it: [`StartFlow::prepare`]
//! checks the flow and the inputs and gives the execution to store (secret inputs sealed, shown
//! redacted), and [`StartFlow::announce`] hands a stored execution to the engine to drive.

use async_trait::async_trait;
use serde_json::{Map, Value};
use troupe_core::flow::{Execution, NewExecution};

/// What starting an execution needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowStart {
    /// The flow's name.
    pub flow: String,
    /// Its version (the newest when `None`).
    pub version: Option<i64>,
    /// The inputs as given (strings are coerced to the declared types).
    pub inputs: Map<String, Value>,
    /// Who or what starts it (`rule:<name>`).
    pub started_by: String,
}

/// Why an execution could not be prepared. Messages never hold a secret input's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowStartError {
    /// No flow of that name (or version).
    #[error("no flow named {0:?}")]
    UnknownFlow(String),
    /// The inputs are wrong, or the stored document no longer loads: what is wrong, each
    /// problem naming its input.
    #[error("{0}")]
    Invalid(String),
    /// The store or the sealing of secrets failed.
    #[error("{0}")]
    Unavailable(String),
}

/// Starting executions of flows.
#[async_trait]
pub trait StartFlow: Send + Sync {
    /// Looks up the flow, checks the inputs and builds the execution to store.
    async fn prepare(&self, start: FlowStart) -> Result<NewExecution, FlowStartError>;

    /// Has an execution stored from [`StartFlow::prepare`]'s answer driven.
    async fn announce(&self, execution: &Execution);
}
