//! Telling the outside world that runs and flow executions ended.
//!
//! [`send`] is troupe's one way of POSTing to a webhook or a Slack incoming webhook: the flow
//! engine's `slack` steps use it as the notifier does, and every error it reports names the
//! target by scheme and host only (a Slack webhook's URL is a secret).
//!
//! [`Notifier`] delivers the notifications the store holds pending: it claims those whose run
//! or execution has ended (under a lease, so replicas do not send the same one), skips those
//! whose `on` does not name the end, opens each target with the server's key, posts the end's
//! summary ([`troupe_wire::notifications::Ended`]) or a Slack line, and records the outcome;
//! a failed attempt is tried again later, a few times, with a growing delay. Nothing is kept in
//! memory: a restart sends what was pending.

mod notifier;
pub mod payload;
pub mod send;

pub use notifier::{Notifier, NotifierConfig};
pub use send::{SendError, Sender};
