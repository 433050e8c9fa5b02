//! Real `ansible-playbook` runs over local hosts. Run with the CI venv first on PATH:
//! `PATH=/root/.cache/troupe-ci/venv/bin:$PATH cargo test -p troupe-ansible`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use troupe_ansible::{Ansible, AnsibleError, Limits, PlaybookError, Process, reap_orphans};
use troupe_core::run::{CancelMode, HostStats};

const SECRET: &str = "hunter2-s3cr3t-value";

fn three_hosts() -> String {
    format!("[web]\nh1\nh2\nh3\n{LOCAL_VARS}")
}

#[tokio::test]
async fn events_of_a_play_follow_ansible_runner() {
    let playbook = format!(
        r#"
- hosts: all
  gather_facts: false
  vars:
    password: "{SECRET}"
  tasks:
    - name: ok
      debug: msg=hi
    - name: changed
      command: "true"
    - name: skipped on h1
      debug: msg=x
      when: inventory_hostname != 'h1'
    - name: fails on h3 only
      fail: msg=boom
      when: inventory_hostname == 'h3'
    - name: ignored failure
      command: "false"
      ignore_errors: true
      when: inventory_hostname == 'h1'
    - name: loop
      debug: msg="item {{{{ item }}}}"
      loop: [1, 2, 3]
    - name: secret
      command: "echo {{{{ password }}}}"
      no_log: true
    - name: secret loop
      debug: msg="{{{{ password }}}} {{{{ item }}}}"
      loop: [a]
      no_log: true
"#
    );
    let project = Project::new(&playbook);
    let spec = project.spec(&three_hosts()).await;
    let (got, exit) = run(spec).await;

    assert_eq!(exit.rc, Some(2), "a host failed: {exit:?}\n{}", got.stderr);
    assert!(
        exit.stats_seen && exit.malformed_event_lines == 0,
        "{exit:?}"
    );
    assert_eq!(exit.events, got.events.len() as u64);
    check_sequence(&got.events);

    // Names and linkage.
    let names: Vec<&str> = got.events.iter().map(|e| e.event.as_str()).collect();
    for expected in [
        "playbook_on_start",
        "playbook_on_play_start",
        "playbook_on_task_start",
        "runner_on_start",
        "runner_on_ok",
        "runner_on_failed",
        "runner_on_skipped",
        "runner_item_on_ok",
        "playbook_on_stats",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(names.first(), Some(&"playbook_on_start"));
    assert_eq!(names.last(), Some(&"playbook_on_stats"));
    let by_uuid: std::collections::HashMap<&str, &troupe_core::Event> =
        got.events.iter().map(|e| (e.uuid.as_str(), e)).collect();
    let parent_of = |e: &troupe_core::Event| {
        e.parent_uuid
            .as_deref()
            .and_then(|p| by_uuid.get(p))
            .map(|p| p.event.as_str())
    };
    for e in &got.events {
        let want = match e.event.as_str() {
            "playbook_on_play_start" | "playbook_on_stats" => Some("playbook_on_start"),
            "playbook_on_task_start" => Some("playbook_on_play_start"),
            n if n.starts_with("runner_") => Some("playbook_on_task_start"),
            _ => None,
        };
        if want.is_some() {
            assert_eq!(parent_of(e), want, "parent of {e:?}");
        }
        if e.event.starts_with("runner_on_") && e.event != "runner_on_start" {
            assert!(e.event_data.get("res").is_some(), "{e:?}");
            assert!(e.event_data.get("duration").is_some(), "{e:?}");
        }
    }
    let ignored = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_failed" && e.host() == Some("h1"))
        .unwrap();
    assert_eq!(
        ignored.event_data.to_value()["ignore_errors"],
        Value::Bool(true)
    );
    assert!(!ignored.is_host_failure());
    let items = got
        .events
        .iter()
        .filter(|e| e.event == "runner_item_on_ok" && e.task() == Some("loop"))
        .count();
    assert_eq!(items, 6, "3 items on h1 and h2");
    let ok = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_ok" && e.task() == Some("ok"))
        .unwrap();
    assert_eq!(ok.event_data.to_value()["task_action"], "debug");
    // As in ansible-runner: arguments only with DISPLAY_ARGS_TO_STDOUT, never templated.
    assert_eq!(ok.event_data.to_value()["task_args"], "");
    assert_eq!(ok.event_data.to_value()["play_pattern"], "all");
    assert!(
        ok.event_data.to_value()["playbook"]
            .as_str()
            .unwrap()
            .ends_with("site.yml")
    );

    // The stats event says what the PLAY RECAP printed.
    let stats = got.events.last().unwrap();
    let summary = HostStats::from_stats_event(&stats.event_data.to_value());
    let recap = parse_recap(&got.stdout);
    assert_eq!(recap.len(), 3, "{}", got.stdout);
    for (host, n) in &recap {
        let s = &summary[host];
        assert_eq!(
            [
                s.ok,
                s.changed,
                s.unreachable,
                s.failed,
                s.skipped,
                s.rescued,
                s.ignored
            ],
            *n,
            "{host}"
        );
    }
    assert_eq!(
        stats.event_data.to_value()["troupe_cancel_requested"],
        Value::Bool(false)
    );

    // no_log: the secret appears nowhere, the args of no_log tasks are not sent.
    let all_events = serde_json::to_string(&got.events).unwrap();
    assert!(!all_events.contains(SECRET), "secret leaked into events");
    assert!(!got.stdout.contains(SECRET) && !got.stderr.contains(SECRET));
    let secret_task = got
        .events
        .iter()
        .find(|e| e.event == "playbook_on_task_start" && e.task() == Some("secret"))
        .unwrap();
    assert_eq!(secret_task.event_data.to_value()["task_args"], "");
    let censored = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_ok" && e.task() == Some("secret"))
        .unwrap();
    assert!(censored.event_data.to_value()["res"]["censored"].is_string());

    // Each event carries the text printed for it; together they are the whole stdout.
    let joined: String = got.events.iter().map(|e| e.stdout.as_str()).collect();
    assert_eq!(joined, got.stdout);
    let mut line = 0;
    for e in &got.events {
        assert_eq!(e.start_line, line, "{e:?}");
        line += e.stdout.matches('\n').count() as i64;
        assert_eq!(e.end_line, line);
    }
    assert_eq!(line as usize, got.stdout.matches('\n').count());
    assert!(
        troupe_core::text::plain(&ok.stdout).starts_with("ok: ["),
        "{:?}",
        ok.stdout
    );
    assert!(stats.stdout.contains("PLAY RECAP"));
}

#[tokio::test]
async fn unreachable_host() {
    let project = Project::new("- hosts: all\n  gather_facts: false\n  tasks:\n    - ping:\n");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // YAML: troupe-core's INI check does not accept quoted values with spaces.
    let inv = format!(
        "all:\n  hosts:\n    gone:\n      ansible_connection: ssh\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n      ansible_ssh_timeout: 5\n      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
    );
    let mut spec = project.spec("").await;
    spec.inventory = troupe_core::inventory::InventoryContent {
        format: troupe_core::inventory::InventoryFormat::Yaml,
        hosts: inv,
        vars: None,
    };
    let (got, exit) = run(spec).await;
    check_sequence(&got.events);
    assert_eq!(exit.rc, Some(4), "{exit:?} {}", got.stderr);
    let e = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_unreachable")
        .expect("unreachable event");
    assert_eq!(e.host(), Some("gone"));
    assert_eq!(e.event_data.to_value()["remote_addr"], "127.0.0.1");
    assert_eq!(
        e.event_data.to_value()["res"]["unreachable"],
        Value::Bool(true)
    );
    let data = e.event_data.to_value();
    let msg = data["res"]["msg"].as_str().unwrap();
    assert!(msg.contains("refused") || msg.contains("connect"), "{msg}");
    assert!(e.is_host_failure());
    assert!(e.stdout.contains("UNREACHABLE!"), "{:?}", e.stdout);
    let stats = got.events.last().unwrap();
    assert_eq!(stats.event_data.to_value()["dark"]["gone"], 1);
}

#[tokio::test]
async fn graceful_cancel_finishes_the_task_in_flight() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: A\n      shell: sleep 3\n    - name: B\n      debug: msg=b\n",
    );
    let spec = project.spec(&format!("h1\nh2\n{LOCAL_VARS}")).await;
    let started = Instant::now();
    let (got, exit, _, _) = run_with(spec, |e, p| {
        if e.event == "runner_on_start" && e.host() == Some("h2") {
            p.cancel(CancelMode::Graceful);
        }
    })
    .await;
    check_sequence(&got.events);
    let ok_a: Vec<_> = got
        .events
        .iter()
        .filter(|e| e.event == "runner_on_ok" && e.task() == Some("A"))
        .filter_map(|e| e.host())
        .collect();
    assert_eq!(ok_a.len(), 2, "A completed on both hosts: {ok_a:?}");
    assert!(
        !got.events.iter().any(|e| e.task() == Some("B")),
        "B never started"
    );
    assert!(!got.stdout.contains("TASK [B]"));
    let stats = got.events.last().unwrap();
    assert_eq!(stats.event, "playbook_on_stats");
    assert_eq!(
        stats.event_data.to_value()["troupe_cancel_requested"],
        Value::Bool(true)
    );
    assert_eq!(
        stats.event_data.to_value()["troupe_canceled"],
        Value::Bool(true)
    );
    assert!(got.stdout.contains("PLAY RECAP"));
    assert!(
        exit.graceful_cancel_requested && exit.graceful_cancel_done,
        "{exit:?}"
    );
    assert!(!exit.forced);
    assert_eq!(exit.rc, Some(0));
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn graceful_cancel_before_the_plugin_loads_waits_for_it() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: A\n      command: sleep 1\n    - name: B\n      debug: msg=b\n",
    );
    let spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    let (process, mut rx) = troupe_ansible::Process::spawn(spec).await.unwrap();
    // Sent right away: ansible has not loaded the plugin yet, so troupe holds it back.
    process.cancel(CancelMode::Graceful);
    let mut events = Vec::new();
    while let Some(o) = rx.recv().await {
        if let troupe_ansible::Output::Event(e) = o {
            events.push(e);
        }
    }
    let exit = process.wait().await;
    assert_eq!(exit.rc, Some(0), "not killed by an early SIGUSR1: {exit:?}");
    assert!(exit.graceful_cancel_done, "{exit:?}");
    assert!(!events.iter().any(|e| e.task() == Some("B")));
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("playbook_on_stats")
    );
}

