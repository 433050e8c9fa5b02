//! `troupe flow put|run|show|list|resume|cancel|approve`: flows and their executions through the
//! API, with live step progress.

use crate::client::Client;
use anyhow::Context;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_core::flow::{ExecutionStatus, FlowChange};
use troupe_wire::flows::{
    AnswerApproval, Execution, ExecutionList, ExecutionView, FlowList, FlowView, PutFlow,
    StartExecution, StepRecord,
};

/// The exit code of a finished execution, in ansible-playbook's terms: 0 successful, 2 failed
/// (or past its time limit), 99 canceled (as an interrupted ansible-playbook), 1 skipped.
pub fn exit_code(status: ExecutionStatus) -> i32 {
    match status {
        ExecutionStatus::Successful => 0,
        ExecutionStatus::Failed | ExecutionStatus::Timeout => 2,
        ExecutionStatus::Canceled => 99,
        ExecutionStatus::Skipped => 1,
        ExecutionStatus::Queued | ExecutionStatus::Running => 0,
    }
}

/// `-i name=value` pairs as inputs; values stay strings (the server reads them as the input's
/// declared type).
pub fn parse_inputs(items: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut inputs = Map::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("input {item:?} is not name=value"))?;
        if k.trim().is_empty() {
            anyhow::bail!("input {item:?} has no name");
        }
        inputs.insert(k.trim().to_owned(), Value::String(v.to_owned()));
    }
    Ok(inputs)
}

/// Stores a flow file (a new version if it changed) and returns it.
pub async fn put_file(client: &Client, path: &Path) -> anyhow::Result<FlowView> {
    let document = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    client.post("/api/v1/flows", &PutFlow { document }).await
}

/// `troupe flow put FILE...`: stores each file; prints the name and version of each.
pub async fn put_files(client: &Client, files: &[PathBuf]) -> anyhow::Result<i32> {
    for file in files {
        let stored = put_file(client, file).await?;
        println!("flow {} version {}", stored.name, stored.version);
    }
    Ok(0)
}

/// `troupe flow run FILE|NAME`: starts an execution; with `follow`, prints its progress and
/// returns its exit code.
pub async fn run(
    client: &Client,
    flow: &str,
    inputs: &[String],
    follow: bool,
) -> anyhow::Result<i32> {
    let name = if Path::new(flow).is_file() {
        let stored = put_file(client, Path::new(flow)).await?;
        eprintln!("flow {} version {}", stored.name, stored.version);
        stored.name
    } else {
        flow.to_owned()
    };
    let body = StartExecution {
        inputs: parse_inputs(inputs)?,
        version: None,
    };
    // Following: subscribe before starting, so the first lines are not missed. The id is not
    // known yet, so every execution's changes come; the follower keeps this one's.
    let subscribed = match follow {
        true => Some(client.stream("/api/v1/stream/sse?executions=*").await?),
        false => None,
    };
    let execution: Execution = client
        .post(&format!("/api/v1/flows/{name}/executions"), &body)
        .await?;
    println!(
        "execution {} of flow {} {}",
        execution.id, name, execution.status
    );
    match subscribed {
        Some(resp) => follow_execution(client, execution.id, Some(resp)).await,
        None => Ok(0),
    }
}

/// Prints an execution's progress until it ends; returns its exit code. `subscribed` is a
/// stream opened before the execution was started or resumed (so nothing is missed); without
/// it the follower subscribes itself.
pub async fn follow_execution(
    client: &Client,
    id: i64,
    mut subscribed: Option<reqwest::Response>,
) -> anyhow::Result<i32> {
    loop {
        let resp = match subscribed.take() {
            // Opened before the start: every message of this round comes, its end included.
            Some(resp) => resp,
            None => {
                // Subscribe first, then read: an end between the two is not missed.
                let resp = client
                    .stream(&format!("/api/v1/stream/sse?executions={id}"))
                    .await?;
                let view: ExecutionView = client.get(&format!("/api/v1/executions/{id}")).await?;
                if view.execution.status.is_finished() {
                    print_end(&view.execution);
                    return Ok(exit_code(view.execution.status));
                }
                resp
            }
        };
        let mut messages = resp.bytes_stream().eventsource();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(45), messages.next()).await;
            let Ok(Some(Ok(message))) = next else {
                break; // silent, closed or broken: read the execution again and resubscribe
            };
            let Ok(change) = serde_json::from_str::<FlowChange>(&message.data) else {
                continue;
            };
            if change.execution_id() != id {
                continue;
            }
            match change {
                FlowChange::ExecutionLog { line, .. } => println!("{line}"),
                FlowChange::ExecutionChanged { status, .. } if status.is_finished() => {
                    let view: ExecutionView =
                        client.get(&format!("/api/v1/executions/{id}")).await?;
                    print_end(&view.execution);
                    return Ok(exit_code(view.execution.status));
                }
                _ => {}
            }
        }
    }
}

