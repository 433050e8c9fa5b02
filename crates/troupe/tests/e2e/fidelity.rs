//! A playbook must not be able to tell troupe from ansible-playbook: one playbook dumps what it
//! can observe (its tasks' environment, ansible's configuration as a nested `ansible-config`
//! and `lookup('config')` see it, umask, cwd, the open fds of a task process, the stack room
//! a worker has, a nested `ansible-playbook -vvv` run) bare and through every way troupe starts
//! a run; the dumps are compared key by key, and only the differences docs/architecture.md
//! lists ("What troupe changes in ansible-playbook's environment") are allowed.

use crate::helpers::*;
use anyhow::Context;
use regex::Regex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

/// The project: an ansible.cfg that sets temp dirs, a callback (from the project) and an
/// inventory; a filter plugin; the observing playbook (also as a job unit's action playbook).
fn fidelity_project() -> anyhow::Result<Proj> {
    let observe = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: the environment of a task process
      setup:
        gather_subset: ['!all', '!min', env]
    - name: what a task's shell sees
      shell: |
        echo "umask $(umask)"
        echo "cwd $(pwd)"
        for fd in /proc/$$/fd/*; do t=$(readlink "$fd"); echo "fd ${fd##*/} ${t%%:*}"; done
      register: proc
    - name: ansible's configuration as a nested ansible-config sees it
      command: ansible-config dump --only-changed
      register: config
    - name: a nested ansible-playbook
      command: ansible-playbook -vvv nested.yml
      register: nested
      ignore_errors: true
    - name: a templated action (its resolved_action is not known at task start)
      action: "{{ 'ansible.builtin.debug' }}"
      args:
        msg: "stack room in a worker: {{ 0 | stack_room }}"
      register: room
    - name: keep what was seen
      copy:
        dest: "{{ playbook_dir }}/observed/current.json"
        content: "{{ seen | to_nice_json }}"
      vars:
        seen:
          env: "{{ ansible_env }}"
          proc: "{{ proc.stdout_lines }}"
          config: "{{ config.stdout_lines }}"
          nested_rc: "{{ nested.rc }}"
          nested: "{{ nested.stdout_lines }}"
          room: "{{ room.msg }}"
          lookups:
            local_tmp: "{{ lookup('config', 'DEFAULT_LOCAL_TMP') | dirname }}"
            remote_tmp: "{{ lookup('config', 'remote_tmp', plugin_type='shell', plugin_name='sh') }}"
            callbacks_enabled: "{{ lookup('config', 'CALLBACKS_ENABLED') }}"
            callback_plugins: "{{ lookup('config', 'DEFAULT_CALLBACK_PLUGIN_PATH') }}"
            stdout_callback: "{{ lookup('config', 'DEFAULT_STDOUT_CALLBACK') }}"
            inventory: "{{ lookup('config', 'DEFAULT_HOST_LIST') }}"
            roles_path: "{{ lookup('config', 'DEFAULT_ROLES_PATH') }}"
            collections_path: "{{ lookup('config', 'COLLECTIONS_PATHS') }}"
            force_color: "{{ lookup('config', 'ANSIBLE_FORCE_COLOR') }}"
            nocolor: "{{ lookup('config', 'ANSIBLE_NOCOLOR') }}"
            retry_files: "{{ lookup('config', 'RETRY_FILES_ENABLED') }}"
"#;
    let nested = r#"- hosts: localhost
  gather_facts: false
  tasks:
    - command: echo nested
    - name: the file ansible copied came from its configured local temp dir
      assert:
        that: lookup('config', 'DEFAULT_LOCAL_TMP') is search(playbook_dir ~ '/local-tmp/')
"#;
    let callback = r#"from ansible.plugins.callback import CallbackBase
import os


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'observer'
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        with open(os.path.join(os.getcwd(), 'observed', 'callback.log'), 'a') as f:
            f.write('loaded %s\n' % os.path.basename(playbook._file_name))
"#;
    let filter = r#"def stack_room(n):
    """How many more frames fit on this worker's stack: depends on how deep it started."""
    def down(k):
        try:
            return down(k + 1)
        except RecursionError:
            return k
    return down(n)


