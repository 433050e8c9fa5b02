//! Client-side commands: they talk to a troupe server over HTTP.

pub mod run;
pub mod runs;
