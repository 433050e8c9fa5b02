//! The warm launcher gives the same results as exec: a corpus of small playbooks (roles with
//! handlers, includes, loops, blocks with rescue, check and diff mode, tags, limits, vault,
//! become to the same user, the project's ansible.cfg, a collection in the project) runs both
//! ways on one server (the run option `launcher`), and the recap, status, rc, the events
//! (name and task, in order, of each host) and stdout are compared. Cancels, timeouts, a dead parent and a
//! dead troupe end warm runs as docs/architecture.md ("The warm launcher") says; a configuration
//! that cannot be shared runs with exec, and a changed one gets a parent of its own.

use crate::fidelity::normalized;
use crate::helpers::*;
use crate::runs::{SLOW, graceful_cancel, leaves_no_process, slow_task_running_with};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use troupe_ansible::{ParentInfo, read_parents};

/// The project's ansible.cfg: one fork (events in a fixed order) and skipped hosts not shown,
/// which the output shows was honoured.
const CFG: &str =
    "[defaults]\nforks = 1\ndisplay_skipped_hosts = false\nretry_files_enabled = false\n";

const HANDLERS: &str = r#"- hosts: all
  gather_facts: false
  roles: [notifier]
"#;
const ROLE_TASKS: &str = r#"- name: change something
  command: echo changed
  notify: say it changed
- name: skipped everywhere
  debug: msg=never
  when: false
"#;
const ROLE_HANDLERS: &str = r#"- name: say it changed
  debug:
    msg: "handler ran on {{ inventory_hostname }}"
"#;
const INCLUDES: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - import_tasks: imported.yml
    - include_tasks: included.yml
      loop: [a, b]
"#;
const IMPORTED: &str = "- name: imported\n  debug: msg=imported\n";
const INCLUDED: &str = "- name: included\n  debug:\n    msg: \"included {{ item }}\"\n";
const LOOPS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: a loop
      debug:
        msg: "{{ item.n }}"
      loop: [{n: 1}, {n: 2}, {n: 3}]
      loop_control:
        label: "{{ item.n }}"
    - name: with_items
      command: "echo {{ item }}"
      with_items: [x, y]
      changed_when: false
"#;
const BLOCKS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - block:
        - name: fails on h2
          fail: msg=boom
          when: inventory_hostname == 'h2'
      rescue:
        - name: rescued
          debug: msg=rescued
      always:
        - name: always
          debug: msg=always
    - name: fails on h3
      command: /bin/false
      when: inventory_hostname == 'h3'
"#;
const DIFF: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: would write a file
      copy:
        content: "hello {{ inventory_hostname }}\n"
        dest: "{{ playbook_dir }}/never-written-{{ inventory_hostname }}.txt"
"#;
const TAGS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: tagged one
      debug: msg=one
      tags: [one]
    - name: tagged two
      debug: msg=two
      tags: [two]
"#;
const VAULT: &str = r#"- hosts: all
  gather_facts: false
  vars_files: [secret.yml]
  tasks:
    - name: the vault opened
      assert:
        that: vault_word == "opened"
"#;
const BECOME: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: become the same user
      command: id -un
      become: true
      become_user: "{{ me }}"
      register: who
      changed_when: false
    - assert:
        that: who.stdout == me
"#;
const COLLECTION: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: a filter of the project's collection
      debug:
        msg: "{{ 'hi' | acme.demo.shout }}"
"#;
const SHOUT: &str = r#"class FilterModule(object):
    def filters(self):
        return {'shout': lambda s: s.upper() + '!'}
"#;

/// The corpus project (the vault file is encrypted by the test).
fn corpus() -> anyhow::Result<Proj> {
    named_project(&[
        ("ansible.cfg", CFG),
        ("handlers.yml", HANDLERS),
        ("roles/notifier/tasks/main.yml", ROLE_TASKS),
        ("roles/notifier/handlers/main.yml", ROLE_HANDLERS),
        ("includes.yml", INCLUDES),
        ("imported.yml", IMPORTED),
        ("included.yml", INCLUDED),
        ("loops.yml", LOOPS),
        ("blocks.yml", BLOCKS),
        ("diff.yml", DIFF),
        ("tags.yml", TAGS),
        ("vault.yml", VAULT),
        ("secret.yml", "vault_word: opened\n"),
        ("become.yml", BECOME),
        ("collection.yml", COLLECTION),
        (
            "collections/ansible_collections/acme/demo/plugins/filter/shout.py",
            SHOUT,
        ),
        ("slow.yml", SLOW),
    ])
}

