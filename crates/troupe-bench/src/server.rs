//! A `troupe serve` process started for one scenario, and a small HTTP client for it.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A running `troupe serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `troupe serve --listen 127.0.0.1:0` and waits for its `listening on` line.
    pub fn start(opts: &ServerOpts) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let mut cmd = Command::new(&opts.troupe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&opts.data_dir)
            .args([
                "--max-concurrent-runs",
                &opts.max_concurrent_runs.to_string(),
            ])
            .env("TROUPE_ADMIN_TOKEN", TOKEN)
            .env("TROUPE_LOG", "warn")
            .env_remove("TROUPE_DATABASE_URL")
            .env_remove("TROUPE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &opts.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(p) = &opts.ansible_playbook {
            cmd.arg("--ansible-playbook").arg(p);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.troupe.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(t) = tx.take()
                {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = t.send(addr);
                }
                if let Ok(mut l) = log2.lock() {
                    // Only the tail matters when something goes wrong.
                    if l.len() >= 200 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            let _ = child.wait();
            let text = log
                .lock()
                .map(|l| Vec::from(l.clone()).join("\n"))
                .unwrap_or_default();
            bail!("troupe serve did not start:\n{text}");
        };
        // Printed so a profiler can attach: perf record -p PID.
        println!("    troupe serve pid {} on http://{addr}", child.id());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Server {
            child,
            base: format!("http://{addr}"),
            addr,
            http,
            log,
        })
    }

    /// The troupe process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines troupe logged.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| Vec::from(l.clone()).join("\n"))
            .unwrap_or_default()
    }

    /// (status, JSON body) of a request with the admin token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// GET, expecting 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await?;
        if s != 200 {
            bail!("GET {path} -> {s}: {v}");
        }
        Ok(v)
    }

    /// POST, expecting 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&s) {
            bail!("POST {path} -> {s}: {v}");
        }
        Ok(v)
    }

    /// Registers a project directory; returns its id.
    pub async fn project(&self, dir: &Path) -> anyhow::Result<i64> {
        let name = format!("bench{}", std::process::id());
        let v = self
            .post(
                "/api/v1/projects",
                &json!({"name": name, "source": {"type": "dir", "path": dir}}),
            )
            .await?;
        v["id"].as_i64().context("project id")
    }

    /// Launches a run; returns its id.
    pub async fn launch(&self, body: &Value) -> anyhow::Result<i64> {
        let v = self.post("/api/v1/runs", body).await?;
        v["id"].as_i64().context("run id")
    }

    /// Polls a run every `every` until it is finished; fails after `timeout`.
    pub async fn wait_finished(
        &self,
        id: i64,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await?;
            if !matches!(run["status"].as_str(), Some("queued" | "running")) {
                return Ok(run);
            }
            if start.elapsed() > timeout {
                bail!(
                    "run {id} still {} after {timeout:?}\n--- troupe log ---\n{}",
                    run["status"],
                    self.log_tail()
                );
            }
            tokio::time::sleep(every).await;
        }
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
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}

/// CPU milliseconds of a server: its own and its reaped children's.
#[derive(Debug, Clone, Copy)]
pub struct CpuMs {
    pub own: f64,
    pub children: f64,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Milliseconds from `a` to `b`.
pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}
