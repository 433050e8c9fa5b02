//! Supervising one `ansible-playbook` process: spawn, stream its output and events, cancel it,
//! and make sure nothing of it is left when it ends.

use crate::child::RunChild;
use crate::plugin::{BOOT_FILE, PLUGIN_NAME, parse_event_line};
use crate::procfs::{self, RUN_MARKER_VAR};
use crate::rundir::{self, RunDir};
use crate::spawner::{self, EVENT_FD, RunCommand};
use crate::warm::{Fallback, Launcher, WarmRequest};
use crate::{Ansible, AnsibleError};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use troupe_core::Event;
use troupe_core::inventory::InventoryContent;
use troupe_core::run::{CancelMode, RunOptions};

/// Capacity of the [`Output`] channel. The readers wait when it is full, so a consumer must keep
/// up (store events in batches behind it); the pipes from ansible are drained as fast as the
/// channel allows.
const OUTPUT_CHANNEL_CAPACITY: usize = 4096;
/// Longest piece of stdout/stderr sent as one [`Output`]; longer lines come in pieces.
const MAX_OUTPUT_PIECE: usize = 64 * 1024;
/// How long to wait for the pipes to close after the process group was killed.
const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Size limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A result (`event_data.res`) larger than this, serialised, is replaced by a truncation
    /// marker (`_troupe_truncated: true`, `_troupe_original_bytes`, `changed`, `failed`, `msg`).
    pub max_result_bytes: usize,
    /// stdout + stderr bytes forwarded as [`Output::Stdout`]/[`Output::Stderr`]; after that one
    /// [`Output::Truncated`] is sent and the rest is read and dropped. Events are not counted.
    pub max_output_bytes: usize,
    /// An event larger than this (its `stdout` plus its `event_data` text) is kept, cut to
    /// this size with markers ([`Event::truncate_to`]).
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_result_bytes: 256 * 1024,
            max_output_bytes: 64 * 1024 * 1024,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// The default of [`Limits::max_event_bytes`]: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Delays of a forced stop: SIGINT, `interrupt` later SIGTERM, `terminate` later SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// Time between SIGINT and SIGTERM.
    pub interrupt: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub terminate: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            interrupt: Duration::from_secs(5),
            terminate: Duration::from_secs(5),
        }
    }
}

/// Everything needed to launch one `ansible-playbook`.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The ansible to run.
    pub ansible: Ansible,
    /// The project directory: the process's working directory.
    pub project_dir: PathBuf,
    /// The playbook, relative to `project_dir`; [`Process::spawn`] refuses one that is not a
    /// file inside it.
    pub playbook: String,
    /// The inventory, written into the run directory.
    pub inventory: InventoryContent,
    /// ansible-playbook options; `extra_vars` go through a 0600 file, `timeout_s` is enforced
    /// here (a forced stop, reported as [`Exit::timed_out`]).
    pub options: RunOptions,
    /// Parent of the per-run private directories.
    pub runs_dir: PathBuf,
    /// Names the run directory (`run-<key>-...`), e.g. the run id.
    pub run_key: String,
    /// Size limits.
    pub limits: Limits,
    /// Delays of a forced stop.
    pub grace: Grace,
    /// The opened secrets of the run's credentials: written to 0600 files in the run
    /// directory just before the start (removed with it), or given as environment variables.
    pub credentials: Vec<troupe_core::credential::CredentialSecret>,
    /// How the process is started: exec'd, or forked by a warm parent.
    pub launcher: Launcher,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// ansible-playbook's stdout.
    Stdout,
    /// ansible-playbook's stderr.
    Stderr,
}

/// What a running process produces, in the order each source produced it (events, stdout and
/// stderr come through different pipes, so their relative order is not meaningful; use the
/// events' own `stdout`/`start_line` to place text).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An event from the callback plugin.
    Event(Event),
    /// A line of stdout, with its `\n` (or a piece of at most 64 KiB of a longer line, or the
    /// unterminated last line).
    Stdout(String),
    /// A line of stderr, like [`Output::Stdout`].
    Stderr(String),
    /// `max_output_bytes` was reached; no more stdout/stderr will be sent (sent once).
    Truncated(Stream),
}

