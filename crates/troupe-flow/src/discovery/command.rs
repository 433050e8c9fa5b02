//! `command`: a shell command printing one name per line, or a JSON array.
//!
//! The command runs as `sh -c` in its own process group, with troupe's allow-listed environment
//! (what ansible-playbook gets: none of troupe's own settings) plus the set's `env`. Past its
//! timeout the whole group is killed, so a `sleep` it started does not outlive it.

use super::{SourceError, last_lines, names_in};
use crate::doc::CommandNodes;
use crate::shell::{self, Shell};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

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
    let cwd = std::env::temp_dir();
    let shell = Shell {
        command: &spec.command,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: &cwd,
        bin_dir,
        stdout_max: MAX_STDOUT_BYTES,
        stderr_max: MAX_STDERR_BYTES,
    };
    // Past the timeout the run is dropped, which kills the command's whole group.
    let out = tokio::time::timeout(timeout, shell::run(shell))
        .await
        .map_err(|_| SourceError::CommandTimeout { after: timeout })?
        .map_err(|e| SourceError::io("running /bin/sh", e))?;
    if !out.status.success() {
        let status = match out.status.code() {
            Some(code) => format!("exit code {code}"),
            None => out.status.to_string(),
        };
        return Err(SourceError::CommandFailed {
            status,
            stderr: last_lines(&String::from_utf8_lossy(&out.stderr), STDERR_LINES),
        });
    }
    if !out.stdout_whole {
        return Err(SourceError::shape(
            "the command's output",
            format!("is larger than {MAX_STDOUT_BYTES} bytes"),
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
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
