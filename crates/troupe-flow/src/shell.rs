//! Running a shell command for a flow: a discovery `command` or a `shell` step.
//!
//! The command runs as `/bin/sh -c` through troupe's spawner, in a process group of its own,
//! with the allow-listed environment every child of troupe gets (none of troupe's own
//! settings: tokens, database URLs) plus the caller's variables. Its output is read to the end
//! (so it never blocks on a full pipe) and kept up to a bound. Dropping the future before the
//! command ends (a timeout, a cancel) kills the whole group, so nothing it started outlives it.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What to run.
pub(crate) struct Shell<'a> {
    /// The command line.
    pub command: &'a str,
    /// Variables over the allow-listed environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: &'a Path,
    /// Put first on `PATH` (where ansible is).
    pub bin_dir: Option<&'a Path>,
    /// The most stdout kept (its first bytes).
    pub stdout_max: usize,
    /// The most stderr kept (its last bytes).
    pub stderr_max: usize,
}

/// What a command did.
pub(crate) struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// The first bytes of its stdout.
    pub stdout: Vec<u8>,
    /// Whether `stdout` is all it printed.
    pub stdout_whole: bool,
    /// The last bytes of its stderr.
    pub stderr: Vec<u8>,
}

/// Kills a process group when dropped, unless disarmed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is already gone, which is what was wanted.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Runs `shell` to its end.
pub(crate) async fn run(shell: Shell<'_>) -> std::io::Result<Output> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(shell.command)
        .current_dir(shell.cwd)
        .env_clear()
        .envs(troupe_ansible::child_env(shell.bin_dir))
        .envs(
            shell
                .env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = troupe_ansible::spawn_child(cmd).await?;
    let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("no pipes to the child"));
    };
    let (stdout, stderr, status) = tokio::join!(
        read_capped(&mut out, shell.stdout_max, Keep::Head),
        read_capped(&mut err, shell.stderr_max, Keep::Tail),
        child.wait()
    );
    let status = status?;
    guard.0 = None;
    let (stdout, stdout_whole) = stdout?;
    let (stderr, _) = stderr?;
    Ok(Output {
        status,
        stdout,
        stdout_whole,
        stderr,
    })
}

/// Which end of a long stream is kept.
#[derive(Clone, Copy)]
enum Keep {
    /// The first bytes.
    Head,
    /// The last bytes (where an error is said).
    Tail,
}

/// Reads a stream to its end, keeping at most `max` bytes of it. Returns the bytes kept and
/// whether they are the whole stream.
async fn read_capped(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
    keep: Keep,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut whole = true;
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            if kept.len() > max {
                kept.drain(..kept.len() - max);
                whole = false;
            }
            return Ok((kept, whole));
        }
        match keep {
            Keep::Head => {
                let room = max.saturating_sub(kept.len());
                whole &= n <= room;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Keep::Tail => {
                kept.extend_from_slice(&buf[..n]);
                // Trimmed in steps, not on every read.
                if kept.len() > 2 * max {
                    kept.drain(..kept.len() - max);
                    whole = false;
                }
            }
        }
    }
}
