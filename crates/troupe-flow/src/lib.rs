//! Flows: multi-step orchestration (Choria Playbooks, the Ansible driver's sequences).
//!
//! - [`doc`]: the flow document (inputs, node sets, steps, handlers) as types.
//! - [`load`]: reading a document and the checks its types cannot make ([`load::load`]).
//! - [`explain`]: a document in plain sentences, for `troupe flow validate`.
//! - [`discovery`]: finding a node set's nodes (static, inventory, file, command, HTTP,
//!   PuppetDB, Consul, etcd) and applying its policy.
//! - [`engine`]: runs executions: admission, discovery, steps with retries, handlers, resume,
//!   restart survival.
//! - [`expr`]: Jinja expressions and templates over what an execution knows.
//! - [`inputs`]: an execution's inputs checked against the flow's, secrets kept apart.
//! - [`key`]: the server's key that seals secret inputs at rest.
//! - [`schedule`]: cron schedules that start flows, templates or playbooks, fired once across
//!   replicas, with a policy for fires missed while troupe was down.
//!
//! A flow document is YAML; stored versions and executions live in `troupe-store`
//! (`FlowStore`, `ExecutionStore`, `ScheduleStore`).

pub mod discovery;
pub mod doc;
pub mod engine;
pub mod explain;
pub mod expr;
pub mod inputs;
pub mod key;
pub mod load;
pub mod schedule;
mod shell;

pub use explain::explain;
pub use inputs::{Inputs, Scrubber};
pub use key::load_or_create_key;
pub use load::{FlowError, Problem, load};
