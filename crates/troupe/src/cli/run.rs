//! `troupe run`: ansible-playbook's command line, executed by the server.

use crate::client::ApiFailure;
use crate::client::Client;
use anyhow::{Context, bail};
use clap::Args;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_wire::IdOrName;
use troupe_wire::inventories::{Inventory, InventoryFormat, InventoryList, NewInventory};
use troupe_wire::projects::{NewProject, Project, ProjectList, ProjectSource};
use troupe_wire::runs::{CancelMode, CancelRequest, CreateRun, Event, Run, RunStatus};
use troupe_wire::streams::RunStreamMessage;

/// Arguments of `troupe run`, named as ansible-playbook names them.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// Inventory file, or a comma-separated host list (`a,b,`). Without it, the inventory
    /// ansible's configuration names (the project's ansible.cfg), as ansible-playbook does.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: Option<String>,
    /// Extra variables: `key=value`, `@file.json`/`@file.yml`, or a JSON object. Repeatable.
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Limit to a host pattern.
    #[arg(short = 'l', long)]
    pub limit: Option<String>,
    /// Only tasks with these tags (comma-separated).
    #[arg(short = 't', long)]
    pub tags: Option<String>,
    /// Skip tasks with these tags (comma-separated).
    #[arg(long)]
    pub skip_tags: Option<String>,
    /// Don't change anything; predict.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show differences in changed files.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Parallel processes.
    #[arg(short = 'f', long)]
    pub forks: Option<u32>,
    /// Verbosity (-v to -vvvv).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Stop the run after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Label the run (`key=value`). Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The project directory (default: the current directory if it holds the playbook,
    /// else the playbook's directory).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// Queue the run and print its id without following it.
    #[arg(long)]
    pub detach: bool,
    /// Use this stored credential (`troupe credentials create`), by name. Repeatable.
    #[arg(long = "credential")]
    pub credentials: Vec<String>,
    /// Connection type (`ssh`, `local`...).
    #[arg(short = 'c', long)]
    pub connection: Option<String>,
    /// Connect as this user.
    #[arg(short = 'u', long = "user")]
    pub remote_user: Option<String>,
    /// Run operations with become.
    #[arg(short = 'b', long = "become")]
    pub become_: bool,
    /// Privilege escalation method (`sudo`, `su`...).
    #[arg(long)]
    pub become_method: Option<String>,
    /// Become this user.
    #[arg(long)]
    pub become_user: Option<String>,
    /// Extra arguments to sftp, scp and ssh.
    #[arg(long, allow_hyphen_values = true)]
    pub ssh_common_args: Option<String>,
    /// Extra arguments to ssh only.
    #[arg(long, allow_hyphen_values = true)]
    pub ssh_extra_args: Option<String>,
    /// Only a worker with every one of these labels may take the run (comma-separated).
    #[arg(long = "worker-labels", value_delimiter = ',')]
    pub worker_labels: Vec<String>,
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<i32> {
    let playbook = std::fs::canonicalize(&args.playbook)
        .with_context(|| format!("playbook {} not found", args.playbook.display()))?;
    let project_dir = match &args.project_dir {
        Some(d) => std::fs::canonicalize(d)
            .with_context(|| format!("project dir {} not found", d.display()))?,
        None => {
            let cwd = std::env::current_dir()?.canonicalize()?;
            if playbook.starts_with(&cwd) {
                cwd
            } else {
                playbook
                    .parent()
                    .map(Path::to_path_buf)
                    .context("playbook has no parent directory")?
            }
        }
    };
    let rel = playbook
        .strip_prefix(&project_dir)
        .with_context(|| {
            format!(
                "playbook {} is not inside the project dir {}",
                playbook.display(),
                project_dir.display()
            )
        })?
        .to_string_lossy()
        .into_owned();
    let project_id = ensure_project(client, &project_dir).await?;

    let mut body = CreateRun::new(project_id, rel);
    match args
        .inventory
        .as_deref()
        .map(inventory_source)
        .transpose()?
    {
        Some(InventorySource::File { name, format, text }) => {
            let id = ensure_inventory(client, &name, format, &text).await?;
            body.inventory = Some(IdOrName::Id(id));
        }
        Some(InventorySource::Inline(hosts)) => {
            body.hosts = Some(hosts);
            body.hosts_format = Some(InventoryFormat::Ini);
        }
        // Neither: the server's ansible-playbook gets no -i.
        None => {}
    }
    body.extra_vars = Some(Value::Object(parse_extra_vars(&args.extra_vars)?));
    body.limit = args.limit;
    let list = |list: Option<String>| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    body.tags = list(args.tags);
    body.skip_tags = list(args.skip_tags);
    body.check = args.check;
    body.diff = args.diff;
    body.forks = args.forks;
    body.verbosity = args.verbose;
    body.timeout_s = args.timeout;
    body.credentials = args.credentials;
    body.connection = args.connection;
    body.remote_user = args.remote_user;
    body.become_ = args.become_;
    body.become_method = args.become_method;
    body.become_user = args.become_user;
    body.ssh_common_args = args.ssh_common_args;
    body.ssh_extra_args = args.ssh_extra_args;
    body.worker_labels = args.worker_labels;
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("label {l:?} must be key=value"))?;
        body.labels.insert(k.into(), v.into());
    }

    let run: Run = client.post("/api/v1/runs", &body).await?;
    if args.detach {
        println!("{}", run.id);
        return Ok(0);
    }
    eprintln!("troupe: run {} queued", run.id);
    follow(client, run.id).await
}

