//! The process of one run, as the supervisor in `process.rs` sees it: whoever started it.
//!
//! A [`RunChild`] is either troupe's own child (spawned by [`crate::spawner`], reaped here with
//! `waitid` on its pidfd) or a process someone else started and reaps, e.g. a run forked by a
//! pre-started launcher. Either way its pidfd tells when it ended, signals go through the pidfd
//! (never to a pid that may have been reused), and the group it leads is signalled by its pid.

use crate::procfs::{self, StartTime};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// How long the status of a process that is not troupe's child may take to arrive after the
/// process ended.
const REPORTED_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The exit status of a process troupe does not reap itself, as its reaper reports it.
pub type ReportedStatus = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>;

/// Where a [`RunChild`]'s exit status comes from.
pub enum ExitSource {
    /// troupe's own child: reaped with `waitid(P_PIDFD)` once its pidfd is readable.
    Reap,
    /// Not troupe's child (its parent reaps it): the pidfd tells that it ended, this tells how.
    /// It is awaited only after the process ended, for at most 10 seconds.
    Reported(ReportedStatus),
}

impl std::fmt::Debug for ExitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitSource::Reap => f.write_str("Reap"),
            ExitSource::Reported(_) => f.write_str("Reported"),
        }
    }
}

/// One run's `ansible-playbook` process: its pid and pidfd, its stdout/stderr pipes, when it
/// started, and how to learn its exit status. It leads its own process group.
///
/// Dropped before [`RunChild::wait`] returned, troupe's own child is killed with its group and
/// reaped on a thread of its own (no zombie is left).
#[derive(Debug)]
pub struct RunChild {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    start_time: Option<StartTime>,
    exit: ExitSource,
    status: Option<ExitStatus>,
}

impl RunChild {
    /// troupe's own child, just spawned: `pidfd` refers to it, the pipes are its stdout and
    /// stderr. Must be called inside a tokio runtime.
    pub(crate) fn spawned(
        pid: u32,
        pidfd: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
        start_time: Option<StartTime>,
    ) -> io::Result<RunChild> {
        RunChild::new(pid, pidfd, (stdout, stderr), start_time, ExitSource::Reap)
    }

    fn new(
        pid: u32,
        pidfd: OwnedFd,
        (stdout, stderr): (OwnedFd, OwnedFd),
        start_time: Option<StartTime>,
        exit: ExitSource,
    ) -> io::Result<RunChild> {
        Ok(RunChild {
            pid,
            pidfd: watch(pidfd)?,
            stdout: Some(pipe::Receiver::from_owned_fd(stdout)?),
            stderr: Some(pipe::Receiver::from_owned_fd(stderr)?),
            start_time,
            exit,
            status: None,
        })
    }

    /// A process troupe did not spawn: `pid` must lead its own process group, `stdout` and
    /// `stderr` are the read ends of its output pipes (troupe holds no write end), and `status`
    /// is its exit status as its parent reports it. Must be called inside a tokio runtime,
    /// while the process has not been reaped yet (its pid cannot have been reused).
    pub fn foreign(
        pid: u32,
        stdout: OwnedFd,
        stderr: OwnedFd,
        status: ReportedStatus,
    ) -> io::Result<RunChild> {
        RunChild::foreign_pidfd(pid, pidfd_open(pid)?, stdout, stderr, status)
    }

    /// [`RunChild::foreign`] with a pidfd its parent opened (before it could reap the process:
    /// no race with the pid's reuse).
    pub fn foreign_pidfd(
        pid: u32,
        pidfd: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
        status: ReportedStatus,
    ) -> io::Result<RunChild> {
        let start_time = procfs::start_time(pid);
        RunChild::new(
            pid,
            pidfd,
            (stdout, stderr),
            start_time,
            ExitSource::Reported(status),
        )
    }

    /// Its process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When it started (every process it starts is younger), if `/proc` told.
    pub(crate) fn start_time(&self) -> Option<StartTime> {
        self.start_time
    }

    /// Its stdout, once.
    pub fn take_stdout(&mut self) -> Option<pipe::Receiver> {
        self.stdout.take()
    }

    /// Its stderr, once.
    pub fn take_stderr(&mut self) -> Option<pipe::Receiver> {
        self.stderr.take()
    }

    /// Sends `signal` to the process itself (through its pidfd: never to a reused pid). A
    /// process that already ended is not an error.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let Some(sig) = rustix::process::Signal::from_named_raw(signal as i32) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        match rustix::process::pidfd_send_signal(self.pidfd.get_ref(), sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal` to the process group it leads (its forks and their children, not the
    /// processes that moved to sessions of their own); ESRCH is ignored.
    pub fn signal_group(&self, signal: Signal) {
        procfs::kill_group(self.pid as i32, signal);
    }

    /// Waits until it ended and returns its exit status. Cancel-safe: it can be polled again
    /// after a `select!` dropped it, and called again after it returned.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            let status = match &mut self.exit {
                ExitSource::Reap => match reap(self.pidfd.get_ref(), WaitPidFlag::WNOHANG)? {
                    Some(status) => status,
                    None => {
                        ready.clear_ready();
                        continue;
                    }
                },
                ExitSource::Reported(reported) => {
                    match tokio::time::timeout(REPORTED_STATUS_TIMEOUT, reported).await {
                        Ok(status) => status?,
                        Err(_) => {
                            return Err(io::Error::other(format!(
                                "process {} ended but its exit status was not reported",
                                self.pid
                            )));
                        }
                    }
                }
            };
            self.status = Some(status);
            return Ok(status);
        }
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        if self.status.is_some() || !matches!(self.exit, ExitSource::Reap) {
            return;
        }
        self.signal_group(Signal::SIGKILL);
        let _ = self.signal(Signal::SIGKILL);
        // Reaped off the runtime: the SIGKILLed process takes a moment to become a zombie.
        if let Ok(pidfd) = self.pidfd.get_ref().try_clone() {
            let _ = std::thread::Builder::new()
                .name("troupe-reaper".into())
                .spawn(move || reap(&pidfd, WaitPidFlag::empty()));
        }
    }
}

/// `pidfd` registered with the runtime: readable once the process ended.
#[allow(unsafe_code)]
fn watch(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor and stays the same one while the `AsyncFd`
    // owns it (a `RunChild` never hands it out mutably nor replaces it).
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// A pidfd for `pid` (Linux 5.3 or later).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Reaps troupe's child behind `pidfd`; `None` if it is still running (with `WNOHANG`).
fn reap(pidfd: &OwnedFd, flags: WaitPidFlag) -> io::Result<Option<ExitStatus>> {
    loop {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED | flags) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(Some(ExitStatus::from_raw((code & 0xff) << 8)));
            }
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let core = if core { 0x80 } else { 0 };
                return Ok(Some(ExitStatus::from_raw(signal as i32 | core)));
            }
            // Only exits were asked for: anything else means it has not exited.
            Ok(_) if flags.contains(WaitPidFlag::WNOHANG) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