class FilterModule(object):
    def filters(self):
        return {'stack_room': stack_room}
"#;
    let cfg = "[defaults]\nlocal_tmp = ./local-tmp\nremote_tmp = ./remote-tmp\n\
               callback_plugins = ./callbacks\ncallbacks_enabled = observer\ninventory = ./hosts\n";
    named_project(&[
        ("ansible.cfg", cfg),
        ("hosts", LOCALHOST_INVENTORY),
        ("observe.yml", observe),
        ("observe-unit.yml", observe),
        ("nested.yml", nested),
        ("callbacks/observer.py", callback),
        ("filter_plugins/fidelity.py", filter),
        ("observed/.keep", ""),
    ])
}

/// The inventory of a job unit's action (troupe-launch's), used by every way here.
const LOCALHOST_INVENTORY: &str = "localhost ansible_connection=local\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n";

/// What one run saw, and what it printed.
struct Seen {
    dump: Value,
    stdout: String,
    stderr: String,
}

/// Takes the dump the playbook just wrote (moving it away for the next run).
fn take_dump(project: &Path, way: &str) -> anyhow::Result<Value> {
    let current = project.join("observed/current.json");
    let text = std::fs::read_to_string(&current)
        .with_context(|| format!("{way}: the playbook left no dump"))?;
    std::fs::rename(&current, project.join(format!("observed/{way}.json")))?;
    Ok(serde_json::from_str(&text)?)
}

/// The server's environment, as a bare ansible-playbook started by the same user gets it.
fn environment_of(pid: u32) -> anyhow::Result<Vec<(String, String)>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect())
}

