//! Runs as the scenarios launch and read them: bodies and answers in troupe's wire types,
//! over the harness's server (which sends and returns `serde_json::Value`).

use crate::server::Server;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;
use troupe_wire::runs::{CreateRun, Run};

/// A run of `playbook` on `localhost` (inline hosts), as most scenarios launch them.
pub fn on_localhost(project: i64, playbook: &str) -> CreateRun {
    let mut body = CreateRun::new(project, playbook);
    body.hosts = Some("localhost\n".into());
    body
}

/// The body as the harness sends it. Scenarios that time their requests convert once, before
/// the clock starts.
pub fn body(run: &CreateRun) -> anyhow::Result<Value> {
    serde_json::to_value(run).context("serializing a run to launch")
}

/// Launches a run; returns its id.
pub async fn launch(server: &Server, run: &CreateRun) -> anyhow::Result<i64> {
    server.launch(&body(run)?).await
}

/// The run as the API shows it.
pub fn read(answer: Value) -> anyhow::Result<Run> {
    serde_json::from_value(answer).context("the server's answer is not a run")
}

/// One run.
pub async fn get(server: &Server, id: i64) -> anyhow::Result<Run> {
    read(server.get(&format!("/api/v1/runs/{id}")).await?)
}

/// Polls a run every `every` until it is finished; fails after `timeout`.
pub async fn wait_finished(
    server: &Server,
    id: i64,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Run> {
    read(server.wait_finished(id, every, timeout).await?)
}

/// When ansible was exec'd for a run: `launched_at` when the server reports it, else
/// `started_at` (the claim). The flag says whether `launched_at` was there.
pub fn launch_time(run: &Run) -> Option<(DateTime<Utc>, bool)> {
    run.launched_at
        .map(|t| (t, true))
        .or_else(|| run.started_at.map(|t| (t, false)))
}
