//! End-to-end harness: the real `troupe` binary over HTTP, a real ansible-playbook.
#![allow(dead_code, missing_docs)]

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "trp_test-admin-token-0123456789abcdef";

/// A local inventory of `n` hosts that run on this machine with ansible's own python.
pub fn local_hosts(n: usize) -> String {
    let mut s = String::from("[all]\n");
    for i in 1..=n {
        s.push_str(&format!("h{i}\n"));
    }
    s.push_str("[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n");
    s
}

/// A running `troupe serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
}

pub struct ServerOpts {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub max_concurrent_runs: usize,
    pub extra_env: Vec<(String, String)>,
    /// Working directory of the server (a relative `data_dir` is relative to it).
    pub cwd: Option<PathBuf>,
    /// More `serve` arguments (e.g. `--rules FILE`).
    pub extra_args: Vec<String>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        Self {
            cwd: None,
            data_dir: None,
            database_url: None,
            max_concurrent_runs: 4,
            extra_env: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

pub fn troupe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

impl Server {
    pub fn start() -> anyhow::Result<Server> {
        Self::start_with(ServerOpts::default())
    }

    pub fn start_with(opts: ServerOpts) -> anyhow::Result<Server> {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(troupe_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--max-concurrent-runs",
                &opts.max_concurrent_runs.to_string(),
            ])
            .env("TROUPE_ADMIN_TOKEN", TOKEN)
            .env("TROUPE_LOG", "info,troupe=debug")
            .env("TROUPE_CANCEL_INTERRUPT_S", "2")
            .env("TROUPE_CANCEL_TERMINATE_S", "2")
            .env_remove("TROUPE_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &opts.database_url {
            cmd.args(["--database-url", url]);
        }
        cmd.args(&opts.extra_args);
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd.spawn().context("spawning troupe serve")?;
        Self::adopt(child, data_dir, tmp)
    }

    /// A server from a troupe process started elsewhere with stderr piped (it prints its
    /// listen address there).
    pub fn adopt(
        mut child: Child,
        data_dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Server> {
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
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
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let text = log.lock().map(|l| l.clone()).unwrap_or_default();
                bail!("troupe serve did not start:\n{text}");
            }
        };
        Ok(Server {
            child,
            base: format!("http://{addr}"),
            data_dir,
            log,
            http: reqwest::Client::new(),
            _tmp: tmp,
        })
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// (status, JSON body) of a request with the admin token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await?;
        if s != 200 {
            bail!("GET {path} -> {s}: {v}");
        }
        Ok(v)
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&s) {
            bail!("POST {path} -> {s}: {v}");
        }
        Ok(v)
    }

    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        Ok(resp.text().await?)
    }

    /// Every inbound event record matching `query` (e.g. `source=hook`), newest first, all
    /// pages.
    #[allow(dead_code)]
    pub async fn event_records(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<i64> = None;
        loop {
            let mut path = format!("/api/v1/events?limit=500&{query}");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await?;
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_i64() {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// PUTs a rules document (YAML); (status, body).
    #[allow(dead_code)]
    pub async fn put_rules(&self, yaml: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .put(self.url("/api/v1/rules"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// PUTs a rules document that must be accepted; the rules view.
    #[allow(dead_code)]
    pub async fn apply_rules(&self, yaml: &str) -> anyhow::Result<Value> {
        let (s, v) = self.put_rules(yaml).await?;
        if s != 200 {
            bail!("PUT /api/v1/rules -> {s}: {v}");
        }
        Ok(v)
    }

    /// Registers a project directory and returns its id.
    pub async fn project(&self, dir: &Path) -> anyhow::Result<i64> {
        let name = format!("p{}", uuid::Uuid::new_v4().simple());
        let v = self
            .post(
                "/api/v1/projects",
                json!({"name": name, "source": {"type": "dir", "path": dir}}),
            )
            .await?;
        v["id"].as_i64().context("project id")
    }

    /// Starts a run with inline hosts; returns its id.
    pub async fn launch(
        &self,
        project: i64,
        playbook: &str,
        hosts: &str,
        extra: Value,
    ) -> anyhow::Result<i64> {
        let mut body = json!({"project": project, "playbook": playbook, "hosts": hosts});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let v = self.post("/api/v1/runs", body).await?;
        v["id"].as_i64().context("run id")
    }

    /// Waits until the run's status satisfies `pred`.
    pub async fn wait_run(
        &self,
        id: i64,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await?;
            if run["status"].as_str().is_some_and(&pred) {
                return Ok(run);
            }
            if start.elapsed() > timeout {
                bail!(
                    "run {id} still {} after {timeout:?}\n--- server log ---\n{}",
                    run["status"],
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_finished(&self, id: i64) -> anyhow::Result<Value> {
        self.wait_run(id, Duration::from_secs(120), |s| {
            !matches!(s, "queued" | "running")
        })
        .await
    }

    /// Every event of a run.
    pub async fn events(&self, id: i64) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!(
                    "/api/v1/runs/{id}/events?after={after}&limit=1000"
                ))
                .await?;
            let evs = page["events"].as_array().cloned().unwrap_or_default();
            if evs.is_empty() {
                return Ok(all);
            }
            after = page["next_after"].as_i64().unwrap_or(after);
            all.extend(evs);
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project directory with the given playbooks.
pub fn project_dir(files: &[(&str, &str)]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(dir)
}

/// The process group of a live process, from /proc.
pub fn pgid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after the closing ')' are fixed.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Pids of live (non-zombie) processes in a process group.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits for a file to appear and returns its trimmed content.
pub async fn wait_file(path: &Path, timeout: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_owned());
        }
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no process is left in a group.
pub async fn wait_group_empty(pgid: i32, timeout: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let left = processes_in_group(pgid);
        if left.is_empty() || start.elapsed() > timeout {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Parses ansible's PLAY RECAP from stdout: host -> (ok, changed, unreachable, failed, skipped, rescued, ignored).
pub fn parse_recap(
    stdout: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> {
    let mut out = std::collections::BTreeMap::new();
    let mut in_recap = false;
    for line in stdout.lines() {
        if line.starts_with("PLAY RECAP") {
            in_recap = true;
            continue;
        }
        if !in_recap || line.trim().is_empty() {
            continue;
        }
        let Some((host, rest)) = line.split_once(':') else {
            continue;
        };
        let mut m = std::collections::BTreeMap::new();
        for kv in rest.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=')
                && let Ok(n) = v.parse::<i64>()
            {
                m.insert(k.to_owned(), n);
            }
        }
        out.insert(host.trim().to_owned(), m);
    }
    out
}

/// Live processes started for a run under `runs_dir`: every process of a run (ansible, its
/// workers, module subprocesses, even those in other process groups) carries `TROUPE_RUN_DIR`
/// in its environment.
pub fn processes_of_runs_under(runs_dir: &Path) -> Vec<i32> {
    let marker = format!("TROUPE_RUN_DIR={}", runs_dir.display());
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let live = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| !r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if live
            && env
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(marker.as_bytes()))
        {
            pids.push(pid);
        }
    }
    pids
}
