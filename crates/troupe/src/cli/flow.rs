//! `troupe flow ...`: flows, multi-step orchestration. `validate` reads a flow file here and
//! needs no server.

use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use troupe_flow::FlowError;

/// Work with flows.
#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Check a flow file and explain what it does, in sentences (no server needed). Exit
    /// status 2 when the flow has problems, each printed as `field: message`.
    Validate {
        /// The flow file (YAML).
        file: PathBuf,
    },
}

/// The exit status of a flow with problems (1 is for a file that cannot be read).
const INVALID: i32 = 2;

/// `troupe flow validate FILE`.
pub fn validate(file: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    match troupe_flow::load(&text) {
        Ok(doc) => {
            println!("{}: valid", file.display());
            print!("{}", troupe_flow::explain(&doc));
            Ok(0)
        }
        Err(FlowError::Yaml(message)) => {
            eprintln!("{}: invalid", file.display());
            eprintln!("{}", message.trim_end());
            Ok(INVALID)
        }
        Err(FlowError::Invalid(problems)) => {
            eprintln!(
                "{}: invalid ({} problem{})",
                file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            for p in problems {
                eprintln!("  {p}");
            }
            Ok(INVALID)
        }
    }
}