async fn check_force_kill(timeout: bool) {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: long\n      shell: sleep 30\n",
    );
    // ansible's local temp dir where the test can see it: a killed run's is removed too.
    let local_tmp = project.tmp.path().join("local-tmp");
    std::fs::write(
        project.tmp.path().join("project/ansible.cfg"),
        format!("[defaults]\nlocal_tmp = {}\n", local_tmp.display()),
    )
    .unwrap();
    let mut spec = project.spec(&format!("h1\nh2\n{LOCAL_VARS}")).await;
    if timeout {
        // Long enough for ansible to start its task on a loaded machine (the test needs it running).
        spec.options.timeout_s = Some(8);
    }
    let started = Instant::now();
    let (got, exit, pgid, dir) = run_with(spec, |e, p| {
        if !timeout && e.event == "runner_on_start" && e.host() == Some("h2") {
            p.cancel(CancelMode::Force);
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(20), "stopped early");
    assert!(exit.forced, "{exit:?}");
    assert_eq!(exit.timed_out, timeout);
    assert!(got.events.iter().any(|e| e.event == "runner_on_start"));
    assert!(
        group_alive(pgid).is_empty(),
        "group {pgid} still has {:?}",
        group_alive(pgid)
    );
    assert!(marked_alive(&dir).is_empty(), "processes of the run remain");
    assert!(!dir.exists(), "run dir removed");
    let left: Vec<_> = std::fs::read_dir(&local_tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "ansible's local temp dirs left: {left:?}");
}

#[tokio::test]
async fn force_cancel_leaves_nothing_behind() {
    check_force_kill(false).await;
}

#[tokio::test]
async fn timeout_leaves_nothing_behind() {
    check_force_kill(true).await;
}

/// ansible removes its local temp dir when it exits; when it is SIGKILLed, troupe does.
#[tokio::test]
async fn a_killed_ansible_playbooks_local_temp_dir_is_removed() {
    let project =
        Project::new("- hosts: all\n  gather_facts: false\n  tasks:\n    - shell: sleep 30\n");
    let local_tmp = project.tmp.path().join("local-tmp");
    std::fs::write(
        project.tmp.path().join("project/ansible.cfg"),
        format!("[defaults]\nlocal_tmp = {}\n", local_tmp.display()),
    )
    .unwrap();
    let spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let (_, exit, _, dir) = run_with(spec, |e, p| {
        if e.event == "runner_on_start" {
            // What ansible made is there while it runs.
            *seen.lock().unwrap() = std::fs::read_dir(&local_tmp)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    })
    .await;
    assert_eq!(exit.rc, None, "killed: {exit:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "ansible's local temp dir while it ran"
    );
    assert!(!dir.exists(), "run dir removed");
    let left: Vec<_> = std::fs::read_dir(&local_tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "ansible's local temp dirs left: {left:?}");
}

#[tokio::test]
async fn oversized_results_are_truncated() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: big\n      debug:\n        msg: \"{{ 'x' * 20000 }}\"\n    - name: small\n      debug: msg=tiny\n",
    );
    let mut spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    spec.limits = Limits {
        max_result_bytes: 4096,
        ..Limits::default()
    };
    let (got, exit) = run(spec).await;
    assert_eq!(exit.rc, Some(0));
    let big = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_ok" && e.task() == Some("big"))
        .unwrap();
    let res = &big.event_data.to_value()["res"];
    assert_eq!(res["_troupe_truncated"], Value::Bool(true), "{res}");
    assert!(res["_troupe_original_bytes"].as_u64().unwrap() > 20000);
    assert!(res["msg"].as_str().unwrap().len() <= 1024);
    let small = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_ok" && e.task() == Some("small"))
        .unwrap();
    assert_eq!(small.event_data.to_value()["res"]["msg"], "tiny");
}