/// What is compared between the two ways of running one playbook.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: Value,
    rc: Value,
    recap: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    /// The (event, task) of each host, in order, and those of no host (play and task starts,
    /// stats) in order: how the hosts' events interleave depends on when each worker's result
    /// is read, from one run to the next of the same playbook.
    events: std::collections::BTreeMap<String, Vec<(String, String)>>,
    stdout: String,
}

async fn outcome(server: &Server, id: i64) -> anyhow::Result<Outcome> {
    let run = server.wait_finished(id).await?;
    let stdout = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    let field = |e: &Value, k: &str| e["event_data"][k].as_str().unwrap_or("").to_owned();
    let mut events: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for e in server.events(id).await? {
        events.entry(field(&e, "host")).or_default().push((
            e["event"].as_str().unwrap_or("").to_owned(),
            field(&e, "task"),
        ));
    }
    Ok(Outcome {
        status: run["status"].clone(),
        rc: run["rc"].clone(),
        recap: parse_recap(&stdout),
        events,
        stdout: normalized(&stdout),
    })
}

/// Options of a server started `--launcher warm`.
fn warm_opts() -> ServerOpts {
    ServerOpts {
        extra_args: vec!["--launcher".into(), "warm".into()],
        ..Default::default()
    }
}

/// A `--launcher warm` server with `proj` registered; the project's id.
async fn warm_server(proj: &Proj) -> anyhow::Result<(Server, i64)> {
    let server = serve_with(warm_opts())?;
    let project = server.project(proj.path()).await?;
    Ok((server, project))
}

fn warm_parents(server: &Server) -> Vec<ParentInfo> {
    read_parents(&server.data_dir.join("runs"))
}

fn forked(server: &Server) -> u64 {
    warm_parents(server).iter().map(|p| p.runs).sum()
}

