//! Finding and killing what is left of a run, through `/proc`.
//!
//! ansible's workers call `setsid()`, so the modules they run live in process groups other than
//! `ansible-playbook`'s. Every process of a run carries `TROUPE_RUN_DIR=<run dir>` in its
//! environment (inherited from `ansible-playbook`), which is how they are found here.
//!
//! A pass over `/proc` reads the `stat` of every process on the machine, which is what a run's
//! end costs most when many runs end together. So one thread, the sweeper, does the passes for
//! every run ([`clear_run`]): runs that end while a pass is going are all looked for in the
//! next one, and it removes each run's directory once nothing of the run is left. Between
//! close passes it remembers when each process started ([`Seen`]), so a pass reads the `stat`
//! of new processes and of those young enough to belong to a run, not of every process. The
//! other functions here block; call them from `spawn_blocking`.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
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

/// `TROUPE_RUN_DIR=<run_dir>`, as it appears in `/proc/<pid>/environ`.
fn marker(run_dir: &Path) -> Vec<u8> {
    let mut marker = format!("{RUN_MARKER_VAR}=").into_bytes();
    marker.extend_from_slice(run_dir.as_os_str().as_encoded_bytes());
    marker
}

/// One run looked for in a pass: its marker, and the start of its `ansible-playbook` if known.
struct Wanted<'a> {
    marker: &'a [u8],
    since: Option<StartTime>,
}

/// When the processes seen by the previous pass started, and where the kernel's pid counter
/// was when that pass began.
///
/// Linux hands out pids in increasing order and gives a freed pid out again only once the
/// counter has wrapped past `pid_max`. So while the counter has not gone down and cannot have
/// gone all the way round, a pid still listed names the process it named last pass, and its
/// start time need not be read again. Passes further apart than [`Seen::TRUSTED_FOR`], or with
/// half the pid space used meanwhile, trust nothing.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    starts: HashMap<i32, StartTime>,
    counter: Option<(i64, Instant)>,
}

impl Seen {
    /// How long a pass's start times are trusted by the next pass.
    const TRUSTED_FOR: Duration = Duration::from_millis(100);

    /// The last pid handed out in this pid namespace.
    fn pid_counter() -> Option<i64> {
        std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn pid_max() -> i64 {
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32_768)
    }

    /// Whether the pids of a pass that began with the counter at `before` still name the same
    /// processes now that it is at `counter`.
    fn trusted(before: Option<(i64, Instant)>, counter: Option<i64>, pid_max: i64) -> bool {
        match (before, counter) {
            (Some((before, at)), Some(counter)) => {
                counter >= before
                    && counter - before < pid_max / 2
                    && at.elapsed() < Seen::TRUSTED_FOR
            }
            _ => false,
        }
    }

    /// Starts a pass: the start times that can still be trusted, and the counter to keep.
    fn begin(&mut self) -> (HashMap<i32, StartTime>, Option<(i64, Instant)>) {
        static PID_MAX: OnceLock<i64> = OnceLock::new();
        let counter = Seen::pid_counter();
        let trusted = Seen::trusted(self.counter, counter, *PID_MAX.get_or_init(Seen::pid_max));
        let starts = std::mem::take(&mut self.starts);
        (
            if trusted { starts } else { HashMap::new() },
            counter.map(|c| (c, Instant::now())),
        )
    }
}

/// Live processes carrying each wanted marker, in one pass over `/proc`: the `stat` of a
/// process is read unless `seen` knows it started before every wanted run, and the environment
/// only of those young enough for some run (reading every process's environment is what makes
/// a pass expensive).
fn marked_among(wanted: &[Wanted<'_>], seen: &mut Seen) -> Vec<Vec<Proc>> {
    let mut found = vec![Vec::new(); wanted.len()];
    if wanted.is_empty() {
        return found;
    }
    // The oldest start any run accepts; `None` if some run accepts any.
    let oldest = wanted.iter().map(|w| w.since).min().expect("not empty");
    let by_marker: HashMap<&[u8], usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| (w.marker, i))
        .collect();
    let (known, counter) = seen.begin();
    let mut starts = HashMap::with_capacity(known.len());
    let me = std::process::id() as i32;
    for pid in all_pids().into_iter().filter(|&pid| pid != me) {
        if let Some(&start) = known.get(&pid)
            && oldest.is_some_and(|oldest| start < oldest)
        {
            starts.insert(pid, start);
            continue;
        }
        let Some(stat) = stat(pid) else { continue };
        starts.insert(pid, stat.start);
        // `<`, not `<=`: a child forked within the same clock tick has the same start time.
        if !stat.is_live() || oldest.is_some_and(|oldest| stat.start < oldest) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            if let Some(&i) = by_marker.get(var)
                && wanted[i].since.is_none_or(|since| stat.start >= since)
            {
                found[i].push(Proc {
                    pid,
                    pgid: stat.pgid,
                });
            }
        }
    }
    *seen = Seen { starts, counter };
    found
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