/// How a run's process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, when the process exited normally.
    pub rc: Option<i32>,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// A graceful cancel was asked for (through [`Process::cancel`]).
    pub graceful_cancel_requested: bool,
    /// The plugin acknowledged the graceful cancel: the stats event was emitted with
    /// `troupe_cancel_requested: true`. ansible exits 0 then; the run's status is `canceled`.
    pub graceful_cancel_done: bool,
    /// A forced stop (SIGINT/SIGTERM/SIGKILL) was started, by [`Process::cancel`] or the timeout.
    pub forced: bool,
    /// The forced stop was caused by `options.timeout_s`.
    pub timed_out: bool,
    /// The `playbook_on_stats` event was seen.
    pub stats_seen: bool,
    /// Events received.
    pub events: u64,
    /// Lines of the event pipe that were not events (logged and skipped).
    pub malformed_event_lines: u64,
    /// stdout/stderr went over `max_output_bytes`.
    pub output_truncated: bool,
    /// Set when waiting for the process failed; the other fields are then best effort.
    pub wait_error: Option<String>,
}

/// A running `ansible-playbook`.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    run_dir: PathBuf,
    ctl: mpsc::UnboundedSender<CancelMode>,
    done: JoinHandle<Exit>,
}

#[derive(Debug, Default)]
struct Shared {
    events: AtomicU64,
    malformed: AtomicU64,
    stats_seen: AtomicBool,
    graceful_done: AtomicBool,
    output_used: AtomicUsize,
    output_truncated: AtomicBool,
}

impl Process {
    /// Prepares the run directory and starts `ansible-playbook -i <inv> -e @<extra vars>
    /// <options> <playbook>` in `project_dir`, in its own process group, with the troupe plugin.
    pub async fn spawn(
        spec: LaunchSpec,
    ) -> Result<(Process, mpsc::Receiver<Output>), AnsibleError> {
        let LaunchSpec {
            ansible,
            project_dir,
            playbook,
            inventory,
            options,
            runs_dir,
            run_key,
            limits,
            grace,
            credentials,
            launcher,
        } = spec;
        let extra_vars = options.extra_vars.clone();
        // The playbook is looked up again right before the start (the project or a symlink in
        // it may have changed since the run was asked for), in the same trip to a blocking
        // thread as the run directory.
        let checked_in = project_dir.clone();
        let checked = playbook.clone();
        let checked_options = options.clone();
        let dir = tokio::task::spawn_blocking(move || {
            crate::resolve_playbook_blocking(&checked_in, &checked)?;
            rundir::prepare(
                &runs_dir,
                &run_key,
                &inventory,
                &extra_vars,
                &credentials,
                &checked_options,
            )
        })
        .await
        .map_err(|e| AnsibleError::io("preparing the run directory", std::io::Error::other(e)))??;

        match start(
            &ansible,
            &project_dir,
            &playbook,
            &options,
            &dir,
            limits,
            &launcher,
        )
        .await
        {
            Ok((child, event_pipe)) => {
                Ok(supervise(child, event_pipe, dir, &options, limits, grace).await)
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir.root).await;
                Err(e)
            }
        }
    }

    /// The `ansible-playbook` process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its process group id (the same number: it leads its own group).
    pub fn pgid(&self) -> i32 {
        self.pid as i32
    }

    /// The run's private directory (removed when the process ends).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Asks the run to stop. Graceful: SIGUSR1 to `ansible-playbook` once its plugin has loaded
    /// (first event seen; asked earlier, it is sent on the first event): the task in flight
    /// finishes on every host, no new task starts, the recap is still printed. Force: SIGINT,
    /// SIGTERM, SIGKILL to the process group after the [`Grace`] delays. Calling it again, or
    /// after the process ended, is harmless.
    pub fn cancel(&self, mode: CancelMode) {
        let _ = self.ctl.send(mode);
    }

    /// Waits until the process has ended, every process of the run is gone, the pipes are
    /// drained and the run directory is removed.
    pub async fn wait(self) -> Exit {
        match self.done.await {
            Ok(exit) => exit,
            Err(e) => Exit {
                wait_error: Some(format!("supervisor task failed: {e}")),
                ..Exit::default()
            },
        }
    }
}

/// The environment every child troupe starts gets (ansible, git, ansible-galaxy): the caller's
/// environment as it is, as a bare `ansible-playbook` would inherit it, less troupe's own
/// settings (every `TROUPE_*` variable: tokens, database URLs, keys), with `bin_dir` put first
/// on `PATH` when `PATH` does not have it yet (so that `ansible-*` commands a task runs are the
/// same ansible's).
pub fn child_env(bin_dir: Option<&Path>) -> Vec<(OsString, OsString)> {
    env_from(std::env::vars_os(), bin_dir)
}

