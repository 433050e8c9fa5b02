//! Flows: multi-step orchestration (Choria Playbooks, the Ansible driver's sequences).
//!
//! - [`doc`]: the flow document (inputs, node sets, steps, handlers) as types.
//! - [`discovery`]: finding a node set's nodes (static, inventory, file, command, HTTP,
//!   PuppetDB, Consul, etcd) and applying its policy.
//! - [`expr`]: Jinja expressions and templates over what an execution knows.
//!
//! A flow document is YAML; stored versions and executions live in `troupe-store`
//! (`FlowStore`, `ExecutionStore`, `ScheduleStore`).

pub mod discovery;
pub mod doc;
pub mod expr;
pub mod engine;
pub mod inputs;
pub mod load;
pub mod explain;
