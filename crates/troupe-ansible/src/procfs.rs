//! Finding and killing what is left of a run, through `/proc`.
//!
//! ansible's workers call `setsid()`, so the modules they run live in process groups other than
//! `ansible-playbook`'s. Every process of a run carries `TROUPE_RUN_DIR=<run dir>` in its
//! environment (inherited from `ansible-playbook`), which is how they are found here.
//! These functions block; call them from `spawn_blocking`.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The environment variable that marks every process of a run.
pub(crate) const RUN_MARKER_VAR: &str = "TROUPE_RUN_DIR";

/// A live (not zombie) process: pid and process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proc {
    pub pid: i32,
    pub pgid: i32,
}

/// Reads `(state, pgid)` from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, pgid))
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes in process group `pgid` (zombies excluded: they are already dead and only
/// wait for their parent to reap them).
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| matches!(stat(pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Live processes whose environment holds `TROUPE_RUN_DIR=<run_dir>`.
pub(crate) fn marked_processes(run_dir: &Path) -> Vec<Proc> {
    let mut marker = format!("{RUN_MARKER_VAR}=").into_bytes();
    marker.extend_from_slice(run_dir.as_os_str().as_encoded_bytes());
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let (state, pgid) = stat(pid)?;
            if state == 'Z' || state == 'X' {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|var| var == marker.as_slice())
                .then_some(Proc { pid, pgid })
        })
        .collect()
}

/// SIGKILLs `pgid` if it is not troupe's own group; ESRCH is fine.
pub(crate) fn kill_group(pgid: i32, signal: Signal) {
    if pgid <= 1 || pgid == getpgrp().as_raw() {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(pgid), signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid, %e, "cannot signal process group");
    }
}

/// Kills every process of the run (by its marker) and their process groups, until none is left
/// or `patience` has passed. Returns the pids that were signalled.
pub(crate) fn kill_marked(run_dir: &Path, patience: Duration) -> Vec<i32> {
    let deadline = Instant::now() + patience;
    let own_group = getpgrp().as_raw();
    let mut signalled = BTreeSet::new();
    loop {
        let found = marked_processes(run_dir);
        if found.is_empty() || Instant::now() >= deadline {
            if !found.is_empty() {
                tracing::warn!(dir = %run_dir.display(), left = found.len(), "processes of the run survived SIGKILL");
            }
            return signalled.into_iter().collect();
        }
        let groups: BTreeSet<i32> = found.iter().map(|p| p.pgid).collect();
        for g in groups {
            if g != own_group {
                kill_group(g, Signal::SIGKILL);
            }
        }
        for p in &found {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            signalled.insert(p.pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