fn env_from(
    vars: impl Iterator<Item = (OsString, OsString)>,
    bin_dir: Option<&Path>,
) -> Vec<(OsString, OsString)> {
    let mut env = Vec::new();
    let mut path = None;
    for (key, value) in vars {
        if key == "PATH" {
            path = Some(value);
        } else if !key.as_encoded_bytes().starts_with(b"TROUPE_") {
            env.push((key, value));
        }
    }
    let inherited = path.unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let on_path = |dir: &Path| std::env::split_paths(&inherited).any(|p| p == dir);
    match bin_dir.filter(|dir| !on_path(dir)) {
        Some(dir) => {
            let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&inherited));
            if let Ok(joined) = std::env::join_paths(dirs) {
                env.push(("PATH".into(), joined));
            }
        }
        None => env.push(("PATH".into(), inherited)),
    }
    env
}

/// Prepends `ours` to a comma/colon separated list from the caller's environment.
fn prepend(env: &[(OsString, OsString)], key: &str, ours: &str, sep: &str) -> OsString {
    match env.iter().find(|(k, _)| k == key) {
        Some((_, v)) if !v.is_empty() => {
            let mut s = OsString::from(ours);
            s.push(sep);
            s.push(v);
            s
        }
        _ => OsString::from(ours),
    }
}

async fn start(
    ansible: &Ansible,
    project_dir: &Path,
    playbook: &str,
    options: &RunOptions,
    dir: &RunDir,
    limits: Limits,
    launcher: &Launcher,
) -> Result<(RunChild, OwnedFd), AnsibleError> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| AnsibleError::io("creating the event pipe", e.into()))?;

    // troupe's plumbing: the boot file or the plugin takes them (and TROUPE_EVENT_FD) out of
    // the environment before ansible starts anything; the run marker stays, on purpose (see
    // docs/architecture.md, "What troupe changes in ansible-playbook's environment").
    let plumbing: [(&str, OsString); 3] = [
        // The plugin sets PR_SET_PDEATHSIG and checks that troupe is still its ancestor.
        ("TROUPE_PARENT_PID", std::process::id().to_string().into()),
        (
            "TROUPE_MAX_RESULT_BYTES",
            limits.max_result_bytes.to_string().into(),
        ),
        (RUN_MARKER_VAR, dir.root.clone().into()),
    ];
    // Only a run resuming at a task's position has it: the plugin changes nothing otherwise.
    let resume_at = options
        .start_at_position
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok())
        .map(|json| ("TROUPE_RESUME_AT", OsString::from(json)));
    let mut env = child_env(ansible.bin_dir());
    let mut args: Vec<OsString> = Vec::new();
    if let Some(inventory) = &dir.inventory {
        args.push("-i".into());
        args.push(inventory.into());
    }
    if let Some(extra_vars) = &dir.extra_vars {
        args.push("-e".into());
        args.push(format!("@{}", extra_vars.display()).into());
    }
    args.extend(dir.access.args.iter().cloned());
    args.extend(options.to_args().into_iter().map(OsString::from));
    args.push(playbook.into());
    let added: Vec<(OsString, OsString)> = dir
        .access
        .env
        .iter()
        .cloned()
        .chain(plumbing.iter().map(|(k, v)| (OsString::from(k), v.clone())))
        .chain(resume_at.map(|(k, v)| (OsString::from(k), v)))
        .collect();

    let write_end = match (launcher, ansible.boot_python()) {
        (Launcher::Warm(pool), Some(python)) => {
            let request = WarmRequest {
                python: python.to_path_buf(),
                playbook: ansible.playbook.clone(),
                plugins: dir.plugins.clone(),
                cwd: project_dir.to_path_buf(),
                inherited: env.clone(),
                added: added.clone(),
                args: args.clone(),
            };
            match pool.launch(request, write_end).await {
                Ok(child) => return Ok((child, read_end)),
                Err((why, write_end)) => {
                    log_fallback(&why);
                    write_end
                }
            }
        }
        _ => write_end,
    };

    let mut cmd = match ansible.boot_python() {
        // ansible's CLI, started as its own script starts it, the callback attached in-process.
        Some(python) => {
            let mut cmd = RunCommand::new(python, project_dir);
            cmd.arg(dir.plugins.join(BOOT_FILE)).arg(&ansible.playbook);
            cmd
        }
        // Not a Python script (a wrapper): the callback is enabled through ansible's settings.
        None => {
            let plugin_dirs = prepend(
                &env,
                "ANSIBLE_CALLBACK_PLUGINS",
                &dir.plugins.to_string_lossy(),
                ":",
            );
            let enabled = prepend(&env, "ANSIBLE_CALLBACKS_ENABLED", PLUGIN_NAME, ",");
            env.retain(|(k, _)| {
                k != "ANSIBLE_CALLBACK_PLUGINS" && k != "ANSIBLE_CALLBACKS_ENABLED"
            });
            env.push(("ANSIBLE_CALLBACK_PLUGINS".into(), plugin_dirs));
            env.push(("ANSIBLE_CALLBACKS_ENABLED".into(), enabled));
            RunCommand::new(&ansible.playbook, project_dir)
        }
    };
    cmd.args(&args)
        .envs(env)
        .envs(added)
        .env("TROUPE_EVENT_FD", EVENT_FD.to_string());
    // In its own process group, stdin on /dev/null, the event pipe's write end on EVENT_FD and
    // no other descriptor of troupe's; PR_SET_PDEATHSIG is set by the plugin.
    let child = spawner::spawn_run(cmd, write_end)
        .await
        .map_err(|e| AnsibleError::io(format!("starting {}", ansible.playbook.display()), e))?;
    Ok((child, read_end))
}

