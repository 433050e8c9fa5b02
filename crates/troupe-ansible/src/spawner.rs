//! Where every child process troupe starts is spawned: a few long-lived spawner threads, taking
//! spawns from one queue, so that a burst of runs starts in parallel.
//!
//! **Invariant: library code never spawns a child itself (`Command::spawn`, `output`,
//! `status`); it hands the command to [`spawn_child`] (or, for a run, `spawn_run`).** Two
//! things depend on it:
//!
//! - The troupe callback plugin sets `PR_SET_PDEATHSIG` on `ansible-playbook`, and that signal
//!   fires when the *thread* that spawned the process exits, not the whole process. These
//!   threads never end, so the signal fires only when troupe dies.
//! - A spawn blocks its thread until the child runs the new program; here that is never one of
//!   the runtime's threads.
//!
//! The event pipe's write end must reach its `ansible-playbook` and no other child: troupe reads
//! the pipe until EOF, and a stray copy held by another process would keep the run open. It is
//! created close-on-exec and stays so in troupe; `posix_spawn`'s file actions `dup2` it onto
//! [`EVENT_FD`] in that one child only, so spawns need no lock and can run side by side.
//!
//! Nothing here forks: runs are started with `posix_spawn` (a `clone` with
//! `CLONE_VM | CLONE_VFORK`), and other commands with std's spawn, which uses `posix_spawn` as
//! long as no `pre_exec` is set: no page tables are copied and the runtime's threads take no
//! copy-on-write faults after each spawn, which is what made launches slow under a burst with
//! `fork`. std still falls back to `fork` when the command changes `PATH` and names its program
//! without a `/`; [`crate::Ansible`] therefore always holds an absolute `ansible-playbook`.

use crate::child::{self, RunChild};
use crate::posix_spawn::{self, SpawnRequest};
use crate::procfs::{self, StartTime};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The descriptor a run's `ansible-playbook` finds its event pipe on (`TROUPE_EVENT_FD`).
pub(crate) const EVENT_FD: RawFd = 3;

/// Spawner threads: spawns beyond this many wait in the queue.
const SPAWNER_THREADS: usize = 4;

/// Spawns `cmd` on one of troupe's spawner threads; the child is attached to the current tokio
/// runtime.
///
/// Every child process troupe starts must be spawned through this, never with
/// `Command::spawn`/`output`/`status` directly: the spawning thread's exit would kill a child
/// that asked for `PR_SET_PDEATHSIG`, and a spawn blocks its thread until the exec.
pub async fn spawn_child(cmd: Command) -> io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    submit(Job::Command {
        cmd,
        handle: tokio::runtime::Handle::current(),
        reply,
    })?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

/// A run's `ansible-playbook` command line: an absolute program, its arguments, the whole
/// environment and the working directory. stdin is `/dev/null`, stdout and stderr are pipes.
#[derive(Debug, Clone)]
pub(crate) struct RunCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: PathBuf,
}

impl RunCommand {
    pub fn new(program: impl Into<PathBuf>, cwd: impl Into<PathBuf>) -> Self {
        RunCommand {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: cwd.into(),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable; a later value for the same key replaces an earlier one.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }
}

/// Spawns a run's `ansible-playbook` with `event_pipe` (troupe's write end, close-on-exec) on
/// [`EVENT_FD`] in the child; troupe's copy is closed once the child holds its own.
pub(crate) async fn spawn_run(cmd: RunCommand, event_pipe: OwnedFd) -> io::Result<RunChild> {
    let (reply, answer) = oneshot::channel();
    submit(Job::Run {
        cmd,
        event_pipe,
        reply,
    })?;
    let started = answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))??;
    RunChild::spawned(
        started.pid,
        started.pidfd,
        started.stdout,
        started.stderr,
        started.start_time,
    )
}

enum Job {
    Command {
        cmd: Command,
        handle: tokio::runtime::Handle,
        reply: oneshot::Sender<io::Result<Child>>,
    },
    Run {
        cmd: RunCommand,
        event_pipe: OwnedFd,
        reply: oneshot::Sender<io::Result<Started>>,
    },
}

/// A run's process as the spawner thread hands it back.
struct Started {
    pid: u32,
    pidfd: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    start_time: Option<StartTime>,
}

fn submit(job: Job) -> io::Result<()> {
    static QUEUE: OnceLock<Option<std_mpsc::Sender<Job>>> = OnceLock::new();
    let sender = QUEUE.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let started = (0..SPAWNER_THREADS)
            .filter(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("troupe-spawner-{i}"))
                    .spawn(move || serve(&rx))
                    .is_ok()
            })
            .count();
        (started > 0).then_some(tx)
    });
    let Some(sender) = sender else {
        return Err(io::Error::other("no spawner thread could be started"));
    };
    sender
        .send(job)
        .map_err(|_| io::Error::other("the spawner threads are gone"))
}

