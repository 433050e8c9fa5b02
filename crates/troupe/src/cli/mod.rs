//! Client-side commands: they talk to a troupe server over HTTP.

pub mod export;
pub mod inventory;
pub mod jobs;
pub mod run;
pub mod runs;