fn current_user() -> anyhow::Result<String> {
    let out = std::process::Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn vault_credential(server: &Server, project: &Path) -> anyhow::Result<()> {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let pw_file = tempfile::NamedTempFile::new()?;
    std::fs::write(pw_file.path(), &password)?;
    let status = std::process::Command::new("ansible-vault")
        .arg("encrypt")
        .arg(format!(
            "--vault-password-file={}",
            pw_file.path().display()
        ))
        .arg(project.join("secret.yml"))
        .status()
        .context("ansible-vault (put the CI venv on PATH)")?;
    anyhow::ensure!(status.success(), "ansible-vault encrypt failed");
    server
        .post(
            "/api/v1/credentials",
            &json!({"name": "corpus-vault", "kind": "vault", "password": password}),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn every_corpus_playbook_gives_the_same_results_warm_and_exec() -> anyhow::Result<()> {
    let proj = corpus()?;
    let server = serve()?;
    let project = server.project(proj.path()).await?;
    vault_credential(&server, proj.path()).await?;
    let me = current_user()?;
    let cases: Vec<(&str, Value)> = vec![
        ("handlers.yml", json!({})),
        ("includes.yml", json!({})),
        ("loops.yml", json!({})),
        ("blocks.yml", json!({})),
        ("diff.yml", json!({"check": true, "diff": true})),
        ("tags.yml", json!({"tags": ["one"]})),
        ("loops.yml", json!({"limit": "h2"})),
        ("vault.yml", json!({"credentials": ["corpus-vault"]})),
        ("become.yml", json!({"extra_vars": {"me": me}})),
        ("collection.yml", json!({})),
    ];
    for (playbook, options) in &cases {
        let mut seen = Vec::new();
        for launcher in ["exec", "warm"] {
            let mut body = options.clone();
            body["launcher"] = json!(launcher);
            let id = server
                .launch(project, playbook, &local_hosts(3), body)
                .await?;
            seen.push(outcome(&server, id).await?);
        }
        let (exec, warm) = (&seen[0], &seen[1]);
        assert!(
            !exec.recap.is_empty(),
            "{playbook}: no recap\n{}",
            exec.stdout
        );
        assert_eq!(exec, warm, "{playbook} {options}: exec and warm differ");
    }
    // The check run wrote nothing (the_corpus_shows_what_it_exercises checks the rest).
    assert!(!proj.path().join("never-written-h1.txt").exists());
    // Every warm run was forked by the one parent of the project's configuration.
    let parents = warm_parents(&server);
    assert_eq!(parents.len(), 1, "{parents:?}");
    assert_eq!(parents[0].runs, cases.len() as u64, "{parents:?}");
    Ok(())
}

#[tokio::test]
async fn the_corpus_shows_what_it_exercises() -> anyhow::Result<()> {
    // One warm run of each playbook that fails or hides output, checked for the effect the
    // comparison above relies on (so that "identical" is not identical emptiness).
    let proj = corpus()?;
    let (server, project) = warm_server(&proj).await?;
    let run = |playbook: &'static str, options: Value| {
        let server = &server;
        async move {
            let id = server
                .launch(project, playbook, &local_hosts(3), options)
                .await?;
            outcome(server, id).await
        }
    };
    let handlers = run("handlers.yml", json!({})).await?;
    assert!(
        handlers.stdout.contains("handler ran on h3"),
        "{}",
        handlers.stdout
    );
    assert!(
        !handlers.stdout.contains("skipping:"),
        "{}",
        handlers.stdout
    );
    let blocks = run("blocks.yml", json!({})).await?;
    assert_eq!(blocks.status, "failed");
    assert_eq!(blocks.rc, 2);
    assert_eq!(blocks.recap["h2"]["rescued"], 1);
    assert_eq!(blocks.recap["h3"]["failed"], 1);
    let diff = run("diff.yml", json!({"check": true, "diff": true})).await?;
    assert!(diff.stdout.contains("+hello h1"), "{}", diff.stdout);
    let collection = run("collection.yml", json!({})).await?;
    assert!(collection.stdout.contains("HI!"), "{}", collection.stdout);
    assert_eq!(forked(&server), 4);
    Ok(())
}

#[tokio::test]
async fn a_configuration_read_at_import_runs_with_exec_and_a_changed_one_gets_its_own_parent()
-> anyhow::Result<()> {
    let proj = corpus()?;
    let (server, project) = warm_server(&proj).await?;
    // An env credential setting ansible's configuration: ansible reads it at import, a parent
    // could not have; the run is exec'd, and the setting is honoured.
    server
        .post(
            "/api/v1/credentials",
            &json!({"name": "show-skipped", "kind": "env",
                    "vars": {"ANSIBLE_DISPLAY_SKIPPED_HOSTS": "true"}}),
        )
        .await?;
    let id = server
        .launch(
            project,
            "handlers.yml",
            &local_hosts(1),
            json!({"credentials": ["show-skipped"]}),
        )
        .await?;
    let fallback = outcome(&server, id).await?;
    assert_eq!(fallback.status, "successful");
    assert!(
        fallback.stdout.contains("skipping: [h1]"),
        "{}",
        fallback.stdout
    );
    assert_eq!(forked(&server), 0, "{:?}", warm_parents(&server));

    let id = server
        .launch(project, "handlers.yml", &local_hosts(1), json!({}))
        .await?;
    let warm = outcome(&server, id).await?;
    assert!(!warm.stdout.contains("skipping:"), "{}", warm.stdout);
    let first = warm_parents(&server);
    assert_eq!(first.len(), 1, "{first:?}");

    // The project's ansible.cfg changes: the next run is not forked from the old import.
    std::fs::write(
        proj.path().join("ansible.cfg"),
        CFG.replace(
            "display_skipped_hosts = false",
            "display_skipped_hosts = true",
        ),
    )?;
    let id = server
        .launch(project, "handlers.yml", &local_hosts(1), json!({}))
        .await?;
    let changed = outcome(&server, id).await?;
    assert!(
        changed.stdout.contains("skipping: [h1]"),
        "{}",
        changed.stdout
    );
    let parents = warm_parents(&server);
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_ne!(parents[0].key, parents[1].key);
    assert_eq!(forked(&server), 2);
    Ok(())
}

#[tokio::test]
async fn warm_runs_cancel_and_time_out_as_exec_runs_do() -> anyhow::Result<()> {
    let server = serve()?;
    let warm = json!({"launcher": "warm"});
    graceful_cancel(&server, warm.clone()).await?;
    leaves_no_process(&server, warm.clone(), true, "canceled").await?;
    leaves_no_process(
        &server,
        json!({"launcher": "warm", "timeout_s": 3}),
        false,
        "timeout",
    )
    .await?;
    // Each ran forked (the three projects share one configuration: no ansible.cfg).
    assert_eq!(forked(&server), 3, "{:?}", warm_parents(&server));
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_dead_parent_ends_its_runs_with_a_clear_error_and_is_replaced() -> anyhow::Result<()> {
    let proj = corpus()?;
    let (server, project) = warm_server(&proj).await?;
    let marks = tempfile::tempdir()?;
    let (id, pgid) = slow_task_running_with(&server, project, marks.path(), json!({})).await?;
    let parents = warm_parents(&server);
    assert_eq!(parents.len(), 1, "{parents:?}");
    let parent = parents[0].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("warm ansible parent")),
        "{run}"
    );
    let left = wait_group_empty(pgid, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "processes of the run remain: {left:?}");
    assert!(processes_of_runs_under(&server.data_dir.join("runs")).is_empty());

    // The next run gets a new parent.
    let id = server
        .launch(project, "handlers.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    let parents = warm_parents(&server);
    assert_eq!(parents.len(), 1, "{parents:?}");
    assert_ne!(parents[0].pid, parent);
    assert_eq!(parents[0].runs, 1);
    Ok(())
}

#[tokio::test]
async fn a_dead_troupe_takes_its_warm_parents_and_runs_along() -> anyhow::Result<()> {
    let proj = corpus()?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let warm = ServerOpts {
        data_dir: Some(data.clone()),
        ..warm_opts()
    };
    let mut server = serve_with(warm.clone())?;
    let project = server.project(proj.path()).await?;
    let marks = tempfile::tempdir()?;
    let (id, pgid) = slow_task_running_with(&server, project, marks.path(), json!({})).await?;
    let parent = warm_parents(&server)
        .first()
        .map(|p| p.pid)
        .context("no warm parent")?;
    server.kill9();
    // The parent and the run's ansible-playbook die with troupe (their parent-death signals).
    wait_until(
        "the warm parent to end",
        Duration::from_secs(10),
        || async { Ok(!alive(parent)) },
    )
    .await?;
    // What the run started (the task's shell) is reaped on the next start, as with exec.
    let server = serve_with(warm)?;
    let run = server.get(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(run["status"], "error", "{run}");
    let left = wait_group_empty(pgid, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "processes of the run remain: {left:?}");
    Ok(())
}

#[tokio::test]
async fn runs_are_forked_warm_unless_the_server_or_the_run_says_exec() -> anyhow::Result<()> {
    let proj = corpus()?;
    // No launcher configured: warm.
    let server = serve()?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "loops.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    assert_eq!(forked(&server), 1, "{:?}", warm_parents(&server));
    // A run that asks for exec is not forked.
    let id = server
        .launch(
            project,
            "loops.yml",
            &local_hosts(1),
            json!({"launcher": "exec"}),
        )
        .await?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    assert_eq!(forked(&server), 1, "{:?}", warm_parents(&server));
    drop(server);
    // TROUPE_LAUNCHER=exec: nothing is forked, no parent is started.
    let server = serve_with(ServerOpts {
        extra_env: vec![("TROUPE_LAUNCHER".into(), "exec".into())],
        ..Default::default()
    })?;
    let project = server.project(proj.path()).await?;
    let id = server
        .launch(project, "loops.yml", &local_hosts(1), json!({}))
        .await?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    assert!(
        warm_parents(&server).is_empty(),
        "{:?}",
        warm_parents(&server)
    );
    Ok(())
}

#[tokio::test]
async fn a_template_chooses_its_launcher_and_an_unknown_one_is_refused() -> anyhow::Result<()> {
    let proj = corpus()?;
    let server = serve_with(ServerOpts {
        extra_args: vec!["--launcher".into(), "exec".into()],
        ..Default::default()
    })?;
    let project = server.project(proj.path()).await?;
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "three", "format": "ini", "hosts": local_hosts(3)}),
        )
        .await?;
    let template = server
        .post(
            "/api/v1/templates",
            &json!({"name": "warm-loops", "project": project, "playbook": "loops.yml",
                    "inventory": "three", "defaults": {"launcher": "warm"}}),
        )
        .await?;
    assert_eq!(template["defaults"]["launcher"], "warm", "{template}");
    let tid = template["id"].as_i64().context("template id")?;
    let run = server
        .post(&format!("/api/v1/templates/{tid}/launch"), &json!({}))
        .await?;
    let id = run["id"].as_i64().context("run id")?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    assert_eq!(forked(&server), 1, "{:?}", warm_parents(&server));
    // A template that does not choose: the server's launcher (`--launcher exec`), not forked.
    let plain = server
        .post(
            "/api/v1/templates",
            &json!({"name": "loops", "project": project, "playbook": "loops.yml",
                    "inventory": "three"}),
        )
        .await?;
    let plain = plain["id"].as_i64().context("template id")?;
    let run = server
        .post(&format!("/api/v1/templates/{plain}/launch"), &json!({}))
        .await?;
    let id = run["id"].as_i64().context("run id")?;
    assert_eq!(outcome(&server, id).await?.status, "successful");
    assert_eq!(forked(&server), 1, "{:?}", warm_parents(&server));

    let (code, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/runs",
            Some(&json!({"project": project, "playbook": "loops.yml",
                         "hosts": local_hosts(1), "launcher": "fast"})),
        )
        .await?;
    assert!((400..500).contains(&code), "{code} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("launcher") || m.contains("fast")),
        "{body}"
    );
    Ok(())
}