/// Finds the project serving `dir` (any name), or registers it under a name derived from it.
async fn ensure_project(client: &Client, dir: &Path) -> anyhow::Result<i64> {
    let path = dir.to_string_lossy();
    let all: ProjectList = client.get("/api/v1/projects").await?;
    let existing = all
        .projects
        .iter()
        .find(|p| matches!(&p.source, ProjectSource::Dir { path: dir } if *dir == *path));
    if let Some(p) = existing {
        return Ok(p.id);
    }
    let base = dir
        .file_name()
        .map(|n| sanitize(&n.to_string_lossy()))
        .unwrap_or_else(|| "root".into());
    let name = format!("dir-{base}-{}", short_hash(path.as_bytes()));
    let new = NewProject {
        name,
        source: ProjectSource::Dir {
            path: path.into_owned(),
        },
    };
    let created: Project = client.post("/api/v1/projects", &new).await?;
    Ok(created.id)
}

enum InventorySource {
    File {
        name: String,
        format: InventoryFormat,
        text: String,
    },
    Inline(String),
}

fn inventory_source(arg: &str) -> anyhow::Result<InventorySource> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read inventory {arg}"))?;
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => InventoryFormat::Yaml,
            Some("ini" | "cfg") => InventoryFormat::Ini,
            _ => InventoryFormat::detect(&text),
        };
        let stem = path
            .file_stem()
            .map(|s| sanitize(&s.to_string_lossy()))
            .unwrap_or_else(|| "inventory".into());
        // Named by content: an edited file becomes a new inventory, old runs keep theirs.
        let name = format!("file-{stem}-{}", short_hash(text.as_bytes()));
        return Ok(InventorySource::File { name, format, text });
    }
    if path.is_dir() {
        bail!("inventory {arg} is a directory; troupe takes an inventory file or a host list");
    }
    if arg.contains(',') {
        let hosts: Vec<&str> = arg
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() {
            bail!("inventory host list {arg:?} names no host");
        }
        return Ok(InventorySource::Inline(hosts.join("\n") + "\n"));
    }
    bail!("inventory {arg} is neither a file nor a comma-separated host list")
}

async fn ensure_inventory(
    client: &Client,
    name: &str,
    format: InventoryFormat,
    text: &str,
) -> anyhow::Result<i64> {
    let found: InventoryList = client
        .get(&format!("/api/v1/inventories?name={name}"))
        .await?;
    if let Some(inv) = found.inventories.first() {
        return Ok(inv.id);
    }
    let new = NewInventory {
        name: name.to_owned(),
        env: None,
        version: None,
        format,
        hosts: text.to_owned(),
        vars: None,
    };
    let created: Inventory = client.post("/api/v1/inventories", &new).await?;
    Ok(created.id)
}

/// ansible-playbook's `-e` forms: `k=v k2=v2`, `@file` (JSON or YAML), or inline JSON.
pub fn parse_extra_vars(items: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut vars = Map::new();
    for item in items {
        let item = item.trim();
        let parsed: Value = if let Some(file) = item.strip_prefix('@') {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("could not read extra vars file {file}"))?;
            serde_json::from_str(&text)
                .or_else(|_| serde_saphyr::from_str::<Value>(&text))
                .with_context(|| format!("extra vars file {file} is neither JSON nor YAML"))?
        } else if item.starts_with('{') {
            serde_json::from_str(item).with_context(|| format!("invalid JSON in -e {item}"))?
        } else {
            let mut m = Map::new();
            for pair in item.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("-e {pair:?}: expected key=value, @file or JSON"))?;
                m.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            Value::Object(m)
        };
        match parsed {
            Value::Object(m) => vars.extend(m),
            _ => bail!("extra vars {item:?} must be a mapping"),
        }
    }
    Ok(vars)
}

fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "x".into()
    } else {
        cleaned
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..4])
}

