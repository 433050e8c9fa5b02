//! `command`: a shell command printing one name per line, or a JSON array.
//!
//! The command runs as `sh -c` in its own process group, with troupe's allow-listed environment
//! (what ansible-playbook gets: none of troupe's own settings) plus the set's `env`. Past its
//! timeout the whole group is killed, so a `sleep` it started does not outlive it.

use super::{SourceError, last_lines, names_in};
use crate::doc::CommandNodes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a command may take when its set does not say.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most stdout read; past it the command's output is refused.
const MAX_STDOUT_BYTES: usize = 16 * 1024 * 1024;
/// The most stderr kept (its end is what an error shows).
const MAX_STDERR_BYTES: usize = 64 * 1024;
/// Lines of stderr an error shows.
const STDERR_LINES: usize = 5;

/// The names the command prints.
pub(super) async fn nodes(
    spec: &CommandNodes,
    bin_dir: Option<&Path>,
) -> Result<Vec<String>, SourceError> {
    let timeout = spec.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(troupe_ansible::child_env(bin_dir))
        .envs(&spec.env)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = troupe_ansible::spawn_child(cmd)
        .await
        .map_err(|e| SourceError::io("starting /bin/sh", e))?;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SourceError::io(
            "starting /bin/sh",
            std::io::Error::other("no pipes to the child"),
        ));
    };
    let finished = tokio::time::timeout(timeout, async {
        let (stdout, stderr, status) = tokio::join!(
            read_capped(&mut out, MAX_STDOUT_BYTES, Keep::Head),
            read_capped(&mut err, MAX_STDERR_BYTES, Keep::Tail),
            child.wait()
        );
        (stdout, stderr, status)
    })
    .await;
    let Ok((stdout, stderr, status)) = finished else {
        if let Some(pgid) = group {
            // ESRCH: the group is already gone, which is what was wanted.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let _ = child.wait().await;
        return Err(SourceError::CommandTimeout { after: timeout });
    };
    let status = status.map_err(|e| SourceError::io("waiting for the command", e))?;
    let (stdout, stdout_whole) = stdout.map_err(|e| SourceError::io("reading stdout", e))?;
    let (stderr, _) = stderr.map_err(|e| SourceError::io("reading stderr", e))?;
    if !status.success() {
        let status = match status.code() {
            Some(code) => format!("exit code {code}"),
            None => status.to_string(),
        };
        return Err(SourceError::CommandFailed {
            status,
            stderr: last_lines(&String::from_utf8_lossy(&stderr), STDERR_LINES),
        });
    }
    if !stdout_whole {
        return Err(SourceError::shape(
            "the command's output",
            format!("is larger than {MAX_STDOUT_BYTES} bytes"),
        ));
    }
    parse(&String::from_utf8_lossy(&stdout))
}

/// Which end of a long stream is kept.
#[derive(Clone, Copy)]
enum Keep {
    /// The first bytes (the names).
    Head,
    /// The last bytes (where an error is said).
    Tail,
}

/// Reads a stream to its end, keeping at most `max` bytes of it. Returns the bytes kept and
/// whether they are the whole stream. Reading goes on past `max` so the child never blocks on
/// a full pipe.
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

/// One name per line (blank lines and `#` comments dropped), or a JSON array when the output
/// starts with `[`.
fn parse(stdout: &str) -> Result<Vec<String>, SourceError> {
    let what = "the command's output";
    let text = stdout.trim_start();
    if text.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| SourceError::shape(what, format!("not a JSON array: {e}")))?;
        return names_in(&items, None, what);
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}
