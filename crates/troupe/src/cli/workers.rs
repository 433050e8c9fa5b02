//! `troupe workers list|drain`.

use crate::cli::{encode, print_json};
use crate::client::Client;
use clap::Subcommand;
use troupe_wire::workers::{Worker, WorkerList, WorkerStatus};

/// See and drain workers.
#[derive(Debug, Subcommand)]
pub enum WorkersCmd {
    /// Every worker alive (embedded pools and remote agents), and those gone in the last hour.
    List {
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Ask a worker to finish its runs and claim no more.
    Drain {
        /// The worker's id (`node/incarnation`, as `troupe workers list` shows it).
        worker: String,
    },
}

pub async fn run(client: &Client, cmd: WorkersCmd) -> anyhow::Result<i32> {
    match cmd {
        WorkersCmd::List { json } => {
            let list: WorkerList = client.get("/api/v1/workers").await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            println!(
                "{:<44} {:<9} {:<8} {:>4} {:>8} {:<20} LAST HEARTBEAT",
                "ID", "KIND", "STATUS", "CAP", "RUNS", "LABELS"
            );
            for w in &list.workers {
                println!(
                    "{:<44} {:<9} {:<8} {:>4} {:>8} {:<20} {}",
                    w.worker.id,
                    w.worker.kind.as_str(),
                    status_word(w.status),
                    w.worker.capacity,
                    w.runs.len(),
                    if w.worker.labels.is_empty() {
                        "-".to_owned()
                    } else {
                        w.worker.labels.join(",")
                    },
                    w.worker.last_heartbeat.format("%Y-%m-%d %H:%M:%S"),
                );
            }
            Ok(0)
        }
        WorkersCmd::Drain { worker } => {
            let w: Worker = client
                .post(
                    &format!("/api/v1/workers/{}/drain", encode(&worker)),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "worker {} is draining: it finishes its runs and claims no more",
                w.id
            );
            Ok(0)
        }
    }
}

fn status_word(s: WorkerStatus) -> &'static str {
    match s {
        WorkerStatus::Active => "active",
        WorkerStatus::Draining => "draining",
        WorkerStatus::Lost => "lost",
        WorkerStatus::Stopped => "stopped",
    }
}
