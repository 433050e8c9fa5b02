//! `troupe events ...` and `troupe rules ...`: publish events, read what became of them, and
//! check or replace the rules.

use crate::cli::print_json;
use crate::client::Client;
use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use troupe_wire::events::{EventList, EventView, HookResponse, RuleResult, RulesView};

/// Publish and inspect inbound events.
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Deliver an event through a webhook source (authenticated with the API token).
    Publish {
        /// The webhook source.
        #[arg(long)]
        source: String,
        /// The routing key.
        #[arg(long)]
        routing_key: String,
        /// The payload: JSON text, `@file` (JSON), or `-` for standard input.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Events received, newest first.
    List {
        /// Only from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only with this routing key.
        #[arg(long)]
        routing_key: Option<String>,
        /// Only in this status (accepted, unmatched, skipped, failed, rejected).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One event's record.
    Show {
        /// Event id.
        id: i64,
    },
}

/// Check, show and replace the rules.
#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Validate a rules file and explain what it does (no server needed).
    Check {
        /// The rules file (YAML).
        file: PathBuf,
    },
    /// The rules in force on the server, and their sources' states.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the server's rules with a file's.
    Apply {
        /// The rules file (YAML).
        file: PathBuf,
        /// Only if the server's rules are at this revision.
        #[arg(long)]
        revision: Option<i64>,
    },
}

fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = if data == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("could not read standard input")?;
        buf
    } else if let Some(path) = data.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("could not read {path}"))?
    } else {
        data.as_bytes().to_vec()
    };
    serde_json::from_slice::<Value>(&bytes).context("--data is not valid JSON")?;
    Ok(bytes)
}

use crate::cli::encode as enc;

fn print_event_line(e: &EventView) {
    // Runs by id, flow executions as `exec:<id>`.
    let runs = e
        .run_ids
        .iter()
        .map(i64::to_string)
        .chain(e.execution_ids.iter().map(|id| format!("exec:{id}")))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{:<6} {:<20} {:<12} {:<32} {:<9} {:<10} {}",
        e.id.to_string(),
        // The first 19 characters of the RFC 3339 time the server sends.
        e.received_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
        e.source,
        e.routing_key,
        e.status.as_str(),
        if runs.is_empty() {
            "-".to_owned()
        } else {
            runs
        },
        e.reason.as_deref().unwrap_or("")
    );
}

pub async fn run_events(client: &Client, cmd: EventsCmd) -> anyhow::Result<i32> {
    match cmd {
        EventsCmd::Publish {
            source,
            routing_key,
            data,
            json,
        } => {
            let body = read_data(&data)?;
            let path = format!("/api/v1/hooks/{}/{}", enc(&source), enc(&routing_key));
            let resp: HookResponse = client
                .send_body(reqwest::Method::POST, &path, "application/json", body)
                .await?;
            if json {
                print_json(&resp)?;
            } else {
                let e = &resp.event;
                let dup = if resp.duplicate {
                    " (recorded before: not run again)"
                } else {
                    ""
                };
                println!("event {} {}{dup}", e.id, e.status);
                for r in &e.rules {
                    println!("  rule {}: {}", r.rule, describe(&r.result));
                }
                if let Some(reason) = &e.reason {
                    println!("  {reason}");
                }
            }
            Ok(0)
        }
        EventsCmd::List {
            source,
            routing_key,
            status,
            limit,
            json,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("source", source),
                ("routing_key", routing_key),
                ("status", status),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let list: EventList = client
                .get(&format!("/api/v1/events?{}", q.join("&")))
                .await?;
            if json {
                print_json(&list.events)?;
                return Ok(0);
            }
            println!(
                "{:<6} {:<20} {:<12} {:<32} {:<9} {:<10} REASON",
                "ID", "RECEIVED", "SOURCE", "ROUTING KEY", "STATUS", "RUNS"
            );
            for e in &list.events {
                print_event_line(e);
            }
            Ok(0)
        }
        EventsCmd::Show { id } => {
            let e: EventView = client.get(&format!("/api/v1/events/{id}")).await?;
            print_json(&e)?;
            Ok(0)
        }
    }
}

fn describe(result: &RuleResult) -> String {
    match result {
        RuleResult::Started { run_id, canceled } => {
            let mut s = format!("started run {run_id}");
            if !canceled.is_empty() {
                let ids: Vec<String> = canceled.iter().map(i64::to_string).collect();
                s.push_str(&format!(", canceling run {}", ids.join(", ")));
            }
            s
        }
        RuleResult::StartedFlow { execution_id } => format!("started execution {execution_id}"),
        RuleResult::Gated {
            gate,
            key,
            by_event,
        } => format!(
            "held back by {} (key {key}, run of event {by_event})",
            gate.as_str()
        ),
        RuleResult::Skipped { active_run } => {
            format!("skipped: run {active_run} is still active")
        }
        RuleResult::Failed { error } => format!("failed: {error}"),
    }
}

/// `troupe rules check`: exit 0 when valid, 1 with every problem listed otherwise.
pub fn check(file: &PathBuf) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    match troupe_events::Rules::from_yaml(&text) {
        Ok(rules) => {
            println!("{}: valid", file.display());
            let doc = rules.file();
            if !doc.sources.is_empty() {
                println!("sources:");
                for (name, s) in &doc.sources {
                    println!("  {name} ({})", s.kind());
                }
            }
            println!("rules:");
            if rules.rules().is_empty() {
                println!("  (none: every event is recorded as unmatched)");
            }
            for r in rules.rules() {
                println!("  {}", r.explain());
            }
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{}: invalid", file.display());
            for e in errors {
                eprintln!("  {e}");
            }
            Ok(1)
        }
    }
}

pub async fn run_rules(client: &Client, cmd: RulesCmd) -> anyhow::Result<i32> {
    match cmd {
        RulesCmd::Check { file } => check(&file),
        RulesCmd::Show { json } => {
            let v: RulesView = client.get("/api/v1/rules").await?;
            print_rules(&v, json)
        }
        RulesCmd::Apply { file, revision } => {
            let text = std::fs::read(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let path = match revision {
                Some(r) => format!("/api/v1/rules?revision={r}"),
                None => "/api/v1/rules".to_owned(),
            };
            let v: RulesView = client
                .send_body(reqwest::Method::PUT, &path, "application/yaml", text)
                .await?;
            print_rules(&v, false)
        }
    }
}

fn print_rules(v: &RulesView, json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(v)?;
        return Ok(0);
    }
    println!("revision {}", v.revision);
    println!("sources:");
    for (name, s) in &v.sources {
        let err = s
            .state
            .last_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        println!(
            "  {name} ({}): {}, {} delivered{err}",
            s.kind, s.state.state, s.state.delivered
        );
    }
    println!("rules:");
    for r in &v.explain {
        println!("  {r}");
    }
    Ok(0)
}
