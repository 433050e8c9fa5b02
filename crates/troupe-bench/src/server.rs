//! A `troupe serve` process started for one scenario: `troupe-testkit`'s harness (shared with
//! the end-to-end tests) with the benchmark's settings, and what the benchmark measures of the
//! process (memory, CPU time, context switches).

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

/// The admin token every benchmark server gets.
pub const TOKEN: &str = "trp_bench-admin-token-0123456789abcdef01";

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// The troupe binary.
    pub troupe: PathBuf,
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// `--database-url`, SQLite in the data dir when `None`.
    pub database_url: Option<String>,
    /// `--max-concurrent-runs`.
    pub max_concurrent_runs: usize,
    /// `--ansible-playbook`.
    pub ansible_playbook: Option<PathBuf>,
}

/// A running `troupe serve`; it dereferences to the harness's server, whose client
/// (`get`, `call`, `project`, `http`, `base`...) the scenarios use.
pub struct Server {
    inner: troupe_testkit::Server,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Server {
    /// Starts `troupe serve --listen 127.0.0.1:0` and waits until it listens.
    pub fn start(opts: &ServerOpts) -> anyhow::Result<Server> {
        Server::start_with_env(opts, &[])
    }

    /// [`Server::start`] with more `TROUPE_*` settings in the server's environment (e.g.
    /// `TROUPE_WORKER_LABELS`).
    pub fn start_with_env(opts: &ServerOpts, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let inner = troupe_testkit::Server::start(
            &opts.troupe,
            troupe_testkit::ServerOpts {
                data_dir: Some(opts.data_dir.clone()),
                database_url: opts.database_url.clone(),
                max_concurrent_runs: opts.max_concurrent_runs,
                ansible_playbook: opts.ansible_playbook.clone(),
                token: TOKEN.to_owned(),
                log_filter: "warn".to_owned(),
                // Only the tail matters when something goes wrong.
                log_lines: Some(200),
                ready_timeout: Duration::from_secs(120),
                http: Some(
                    troupe_http::builder(None)?
                        .pool_max_idle_per_host(64)
                        .build()?,
                ),
                // The harness is one token opening every subscriber's stream (scenario 4
                // opens 100): the per-token stream limit would refuse them.
                extra_env: [("TROUPE_MAX_STREAMS_PER_TOKEN", "100000")]
                    .iter()
                    .chain(env)
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            },
        )
        .with_context(|| format!("starting {}", opts.troupe.display()))?;
        let addr = inner.addr.to_string();
        // Printed so a profiler can attach: perf record -p PID.
        println!("    troupe serve pid {} on http://{addr}", inner.pid());
        Ok(Server { inner, addr })
    }

    /// Replaces the server's rules with `yaml`.
    pub async fn put_rules(&self, yaml: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!("{}/api/v1/rules", self.base))
            .bearer_auth(TOKEN)
            .body(yaml.to_owned())
            .send()
            .await?;
        if !resp.status().is_success() {
            anyhow::bail!("PUT /api/v1/rules -> {}", resp.status());
        }
        Ok(())
    }

    /// Launches a run; returns its id.
    pub async fn launch(&self, body: &Value) -> anyhow::Result<i64> {
        self.inner.create_run(body).await
    }

    /// Polls a run every `every` until it is finished; fails after `timeout`.
    pub async fn wait_finished(
        &self,
        id: i64,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.inner
            .poll_run(id, every, timeout, troupe_testkit::is_finished)
            .await
    }

    /// VmRSS and VmHWM of the troupe process, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        };
        Ok((
            field("VmRSS:").context("VmRSS")?,
            field("VmHWM:").context("VmHWM")?,
        ))
    }

    /// CPU time used so far, in milliseconds: by the troupe process itself (all its threads)
    /// and by the children it has waited for (the runs' processes once they ended).
    pub fn cpu_ms(&self) -> anyhow::Result<CpuMs> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which ends at the last ')': state is field 3,
        // utime/stime/cutime/cstime are fields 14-17.
        let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(i - 3)
                .context("short /proc stat")?
                .parse::<f64>()?)
        };
        let per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
            .context("no clock tick rate")? as f64;
        let ms = |t: f64| t * 1000.0 / per_s;
        Ok(CpuMs {
            own: ms(ticks(14)? + ticks(15)?),
            children: ms(ticks(16)? + ticks(17)?),
        })
    }

    /// Context switches so far of each live thread of the troupe process (voluntary and
    /// involuntary, from `/proc/<pid>/task/<tid>/status`), by thread id.
    pub fn context_switches(&self) -> anyhow::Result<HashMap<u32, u64>> {
        let mut by_thread = HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let task = task?;
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that ended meanwhile is skipped.
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let switches = status
                .lines()
                .filter_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    matches!(
                        key,
                        "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches"
                    )
                    .then(|| value.trim().parse::<u64>().ok())?
                })
                .sum();
            by_thread.insert(tid, switches);
        }
        Ok(by_thread)
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 30 s).
    pub fn stop(self) -> anyhow::Result<()> {
        self.inner.stop(Duration::from_secs(30))
    }
}

impl Deref for Server {
    type Target = troupe_testkit::Server;

    fn deref(&self) -> &troupe_testkit::Server {
        &self.inner
    }
}

/// CPU milliseconds of a server: its own and its reaped children's.
#[derive(Debug, Clone, Copy)]
pub struct CpuMs {
    pub own: f64,
    pub children: f64,
}

/// Milliseconds from `a` to `b`.
pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}
