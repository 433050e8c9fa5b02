//! Processes as `/proc` shows them: what a run left behind, and process groups.

use std::path::Path;
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so it ends at the last `)`): state first, then ppid, pgrp...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether a process exists and is not a zombie.
fn is_live(fields: &[String]) -> bool {
    fields.first().is_some_and(|state| state != "Z")
}

/// The process group of a process.
fn pgrp(fields: &[String]) -> Option<i32> {
    fields.get(2)?.parse().ok()
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process group of a live process.
pub fn pgid_of(pid: i32) -> Option<i32> {
    pgrp(&stat_fields(pid)?)
}

/// Pids of live (non-zombie) processes in a process group.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat_fields(pid).is_some_and(|f| is_live(&f) && pgrp(&f) == Some(pgid)))
        .collect()
}

/// Waits until no process is left in a group; those left when `timeout` ran out.
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

/// Live processes started for a run under `runs_dir`: every process of a run (ansible, its
/// workers, module subprocesses, even those in other process groups) carries `TROUPE_RUN_DIR`
/// in its environment.
pub fn processes_of_runs_under(runs_dir: &Path) -> Vec<i32> {
    let marker = format!("TROUPE_RUN_DIR={}", runs_dir.display());
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                return false;
            };
            stat_fields(pid).is_some_and(|f| is_live(&f))
                && env
                    .split(|b| *b == 0)
                    .any(|kv| kv.starts_with(marker.as_bytes()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_in_its_group() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let group = pgid_of(me);
        assert!(group.is_some());
        assert!(group.is_some_and(|g| processes_in_group(g).contains(&me)));
    }
}