#[tokio::test]
async fn oversized_events_are_cut_not_dropped() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: big\n      debug:\n        msg: \"{{ 'z' * 50000 }}\"\n    - name: small\n      debug: msg=tiny\n",
    );
    let mut spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    spec.limits.max_event_bytes = 8192;
    let (got, exit) = run(spec).await;
    assert_eq!(exit.rc, Some(0));
    assert_eq!(exit.malformed_event_lines, 0);
    let big = got
        .events
        .iter()
        .find(|e| e.event == "runner_on_ok" && e.task() == Some("big"))
        .unwrap();
    assert!(big.stored_bytes() <= 8192, "{}", big.stored_bytes());
    let data = big.event_data.to_value();
    assert_eq!(data["_troupe_truncated"], Value::Bool(true), "{data}");
    assert!(data["_troupe_original_bytes"].as_u64().unwrap() > 50000);
    assert!(big.stdout.contains("cut to fit max_event_bytes"));
    let counters: Vec<i64> = got.events.iter().map(|e| e.counter).collect();
    assert_eq!(
        counters,
        (1..=counters.len() as i64).collect::<Vec<_>>(),
        "no gap"
    );
    assert!(got.events.iter().any(|e| e.task() == Some("small")));
}

#[tokio::test]
async fn output_is_bounded() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"{{ 'y' * 5000 }}\"\n",
    );
    let mut spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    spec.limits.max_output_bytes = 1000;
    let (got, exit) = run(spec).await;
    assert_eq!(exit.rc, Some(0));
    assert!(got.truncated && exit.output_truncated);
    assert!(got.stdout.len() + got.stderr.len() <= 1000);
    assert!(exit.stats_seen, "events still flow after the output limit");
}

