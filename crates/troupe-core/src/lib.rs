//! troupe's domain: runs and their status machine, the events ansible emits, projects,
//! inventories, the validation that turns untrusted input into these types, and the sealing
//! of secrets at rest.
//!
//! Nothing here performs I/O; storage, processes and transport live in other crates.

pub mod audit;
pub mod credential;
pub mod error;
pub mod event;
pub mod flow;
pub mod inbound;
pub mod inventory;
pub mod job;
pub mod notify;
pub mod overrides;
pub mod project;
pub mod redact;
pub mod run;
pub mod secret;
pub mod slice;
pub mod status;
pub mod template;
pub mod text;
pub mod url;
pub mod worker;

pub use error::ValidationError;
pub use event::{Event, EventData};
pub use status::RunStatus;
