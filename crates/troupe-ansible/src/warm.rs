//! The warm launcher: `ansible-playbook` parents that have imported ansible's CLI once, each
//! forking one child per run (`plugin/troupe_warm.py`).
//!
//! ansible reads its configuration (the ansible.cfg in effect, `ANSIBLE_*` variables) when it
//! is imported, so a parent only serves runs whose import would have read the same things: the
//! [`WarmKey`] hashes the interpreter, the `ansible-playbook` script, the working directory, the
//! whole inherited environment and every ansible.cfg ansible could pick (path and content). A run
//! whose credentials add variables that the import reads, or that cannot be said in UTF-8, is
//! started with exec instead ([`Fallback`]); so is a configuration whose import printed something
//! (that output would belong to the run).
//!
//! A parent dies with troupe (PR_SET_PDEATHSIG from troupe's spawner thread), and its children
//! die with it: a run whose parent crashed ends with [`Exit::wait_error`](crate::Exit) saying so,
//! and the parent is replaced on the next run of its configuration.

use crate::child::{ReportedStatus, RunChild};
use crate::spawner::{self, EVENT_FD, RunCommand};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recv, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The file a warm parent runs, next to the boot file in the shared plugin directory.
pub const WARM_FILE: &str = "troupe_warm.py";

/// [`WARM_FILE`]'s Python source.
pub const WARM_SOURCE: &str = include_str!("../plugin/troupe_warm.py");

/// How long a new parent may take to import ansible.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request (argv, cwd, environment) sent to a parent in one message; a bigger one is
/// run with exec.
const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// How `ansible-playbook` processes are started.
#[derive(Debug, Clone, Default)]
pub enum Launcher {
    /// A new process per run (`posix_spawn` of the interpreter and the boot file).
    #[default]
    Exec,
    /// A fork of a warm parent when the run's configuration allows it, exec otherwise.
    Warm(Arc<WarmPool>),
}

/// Bounds of the pool of warm parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmSettings {
    /// Parents kept at most; the least recently used one is retired for a new configuration.
    pub max_parents: usize,
    /// A parent whose resident memory grows past this is retired (its runs go on).
    pub max_parent_rss_bytes: u64,
}

