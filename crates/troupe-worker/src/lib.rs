//! Workers: claim queued runs from the store under a lease and execute them with
//! ansible-playbook, writing events and output back in batches.
//!
//! The embedded pool in `troupe serve` uses exactly the claim path a remote worker will: the
//! store decides who runs what, so several processes can share one PostgreSQL store.

pub mod backend;
mod batch;
mod execute;
pub mod git;
pub mod live;
mod pool;
pub mod relay;
mod slices;
mod status;

pub use backend::{Backend, Finished, Prepared, StoreBackend};
pub use live::{LiveEvent, LiveHub, RunChange, RunMessage, event_frame};
pub use pool::{JobSlots, WorkerConfig, WorkerPool, host_name};
pub use status::{CancelCause, decide_status};
