//! `troupe runs ...`: list, show, logs, cancel, prune.

use crate::cli::print_json;
use crate::client::Client;
use clap::Subcommand;
use std::collections::BTreeMap;
use troupe_wire::runs::{
    CancelMode, CancelRequest, HostResult, PruneReport, PruneRuns, Run, RunList,
};

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
    /// Prune finished runs now, with their events and output (admin). Runs still needed (a
    /// split run's slices going, a pending notification, a job unit's latest action, a step
    /// of an unfinished flow execution) stay.
    Prune {
        /// Runs that finished longer ago than this go (30d, 12h, 90m).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Each project keeps its newest N runs; its older finished runs go.
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
        /// Only count what would go.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
            let page: RunList = client.get(&path).await?;
            if json {
                print_json(&page.runs)?;
                return Ok(0);
            }
            let runs = page.runs;
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
            let run: Run = client.get(&format!("/api/v1/runs/{id}")).await?;
            if json {
                print_json(&run)?;
                return Ok(0);
            }
            print_run(&run);
            Ok(0)
        }
        RunsCmd::Follow { id } => crate::cli::run::follow(client, id).await,
        RunsCmd::Hosts { id, json } => {
            let hosts: BTreeMap<String, HostResult> =
                client.get(&format!("/api/v1/runs/{id}/hosts")).await?;
            if json {
                print_json(&hosts)?;
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
            let mode = if force {
                CancelMode::Force
            } else {
                CancelMode::Graceful
            };
            let body = CancelRequest { mode: Some(mode) };
            let run: Run = client
                .post(&format!("/api/v1/runs/{id}/cancel"), &body)
                .await?;
            eprintln!(
                "troupe: run {id} is {} ({} cancel requested)",
                run.status,
                mode.as_str()
            );
            Ok(0)
        }
        RunsCmd::Export { id, dir } => crate::cli::export::run(client, id, dir).await,
        RunsCmd::Prune {
            older_than,
            keep,
            dry_run,
            json,
        } => {
            if older_than.is_none() && keep.is_none() {
                anyhow::bail!("give --older-than, --keep, or both");
            }
            let body = PruneRuns {
                older_than,
                keep,
                dry_run,
            };
            let report: PruneReport = client.post("/api/v1/runs/prune", &body).await?;
            if json {
                print_json(&report)?;
            } else if report.dry_run {
                println!("{} runs would be pruned", report.runs);
            } else {
                println!(
                    "pruned {} runs ({} events, {} output chunks)",
                    report.runs, report.events, report.output_chunks
                );
            }
            Ok(0)
        }
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

fn print_hosts(hosts: &BTreeMap<String, HostResult>) {
    println!(
        "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
        "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED", "RESCUED", "IGNORED"
    );
    for (host, h) in hosts {
        let s = &h.stats;
        println!(
            "{:<30} {:>5} {:>8} {:>7} {:>12} {:>8} {:>8} {:>8}",
            host, s.ok, s.changed, s.failed, s.unreachable, s.skipped, s.rescued, s.ignored
        );
    }
    for (host, h) in hosts {
        for f in &h.failures {
            println!(
                "  {host}: {} [{}] {}",
                if f.event == "runner_on_unreachable" {
                    "UNREACHABLE"
                } else {
                    "FAILED"
                },
                f.task.as_deref().unwrap_or("?"),
                f.msg.as_deref().unwrap_or("")
            );
        }
    }
}