impl Default for WarmSettings {
    fn default() -> Self {
        WarmSettings {
            max_parents: 4,
            max_parent_rss_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Why a run was started with exec rather than by a warm parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fallback {
    /// `ansible-playbook` is not a Python script troupe can import.
    #[error("ansible-playbook is not a Python script")]
    NotPython,
    /// A credential sets a variable that ansible or Python reads when ansible is imported.
    #[error("a credential sets {0}, which ansible reads at import")]
    ReadAtImport(String),
    /// An argument, the directory or a variable is not UTF-8.
    #[error("the command or its environment is not UTF-8")]
    NotUtf8,
    /// The request is larger than a parent takes in one message.
    #[error("the command and environment are too large for one request")]
    TooLarge,
    /// This configuration's parent printed something at import, or could not start.
    #[error("no warm parent for this configuration: {0}")]
    Unfit(String),
}

/// What a warm parent would have read when it imported ansible, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WarmKey([u8; 32]);

impl WarmKey {
    fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// One warm parent, as `troupe doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInfo {
    /// The parent's pid.
    pub pid: u32,
    /// The first bytes of its [`WarmKey`], in hex.
    pub key: String,
    /// The directory its runs start in (part of the key).
    pub cwd: PathBuf,
    /// Runs it has forked.
    pub runs: u64,
    /// Resident memory, when it was read ([`WarmPool::parents`], [`read_parents`]).
    pub rss_bytes: Option<u64>,
}

/// The name of the file, in the runs directory, where the pool lists its parents for
/// `troupe doctor` (rewritten whenever a parent starts or is retired).
pub const PARENTS_FILE: &str = "warm-parents.json";

/// The warm parents of one troupe, at most [`WarmSettings::max_parents`].
#[derive(Debug)]
pub struct WarmPool {
    settings: WarmSettings,
    runs_dir: PathBuf,
    /// Most recently used last.
    parents: Mutex<Vec<Arc<Parent>>>,
    unfit: Mutex<BTreeMap<WarmKey, String>>,
    /// Parents are started one at a time: two runs of a new configuration share one parent.
    starting: tokio::sync::Mutex<()>,
    /// [`PARENTS_FILE`] is written by one task at a time.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Parent {
    key: WarmKey,
    pid: u32,
    cwd: PathBuf,
    /// Blocking; used from blocking threads only. Dropping it (the parent retired) lets the
    /// parent end once its runs have.
    ctl: OwnedFd,
    /// Set by the task that waits for (and reaps) the parent.
    ended: Arc<AtomicBool>,
    runs: AtomicU64,
}

impl Parent {
    fn alive(&self) -> bool {
        !self.ended.load(Ordering::Relaxed)
    }

    fn info(&self) -> ParentInfo {
        ParentInfo {
            pid: self.pid,
            key: self.key.short(),
            cwd: self.cwd.clone(),
            runs: self.runs.load(Ordering::Relaxed),
            rss_bytes: None,
        }
    }
}

/// One run, as troupe would exec it.
#[derive(Debug, Clone)]
pub(crate) struct WarmRequest {
    pub python: PathBuf,
    pub playbook: PathBuf,
    pub plugins: PathBuf,
    pub cwd: PathBuf,
    /// The environment every child of troupe inherits (part of the key).
    pub inherited: Vec<(OsString, OsString)>,
    /// What the run adds: the credentials' variables, troupe's plumbing.
    pub added: Vec<(OsString, OsString)>,
    /// The arguments after the ansible-playbook script.
    pub args: Vec<OsString>,
}

#[derive(Serialize)]
struct Request<'a> {
    argv: Vec<&'a str>,
    cwd: &'a str,
    env: BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct Reply {
    ready: Option<u32>,
    unfit: Option<String>,
    pid: Option<u32>,
    status: Option<i32>,
    error: Option<String>,
}

/// Variables a credential may not set for a warm run: ansible's configuration, and what Python
/// or ansible read when ansible is imported (locale, home, temp dir, colours, the interpreter).
fn read_at_import(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "HOME", "USER", "LOGNAME", "PATH", "TMPDIR", "TMP", "TEMP", "LANG", "LANGUAGE", "NO_COLOR",
        "EDITOR", "PAGER", "TERM", "COLUMNS", "LINES",
    ];
    const PREFIXES: &[&str] = &["ANSIBLE_", "_ANSIBLE_", "PYTHON", "LC_"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The key of a run's configuration, or why it cannot have one. Reads files: call it from a
/// blocking thread.
pub(crate) fn key_of(req: &WarmRequest) -> Result<WarmKey, Fallback> {
    if let Some((name, _)) = req
        .added
        .iter()
        .find(|(k, _)| read_at_import(&k.to_string_lossy()))
    {
        return Err(Fallback::ReadAtImport(name.to_string_lossy().into_owned()));
    }
    let mut hash = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    for path in [&req.python, &req.playbook, &req.cwd] {
        put(path.as_os_str().as_encoded_bytes());
    }
    // A reinstalled ansible rewrites its script.
    put(&modified(&req.playbook));
    let mut inherited: Vec<_> = req.inherited.iter().collect();
    inherited.sort();
    for (k, v) in inherited {
        put(k.as_encoded_bytes());
        put(v.as_encoded_bytes());
    }
    // Every file ansible's find_ini_config_file may choose, with the project directory's mode
    // (a world-writable one's ansible.cfg is ignored).
    let var = |name: &str| {
        req.inherited
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| PathBuf::from(v))
    };
    let mut candidates = Vec::new();
    if let Some(cfg) = var("ANSIBLE_CONFIG") {
        candidates.push(req.cwd.join(&cfg).join("ansible.cfg"));
        candidates.push(req.cwd.join(cfg));
    }
    candidates.push(req.cwd.join("ansible.cfg"));
    if let Some(home) = var("HOME") {
        candidates.push(home.join(".ansible.cfg"));
    }
    candidates.push(PathBuf::from("/etc/ansible/ansible.cfg"));
    for file in candidates {
        put(file.as_os_str().as_encoded_bytes());
        match std::fs::read(&file) {
            Ok(content) => put(&content),
            Err(e) => put(e.kind().to_string().as_bytes()),
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&req.cwd).map_or(0, |m| m.permissions().mode());
    put(&mode.to_le_bytes());
    Ok(WarmKey(hash.finalize().into()))
}

fn modified(path: &Path) -> Vec<u8> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(Vec::new, |d| d.as_nanos().to_le_bytes().to_vec())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&line).map_err(io::Error::other)
}

fn utf8(s: &std::ffi::OsStr) -> Result<&str, Fallback> {
    s.to_str().ok_or(Fallback::NotUtf8)
}

impl WarmPool {
    /// An empty pool; parents start with the first run of each configuration. `runs_dir` is
    /// where the pool lists its parents ([`PARENTS_FILE`]).
    pub fn new(settings: WarmSettings, runs_dir: PathBuf) -> Self {
        WarmPool {
            settings,
            runs_dir,
            parents: Mutex::new(Vec::new()),
            unfit: Mutex::new(BTreeMap::new()),
            starting: tokio::sync::Mutex::new(()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The parents alive now, with their resident memory.
    pub fn parents(&self) -> Vec<ParentInfo> {
        let alive: Vec<ParentInfo> = self
            .parents
            .lock()
            .map(|p| p.iter().filter(|p| p.alive()).map(|p| p.info()).collect())
            .unwrap_or_default();
        alive
            .into_iter()
            .map(|info| ParentInfo {
                rss_bytes: rss_bytes(info.pid),
                ..info
            })
            .collect()
    }

    /// Forks the run from its configuration's parent (started first when there is none).
    /// `Err` when the run must be started with exec: why, and the event pipe given back.
    pub(crate) async fn launch(
        self: &Arc<Self>,
        req: WarmRequest,
        event_pipe: OwnedFd,
    ) -> Result<RunChild, (Fallback, OwnedFd)> {
        // The key reads the ansible.cfg files: off the runtime's threads.
        let (req, key) = match tokio::task::spawn_blocking(move || {
            let key = key_of(&req);
            (req, key)
        })
        .await
        {
            Ok((req, Ok(key))) => (req, key),
            Ok((_, Err(why))) => return Err((why, event_pipe)),
            Err(e) => return Err((Fallback::Unfit(e.to_string()), event_pipe)),
        };
        if let Some(why) = self.unfit.lock().ok().and_then(|u| u.get(&key).cloned()) {
            return Err((Fallback::Unfit(why), event_pipe));
        }
        let message = match request_bytes(&req) {
            Ok(m) => m,
            Err(f) => return Err((f, event_pipe)),
        };
        // A parent that died since its last run is replaced once.
        for _ in 0..2 {
            let parent = match self.parent_for(&req, key).await {
                Ok(parent) => parent,
                Err(NoParent::Unfit(why)) => {
                    // Asking again would get the same answer: this configuration runs exec'd.
                    if let Ok(mut unfit) = self.unfit.lock() {
                        unfit.insert(key, why.clone());
                    }
                    return Err((Fallback::Unfit(why), event_pipe));
                }
                // Perhaps only now (a loaded machine): the next run tries again.
                Err(NoParent::Failed(why)) => return Err((Fallback::Unfit(why), event_pipe)),
            };
            match fork_from(&parent, &message, &event_pipe).await {
                Ok(child) => {
                    parent.runs.fetch_add(1, Ordering::Relaxed);
                    // The list (for `troupe doctor`) is rewritten beside the run, not before it.
                    let pool = Arc::clone(self);
                    tokio::spawn(async move { pool.write_list().await });
                    return Ok(child);
                }
                Err(e) => {
                    tracing::warn!(pid = parent.pid, %e, "the warm parent failed; replacing it");
                    self.retire(&parent).await;
                }
            }
        }
        Err((
            Fallback::Unfit("the warm parent failed twice".into()),
            event_pipe,
        ))
    }

    async fn retire(&self, parent: &Arc<Parent>) {
        if let Ok(mut parents) = self.parents.lock() {
            parents.retain(|p| !Arc::ptr_eq(p, parent));
        }
        self.write_list().await;
    }

    async fn parent_for(&self, req: &WarmRequest, key: WarmKey) -> Result<Arc<Parent>, NoParent> {
        if let Some(parent) = self.find(key).await {
            return Ok(parent);
        }
        let _one_at_a_time = self.starting.lock().await;
        if let Some(parent) = self.find(key).await {
            return Ok(parent);
        }
        let parent = Arc::new(start_parent(req, key).await?);
        let retired = {
            let mut parents = self
                .parents
                .lock()
                .map_err(|e| NoParent::Failed(e.to_string()))?;
            parents.push(Arc::clone(&parent));
            let excess = parents
                .len()
                .saturating_sub(self.settings.max_parents.max(1));
            parents.drain(..excess).collect::<Vec<_>>()
        };
        // Dropping the last reference closes the control socket: the parent stops taking runs
        // and exits once its children have ended.
        drop(retired);
        self.write_list().await;
        Ok(parent)
    }

    /// The live parent of `key`, made the most recently used; dead and oversized parents go.
    async fn find(&self, key: WarmKey) -> Option<Arc<Parent>> {
        let (found, changed) = {
            let mut parents = self.parents.lock().ok()?;
            let before = parents.len();
            let max_rss = self.settings.max_parent_rss_bytes;
            // statm is one small read of the kernel's counters: no disk behind it.
            parents.retain(|p| p.alive() && rss_bytes(p.pid).is_none_or(|rss| rss <= max_rss));
            let changed = parents.len() != before;
            let found = parents.iter().position(|p| p.key == key).map(|i| {
                let parent = parents.remove(i);
                parents.push(Arc::clone(&parent));
                parent
            });
            (found, changed)
        };
        if changed {
            self.write_list().await;
        }
        found
    }

    /// Rewrites [`PARENTS_FILE`] (on a blocking thread; one writer at a time).
    async fn write_list(&self) {
        let _one_at_a_time = self.writing.lock().await;
        let list: Vec<ParentInfo> = self
            .parents
            .lock()
            .map(|p| p.iter().map(|p| p.info()).collect())
            .unwrap_or_default();
        let path = self.runs_dir.join(PARENTS_FILE);
        let tmp = self
            .runs_dir
            .join(format!(".{PARENTS_FILE}.{}", std::process::id()));
        let written = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&list).map_err(io::Error::other)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written);
        if let Err(e) = written {
            tracing::debug!(%e, "cannot write the list of warm parents");
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.runs_dir.join(PARENTS_FILE));
    }
}

/// Reads the list a pool wrote in `runs_dir`, keeping the parents still alive (RSS read now).
pub fn read_parents(runs_dir: &Path) -> Vec<ParentInfo> {
    let Ok(text) = std::fs::read(runs_dir.join(PARENTS_FILE)) else {
        return Vec::new();
    };
    let list: Vec<ParentInfo> = serde_json::from_slice(&text).unwrap_or_default();
    list.into_iter()
        .filter_map(|mut p| {
            p.rss_bytes = Some(rss_bytes(p.pid)?);
            Some(p)
        })
        .collect()
}

fn request_bytes(req: &WarmRequest) -> Result<Vec<u8>, Fallback> {
    let mut argv = vec![utf8(req.playbook.as_os_str())?];
    for arg in &req.args {
        argv.push(utf8(arg)?);
    }
    let mut env = BTreeMap::new();
    for (k, v) in req.inherited.iter().chain(&req.added) {
        env.insert(utf8(k)?, utf8(v)?);
    }
    let request = Request {
        argv,
        cwd: utf8(req.cwd.as_os_str())?,
        env,
    };
    let bytes = serde_json::to_vec(&request).map_err(|_| Fallback::NotUtf8)?;
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(Fallback::TooLarge);
    }
    Ok(bytes)
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Why a configuration has no parent.
#[derive(Debug)]
enum NoParent {
    /// Its import printed something or started a thread: it never will have one.
    Unfit(String),
    /// The parent could not be started or did not get ready.
    Failed(String),
}

async fn start_parent(req: &WarmRequest, key: WarmKey) -> Result<Parent, NoParent> {
    use NoParent::Failed;
    let (ours, theirs) = seqpacket_pair().map_err(|e| Failed(format!("socketpair: {e}")))?;
    let mut cmd = RunCommand::new(&req.python, &req.cwd);
    cmd.arg(req.plugins.join(WARM_FILE))
        .arg(&req.playbook)
        .envs(req.inherited.iter().map(|(k, v)| (k, v)))
        .env("TROUPE_WARM_FD", EVENT_FD.to_string())
        .env("TROUPE_PARENT_PID", std::process::id().to_string());
    // Spawned as a run is (its own group, stdin on /dev/null, nothing of troupe's but the one
    // descriptor): the control socket takes the event pipe's place.
    let mut process = spawner::spawn_run(cmd, theirs)
        .await
        .map_err(|e| Failed(format!("starting {}: {e}", req.python.display())))?;
    let pid = process.pid();
    // Nothing is printed after the import (its output goes to a file the parent checks).
    drop((process.take_stdout(), process.take_stderr()));
    let ended = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ended);
    tokio::spawn(async move {
        let status = process.wait().await;
        flag.store(true, Ordering::Relaxed);
        tracing::info!(pid, ?status, "warm ansible parent ended");
    });
    let (ctl, reply) = tokio::task::spawn_blocking(move || {
        let reply = recv_ready(&ours);
        (ours, reply)
    })
    .await
    .map_err(|e| Failed(e.to_string()))?;
    let reply = reply.map_err(|e| {
        Failed(format!(
            "the warm parent (pid {pid}) did not get ready: {e}"
        ))
    })?;
    if let Some(why) = reply.unfit {
        return Err(NoParent::Unfit(why));
    }
    if reply.ready.is_none() {
        return Err(Failed(format!(
            "the warm parent (pid {pid}) said {reply:?}"
        )));
    }
    tracing::info!(pid, key = %key.short(), cwd = %req.cwd.display(), "warm ansible parent ready");
    Ok(Parent {
        key,
        pid,
        cwd: req.cwd.clone(),
        ctl,
        ended,
        runs: AtomicU64::new(0),
    })
}

/// The parent's first message, waiting at most [`READY_TIMEOUT`] for its import.
fn recv_ready(ctl: &OwnedFd) -> io::Result<Reply> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    use nix::sys::time::{TimeVal, TimeValLike};
    setsockopt(
        ctl,
        ReceiveTimeout,
        &TimeVal::seconds(READY_TIMEOUT.as_secs() as i64),
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(ctl.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    setsockopt(ctl, ReceiveTimeout, &TimeVal::zero())?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&buf[..n]).map_err(io::Error::other)
}

/// Hands the request and the child's descriptors to the parent (blocking: the parent takes
/// one request at a time, quickly).
fn send_request(ctl: &OwnedFd, message: &[u8], fds: &[i32]) -> io::Result<()> {
    let iov = [io::IoSlice::new(message)];
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(ctl.as_raw_fd(), &iov, &rights, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

async fn fork_from(
    parent: &Arc<Parent>,
    message: &[u8],
    event_pipe: &OwnedFd,
) -> io::Result<RunChild> {
    use nix::fcntl::OFlag;
    let (replies, theirs) = std::os::unix::net::UnixStream::pair()?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let stdin = OwnedFd::from(std::fs::File::open("/dev/null")?);
    let event_pipe = event_pipe.try_clone()?;
    let sender = Arc::clone(parent);
    let message = message.to_vec();
    // The request goes, then the child's pid and pidfd come back (the parent opens the pidfd
    // before it can have reaped the child: it is the child's, whatever happens to the pid).
    // Every descriptor of the child's is closed on the way: troupe's write ends must go for
    // EOF to mean "ended".
    let (replies, pid, pidfd) = tokio::task::spawn_blocking(move || {
        let fds = [
            theirs.as_raw_fd(),
            stdin.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            event_pipe.as_raw_fd(),
        ];
        send_request(&sender.ctl, &message, &fds)?;
        drop((theirs, stdin, out_w, err_w, event_pipe));
        let (reply, pidfd) = recv_forked(&replies)?;
        match (reply, pidfd) {
            (Reply { pid: Some(pid), .. }, Some(pidfd)) => Ok((replies, pid, pidfd)),
            (Reply { error: Some(e), .. }, _) => Err(io::Error::other(format!(
                "the warm parent could not fork: {e}"
            ))),
            (other, _) => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    })
    .await
    .map_err(io::Error::other)??;
    replies.set_nonblocking(true)?;
    let replies = BufReader::new(tokio::net::UnixStream::from_std(replies)?);
    RunChild::foreign_pidfd(
        pid,
        pidfd,
        out_r,
        err_r,
        reported_status(replies, parent.pid),
    )
}

/// The parent's first reply on a run's socket, with the pidfd it carries.
fn recv_forked(sock: &std::os::unix::net::UnixStream) -> io::Result<(Reply, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut pidfd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just gave this process the descriptor; nothing else owns it.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                pidfd.get_or_insert(owned);
            }
        }
    }
    let n = msg.bytes;
    let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
    let reply = serde_json::from_slice(line).map_err(io::Error::other)?;
    Ok((reply, pidfd))
}

/// The exit status the parent reports once it reaped the child; a parent that dies first took
/// the child with it, which is an error naming the parent.
fn reported_status(
    mut replies: BufReader<tokio::net::UnixStream>,
    parent_pid: u32,
) -> ReportedStatus {
    Box::pin(async move {
        match read_reply(&mut replies).await {
            Ok(Reply {
                status: Some(status),
                ..
            }) => Ok(ExitStatus::from_raw(status)),
            _ => Err(io::Error::other(format!(
                "the warm ansible parent (pid {parent_pid}) ended before the run did; the \
                 run's ansible-playbook ended with it"
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_import_reads_forces_exec() {
        for name in [
            "ANSIBLE_BECOME_PASS",
            "PYTHONPATH",
            "LC_ALL",
            "HOME",
            "NO_COLOR",
        ] {
            assert!(read_at_import(name), "{name}");
        }
        for name in ["SSH_ASKPASS", "AWS_PROFILE", "VAULT_TOKEN"] {
            assert!(!read_at_import(name), "{name}");
        }
    }

    #[test]
    fn the_key_follows_the_project_config() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let inherited = vec![(OsString::from("HOME"), dir.path().as_os_str().to_owned())];
        let key = |added: &[(OsString, OsString)]| {
            key_of(&WarmRequest {
                python: "/usr/bin/python3".into(),
                playbook: "/usr/bin/ansible-playbook".into(),
                plugins: dir.path().into(),
                cwd: dir.path().into(),
                inherited: inherited.clone(),
                added: added.to_vec(),
                args: Vec::new(),
            })
        };
        let before = key(&[])?;
        assert_eq!(key(&[("SSH_ASKPASS".into(), "/x".into())])?, before);
        std::fs::write(dir.path().join("ansible.cfg"), "[defaults]\nforks = 3\n")?;
        let with_cfg = key(&[])?;
        assert_ne!(with_cfg, before);
        std::fs::write(dir.path().join("ansible.cfg"), "[defaults]\nforks = 4\n")?;
        assert_ne!(key(&[])?, with_cfg);
        assert_eq!(
            key(&[("ANSIBLE_BECOME_PASS".into(), "x".into())]),
            Err(Fallback::ReadAtImport("ANSIBLE_BECOME_PASS".into()))
        );
        Ok(())
    }
}