/// A callback plugin that leaves work for the end of the process: a file left open with
/// buffered text, a non-daemon thread that writes a file later, an atexit handler. It also
/// notes how many objects the collector was told to leave alone when the playbook started.
const LEAKY_CALLBACK: &str = r#"import atexit
import gc
import os
import threading
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'leaky'
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        with open(os.path.join(os.getcwd(), 'frozen.txt'), 'w') as f:
            f.write(str(gc.get_freeze_count()))

    def v2_playbook_on_stats(self, stats):
        here = os.getcwd()
        # Left open: only the end of the interpreter flushes what it holds.
        self._left_open = open(os.path.join(here, 'left-open.txt'), 'w')
        self._left_open.write('flushed at exit\n')

        def late():
            time.sleep(0.5)
            with open(os.path.join(here, 'thread.txt'), 'w') as f:
                f.write('thread finished\n')

        threading.Thread(target=late).start()

        def at_exit():
            with open(os.path.join(here, 'atexit.txt'), 'w') as f:
                f.write('atexit ran\n')

        atexit.register(at_exit)
"#;

#[tokio::test]
async fn a_run_ends_as_a_bare_one_threads_atexit_handlers_and_open_files() -> anyhow::Result<()> {
    // troupe ends ansible-playbook without the interpreter's teardown (troupe_boot.py's
    // exit_as_python): what a plugin leaves for the end must still happen, as in a bare run.
    let files = [
        ("site.yml", LOOPS),
        ("ansible.cfg", "[defaults]\ncallbacks_enabled = leaky\n"),
        ("callback_plugins/leaky.py", LEAKY_CALLBACK),
    ];
    let left = |dir: &Path| -> Vec<String> {
        ["left-open.txt", "thread.txt", "atexit.txt"]
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| format!("{f}: {e}")))
            .collect()
    };
    let bare = project_dir(&files)?;
    std::fs::write(bare.path().join("hosts.ini"), local_hosts(1))?;
    let status = std::process::Command::new("ansible-playbook")
        .args(["-i", "hosts.ini", "site.yml"])
        .current_dir(bare.path())
        .stdout(std::process::Stdio::null())
        .status()
        .context("ansible-playbook (put the CI venv on PATH)")?;
    assert!(status.success());
    let expected = left(bare.path());
    assert_eq!(
        expected,
        ["flushed at exit\n", "thread finished\n", "atexit ran\n"],
        "the bare run"
    );
    let server = serve()?;
    for launcher in ["exec", "warm"] {
        let proj = project_dir(&files)?;
        let project = server.project(proj.path()).await?;
        let id = server
            .launch(
                project,
                "site.yml",
                &local_hosts(1),
                json!({"launcher": launcher}),
            )
            .await?;
        let run = outcome(&server, id).await?;
        assert_eq!(run.status, "successful", "{launcher}: {}", run.stdout);
        assert_eq!(left(proj.path()), expected, "{launcher}");
        // A warm parent froze what its import made (its children's collections leave those
        // pages unshared); an exec'd run froze nothing, as a bare one.
        let frozen: u64 = std::fs::read_to_string(proj.path().join("frozen.txt"))?
            .trim()
            .parse()?;
        assert_eq!(
            frozen > 0,
            launcher == "warm",
            "{launcher}: {frozen} frozen"
        );
    }
    Ok(())
}