/// What [`clear_run`] did.
#[derive(Debug)]
pub(crate) struct Cleared {
    /// The pids that were signalled.
    pub killed: Vec<i32>,
    /// Whether the run's directory was removed (a directory already gone counts as removed).
    pub removed: std::io::Result<()>,
}

impl Cleared {
    /// Nothing was done: the sweeper never answered.
    pub(crate) fn failed(why: std::io::Error) -> Self {
        Cleared {
            killed: Vec::new(),
            removed: Err(why),
        }
    }
}

/// Kills every process of the run (by its marker) and their process groups, until none is left
/// or `patience` has passed, then removes the run's directory. With `since` (the start of the
/// run's `ansible-playbook`), processes that started earlier are not looked at. The passes over `/proc` are the sweeper's, shared with every run ending
/// meanwhile, and so is the removal: one hand-over to the sweeper thread does both.
pub(crate) async fn clear_run(
    run_dir: &Path,
    since: Option<StartTime>,
    patience: Duration,
) -> Cleared {
    let (done, cleared) = tokio::sync::oneshot::channel();
    let sweep = Sweep {
        dir: run_dir.to_path_buf(),
        marker: marker(run_dir),
        since,
        deadline: Instant::now() + patience,
        signalled: BTreeSet::new(),
        done,
    };
    let gone = || Cleared::failed(std::io::Error::other("the /proc sweeper is gone"));
    if sweeper().send(sweep).is_err() {
        tracing::error!("the /proc sweeper is gone; processes of the run may be left");
        return gone();
    }
    cleared.await.unwrap_or_else(|_| gone())
}

/// A run the sweeper is clearing.
struct Sweep {
    dir: PathBuf,
    marker: Vec<u8>,
    since: Option<StartTime>,
    deadline: Instant,
    signalled: BTreeSet<i32>,
    done: tokio::sync::oneshot::Sender<Cleared>,
}

impl Sweep {
    /// Nothing of the run is left (or the sweeper gave up): its directory goes, and the caller
    /// is told.
    fn finish(self) {
        remove_local_tmp(&self.dir);
        let removed = match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        let _ = self.done.send(Cleared {
            killed: self.signalled.into_iter().collect(),
            removed,
        });
    }
}

/// Removes the local temp dir ansible made for the run (named in the run directory's
/// `local_tmp` by the plugin) if the run's ansible-playbook was killed before it could. Only an
/// absolute path to a directory named `ansible-local-*`, as ansible names it, is removed.
fn remove_local_tmp(run_dir: &Path) {
    let Ok(named) = std::fs::read_to_string(run_dir.join("local_tmp")) else {
        return;
    };
    let path = Path::new(named.trim());
    let ansibles = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ansible-local-"));
    if path.is_absolute() && ansibles && path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// How long the sweeper waits before looking again for processes it has just killed.
const SWEEP_AGAIN: Duration = Duration::from_millis(20);
/// The least time from one pass to the next when runs keep ending: the runs that end meanwhile
/// share the next pass. A run that ends after a quiet spell is looked for at once.
const SWEEP_GAP: Duration = Duration::from_millis(10);

fn sweeper() -> &'static mpsc::Sender<Sweep> {
    static SWEEPER: OnceLock<mpsc::Sender<Sweep>> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("troupe-sweeper".into())
            .spawn(move || sweep_forever(&rx))
            .expect("cannot start the /proc sweeper thread");
        tx
    })
}