/// A warm run that is exec'd instead: expected for configurations that cannot be shared, a
/// problem when the parent failed.
fn log_fallback(why: &Fallback) {
    match why {
        Fallback::Unfit(_) => tracing::warn!(%why, "the run is started with exec"),
        _ => tracing::debug!(%why, "the run is started with exec"),
    }
}

async fn supervise(
    mut child: RunChild,
    event_pipe: OwnedFd,
    dir: RunDir,
    options: &RunOptions,
    limits: Limits,
    grace: Grace,
) -> (Process, mpsc::Receiver<Output>) {
    let pid = child.pid();
    let (tx, rx) = mpsc::channel(OUTPUT_CHANNEL_CAPACITY);
    let shared = Arc::new(Shared::default());
    let (first_tx, first_rx) = watch::channel(false);
    let mut readers = Vec::new();
    if let Some(out) = child.take_stdout() {
        readers.push(tokio::spawn(read_output(
            out,
            Stream::Stdout,
            tx.clone(),
            shared.clone(),
            limits.max_output_bytes,
        )));
    }
    if let Some(err) = child.take_stderr() {
        readers.push(tokio::spawn(read_output(
            err,
            Stream::Stderr,
            tx.clone(),
            shared.clone(),
            limits.max_output_bytes,
        )));
    }
    match tokio::net::unix::pipe::Receiver::from_owned_fd(event_pipe) {
        Ok(pipe) => {
            // An event line holds a result (bounded by max_result_bytes), task args (same bound)
            // and the text printed for it; anything longer than this is skipped.
            let max_line = limits
                .max_output_bytes
                .saturating_add(limits.max_result_bytes.saturating_mul(4))
                .saturating_add(1 << 20)
                .max(limits.max_event_bytes.saturating_mul(2));
            readers.push(tokio::spawn(read_events(
                pipe,
                tx.clone(),
                shared.clone(),
                first_tx,
                max_line,
                limits.max_event_bytes,
            )));
        }
        Err(e) => tracing::error!(%e, "cannot read the event pipe; the run will have no events"),
    }
    drop(tx);
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let timeout = options.timeout_s.map(Duration::from_secs);
    let run_dir = dir.root.clone();
    let done = tokio::spawn(run_supervisor(
        child, dir, ctl_rx, first_rx, shared, readers, grace, timeout,
    ));
    (
        Process {
            pid,
            run_dir,
            ctl,
            done,
        },
        rx,
    )
}

