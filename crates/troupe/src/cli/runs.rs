//! `troupe runs ...`: list, show, logs, cancel.

use crate::client::Client;
use clap::Subcommand;
use serde_json::{Value, json};
use troupe_core::run::Run;

/// Inspect and control runs.
#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first.
    List {
        /// Only these statuses (comma-separated).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run with its per-host summary.
    Show {
        /// Run id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run live: its output as ansible prints it, then its exit code.
    Follow {
        /// Run id.
        id: i64,
    },
    /// Per-host results: the PLAY RECAP columns and what failed.
    Hosts {
        /// Run id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's stdout.
    Logs {
        /// Run id.
        id: i64,
        /// Keep printing until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a run (graceful unless --force).
    Cancel {
        /// Run id.
        id: i64,
        /// SIGINT, SIGTERM, then SIGKILL instead of letting the task in flight finish.
        #[arg(long)]
        force: bool,
    },
    /// Write a finished run's artifacts into DIR in ansible-runner's layout
    /// (job_events/, stdout, stderr, rc, status, command).
    Export {
        /// Run id.
        id: i64,
        /// Directory to write into (created when missing).
        dir: std::path::PathBuf,
    },
}

pub async fn run(client: &Client, cmd: RunsCmd) -> anyhow::Result<i32> {
    match cmd {
        RunsCmd::List {
            status,
            limit,
            json,
        } => {
            let mut path = format!("/api/v1/runs?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let page: Value = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page["runs"])?);
                return Ok(0);
            }
            let runs: Vec<Run> = serde_json::from_value(page["runs"].clone())?;
            println!(
                "{:<6} {:<11} {:<5} {:<20} PLAYBOOK",
                "ID", "STATUS", "RC", "CREATED"
            );
            for r in runs {
                println!(
                    "{:<6} {:<11} {:<5} {:<20} {}",
                    r.id,
                    r.status.as_str(),
                    r.rc.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    r.playbook
                );
            }
            Ok(0)
        }
        RunsCmd::Show { id, json } => {
            let run: Value = client.get(&format!("/api/v1/runs/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(0);
            }
            let run: Run = serde_json::from_value(run)?;
            print_run(&run);
            Ok(0)
        }
        RunsCmd::Follow { id } => crate::cli::run::follow(client, id).await,
        RunsCmd::Hosts { id, json } => {
            let hosts: Value = client.get(&format!("/api/v1/runs/{id}/hosts")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
            } else {
                print_hosts(&hosts);
            }
            Ok(0)
        }
        RunsCmd::Logs { id, follow } => {
            if follow {
                return crate::cli::run::follow(client, id).await;
            }
            let (text, _) = client
                .get_text(&format!("/api/v1/runs/{id}/stdout"))
                .await?;
            print!("{text}");
            Ok(0)
        }
        RunsCmd::Cancel { id, force } => {
            let mode = if force { "force" } else { "graceful" };
            let run: Run = client
                .post(&format!("/api/v1/runs/{id}/cancel"), &json!({"mode": mode}))
                .await?;
            eprintln!(
                "troupe: run {id} is {} ({mode} cancel requested)",
                run.status
            );
            Ok(0)
        }
        RunsCmd::Export { id, dir } => crate::cli::export::run(client, id, dir).await,
    }
}

fn print_run(r: &Run) {
    println!("run        {}", r.id);
    println!("playbook   {}", r.playbook);
    println!("status     {}", r.status);
    if let Some(reason) = &r.status_reason {
        println!("reason     {reason}");
    }
    if let Some(rc) = r.rc {
        println!("rc         {rc}");
    }
    println!("created    {}", r.created_at.to_rfc3339());
    if let Some(t) = r.started_at {
        println!("started    {}", t.to_rfc3339());
    }
    if let Some(t) = r.finished_at {
        println!("finished   {}", t.to_rfc3339());
    }
    println!("events     {}", r.event_count);
    if !r.summary.is_empty() {
        println!();
        println!(
            "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
            "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED", "RESCUED", "IGNORED"
        );
        for (host, s) in &r.summary {
            println!(
                "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
                host, s.ok, s.changed, s.failed, s.unreachable, s.skipped, s.rescued, s.ignored
            );
        }
    }
}

fn print_hosts(hosts: &Value) {
    let Some(hosts) = hosts.as_object() else {
        return;
    };
    println!(
        "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
        "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED", "RESCUED", "IGNORED"
    );
    for (host, h) in hosts {
        let n = |k: &str| h["stats"][k].as_i64().unwrap_or(0);
        println!(
            "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
            host,
            n("ok"),
            n("changed"),
            n("failed"),
            n("unreachable"),
            n("skipped"),
            n("rescued"),
            n("ignored")
        );
    }
    for (host, h) in hosts {
        for f in h["failures"].as_array().into_iter().flatten() {
            println!(
                "  {host}: {} [{}] {}",
                if f["event"] == "runner_on_unreachable" {
                    "UNREACHABLE"
                } else {
                    "FAILED"
                },
                f["task"].as_str().unwrap_or("?"),
                f["msg"].as_str().unwrap_or("")
            );
        }
    }
}