fn sweep_forever(requests: &mpsc::Receiver<Sweep>) {
    let own_group = getpgrp().as_raw();
    let mut pending: Vec<Sweep> = Vec::new();
    let mut last_pass: Option<Instant> = None;
    let mut seen = Seen::default();
    loop {
        // Idle until a run ends; with survivors, look again soon (or as soon as another run
        // ends).
        let next = if pending.is_empty() {
            requests.recv().ok()
        } else {
            requests.recv_timeout(SWEEP_AGAIN).ok()
        };
        pending.extend(next);
        if let Some(wait) =
            last_pass.and_then(|t| (t + SWEEP_GAP).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        pending.extend(requests.try_iter());
        last_pass = Some(Instant::now());
        let wanted: Vec<Wanted<'_>> = pending
            .iter()
            .map(|s| Wanted {
                marker: &s.marker,
                since: s.since,
            })
            .collect();
        let found = marked_among(&wanted, &mut seen);
        let now = Instant::now();
        let mut left = Vec::with_capacity(pending.len());
        for (mut sweep, found) in pending.drain(..).zip(found) {
            if found.is_empty() || now >= sweep.deadline {
                if !found.is_empty() {
                    let marker = String::from_utf8_lossy(&sweep.marker);
                    tracing::warn!(%marker, left = found.len(), "processes of the run survived SIGKILL");
                }
                sweep.finish();
                continue;
            }
            let groups: BTreeSet<i32> = found.iter().map(|p| p.pgid).collect();
            for g in groups {
                if g != own_group {
                    kill_group(g, Signal::SIGKILL);
                }
            }
            for p in &found {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                sweep.signalled.insert(p.pid);
            }
            left.push(sweep);
        }
        pending = left;
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

    #[test]
    fn start_times_are_trusted_only_while_no_pid_can_have_come_back() {
        let now = Instant::now();
        let max = 32_768;
        assert!(Seen::trusted(Some((1000, now)), Some(1000), max));
        assert!(Seen::trusted(Some((1000, now)), Some(1500), max));
        // The counter wrapped: freed pids are being handed out again.
        assert!(!Seen::trusted(Some((30_000, now)), Some(400), max));
        // Half the pid space went by: too close to a wrap to be sure.
        assert!(!Seen::trusted(Some((1000, now)), Some(1000 + max / 2), max));
        // Too long ago, or nothing to compare.
        let old = now - Seen::TRUSTED_FOR - Duration::from_millis(1);
        assert!(!Seen::trusted(Some((1000, old)), Some(1000), max));
        assert!(!Seen::trusted(None, Some(1000), max));
        assert!(!Seen::trusted(Some((1000, now)), None, max));
    }

    /// A process already there for an earlier pass is still found when its own run ends: the
    /// sweeper's memory skips only processes older than every run it looks for.
    #[test]
    fn remembered_processes_are_still_found_for_their_run() {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("troupe-seen-{}", std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .env(RUN_MARKER_VAR, &dir)
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let since = start_time(child.id());
        assert!(since.is_some());
        let mut seen = Seen::default();
        let other = marker(&dir.join("other"));
        let nobody = marked_among(
            &[Wanted {
                marker: &other,
                since: None,
            }],
            &mut seen,
        );
        assert_eq!(nobody, [Vec::<Proc>::new()]);
        assert!(
            seen.starts.contains_key(&pid),
            "the pass remembers the child"
        );
        let own = marker(&dir);
        for since in [since, None] {
            let found = marked_among(
                &[Wanted {
                    marker: &own,
                    since,
                }],
                &mut seen,
            );
            assert_eq!(found.len(), 1);
            assert_eq!(
                found[0].iter().map(|p| p.pid).collect::<Vec<_>>(),
                [pid],
                "since {since:?}"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Runs ending together are cleared in shared passes: each gets exactly its own processes
    /// killed, and a process of a run nobody asked about is left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_ending_together_each_lose_only_their_processes() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let base = std::env::temp_dir().join(format!("troupe-sweep-{}", std::process::id()));
        let dirs: Vec<std::path::PathBuf> = ["a", "b", "c"].iter().map(|n| base.join(n)).collect();
        let mut children: Vec<std::process::Child> = dirs
            .iter()
            .map(|dir| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .env(RUN_MARKER_VAR, dir)
                    .process_group(0)
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir.join("inside")).expect("run dir");
        }
        let (a, b) = tokio::join!(
            clear_run(&dirs[0], None, Duration::from_secs(5)),
            clear_run(&dirs[1], None, Duration::from_secs(5)),
        );
        assert_eq!(a.killed, [children[0].id() as i32]);
        assert_eq!(b.killed, [children[1].id() as i32]);
        assert!(a.removed.is_ok() && b.removed.is_ok(), "{a:?} {b:?}");
        assert!(
            !dirs[0].exists() && !dirs[1].exists(),
            "cleared runs lose their directory"
        );
        assert!(dirs[2].exists(), "the third run keeps its directory");
        for child in &mut children[..2] {
            assert_eq!(child.wait().expect("wait").signal(), Some(9));
        }
        assert!(
            children[2].try_wait().expect("try_wait").is_none(),
            "the third run was not asked about"
        );
        let _ = children[2].kill();
        let _ = children[2].wait();
        let _ = std::fs::remove_dir_all(&base);
    }
}