#[allow(clippy::too_many_arguments)]
async fn run_supervisor(
    mut child: RunChild,
    dir: RunDir,
    mut ctl: mpsc::UnboundedReceiver<CancelMode>,
    mut first_event: watch::Receiver<bool>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    grace: Grace,
    timeout: Option<Duration>,
) -> Exit {
    let pid = child.pid();
    let pgid = pid as i32;
    let mut exit = Exit::default();
    let mut graceful_pending = false;
    let mut ctl_open = true;
    let mut escalation: Option<JoinHandle<()>> = None;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
    tokio::pin!(sleep);

    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            mode = ctl.recv(), if ctl_open => match mode {
                Some(CancelMode::Graceful) => {
                    exit.graceful_cancel_requested = true;
                    if *first_event.borrow() {
                        send_usr1(&child);
                    } else {
                        graceful_pending = true;
                    }
                }
                Some(CancelMode::Force) => {
                    if escalation.is_none() {
                        exit.forced = true;
                        escalation = Some(tokio::spawn(escalate(pgid, grace)));
                    }
                }
                None => ctl_open = false,
            },
            changed = first_event.changed(), if graceful_pending => {
                if changed.is_err() || *first_event.borrow() {
                    graceful_pending = false;
                    if *first_event.borrow() {
                        send_usr1(&child);
                    }
                }
            }
            () = &mut sleep, if deadline.is_some() && escalation.is_none() => {
                exit.timed_out = true;
                exit.forced = true;
                escalation = Some(tokio::spawn(escalate(pgid, grace)));
            }
        }
    };
    if let Some(task) = escalation {
        task.abort();
    }
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            exit.rc = status.code();
            exit.signal = status.signal();
        }
        Err(e) => exit.wait_error = Some(e.to_string()),
    }

    // Nothing of the run may outlive it: ansible-playbook's group, then everything carrying the
    // run's marker (ansible's workers call setsid, so their modules are in other groups).
    procfs::kill_group(pgid, Signal::SIGKILL);
    let cleared = procfs::clear_run(&dir.root, child.start_time(), Duration::from_secs(5)).await;
    if let Err(e) = cleared.removed {
        tracing::warn!(%e, dir = %dir.root.display(), "cannot remove the run directory");
    }

    for mut reader in readers {
        if tokio::time::timeout(READER_DRAIN_TIMEOUT, &mut reader)
            .await
            .is_err()
        {
            tracing::warn!(
                pid,
                "an output pipe stayed open after the run ended; abandoning it"
            );
            reader.abort();
        }
    }
    exit.events = shared.events.load(Ordering::Relaxed);
    exit.malformed_event_lines = shared.malformed.load(Ordering::Relaxed);
    exit.stats_seen = shared.stats_seen.load(Ordering::Relaxed);
    exit.graceful_cancel_done =
        exit.graceful_cancel_requested && shared.graceful_done.load(Ordering::Relaxed);
    exit.output_truncated = shared.output_truncated.load(Ordering::Relaxed);
    exit
}

fn send_usr1(child: &RunChild) {
    if let Err(e) = child.signal(Signal::SIGUSR1) {
        let pid = child.pid();
        tracing::warn!(pid, %e, "cannot send SIGUSR1 for a graceful cancel");
    }
}

/// SIGINT, wait, SIGTERM, wait, SIGKILL to the process group; ESRCH is ignored.
async fn escalate(pgid: i32, grace: Grace) {
    procfs::kill_group(pgid, Signal::SIGINT);
    tokio::time::sleep(grace.interrupt).await;
    procfs::kill_group(pgid, Signal::SIGTERM);
    tokio::time::sleep(grace.terminate).await;
    procfs::kill_group(pgid, Signal::SIGKILL);
}

/// Reads up to and including the next `\n`, or at most `max` bytes, into `buf` (cleared first).
/// `Ok(false)` at end of input with nothing read.
async fn next_piece<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(!buf.is_empty());
        }
        let room = max.saturating_sub(buf.len()).max(1);
        let window = &avail[..avail.len().min(room)];
        let (take, found) = match window.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (window.len(), false),
        };
        buf.extend_from_slice(&window[..take]);
        r.consume(take);
        if found || buf.len() >= max {
            return Ok(true);
        }
    }
}

async fn read_output<R: AsyncRead + Unpin>(
    pipe: R,
    stream: Stream,
    tx: mpsc::Sender<Output>,
    shared: Arc<Shared>,
    budget: usize,
) {
    let mut reader = BufReader::with_capacity(MAX_OUTPUT_PIECE, pipe);
    let mut buf = Vec::with_capacity(1024);
    let mut receiver_gone = false;
    loop {
        match next_piece(&mut reader, MAX_OUTPUT_PIECE, &mut buf).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(%e, ?stream, "reading ansible's output failed");
                break;
            }
        }
        let used = shared.output_used.fetch_add(buf.len(), Ordering::Relaxed) + buf.len();
        let item = if used > budget {
            if shared.output_truncated.swap(true, Ordering::Relaxed) {
                continue;
            }
            Output::Truncated(stream)
        } else {
            let text = String::from_utf8_lossy(&buf).into_owned();
            match stream {
                Stream::Stdout => Output::Stdout(text),
                Stream::Stderr => Output::Stderr(text),
            }
        };
        if !receiver_gone && tx.send(item).await.is_err() {
            receiver_gone = true;
        }
    }
}