#[tokio::test]
async fn group_vars_and_extra_vars_reach_ansible() {
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: msg=\"{{ from_group }}-{{ from_extra }}\"\n",
    );
    let mut spec = project.spec(&format!("[web]\nh1\n{LOCAL_VARS}")).await;
    spec.inventory.vars = Some("web:\n  from_group: gv\n".into());
    spec.options
        .extra_vars
        .insert("from_extra".into(), Value::String("ev".into()));
    let (got, exit) = run(spec).await;
    assert_eq!(exit.rc, Some(0), "{}", got.stdout);
    assert!(got.stdout.contains("gv-ev"), "{}", got.stdout);
}

/// The playbook is looked up again at the start: one that was removed, or replaced by a
/// symlink to somewhere outside the project, since the run was asked for is refused, and
/// nothing is started or left behind.
#[tokio::test]
async fn a_playbook_that_left_the_project_is_not_started() {
    let project = Project::new("- hosts: all\n  gather_facts: false\n  tasks: []\n");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("evil.yml"),
        "- hosts: all\n  tasks: []\n",
    )
    .unwrap();
    let site = project.tmp.path().join("project/site.yml");
    let inventory = format!("h1\n{LOCAL_VARS}");

    std::fs::remove_file(&site).unwrap();
    match Process::spawn(project.spec(&inventory).await).await {
        Err(AnsibleError::Playbook(PlaybookError::Missing(p))) => assert_eq!(p, "site.yml"),
        other => panic!(
            "a missing playbook must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    std::os::unix::fs::symlink(outside.path().join("evil.yml"), &site).unwrap();
    match Process::spawn(project.spec(&inventory).await).await {
        Err(e @ AnsibleError::Playbook(PlaybookError::Escapes(_))) => assert_eq!(
            e.to_string(),
            "playbook \"site.yml\" resolves to a path outside the project directory"
        ),
        other => panic!(
            "an escaping playbook must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    let left: Vec<_> = std::fs::read_dir(project.runs_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no run directory is left: {left:?}");

    // Put back, the same spec starts.
    std::fs::remove_file(&site).unwrap();
    std::fs::write(&site, "- hosts: all\n  gather_facts: false\n  tasks: []\n").unwrap();
    let (got, exit) = run(project.spec(&inventory).await).await;
    assert_eq!(exit.rc, Some(0), "{}", got.stdout);
}

#[tokio::test]
async fn reap_orphans_kills_marked_groups_and_removes_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let dir = runs.join("run-crashed-1");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::process::CommandExt;
    // The marked process shares its group with one that dropped the marker: the group goes too.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("env -u TROUPE_RUN_DIR sleep 60 & exec sleep 60")
        .env("TROUPE_RUN_DIR", &dir)
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    // Both must be `sleep` already: until `env` has dropped the marker and exec'd, the forked
    // shell still carries it and would be found too.
    let both_sleeping = || {
        let group = group_alive(pgid);
        group.len() == 2
            && group.iter().all(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            })
    };
    while !both_sleeping() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(both_sleeping(), "both sleeps started");
    // A directory that is not a run's is left alone.
    std::fs::create_dir_all(runs.join("other")).unwrap();

    let orphans = reap_orphans(&runs).await;
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        orphans[0].killed,
        [pgid],
        "the marked process, found by its marker"
    );
    assert!(orphans[0].removed);
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal");
    assert!(group_alive(pgid).is_empty());
    assert!(!dir.exists());
    assert!(runs.join("other").exists());
}

