//! Where every child process troupe starts is spawned: one long-lived thread.
//!
//! **Invariant: library code never spawns a child itself (`Command::spawn`, `output`,
//! `status`); it hands the command to [`spawn_child`].** Two things depend on it:
//!
//! - The event pipe's write end must reach its `ansible-playbook` and no other child: troupe
//!   reads the pipe until EOF, and a stray copy held by another process would keep the run open.
//!   The pipe is created `O_CLOEXEC`; this thread clears `FD_CLOEXEC` right before spawning that
//!   one child and closes troupe's copy right after. No other child is spawned in that window
//!   because every child is spawned here, one at a time.
//! - The troupe callback plugin sets `PR_SET_PDEATHSIG` on `ansible-playbook`, and that signal
//!   fires when the *thread* that spawned the process exits, not the whole process. This thread
//!   never ends, so the signal fires only when troupe dies.
//!
//! Nothing here uses `pre_exec`, so std spawns with `posix_spawn` (a `clone` with
//! `CLONE_VM | CLONE_VFORK`): no page tables are copied and the runtime's threads take no
//! copy-on-write faults after each spawn, which is what made launches slow under a burst with
//! `fork`. std still falls back to `fork` when the command changes `PATH` and names its program
//! without a `/`; [`crate::Ansible`] therefore always holds an absolute `ansible-playbook`.

use crate::procfs::{self, StartTime};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{OnceLock, mpsc as std_mpsc};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Spawns `cmd` on troupe's spawner thread; the child is attached to the current tokio runtime.
///
/// Every child process troupe starts must be spawned through this, never with
/// `Command::spawn`/`output`/`status` directly: while an `ansible-playbook` is being spawned its
/// event pipe is inheritable, and only spawns serialised on that same thread are sure not to
/// catch it (a child holding it would keep the run's event stream open).
pub async fn spawn_child(cmd: Command) -> io::Result<Child> {
    submit(cmd, None).await.map(|spawned| spawned.child)
}

/// A child that inherited a descriptor, and when it started.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub child: Child,
    /// The child's start time, read right after the spawn: every process it starts is younger.
    pub start_time: Option<StartTime>,
}

/// Spawns `cmd` so that it (and only it) inherits `fd`, which must have been created
/// `O_CLOEXEC`; troupe's copy is closed once the child holds its own.
pub(crate) async fn spawn_inheriting(cmd: Command, fd: OwnedFd) -> io::Result<Spawned> {
    submit(cmd, Some(fd)).await
}

struct SpawnJob {
    cmd: Command,
    inherit: Option<OwnedFd>,
    handle: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

async fn submit(cmd: Command, inherit: Option<OwnedFd>) -> io::Result<Spawned> {
    static SPAWNER: OnceLock<Option<std_mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("troupe-spawner".into())
            .spawn(move || {
                for job in rx {
                    let _guard = job.handle.enter();
                    let _ = job.reply.send(run(job.cmd, job.inherit));
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(sender) = sender else {
        return Err(io::Error::other("the spawner thread could not be started"));
    };
    let (reply, answer) = oneshot::channel();
    sender
        .send(SpawnJob {
            cmd,
            inherit,
            handle: tokio::runtime::Handle::current(),
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

/// Runs on the spawner thread only.
fn run(mut cmd: Command, inherit: Option<OwnedFd>) -> io::Result<Spawned> {
    let Some(fd) = inherit else {
        return cmd.spawn().map(|child| Spawned {
            child,
            start_time: None,
        });
    };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    let child = cmd.spawn();
    // Only the child (and its forks) may hold it: EOF then means they are all gone.
    drop(fd);
    let child = child?;
    let start_time = child.id().and_then(procfs::start_time);
    Ok(Spawned { child, start_time })
}