fn print_end(e: &Execution) {
    match &e.error {
        Some(why) => println!("execution {} {}: {why}", e.id, e.status),
        None => println!("execution {} {}", e.id, e.status),
    }
}

/// `troupe flow show ID`: an execution and its steps.
pub async fn show(client: &Client, id: i64, json: bool) -> anyhow::Result<i32> {
    let view: ExecutionView = client.get(&format!("/api/v1/executions/{id}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    let e = &view.execution;
    println!(
        "execution {}  flow {} v{}  {}  round {}  started by {}",
        e.id, e.flow, e.version, e.status, e.round, e.started_by
    );
    if let Some(why) = &e.error {
        println!("  {why}");
    }
    for s in &view.steps {
        print_step(s);
    }
    Ok(0)
}

fn print_step(s: &StepRecord) {
    let took = match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    };
    let runs = if s.run_ids.is_empty() {
        String::new()
    } else {
        format!(
            "  runs {}",
            s.run_ids
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    println!(
        "  [{}] {:<28} {:<10} {:<10} tries {}  {took}{runs}{}",
        s.round,
        s.key,
        s.kind,
        s.status.as_str(),
        s.attempts,
        s.error
            .as_deref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default()
    );
}

/// `troupe flow list`: stored flows, or with `executions`, recent executions.
pub async fn list(client: &Client, executions: bool) -> anyhow::Result<i32> {
    if executions {
        let page: ExecutionList = client.get("/api/v1/executions").await?;
        for e in page.executions {
            println!(
                "{:>6}  {:<24} v{:<3} {:<10} {}",
                e.id, e.flow, e.version, e.status, e.created_at
            );
        }
    } else {
        let flows: FlowList = client.get("/api/v1/flows").await?;
        for f in flows.flows {
            println!(
                "{:<24} v{:<3} {} step(s)  {}",
                f.name,
                f.version,
                f.steps,
                f.description.unwrap_or_default()
            );
        }
    }
    Ok(0)
}

/// `troupe flow resume ID` / `cancel ID`.
pub async fn act(client: &Client, id: i64, action: &str, follow: bool) -> anyhow::Result<i32> {
    // Following: subscribe before acting, so the first lines of a resumed round are not missed.
    let subscribed = match follow {
        true => Some(
            client
                .stream(&format!("/api/v1/stream/sse?executions={id}"))
                .await?,
        ),
        false => None,
    };
    let e: Execution = client
        .post(
            &format!("/api/v1/executions/{id}/{action}"),
            &Value::Object(Map::new()),
        )
        .await?;
    println!("execution {} {}", e.id, e.status);
    match subscribed {
        Some(resp) => follow_execution(client, id, Some(resp)).await,
        None => Ok(0),
    }
}

/// `troupe flow approve ID STEP [--deny]`.
pub async fn approve(
    client: &Client,
    id: i64,
    step: &str,
    approved: bool,
    comment: Option<String>,
) -> anyhow::Result<i32> {
    let body = AnswerApproval {
        approved,
        comment,
        by: std::env::var("USER").ok(),
    };
    let step = step.replace('/', "%2F");
    let record: StepRecord = client
        .post(&format!("/api/v1/executions/{id}/approvals/{step}"), &body)
        .await?;
    println!(
        "step {} {}",
        record.key,
        if approved { "approved" } else { "denied" }
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_name_value_pairs_kept_as_text() -> anyhow::Result<()> {
        let inputs = parse_inputs(&["a=1".into(), "b=x=y".into(), "c=".into()])?;
        assert_eq!(inputs.get("a"), Some(&Value::String("1".into())));
        assert_eq!(inputs.get("b"), Some(&Value::String("x=y".into())));
        assert_eq!(inputs.get("c"), Some(&Value::String(String::new())));
        assert!(parse_inputs(&["novalue".into()]).is_err());
        assert!(parse_inputs(&["=1".into()]).is_err());
        Ok(())
    }

    #[test]
    fn exit_codes_follow_ansible_playbook() {
        assert_eq!(exit_code(ExecutionStatus::Successful), 0);
        assert_eq!(exit_code(ExecutionStatus::Failed), 2);
        assert_eq!(exit_code(ExecutionStatus::Canceled), 99);
    }
}
