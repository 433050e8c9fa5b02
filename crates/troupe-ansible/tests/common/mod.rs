//! Helpers shared by the integration tests: a real `ansible-playbook` (first on PATH), a tiny
//! project per test, and a collector for a run's outputs.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_ansible::{Ansible, Exit, Grace, LaunchSpec, Limits, Output, Process};
use troupe_core::Event;
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::run::{CancelMode, RunOptions};

pub const LOCAL_VARS: &str = "[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n";

pub struct Project {
    pub tmp: tempfile::TempDir,
}

impl Project {
    pub fn new(playbook: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("project")).unwrap();
        std::fs::write(tmp.path().join("project/site.yml"), playbook).unwrap();
        Project { tmp }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.tmp.path().join("runs")
    }

    pub async fn spec(&self, inventory: &str) -> LaunchSpec {
        LaunchSpec {
            ansible: ansible().await,
            project_dir: self.tmp.path().join("project"),
            playbook: "site.yml".into(),
            inventory: InventoryContent {
                format: InventoryFormat::Ini,
                hosts: inventory.into(),
                vars: None,
            },
            options: RunOptions::default(),
            runs_dir: self.runs_dir(),
            run_key: "t1".into(),
            limits: Limits::default(),
            grace: Grace {
                interrupt: Duration::from_secs(1),
                terminate: Duration::from_secs(1),
            },
            credentials: Vec::new(),
            launcher: Default::default(),
        }
    }
}

pub async fn ansible() -> Ansible {
    let nowhere = tempfile::tempdir().unwrap();
    Ansible::locate(None, nowhere.path())
        .await
        .expect("ansible-playbook on PATH (put /root/.cache/troupe-ci/venv/bin first)")
}

#[derive(Debug, Default)]
pub struct Collected {
    pub events: Vec<Event>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// Runs to the end; `on_event` may cancel.
pub async fn run_with(
    spec: LaunchSpec,
    mut on_event: impl FnMut(&Event, &Process),
) -> (Collected, Exit, i32, PathBuf) {
    let (process, mut rx) = Process::spawn(spec).await.expect("spawn");
    let pgid = process.pgid();
    let dir = process.run_dir().to_path_buf();
    let mut got = Collected::default();
    let collect = async {
        while let Some(out) = rx.recv().await {
            match out {
                Output::Event(e) => {
                    on_event(&e, &process);
                    got.events.push(e);
                }
                Output::Stdout(s) => got.stdout.push_str(&s),
                Output::Stderr(s) => got.stderr.push_str(&s),
                Output::Truncated(_) => got.truncated = true,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .expect("run finished in time");
    let exit = process.wait().await;
    (got, exit, pgid, dir)
}

pub async fn run(spec: LaunchSpec) -> (Collected, Exit) {
    let (c, e, _, _) = run_with(spec, |_, _| {}).await;
    (c, e)
}

pub fn cancel_on(p: &Process, mode: CancelMode) {
    p.cancel(mode);
}

/// Live (non-zombie) processes of a process group.
pub fn group_alive(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// Live processes whose environment holds `TROUPE_RUN_DIR=<dir>`.
pub fn marked_alive(dir: &Path) -> Vec<i32> {
    let marker = format!("TROUPE_RUN_DIR={}", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Checks the invariants every run's events must hold.
pub fn check_sequence(events: &[Event]) {
    let mut seen = std::collections::HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.counter, i as i64 + 1, "counters without gap: {e:?}");
        if let Some(p) = &e.parent_uuid {
            assert!(
                seen.contains(p),
                "parent {p} of {} #{} not seen before",
                e.event,
                e.counter
            );
        }
        seen.insert(e.uuid.clone());
    }
}

/// Parses the PLAY RECAP lines: host -> (ok, changed, unreachable, failed, skipped, rescued, ignored).
pub fn parse_recap(stdout: &str) -> std::collections::BTreeMap<String, [i64; 7]> {
    // ansible prints colours (troupe forces them, as ansible-runner keeps them).
    let stdout = &troupe_core::text::plain(stdout);
    let mut out = std::collections::BTreeMap::new();
    let Some(start) = stdout.find("PLAY RECAP") else {
        return out;
    };
    for line in stdout[start..].lines().skip(1) {
        let Some((host, rest)) = line.split_once(" : ") else {
            continue;
        };
        let mut nums = [0i64; 7];
        for (i, key) in [
            "ok",
            "changed",
            "unreachable",
            "failed",
            "skipped",
            "rescued",
            "ignored",
        ]
        .iter()
        .enumerate()
        {
            let v = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap();
            nums[i] = v;
        }
        out.insert(host.trim().to_owned(), nums);
    }
    out
}
