//! The one harness for driving a real `troupe serve`: the end-to-end tests
//! (`crates/troupe/tests/e2e`) and the benchmark (`troupe-bench`) both start the server, learn
//! where it listens, talk to it with its admin token and stop it through this crate.
//!
//! - [`Server`] starts `troupe serve` (the binary is the caller's: tests pass
//!   `env!("CARGO_BIN_EXE_troupe")`, the benchmark its release build) with [`ServerOpts`],
//!   waits until it listens (it binds `127.0.0.1:0` and writes the bound address to the file
//!   named by `--addr-file`; nothing is read from its log for that), keeps its log for failure
//!   messages, and stops it (or kills it when dropped).
//! - [`Api`] is the HTTP client with the token, and the requests tests share (projects, runs,
//!   waiting for a run to end, events, rules).
//! - [`tls::HttpsServer`] stands in for a service behind TLS with a private CA;
//!   [`tls::PrivateCa`] issues certificates for a server started with [`ServerOpts::tls`].
//! - [`fixtures`] builds what runs need (local inventories, project directories); [`procs`]
//!   looks at processes through `/proc`; [`wait`] polls for conditions.
//!
//! This is test support: errors are `anyhow` with the context a failing test needs, and
//! nothing that comes from the server or a child process is unwrapped.

mod api;
pub mod fixtures;
mod log;
pub mod procs;
mod server;
pub mod tls;
pub mod wait;
mod worker;

pub use api::{Api, is_finished};
pub use log::Log;
pub use server::{Server, ServerOpts};
pub use worker::{RemoteWorker, free_port};

/// The admin token a server started by the harness gets unless [`ServerOpts::token`] says
/// otherwise.
pub const TOKEN: &str = "trp_test-admin-token-0123456789abcdef";