/// Values ansible makes up each run (temp names, times, pids) replaced by placeholders.
pub(crate) fn normalized(text: &str) -> String {
    let rules = [
        (r"ansible-tmp-[0-9.]+-[0-9]+-[0-9]+", "ansible-tmp-X"),
        (r"ansible-local-[0-9]+[a-z0-9_]+", "ansible-local-X"),
        (r"/tmp[a-z0-9_]{8}\b", "/tmpX"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", "TIME"),
        (r"\d+:\d\d:\d\d\.\d+", "DELTA"),
    ];
    rules.iter().fold(text.to_owned(), |acc, (re, to)| {
        Regex::new(re)
            .expect("valid regex")
            .replace_all(&acc, *to)
            .into_owned()
    })
}

/// Each observed key whose value differs from bare's: `key: bare != troupe`.
fn differences(bare: &Seen, way: &Seen) -> Vec<String> {
    let mut diffs = Vec::new();
    let env = |s: &Seen| -> BTreeMap<String, Value> {
        s.dump["env"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (bare_env, way_env) = (env(bare), env(way));
    for key in bare_env.keys().chain(way_env.keys()) {
        // Documented: troupe's own settings are not passed on; the run marker is.
        if key.starts_with("TROUPE_") {
            let expected_only_in_troupe = key == "TROUPE_RUN_DIR";
            let ok = if expected_only_in_troupe {
                !bare_env.contains_key(key) && way_env.contains_key(key)
            } else {
                !way_env.contains_key(key)
            };
            if !ok {
                diffs.push(format!(
                    "env.{key}: {:?} != {:?}",
                    bare_env.get(key),
                    way_env.get(key)
                ));
            }
            continue;
        }
        if bare_env.get(key) != way_env.get(key) {
            diffs.push(format!(
                "env.{key}: {:?} != {:?}",
                bare_env.get(key),
                way_env.get(key)
            ));
        }
    }
    for key in ["proc", "config", "nested_rc", "nested", "room", "lookups"] {
        let (b, w) = (
            normalized(&bare.dump[key].to_string()),
            normalized(&way.dump[key].to_string()),
        );
        if b != w {
            diffs.push(format!("{key}: {b} != {w}"));
        }
    }
    // What ansible printed: the same text (troupe keeps ansible's colours; compared plain).
    let plain = |t: &str| normalized(&troupe_core::text::plain(t));
    if plain(&bare.stdout) != plain(&way.stdout) {
        diffs.push(format!(
            "stdout:\n{}\n!=\n{}",
            plain(&bare.stdout),
            plain(&way.stdout)
        ));
    }
    if plain(&bare.stderr) != plain(&way.stderr) {
        diffs.push(format!(
            "stderr:\n{}\n!=\n{}",
            plain(&bare.stderr),
            plain(&way.stderr)
        ));
    }
    diffs
}

async fn run_output(server: &Server, run: &Value) -> anyhow::Result<(String, String)> {
    let id = run["id"].as_i64().context("run id")?;
    let stdout = server
        .text(&format!("/api/v1/runs/{id}/stdout?ansi=true"))
        .await?;
    let stderr = server
        .text(&format!("/api/v1/runs/{id}/stderr?ansi=true"))
        .await?;
    Ok((stdout, stderr))
}

async fn through_troupe(
    server: &Server,
    project: &Path,
    way: &str,
    run_id: i64,
) -> anyhow::Result<Seen> {
    let run = server.wait_finished(run_id).await?;
    assert_eq!(run["status"], "successful", "{way}: {run}");
    let (stdout, stderr) = run_output(server, &run).await?;
    Ok(Seen {
        dump: take_dump(project, way)?,
        stdout,
        stderr,
    })
}

#[tokio::test]
async fn a_playbook_cannot_tell_troupe_from_ansible_playbook() -> anyhow::Result<()> {
    compare_every_way("exec").await
}

/// The same with every run forked from a warm parent.
#[tokio::test]
async fn a_playbook_cannot_tell_the_warm_launcher_from_ansible_playbook() -> anyhow::Result<()> {
    compare_every_way("warm").await
}

/// Runs the observing playbook bare and through every way troupe starts a run, with the server
/// started `--launcher <launcher>`, and compares what each saw.
async fn compare_every_way(launcher: &str) -> anyhow::Result<()> {
    let proj = fidelity_project()?;
    let project = proj.path();
    let name = project_name(project);
    let mut opts = with_project(project);
    opts.extra_args
        .extend(["--launcher".to_owned(), launcher.to_owned()]);
    // The user's PYTHONDONTWRITEBYTECODE is passed on as it is: no __pycache__ in the project.
    let server = serve_with(ServerOpts {
        extra_env: vec![("PYTHONDONTWRITEBYTECODE".into(), "1".into())],
        ..opts
    })?;
    let env = environment_of(server.pid())?;
    let ansible_playbook = troupe_ansible::on_path(Path::new("ansible-playbook"))
        .context("ansible-playbook on PATH")?;

    // Bare: the same user, environment and directory; the inventory the ansible.cfg names
    // (runs through troupe without an inventory of their own use it too: the API's, the
    // CLI's, the rule's; the others are given the same hosts).
    let out = tokio::process::Command::new(&ansible_playbook)
        .arg("observe.yml")
        .current_dir(project)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await?;
    assert!(out.status.success(), "bare run failed: {out:?}");
    let bare = Seen {
        dump: take_dump(project, "bare")?,
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    };
    assert_eq!(bare.dump["nested_rc"], 0, "{}", bare.dump["nested"]);

    let mut ways: Vec<(&str, Seen)> = Vec::new();

    // The API.
    let inventory = server
        .post(
            "/api/v1/inventories",
            &json!({"name": "local", "format": "ini", "hosts": LOCALHOST_INVENTORY}),
        )
        .await?;
    let inventory_id = inventory["id"].as_i64().context("inventory id")?;
    let stored_run = server
        .create_run(&json!({"project": name, "playbook": "observe.yml", "inventory": inventory_id}))
        .await?;
    ways.push((
        "api, a stored inventory",
        through_troupe(&server, project, "api-stored", stored_run).await?,
    ));
    // No inventory: as ansible-playbook without -i, the one the ansible.cfg names.
    let api_run = server
        .create_run(&json!({"project": name, "playbook": "observe.yml"}))
        .await?;
    ways.push((
        "api",
        through_troupe(&server, project, "api", api_run).await?,
    ));

    // A relaunch of that run.
    let relaunched = server
        .post(&format!("/api/v1/runs/{api_run}/relaunch"), &json!({}))
        .await?;
    let relaunched = relaunched["id"].as_i64().context("relaunched run id")?;
    ways.push((
        "relaunch",
        through_troupe(&server, project, "relaunch", relaunched).await?,
    ));

    // `troupe run`: it prints the run's stdout and stderr exactly, from the first byte.
    let cli = tokio::process::Command::new(troupe_bin())
        .args(["run", "observe.yml"])
        .current_dir(project)
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .await?;
    assert!(cli.status.success(), "troupe run failed: {cli:?}");
    let latest = server.get("/api/v1/runs?limit=1").await?;
    let cli_run = &latest["runs"][0];
    let (stdout, stderr) = run_output(&server, cli_run).await?;
    assert_eq!(
        String::from_utf8(cli.stdout)?,
        troupe_core::text::plain(&stdout),
        "troupe run printed something else than the run's stdout"
    );
    // On stderr, troupe's own notes ("troupe: run 3 queued") come as lines of their own.
    let cli_stderr = String::from_utf8(cli.stderr)?;
    let notes: Vec<&str> = cli_stderr
        .lines()
        .filter(|l| l.starts_with("troupe: "))
        .collect();
    assert_eq!(notes, [format!("troupe: run {} queued", cli_run["id"])]);
    assert_eq!(
        cli_stderr.replace(&format!("{}\n", notes[0]), ""),
        troupe_core::text::plain(&stderr),
        "troupe run printed something else than the run's stderr"
    );
    ways.push((
        "cli",
        Seen {
            dump: take_dump(project, "cli")?,
            stdout,
            stderr,
        },
    ));

    // An event rule.
    server
        .apply_rules(&format!(
            "sources:\n  hook: {{type: webhook}}\nrules:\n  - name: observe\n    routing_keys: [observe]\n    \
             action: {{project: {name}, playbook: observe.yml, ansible_inventory: true}}\n"
        ))
        .await?;
    let accepted = server
        .post("/api/v1/hooks/hook/observe", &json!({"from": "a hook"}))
        .await?;
    let rule_run = accepted["event"]["run_ids"][0]
        .as_i64()
        .with_context(|| format!("the event started no run: {accepted}"))?;
    ways.push((
        "rule",
        through_troupe(&server, project, "rule", rule_run).await?,
    ));

    // A job unit's action (`observe-unit.yml`).
    let job = server
        .post(
            "/api/v1/jobs",
            &json!({"tag": "fidelity", "units": ["unit"], "project": name}),
        )
        .await?;
    let job_id = job["id"].as_i64().context("job id")?;
    let action = server
        .post(
            &format!("/api/v1/jobs/{job_id}/units/unit/actions"),
            &json!({"action": "observe"}),
        )
        .await?;
    let unit_run = action["id"]
        .as_i64()
        .or_else(|| action["run"]["id"].as_i64())
        .with_context(|| format!("the action started no run: {action}"))?;
    ways.push((
        "job unit",
        through_troupe(&server, project, "job-unit", unit_run).await?,
    ));

    let mut report = Vec::new();
    for (way, seen) in &ways {
        for diff in differences(&bare, seen) {
            report.push(format!("{way}: {diff}"));
        }
    }
    assert!(
        report.is_empty(),
        "troupe differs from bare ansible-playbook:\n{}",
        report.join("\n")
    );

    // The project's ansible.cfg was honoured each time: its callback loaded, its temp dirs used.
    let log = std::fs::read_to_string(project.join("observed/callback.log"))?;
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("loaded observe"))
            .count(),
        1 + ways.len(),
        "{log}"
    );
    assert!(project.join("local-tmp").is_dir() && project.join("remote-tmp").is_dir());
    let pycache: Vec<_> = walk(project)
        .into_iter()
        .filter(|p| p.ends_with("__pycache__"))
        .collect();
    assert!(
        pycache.is_empty(),
        "byte code written despite PYTHONDONTWRITEBYTECODE: {pycache:?}"
    );
    // Warm: one parent (one configuration) forked every run.
    let parents = troupe_ansible::read_parents(&server.data_dir.join("runs"));
    let forked: u64 = parents.iter().map(|p| p.runs).sum();
    let expected = if launcher == "warm" {
        ways.len() as u64
    } else {
        0
    };
    assert_eq!(forked, expected, "{parents:?}");
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
            found.push(path);
        }
    }
    found
}