#[tokio::test]
async fn locate_and_bootstrap_reuse() {
    let found = ansible().await;
    assert_eq!(found.version, troupe_ansible::PINNED_ANSIBLE_CORE);
    assert!(found.python.is_some());

    // A configured path that is not ansible is an error, not a fallback.
    let tmp = tempfile::tempdir().unwrap();
    let err = Ansible::locate(Some(std::path::Path::new("/bin/true")), tmp.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/bin/true"), "{err}");

    // bootstrap reuses a venv that already has the pinned version.
    let venv_root = found.playbook.parent().unwrap().parent().unwrap();
    std::os::unix::fs::symlink(venv_root, tmp.path().join("venv")).unwrap();
    let mut lines = Vec::new();
    let got = Ansible::bootstrap(tmp.path(), &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap();
    assert_eq!(got.version, troupe_ansible::PINNED_ANSIBLE_CORE);
    assert!(lines.iter().any(|l| l.contains("reusing")), "{lines:?}");
    let located = Ansible::locate(None, tmp.path()).await.unwrap();
    assert!(located.playbook.starts_with(tmp.path()));
}

/// Runs inside a child copy of this test binary (see `a_crashed_troupe_leaves_nothing_after_reap`):
/// starts a run, reports its pgid and run dir, and dies abruptly while a task sleeps.
#[tokio::test]
async fn crash_helper() {
    let Some(runs) = std::env::var_os("TROUPE_TEST_CRASH_RUNS") else {
        return;
    };
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: long\n      shell: sleep 60\n",
    );
    let mut spec = project.spec(&format!("h1\n{LOCAL_VARS}")).await;
    spec.runs_dir = runs.into();
    let (process, mut rx) = troupe_ansible::Process::spawn(spec).await.unwrap();
    while let Some(o) = rx.recv().await {
        if let troupe_ansible::Output::Event(e) = o
            && e.event == "runner_on_start"
        {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            println!("CRASH {} {}", process.pgid(), process.run_dir().display());
            std::process::abort();
        }
    }
}

#[tokio::test]
async fn a_crashed_troupe_leaves_nothing_after_reap() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_helper", "--nocapture", "--test-threads=1"])
        .env("TROUPE_TEST_CRASH_RUNS", &runs)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("CRASH ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("helper output: {text}"));
    let (pgid, dir) = line.split_once(' ').unwrap();
    let pgid: i32 = pgid.parse().unwrap();
    let dir = std::path::PathBuf::from(dir);
    // PR_SET_PDEATHSIG: ansible-playbook (and its forked workers) died with "troupe".
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group_alive(pgid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        group_alive(pgid).is_empty(),
        "ansible-playbook survived troupe"
    );
    assert!(dir.exists(), "the crash left the run dir behind");
    // The module's `sleep 60` lives in a worker's session: only reap_orphans gets it.
    let orphans = reap_orphans(&runs).await;
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert!(orphans[0].removed);
    assert!(
        marked_alive(&dir).is_empty(),
        "processes of the crashed run remain"
    );
    assert!(!dir.exists());
}

/// ansible-playbook started for a troupe that died before the plugin loaded kills itself as the
/// plugin loads, before any task; a wrapper between troupe and ansible (one that does not exec)
/// is not mistaken for that.
#[tokio::test]
async fn the_plugin_kills_ansible_when_troupe_is_gone() {
    use std::os::unix::process::ExitStatusExt;
    let project = Project::new(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - file: path={{ out }} state=touch\n",
    );
    let ansible = ansible().await;
    let root = project.tmp.path();
    std::fs::create_dir(root.join("plugins")).unwrap();
    std::fs::write(
        root.join("plugins/troupe.py"),
        troupe_ansible::PLUGIN_SOURCE,
    )
    .unwrap();
    std::fs::write(
        root.join("plugins").join(troupe_ansible::BOOT_FILE),
        troupe_ansible::BOOT_SOURCE,
    )
    .unwrap();
    std::fs::write(root.join("hosts"), format!("h1\n{LOCAL_VARS}")).unwrap();
    let gone = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let python = ansible
        .boot_python()
        .expect("a Python ansible-playbook")
        .to_owned();
    let run = |troupe_pid: u32, out: &str, wrapped: bool| {
        // `; exit` keeps sh from exec'ing ansible: it stays between the test and ansible.
        let mut cmd = if wrapped {
            let mut c = tokio::process::Command::new("sh");
            c.args(["-c", "\"$0\" \"$@\"; exit $?"])
                .arg(&ansible.playbook);
            c
        } else {
            tokio::process::Command::new(&ansible.playbook)
        };
        cmd.arg("-i")
            .arg(root.join("hosts"))
            .arg("-e")
            .arg(format!("out={}", root.join(out).display()))
            .arg("site.yml")
            .current_dir(root.join("project"))
            .env("ANSIBLE_CALLBACK_PLUGINS", root.join("plugins"))
            .env("ANSIBLE_CALLBACKS_ENABLED", "troupe")
            .env("TROUPE_PARENT_PID", troupe_pid.to_string())
            .output()
    };

    let out = run(gone, "orphan", false).await.unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert!(
        !root.join("orphan").exists(),
        "a task ran for a gone troupe"
    );

    let out = run(std::process::id(), "wrapped", true).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(root.join("wrapped").exists());

    // Started as troupe starts it: ansible's CLI on its interpreter, the plugin attached.
    let out = tokio::process::Command::new(&python)
        .arg(root.join("plugins").join(troupe_ansible::BOOT_FILE))
        .arg(&ansible.playbook)
        .arg("-i")
        .arg(root.join("hosts"))
        .arg("-e")
        .arg(format!("out={}", root.join("booted").display()))
        .arg("site.yml")
        .current_dir(root.join("project"))
        .env("TROUPE_PARENT_PID", gone.to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert!(
        !root.join("booted").exists(),
        "a task ran for a gone troupe"
    );
}
