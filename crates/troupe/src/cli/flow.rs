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
    /// Store flow files (each a new version if it changed) without running them: flows that
    /// others start by name (a `flow` step, a handler).
    Put {
        /// The flow files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start an execution of a flow: a file (stored first, as a new version if it changed) or
    /// the name of a stored flow. With --follow, prints its progress and exits with its status
    /// (0 successful, 2 failed or timed out, 99 canceled).
    Run {
        /// A flow file, or a stored flow's name.
        flow: String,
        /// An input, `name=value` (repeatable); read as the input's declared type.
        #[arg(short = 'i', long = "input")]
        inputs: Vec<String>,
        /// Follow the execution until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Show an execution and every step's status, attempts, time and runs.
    Show {
        /// The execution's id.
        id: i64,
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Follow a running execution until it ends; exits with its status.
    Follow {
        /// The execution's id.
        id: i64,
    },
    /// List stored flows, or with --executions the latest executions.
    List {
        /// List executions instead of flows.
        #[arg(long)]
        executions: bool,
    },
    /// Resume a failed, canceled or timed-out execution: steps that succeeded are not run again.
    Resume {
        /// The execution's id.
        id: i64,
        /// Follow it until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel an execution (the step in flight stops gracefully; `finally` still runs).
    Cancel {
        /// The execution's id.
        id: i64,
    },
    /// Approve (or with --deny, deny) a waiting approval step.
    Approve {
        /// The execution's id.
        id: i64,
        /// The approval step's id.
        step: String,
        /// Deny instead of approving.
        #[arg(long)]
        deny: bool,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Runs the subcommands that talk to a server.
pub async fn remote(client: &crate::client::Client, cmd: FlowCmd) -> anyhow::Result<i32> {
    use super::executions as ex;
    match cmd {
        FlowCmd::Validate { file } => validate(&file),
        FlowCmd::Put { files } => ex::put_files(client, &files).await,
        FlowCmd::Run {
            flow,
            inputs,
            follow,
        } => ex::run(client, &flow, &inputs, follow).await,
        FlowCmd::Show { id, json } => ex::show(client, id, json).await,
        FlowCmd::Follow { id } => ex::follow_execution(client, id, None).await,
        FlowCmd::List { executions } => ex::list(client, executions).await,
        FlowCmd::Resume { id, follow } => ex::act(client, id, "resume", follow).await,
        FlowCmd::Cancel { id } => ex::act(client, id, "cancel", false).await,
        FlowCmd::Approve {
            id,
            step,
            deny,
            comment,
        } => ex::approve(client, id, &step, !deny, comment).await,
    }
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