async fn read_events(
    pipe: tokio::net::unix::pipe::Receiver,
    tx: mpsc::Sender<Output>,
    shared: Arc<Shared>,
    first_event: watch::Sender<bool>,
    max_line: usize,
    max_event: usize,
) {
    let mut reader = BufReader::with_capacity(256 * 1024, pipe);
    let mut buf = Vec::with_capacity(4096);
    let mut receiver_gone = false;
    let mut skipping = false;
    loop {
        match next_piece(&mut reader, max_line, &mut buf).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(%e, "reading the event pipe failed");
                break;
            }
        }
        let complete = buf.last() == Some(&b'\n');
        if skipping {
            skipping = !complete;
            continue;
        }
        if !complete && buf.len() >= max_line {
            tracing::warn!(max_line, "event line too long; skipped");
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            skipping = true;
            continue;
        }
        let mut event = match parse_event_line(&buf) {
            Ok(ev) => ev,
            Err(e) => {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
                tracing::warn!(%e, line = %shown, "malformed event line skipped");
                shared.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if let Some(bytes) = event.truncate_to(max_event) {
            tracing::debug!(
                counter = event.counter,
                bytes,
                max_event,
                "event cut to max_event_bytes"
            );
        }
        if shared.events.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = first_event.send(true);
        }
        if event.event == troupe_core::event::STATS_EVENT {
            shared.stats_seen.store(true, Ordering::Relaxed);
            if event
                .event_data
                .get("troupe_cancel_requested")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                shared.graceful_done.store(true, Ordering::Relaxed);
            }
        }
        if !receiver_gone && tx.send(Output::Event(event)).await.is_err() {
            receiver_gone = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_split_long_lines_and_keep_newlines() {
        let data: &[u8] = b"ab\ncdefgh\n\nxyz";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while next_piece(&mut r, 4, &mut buf).await.expect("read") {
            got.push(String::from_utf8_lossy(&buf).into_owned());
        }
        assert_eq!(got, vec!["ab\n", "cdef", "gh\n", "\n", "xyz"]);
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsString> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn children_inherit_everything_but_troupe_settings() {
        let given = [
            ("TROUPE_TOKEN", "secret"),
            ("TROUPE_DATABASE_URL", "postgres://u:p@h/db"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("AWS_PROFILE", "ops"),
            ("ANSIBLE_CONFIG", "/p/ansible.cfg"),
            ("PATH", "/usr/bin:/bin"),
        ];
        let env = env_from(vars(&given), Some(Path::new("/opt/ansible/bin")));
        assert!(get(&env, "TROUPE_TOKEN").is_none() && get(&env, "TROUPE_DATABASE_URL").is_none());
        for (key, value) in &given[2..5] {
            assert_eq!(get(&env, key), Some(&OsString::from(value)), "{key}");
        }
        assert_eq!(
            get(&env, "PATH"),
            Some(&OsString::from("/opt/ansible/bin:/usr/bin:/bin"))
        );
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn path_is_kept_as_it_is_when_it_has_ansibles_directory() {
        let given = [("PATH", "/usr/local/bin:/opt/ansible/bin:/usr/bin")];
        let env = env_from(vars(&given), Some(Path::new("/opt/ansible/bin")));
        assert_eq!(get(&env, "PATH"), Some(&OsString::from(given[0].1)));
        let none = env_from(vars(&given), None);
        assert_eq!(get(&none, "PATH"), Some(&OsString::from(given[0].1)));
    }

    #[test]
    fn prepends_to_user_lists() {
        let env = vec![(
            OsString::from("ANSIBLE_CALLBACKS_ENABLED"),
            OsString::from("profile_tasks"),
        )];
        assert_eq!(
            prepend(&env, "ANSIBLE_CALLBACKS_ENABLED", "troupe", ","),
            OsString::from("troupe,profile_tasks")
        );
        assert_eq!(
            prepend(&env, "ANSIBLE_CALLBACK_PLUGINS", "/x", ":"),
            OsString::from("/x")
        );
    }
}
