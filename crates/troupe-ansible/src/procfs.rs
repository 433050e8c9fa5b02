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

/// When a process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
///
/// Every process of a run descends from its `ansible-playbook`, so none started before it:
/// comparing with this skips reading the environment of every older process on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StartTime(u64);

/// What troupe needs from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    pgid: i32,
    start: StartTime,
}

impl Stat {
    /// Zombies are already dead and only wait for their parent to reap them.
    fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/<pid>/stat` line.
fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    // Fields 6 (session) to 21 (itrealvalue), then 22: starttime.
    let start = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        state,
        pgid,
        start: StartTime(start),
    })
}

/// When process `pid` started, if it is still there.
pub(crate) fn start_time(pid: u32) -> Option<StartTime> {
    stat(i32::try_from(pid).ok()?).map(|s| s.start)
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
        .filter(|&pid| matches!(stat(pid), Some(s) if s.pgid == pgid && s.is_live()))
        .collect()
}

/// Live processes whose environment holds `TROUPE_RUN_DIR=<run_dir>`. With `since` (the start
/// of the run's `ansible-playbook`), processes that started earlier are not looked at: reading
/// every process's environment is what makes a scan of `/proc` expensive.
pub(crate) fn marked_processes(run_dir: &Path, since: Option<StartTime>) -> Vec<Proc> {
    let mut marker = format!("{RUN_MARKER_VAR}=").into_bytes();
    marker.extend_from_slice(run_dir.as_os_str().as_encoded_bytes());
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let stat = stat(pid)?;
            // `<`, not `<=`: a child forked within the same clock tick has the same start time.
            if !stat.is_live() || since.is_some_and(|since| stat.start < since) {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|var| var == marker.as_slice())
                .then_some(Proc {
                    pid,
                    pgid: stat.pgid,
                })
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
/// or `patience` has passed; `since` is as in [`marked_processes`]. Returns the pids that were
/// signalled.
pub(crate) fn kill_marked(
    run_dir: &Path,
    since: Option<StartTime>,
    patience: Duration,
) -> Vec<i32> {
    let deadline = Instant::now() + patience;
    let own_group = getpgrp().as_raw();
    let mut signalled = BTreeSet::new();
    loop {
        let found = marked_processes(run_dir, since);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_come_after_the_last_parenthesis() {
        let line = "4242 (ansible (x) y) S 4200 4242 4242 0 -1 4194560 1 0 0 0 3 1 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgid: 4242,
                start: StartTime(987654),
            })
        );
        let zombie = parse_stat("7 ()) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0")
            .map(|s| (s.is_live(), s.start));
        assert_eq!(zombie, Some((false, StartTime(55))));
        assert_eq!(parse_stat("7 (short) S 1 7"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_its_own_start_time() {
        let me = start_time(std::process::id()).expect("own stat");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        // Read before reaping: a zombie's stat is still there.
        let theirs = start_time(child.id());
        let _ = child.wait();
        assert!(theirs.is_none_or(|t| t >= me), "{theirs:?} < {me:?}");
    }
}