/// A spawner thread's life: it must never return (see the module docs).
fn serve(jobs: &Mutex<std_mpsc::Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(Job::Command { cmd, handle, reply }) => {
                let _guard = handle.enter();
                let mut cmd = cmd;
                let _ = reply.send(cmd.spawn());
            }
            Ok(Job::Run {
                cmd,
                event_pipe,
                reply,
            }) => {
                let _ = reply.send(start_run(&cmd, event_pipe));
            }
            // Every sender is gone (the process is exiting): park rather than end, since this
            // thread's exit would signal the children it spawned.
            Err(_) => std::thread::park(),
        }
    }
}

/// Runs on a spawner thread only.
fn start_run(cmd: &RunCommand, event_pipe: OwnedFd) -> io::Result<Started> {
    let (stdout_read, stdout_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (stderr_read, stderr_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Sources above every target: a dup2 onto 1..=3 then never overwrites a later source.
    let stdout_write = above_targets(stdout_write)?;
    let stderr_write = above_targets(stderr_write)?;
    let event_pipe = above_targets(event_pipe)?;

    let program = c_string(cmd.program.as_os_str())?;
    let argv = std::iter::once(cmd.program.as_os_str())
        .chain(cmd.args.iter().map(OsString::as_os_str))
        .map(c_string)
        .collect::<io::Result<Vec<_>>>()?;
    let envp = cmd
        .env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.clone();
            pair.push("=");
            pair.push(v);
            c_string(&pair)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = c_string(cmd.cwd.as_os_str())?;
    let pid = posix_spawn::spawn(&SpawnRequest {
        program: &program,
        argv: &argv,
        envp: &envp,
        cwd: &cwd,
        fds: &[
            (stdout_write.as_raw_fd(), 1),
            (stderr_write.as_raw_fd(), 2),
            (event_pipe.as_raw_fd(), EVENT_FD),
        ],
    })?;
    // Only the child (and its forks) may hold the write ends: EOF then means they are all gone.
    drop((stdout_write, stderr_write, event_pipe));
    let pid = u32::try_from(pid).map_err(|_| io::Error::other("posix_spawn returned no pid"))?;
    let pidfd = match child::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Nothing could reap it later: end it now rather than leave a stray run.
            procfs::kill_group(pid as i32, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            return Err(io::Error::new(
                e.kind(),
                format!("pidfd_open (Linux 5.3 or later is needed): {e}"),
            ));
        }
    };
    Ok(Started {
        pid,
        pidfd,
        stdout: stdout_read,
        stderr: stderr_read,
        start_time: procfs::start_time(pid),
    })
}

/// `fd`, or a close-on-exec copy of it numbered above [`EVENT_FD`].
fn above_targets(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > EVENT_FD {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), EVENT_FD + 1)?)
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in a command line, environment or path",
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::sys::signal::Signal;
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use tokio::io::AsyncReadExt;

    fn shell(script: &str) -> RunCommand {
        let mut cmd = RunCommand::new("/bin/sh", std::env::temp_dir());
        cmd.args(["-c", script])
            .env("PATH", "/usr/bin:/bin")
            .env("TOKEN_OF_THIS_RUN", "unset");
        cmd
    }

    async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        s
    }

    fn pipe_inode(fd: &OwnedFd) -> u64 {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::metadata(link).unwrap().ino()
    }

    /// Descriptors this test process got from its parent without close-on-exec: every child
    /// inherits those (they are not troupe's to close).
    fn inherited_fds() -> BTreeSet<i32> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&fd| fd > EVENT_FD)
            .filter(|&fd| {
                // fdinfo's `flags` are octal open flags, O_CLOEXEC among them.
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
                info.ok()
                    .and_then(|text| {
                        let flags = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
                        i32::from_str_radix(flags.trim(), 8).ok()
                    })
                    .is_some_and(|flags| flags & libc::O_CLOEXEC == 0)
            })
            .collect()
    }

    /// The descriptors of process `pid`: number -> what it points to.
    fn fds_of(pid: u32) -> BTreeMap<i32, String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse::<i32>().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// Many runs spawned at once: each child has stdin on /dev/null, its stdout and stderr
    /// pipes and its own event pipe on 3, and nothing else of troupe's; what it writes on 3
    /// reaches its own pipe only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_runs_each_hold_only_their_own_event_pipe() {
        let inherited = inherited_fds();
        let mut tasks = Vec::new();
        for i in 0..48 {
            let inherited = inherited.clone();
            tasks.push(tokio::spawn(async move {
                let (read_end, write_end) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
                let inode = pipe_inode(&read_end);
                let mut cmd = shell("echo \"run $TOKEN_OF_THIS_RUN\" >&3; exec sleep 30");
                cmd.env("TOKEN_OF_THIS_RUN", i.to_string());
                let mut child = spawn_run(cmd, write_end).await.unwrap();
                let mut events = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
                    .map(tokio::io::BufReader::new)
                    .unwrap();
                let mut line = String::new();
                tokio::io::AsyncBufReadExt::read_line(&mut events, &mut line)
                    .await
                    .unwrap();
                // The shell execs `sleep`, whose loader opens and closes files as it starts:
                // look until only what it was given is left (a leaked descriptor never goes).
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let mut fds = fds_of(child.pid());
                while fds
                    .keys()
                    .any(|fd| *fd > EVENT_FD && !inherited.contains(fd))
                    && std::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    fds = fds_of(child.pid());
                }
                child.signal_group(Signal::SIGKILL);
                let status = child.wait().await.unwrap();
                (i, inode, child.pid(), line, fds, status)
            }));
        }
        for task in tasks {
            let (i, inode, pid, line, fds, status) = task.await.unwrap();
            assert_eq!(line, format!("run {i}\n"));
            assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
            let ours: Vec<i32> = fds
                .keys()
                .copied()
                .filter(|fd| !inherited.contains(fd))
                .collect();
            assert_eq!(ours, [0, 1, 2, 3], "{fds:?}");
            assert_eq!(fds[&0], "/dev/null");
            assert!(
                fds[&1].starts_with("pipe:") && fds[&2].starts_with("pipe:"),
                "{fds:?}"
            );
            assert_eq!(fds[&3], format!("pipe:[{inode}]"));
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} left a zombie"
            );
        }
    }

    #[tokio::test]
    async fn a_run_leads_its_own_group_and_dies_with_it() {
        let (_read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut child = spawn_run(shell("sleep 30 & sleep 30"), write_end)
            .await
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
        assert_eq!(nix::unistd::getpgid(Some(pid)).unwrap(), pid);
        assert!(child.start_time().is_some());
        child.signal_group(Signal::SIGKILL);
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        // Waiting again gives the same answer.
        assert_eq!(child.wait().await.unwrap(), status);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn a_dropped_run_is_killed_and_reaped() {
        let (_read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let child = spawn_run(shell("sleep 30"), write_end).await.unwrap();
        let proc_dir = format!("/proc/{}", child.pid());
        drop(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&proc_dir).exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !Path::new(&proc_dir).exists(),
            "the dropped run is still there"
        );
    }

    #[tokio::test]
    async fn a_run_that_cannot_start_says_why() {
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let missing = RunCommand::new("/nonexistent/ansible-playbook", std::env::temp_dir());
        let err = spawn_run(missing, w).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut nowhere = shell("true");
        nowhere.cwd = "/nonexistent/project".into();
        assert!(spawn_run(nowhere, w).await.is_err());
    }

    #[tokio::test]
    async fn runs_start_in_their_directory_with_exactly_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut cmd = shell("pwd; env | sort");
        cmd.cwd = dir.path().to_owned();
        cmd.env("TOKEN_OF_THIS_RUN", "last wins");
        let mut child = spawn_run(cmd, w).await.unwrap();
        let out = read_all(child.take_stdout().unwrap()).await;
        assert!(child.wait().await.unwrap().success());
        let mut lines = out.lines();
        assert_eq!(
            Path::new(lines.next().unwrap()).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
        let env: Vec<&str> = lines
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(env, ["PATH=/usr/bin:/bin", "TOKEN_OF_THIS_RUN=last wins"]);
    }

    /// A process troupe did not spawn: its pidfd says when it ended, its parent says how.
    #[tokio::test]
    async fn a_foreign_process_is_supervised_like_a_run() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 7"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut parent_view = spawn_child(cmd).await.unwrap();
        let pid = parent_view.id().unwrap();
        let stdout = parent_view.stdout.take().unwrap().into_owned_fd().unwrap();
        let stderr = parent_view.stderr.take().unwrap().into_owned_fd().unwrap();
        let status: crate::ReportedStatus = Box::pin(async move { parent_view.wait().await });
        let mut child = RunChild::foreign(pid, stdout, stderr, status).unwrap();
        assert_eq!(child.pid(), pid);
        let out = read_all(child.take_stdout().unwrap()).await;
        let err = read_all(child.take_stderr().unwrap()).await;
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
    }
}
