//! What every phase starts from: a server on a data directory, the project its runs play, and
//! the rules that turn webhook deliveries into runs.

use anyhow::{Context, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_testkit::fixtures::write_files;
use troupe_testkit::{Server, ServerOpts};

/// The admin token of every chaos server.
pub const TOKEN: &str = "trp_chaos-admin-token-0123456789abcdef01";

/// The project every run plays: long enough (a sleep in a module's subprocess) that kills land
/// mid-run, and with a process tree (ansible, its worker, the module, `sleep`) to leave behind.
const PLAYBOOKS: &[(&str, &str)] = &[
    (
        "slow.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 1.5\n    - ansible.builtin.ping:\n",
    ),
    // Outlives any round: if a kill left its processes behind, nothing else would end them.
    (
        "long.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 120\n",
    ),
    (
        "quick.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
    ),
];

/// Rules: deliveries to the webhook source `hook` with routing key `chaos.run` start
/// `slow.yml`; the rest are recorded as unmatched.
const RULES: &str = r#"
sources:
  hook: {type: webhook}
rules:
  - name: chaos
    sources: hook
    routing_keys: chaos.run
    action: {project: chaos, playbook: slow.yml}
"#;

/// Where a phase's server keeps its state and how it runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The troupe binary.
    pub troupe: PathBuf,
    /// Its data directory (absolute: run processes are found by it).
    pub data_dir: PathBuf,
    /// `--database-url`; SQLite in the data directory when `None`.
    pub database_url: Option<String>,
}

impl Target {
    /// Starts `troupe serve` on the target.
    pub fn start(&self) -> anyhow::Result<Server> {
        Server::start(
            &self.troupe,
            ServerOpts {
                data_dir: Some(self.data_dir.clone()),
                database_url: self.database_url.clone(),
                max_concurrent_runs: 4,
                token: TOKEN.to_owned(),
                log_filter: "warn".to_owned(),
                log_lines: Some(300),
                ready_timeout: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .with_context(|| format!("starting troupe serve on {}", self.data_dir.display()))
    }
}

/// Writes the project under `dir`, registers it as `chaos` and applies the rules; the
/// project's id.
pub async fn prepare(server: &Server, dir: &Path) -> anyhow::Result<i64> {
    write_files(dir, PLAYBOOKS)?;
    let v = server
        .post(
            "/api/v1/projects",
            &json!({"name": "chaos", "source": {"type": "dir", "path": dir}}),
        )
        .await?;
    let id = v["id"].as_i64().context("the project's id")?;
    server.apply_rules(RULES).await?;
    Ok(id)
}

/// Launches `quick.yml` and waits for it: the server works.
pub async fn works(server: &Server, project: i64) -> anyhow::Result<()> {
    let id = server
        .launch(
            project,
            "quick.yml",
            &troupe_testkit::fixtures::local_hosts(1),
            json!({}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    if run["status"] != "successful" {
        bail!(
            "run {id} of quick.yml ended {}: {}",
            run["status"],
            run["status_reason"]
        );
    }
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/hooks/hook/chaos.check",
            Some(&json!({})),
        )
        .await?;
    if status != 202 {
        bail!("a webhook delivery was answered {status}: {body}");
    }
    Ok(())
}
