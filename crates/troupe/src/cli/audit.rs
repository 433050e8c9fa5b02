//! `troupe audit`: the audit log, newest first (admin tokens only).

use crate::cli::{encode, print_json};
use crate::client::Client;
use chrono::{DateTime, Utc};
use clap::Args;
use troupe_wire::audit::{AuditEntry, AuditList};

/// Which entries to show.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only by this actor (`token:3`, `rule:deploy`, `anonymous`...) or token name.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`run.launch`), or every action of a kind (`run.`).
    #[arg(long)]
    action: Option<String>,
    /// Only on this kind of target (`run`), or this one (`run:42`).
    #[arg(long)]
    target: Option<String>,
    /// Only since this time: RFC 3339, or a duration ago (`90m`, `12h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// At most this many entries (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Print the JSON the API answers.
    #[arg(long)]
    json: bool,
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let secs = crate::cli::tokens::parse_duration_s(s)
        .map_err(|e| format!("{e} (or an RFC 3339 time)"))?;
    i64::try_from(secs)
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| format!("{s:?} is too long ago"))
}

pub async fn run(client: &Client, args: AuditArgs) -> anyhow::Result<i32> {
    let mut q = vec![format!("limit={}", args.limit)];
    for (key, value) in [
        ("actor", args.actor),
        ("action", args.action),
        ("target", args.target),
        ("since", args.since.map(|t| t.to_rfc3339())),
    ] {
        if let Some(v) = value {
            q.push(format!("{key}={}", encode(&v)));
        }
    }
    let list: AuditList = client
        .get(&format!("/api/v1/audit?{}", q.join("&")))
        .await?;
    if args.json {
        print_json(&list)?;
        return Ok(0);
    }
    println!(
        "{:<6} {:<20} {:<22} {:<20} {:<22} {:>6} FROM",
        "ID", "AT", "ACTOR", "ACTION", "TARGET", "STATUS"
    );
    for e in &list.entries {
        print_line(e);
    }
    Ok(0)
}

fn print_line(e: &AuditEntry) {
    let actor = match &e.token_name {
        Some(name) => format!("{} ({name})", e.actor),
        None => e.actor.clone(),
    };
    let target = match (&e.target_kind, &e.target_id) {
        (Some(kind), Some(id)) => format!("{kind}:{id}"),
        (Some(kind), None) => kind.clone(),
        _ => "-".to_owned(),
    };
    println!(
        "{:<6} {:<20} {:<22} {:<20} {:<22} {:>6} {}",
        e.id,
        e.at.format("%Y-%m-%d %H:%M:%S"),
        actor,
        e.action,
        target,
        e.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        e.client_addr.as_deref().unwrap_or("-"),
    );
}