/// Follows a run, printing its stdout to stdout and its stderr to stderr exactly as the server
/// keeps them (everything ansible-playbook printed, also what came before the first event), as
/// they grow, and returns the exit code ansible-playbook would have. The event stream drives
/// it (progress line, when to read more output, the end); it reconnects after a dropped
/// connection and resumes after the last event seen. Ctrl-C once asks for a graceful cancel;
/// twice forces it.
pub async fn follow(client: &Client, run_id: i64) -> anyhow::Result<i32> {
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut output = OutputTail::new(run_id);
    let mut poll = tokio::time::interval(OUTPUT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after = 0i64;
    let mut interrupts = 0u8;
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    'connect: loop {
        if failures > 0 {
            if failures > MAX_RECONNECTS {
                bail!("lost the connection to the server {failures} times in a row; giving up");
            }
            let delay = Duration::from_millis(200 * u64::from(failures.min(10)));
            tokio::time::sleep(delay).await;
        }
        let resp = match client
            .stream(&format!("/api/v1/runs/{run_id}/events/sse?after={after}"))
            .await
        {
            Ok(r) => r,
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() => return Err(e),
            Err(e) => {
                failures += 1;
                progress.note(&format!("reconnecting ({e:#})"));
                continue;
            }
        };
        let mut messages = resp.bytes_stream().eventsource();
        loop {
            tokio::select! {
                msg = tokio::time::timeout(STREAM_IDLE_LIMIT, messages.next()) => {
                    let msg = match msg {
                        Ok(Some(Ok(m))) => m,
                        // Dropped, broken or silent connection: resume where we are.
                        Ok(Some(Err(_)) | None) | Err(_) => {
                            failures += 1;
                            continue 'connect;
                        }
                    };
                    failures = 0;
                    if !matches!(msg.event.as_str(), "event" | "lagged" | "end") {
                        continue;
                    }
                    let data: RunStreamMessage = serde_json::from_str(&msg.data)
                        .with_context(|| format!("the server sent an unreadable {} message", msg.event))?;
                    match data {
                        RunStreamMessage::Event { event: ev } => {
                            if ev.counter <= after {
                                continue;
                            }
                            after = ev.counter;
                            output.grew = true;
                            progress.update(&ev);
                        }
                        RunStreamMessage::Lagged { resume_after, .. } => {
                            after = resume_after;
                            continue 'connect;
                        }
                        RunStreamMessage::End { .. } => break 'connect,
                    }
                }
                _ = ticker.tick() => progress.draw(),
                _ = poll.tick(), if output.grew => {
                    // A failed read is retried on the next tick; the last one, at the end, reports.
                    let _ = output.print_new(client, &mut progress).await;
                }
                _ = tokio::signal::ctrl_c() => {
                    interrupts += 1;
                    let mode = if interrupts == 1 { CancelMode::Graceful } else { CancelMode::Force };
                    progress.clear();
                    eprintln!(
                        "troupe: canceling run {run_id} ({}){}",
                        mode.as_str(),
                        if interrupts == 1 { "; press Ctrl-C again to force" } else { "" }
                    );
                    if let Err(e) = client
                        .post::<_, Run>(&format!("/api/v1/runs/{run_id}/cancel"), &CancelRequest { mode: Some(mode) })
                        .await
                    {
                        eprintln!("troupe: cancel failed: {e:#}");
                    }
                }
            }
        }
    }
    output.print_new(client, &mut progress).await?;
    progress.clear();
    let run: Run = client.get(&format!("/api/v1/runs/{run_id}")).await?;
    if run.status != RunStatus::Successful && run.status != RunStatus::Failed {
        eprintln!(
            "troupe: run {run_id} {}{}",
            run.status,
            run.status_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(exit_code(&run))
}

/// How often, at most, `troupe run` reads the output that grew while events arrived.
const OUTPUT_POLL: Duration = Duration::from_millis(100);

/// Where `follow` is in a run's stored stdout and stderr.
struct OutputTail {
    run_id: i64,
    streams: [TailStream; 2],
    /// Events came since the last read: there may be more output.
    grew: bool,
}

struct TailStream {
    name: &'static str,
    /// Bytes of the stored text printed so far.
    printed: usize,
    /// Colours are kept on a terminal and stripped elsewhere; the stripper keeps its state
    /// across reads, so an escape sequence cut between two reads is still removed whole.
    strip: Option<anstream::adapter::StripStr>,
}

impl TailStream {
    fn new(name: &'static str, terminal: bool) -> Self {
        Self {
            name,
            printed: 0,
            strip: (!terminal).then(anstream::adapter::StripStr::new),
        }
    }
}

impl OutputTail {
    fn new(run_id: i64) -> Self {
        Self {
            run_id,
            streams: [
                TailStream::new("stdout", std::io::stdout().is_terminal()),
                TailStream::new("stderr", std::io::stderr().is_terminal()),
            ],
            grew: true,
        }
    }

    /// Prints what was stored on each stream since the last read.
    async fn print_new(&mut self, client: &Client, progress: &mut Progress) -> anyhow::Result<()> {
        self.grew = false;
        for stream in &mut self.streams {
            let path = format!(
                "/api/v1/runs/{}/{}?ansi=true&offset={}",
                self.run_id, stream.name, stream.printed
            );
            let (text, _) = client.get_text(&path).await?;
            if text.is_empty() {
                continue;
            }
            stream.printed += text.len();
            progress.clear();
            let shown = match &mut stream.strip {
                Some(strip) => strip.strip_next(&text).collect::<String>(),
                None => text,
            };
            if stream.name == "stdout" {
                let mut out = std::io::stdout().lock();
                out.write_all(shown.as_bytes())?;
                out.flush()?;
            } else {
                let mut err = std::io::stderr().lock();
                err.write_all(shown.as_bytes())?;
                err.flush()?;
            }
        }
        Ok(())
    }
}

/// Connection drops in a row after which following gives up.
const MAX_RECONNECTS: u32 = 30;
/// The server sends a keep-alive every 15 s; a stream silent for this long is dead.
const STREAM_IDLE_LIMIT: Duration = Duration::from_secs(45);

/// The one-line progress display on a terminal: play, task, hosts done/started, elapsed.
/// Never drawn when stderr is not a terminal (pipes, CI logs).
struct Progress {
    enabled: bool,
    shown: bool,
    started: std::time::Instant,
    play: String,
    task: String,
    hosts_started: u32,
    hosts_done: u32,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            shown: false,
            started: std::time::Instant::now(),
            play: String::new(),
            task: String::new(),
            hosts_started: 0,
            hosts_done: 0,
        }
    }

    fn update(&mut self, ev: &Event) {
        let field = |k: &str| match ev.event_data.get(k) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        match ev.event.as_str() {
            "playbook_on_play_start" => {
                self.play = field("play");
                self.task.clear();
            }
            "playbook_on_task_start" => {
                self.task = field("task");
                self.hosts_started = 0;
                self.hosts_done = 0;
            }
            "runner_on_start" => self.hosts_started += 1,
            "runner_on_ok" | "runner_on_failed" | "runner_on_skipped" | "runner_on_unreachable" => {
                self.hosts_done += 1;
            }
            _ => {}
        }
        self.draw();
    }

    fn draw(&mut self) {
        if !self.enabled {
            return;
        }
        let secs = self.started.elapsed().as_secs();
        let line = format!(
            "[{:02}:{:02}] {} > {} ({}/{} hosts)",
            secs / 60,
            secs % 60,
            if self.play.is_empty() {
                "starting"
            } else {
                &self.play
            },
            self.task,
            self.hosts_done,
            self.hosts_started
        );
        let width = 100;
        let line: String = line.chars().take(width).collect();
        eprint!("\r\x1b[2K\x1b[2m{line}\x1b[0m");
        self.shown = true;
    }

    fn note(&mut self, text: &str) {
        if self.enabled {
            self.clear();
            eprintln!("troupe: {text}");
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// The exit code for a finished run: ansible-playbook's own when the run ran its course;
/// 99 (ansible's "interrupted") for a cancel, 124 for a timeout, 250 (ansible's "unexpected
/// error") when troupe could not run it.
pub fn exit_code(run: &Run) -> i32 {
    match (run.status, run.rc) {
        (RunStatus::Canceled, _) => 99,
        (RunStatus::Timeout, _) => 124,
        (RunStatus::Successful, rc) => rc.unwrap_or(0),
        (RunStatus::Failed, rc) => rc.unwrap_or(2),
        _ => 250,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_vars_forms() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("v.json");
        std::fs::write(&f, r#"{"n": 3, "l": [1]}"#)?;
        let y = dir.path().join("v.yml");
        std::fs::write(&y, "y: yes-string\nz: 2\n")?;
        let vars = parse_extra_vars(&[
            "a=1 b=two".into(),
            format!("@{}", f.display()),
            format!("@{}", y.display()),
            r#"{"c": true}"#.into(),
        ])?;
        assert_eq!(vars.get("a"), Some(&json!("1")));
        assert_eq!(vars.get("b"), Some(&json!("two")));
        assert_eq!(vars.get("n"), Some(&json!(3)));
        assert_eq!(vars.get("z"), Some(&json!(2)));
        assert_eq!(vars.get("c"), Some(&json!(true)));
        assert!(parse_extra_vars(&["novalue".into()]).is_err());
        assert!(parse_extra_vars(&["[1]".into()]).is_err());
        Ok(())
    }

    #[test]
    fn inline_host_lists() -> anyhow::Result<()> {
        match inventory_source("a, b,")? {
            InventorySource::Inline(h) => assert_eq!(h, "a\nb\n"),
            InventorySource::File { .. } => bail!("not a file"),
        }
        assert!(inventory_source("nonexistent-file").is_err());
        Ok(())
    }
}
