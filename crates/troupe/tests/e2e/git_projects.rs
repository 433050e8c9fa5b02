//! Git projects end to end: a local repository made by the test, cloned and synced by the
//! real binary with the real `git`, its playbooks run by a real ansible-playbook.

use crate::helpers::*;
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const PLAY_V1: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: version one\n";
const PLAY_V2: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: version two\n";

/// Writes `files` and commits them; returns the new HEAD.
fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
    for (name, text) in files {
        let path = repo.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", message])?;
    git(repo, &["rev-parse", "HEAD"])
}

fn new_repo(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q"])?;
    Ok(())
}

async fn run_and_wait(server: &Server, project: i64, playbook: &str) -> anyhow::Result<Value> {
    let id = server
        .launch(project, playbook, &local_hosts(1), json!({}))
        .await?;
    server.wait_finished(id).await
}

#[tokio::test]
async fn git_project_clones_runs_syncs_and_pins_refs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    new_repo(&repo)?;
    let c1 = commit(&repo, &[("site.yml", PLAY_V1)], "one")?;
    git(&repo, &["tag", "v1"])?;
    let c2 = commit(
        &repo,
        &[("site.yml", PLAY_V2), ("extra/other.yml", PLAY_V1)],
        "two",
    )?;
    let server = serve()?;
    let url = repo.display().to_string();

    // Created from the default branch: cloned, the commit recorded.
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "gitproj", "source": {"type": "git", "url": url}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    assert_eq!(p["sync"]["commit"], c2, "{p}");
    assert!(p["sync"]["synced_at"].is_string());
    assert!(p["sync"].get("error").is_none());
    assert!(
        server
            .data_dir
            .join("projects")
            .join(pid.to_string())
            .join(".git")
            .is_dir()
    );
    let listed = server
        .get(&format!("/api/v1/projects/{pid}/playbooks"))
        .await?;
    assert_eq!(listed["playbooks"], json!(["extra/other.yml", "site.yml"]));

    // A run records the commit it ran, and runs that commit's playbook.
    let run = run_and_wait(&server, pid, "site.yml").await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["commit"], c2);
    assert!(run["launched_at"].is_string(), "{run}");
    let out = server
        .text(&format!("/api/v1/runs/{}/stdout", run["id"]))
        .await?;
    assert!(out.contains("version two"), "{out}");

    // A new commit upstream: not seen until a sync, then the next run records it.
    let c3 = commit(
        &repo,
        &[(
            "site.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: version three\n",
        )],
        "three",
    )?;
    let run = run_and_wait(&server, pid, "site.yml").await?;
    assert_eq!(run["commit"], c2, "no sync yet");
    let synced = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c3);
    let run = run_and_wait(&server, pid, "site.yml").await?;
    assert_eq!(run["status"], "successful");
    assert_eq!(run["commit"], c3);
    let out = server
        .text(&format!("/api/v1/runs/{}/stdout", run["id"]))
        .await?;
    assert!(out.contains("version three"), "{out}");

    // A ref pinned to the tag checks out the tag; syncing keeps it there.
    let pinned = server
        .post(
            "/api/v1/projects",
            &json!({"name": "pinned", "source": {"type": "git", "url": url, "ref": "v1"}}),
        )
        .await?;
    let pinned_id = pinned["id"].as_i64().context("id")?;
    assert_eq!(pinned["sync"]["commit"], c1);
    assert_eq!(pinned["source"]["ref"], "v1");
    let synced = server
        .post(&format!("/api/v1/projects/{pinned_id}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c1);
    let listed = server
        .get(&format!("/api/v1/projects/{pinned_id}/playbooks"))
        .await?;
    assert_eq!(listed["playbooks"], json!(["site.yml"]), "files of v1 only");
    let run = run_and_wait(&server, pinned_id, "site.yml").await?;
    assert_eq!(run["commit"], c1);
    let out = server
        .text(&format!("/api/v1/runs/{}/stdout", run["id"]))
        .await?;
    assert!(out.contains("version one"), "{out}");

    // A branch ref and a commit id work too.
    let by_commit = server
        .post(
            "/api/v1/projects",
            &json!({"name": "bycommit", "source": {"type": "git", "url": url, "ref": &c2[..12]}}),
        )
        .await?;
    assert_eq!(by_commit["sync"]["commit"], c2);
    let by_branch = server
        .post(
            "/api/v1/projects",
            &json!({"name": "bybranch", "source": {"type": "git", "url": url, "ref": "main"}}),
        )
        .await?;
    assert_eq!(by_branch["sync"]["commit"], c3);

    // Directory projects are not synced.
    let dir = project_dir(&[("site.yml", PLAY_V1)])?;
    let dir_id = server.project(dir.path()).await?;
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/projects/{dir_id}/sync"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_a_git_project");
    // ...but their runs record their launch too (no commit).
    let run = run_and_wait(&server, dir_id, "site.yml").await?;
    assert!(run["launched_at"].is_string(), "{run}");
    assert!(run.get("commit").is_none_or(Value::is_null), "{run}");
    Ok(())
}

#[tokio::test]
async fn sync_failures_are_clear_and_recorded() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    new_repo(&repo)?;
    let c1 = commit(&repo, &[("site.yml", PLAY_V1)], "one")?;
    git(&repo, &["branch", "feature"])?;
    let server = serve()?;

    // A URL that is no repository: 422 sync_failed with git's reason; nothing is stored.
    let missing = tmp.path().join("nope");
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "bad", "source": {"type": "git", "url": missing}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "sync_failed");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("git clone failed") && msg.contains("nope"),
        "{msg}"
    );
    let listed = server.get("/api/v1/projects?name=bad").await?;
    assert_eq!(listed["projects"], json!([]));

    // A password in a URL is refused (it belongs in a git credential), and not quoted.
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "creds", "source": {"type": "git", "url": "http://alice:hunter2@127.0.0.1:9/r.git"}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "secret_in_url", "{body}");
    assert_eq!(body["error"]["field"], "source.url", "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    // A user name in a URL never comes back in messages.
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "creds", "source": {"type": "git", "url": "http://alice@127.0.0.1:9/r.git"}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.contains("alice"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");

    // A ref that does not exist: named in the error.
    let url = repo.display().to_string();
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "noref", "source": {"type": "git", "url": url, "ref": "v9"}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"v9\"") && msg.contains("not a branch, tag or commit"),
        "{msg}"
    );

    // A project whose branch disappears: the sync fails, says why, is recorded in sync.error,
    // and the last good checkout still runs.
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "feat", "source": {"type": "git", "url": url, "ref": "feature"}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    git(&repo, &["branch", "-D", "feature"])?;
    let (status, body) = server
        .call(Method::POST, &format!("/api/v1/projects/{pid}/sync"), None)
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "sync_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("feature"),
        "{body}"
    );
    let p = server.get(&format!("/api/v1/projects/{pid}")).await?;
    let recorded = p["sync"]["error"].as_str().unwrap_or_default();
    assert!(recorded.contains("\"feature\""), "{p}");
    assert_eq!(p["sync"]["commit"], c1);
    let run = run_and_wait(&server, pid, "site.yml").await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["commit"], c1);

    // The remote itself gone: git's own message, recorded too.
    std::fs::rename(&repo, tmp.path().join("moved"))?;
    let (status, body) = server
        .call(Method::POST, &format!("/api/v1/projects/{pid}/sync"), None)
        .await?;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("git fetch failed"), "{msg}");
    let p = server.get(&format!("/api/v1/projects/{pid}")).await?;
    assert!(
        p["sync"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("git fetch failed")
    );

    // Restored: the next sync clears the error.
    std::fs::rename(tmp.path().join("moved"), &repo)?;
    git(&repo, &["branch", "feature"])?;
    let p = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert!(p["sync"].get("error").is_none(), "{p}");
    Ok(())
}

#[tokio::test]
async fn concurrent_syncs_leave_one_whole_tree() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    new_repo(&repo)?;
    commit(&repo, &[("site.yml", PLAY_V1)], "one")?;
    let server = serve()?;
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "busy", "source": {"type": "git", "url": repo}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    let mut last = String::new();
    for i in 0..3 {
        last = commit(&repo, &[(&format!("f{i}.yml"), PLAY_V2)], "more")?;
        let path = format!("/api/v1/projects/{pid}/sync");
        let calls = (0..6).map(|_| server.call(Method::POST, &path, None));
        for (status, body) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
        {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["sync"]["commit"], last);
        }
    }
    // One tree left, the last commit's, with exactly that commit's files.
    let commits = server
        .data_dir
        .join("projects")
        .join(pid.to_string())
        .join("commits");
    assert_eq!(dir_names(&commits)?, vec![last.clone()]);
    assert_eq!(
        dir_names(&commits.join(&last))?,
        vec!["f0.yml", "f1.yml", "f2.yml", "site.yml"]
    );
    Ok(())
}

/// The names in a directory, sorted.
fn dir_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Announces it started, waits for a release file, and only then reads the project's files:
/// a variables file, a task file and a file lookup.
const PAUSING_PLAY: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ started }}"
        content: "up"
    - ansible.builtin.wait_for:
        path: "{{ release }}"
        timeout: 120
    - ansible.builtin.include_vars: vars.yml
    - ansible.builtin.debug:
        msg: "var says {{ message }}"
    - ansible.builtin.include_tasks: more.yml
    - ansible.builtin.debug:
        msg: "file says {{ lookup('file', 'note.txt') }}"
"#;

/// Launches [`PAUSING_PLAY`]; the run's id.
async fn launch_pausing(
    server: &Server,
    project: i64,
    started: &Path,
    release: &Path,
) -> anyhow::Result<i64> {
    server
        .launch(
            project,
            "site.yml",
            &local_hosts(1),
            json!({"extra_vars": {"started": started, "release": release}}),
        )
        .await
}

/// Waits for a run of [`PAUSING_PLAY`] to succeed; checks it recorded `sha` and printed the
/// `age` ("old" or "new") content of every file it read. Its stdout.
async fn ran_commit(server: &Server, id: i64, sha: &str, age: &str) -> anyhow::Result<String> {
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["commit"], sha, "{run}");
    let out = server.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    for said in [
        format!("var says {age}-vars"),
        format!("tasks say {age}-tasks"),
        format!("file says {age}-note"),
    ] {
        assert!(out.contains(&said), "{said} missing from:\n{out}");
    }
    Ok(out)
}

fn more_tasks(word: &str) -> String {
    format!("- ansible.builtin.debug:\n    msg: tasks say {word}\n")
}

#[tokio::test]
async fn a_sync_during_a_run_never_changes_its_files() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    new_repo(&repo)?;
    let old_tasks = more_tasks("old-tasks");
    let c1 = commit(
        &repo,
        &[
            ("site.yml", PAUSING_PLAY),
            ("vars.yml", "message: old-vars\n"),
            ("more.yml", &old_tasks),
            ("note.txt", "old-note\n"),
        ],
        "one",
    )?;
    // Served from a bare repository over file://, as a remote would be.
    let bare = tmp.path().join("remote.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &repo.display().to_string(),
            "remote.git",
        ],
    )?;
    git(
        &repo,
        &[
            "remote",
            "add",
            "origin",
            &format!("file://{}", bare.display()),
        ],
    )?;
    let server = serve()?;
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "steady", "source": {"type": "git", "url": format!("file://{}", bare.display())}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    assert_eq!(p["sync"]["commit"], c1, "{p}");
    let commits = server
        .data_dir
        .join("projects")
        .join(pid.to_string())
        .join("commits");

    // A run starts on c1 and pauses before it reads any of the files.
    let (started, release) = (tmp.path().join("started"), tmp.path().join("release"));
    let old_run = launch_pausing(&server, pid, &started, &release).await?;
    wait_file(&started, Duration::from_secs(120)).await?;

    // Every file it will read changes upstream, and the project syncs while it waits.
    let new_tasks = more_tasks("new-tasks");
    let c2 = commit(
        &repo,
        &[
            ("vars.yml", "message: new-vars\n"),
            ("more.yml", &new_tasks),
            ("note.txt", "new-note\n"),
        ],
        "two",
    )?;
    git(&repo, &["push", "-q", "origin", "HEAD:refs/heads/main"])?;
    let synced = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c2, "{synced}");
    // The run's tree is still there next to the new one.
    let mut both = vec![c1.clone(), c2.clone()];
    both.sort();
    assert_eq!(dir_names(&commits)?, both);

    // Released: the run read c1's files, and records c1.
    std::fs::write(&release, "go")?;
    let out = ran_commit(&server, old_run, &c1, "old").await?;
    assert!(!out.contains("new-"), "{out}");

    // A run started after the sync runs c2 (the release file is there: no pause).
    std::fs::remove_file(&started)?;
    let new_run = launch_pausing(&server, pid, &started, &release).await?;
    ran_commit(&server, new_run, &c2, "new").await?;

    // No run holds c1 any more: the next sync prunes its tree.
    let synced = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c2, "{synced}");
    assert_eq!(dir_names(&commits)?, vec![c2]);
    Ok(())
}

#[tokio::test]
async fn requirements_that_cannot_install_are_reported_not_fatal() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    new_repo(&repo)?;
    let missing = tmp.path().join("no-such-role.tar.gz");
    let head = commit(
        &repo,
        &[
            ("site.yml", PLAY_V1),
            (
                "roles/requirements.yml",
                &format!("- src: file://{}\n  name: ghost\n", missing.display()),
            ),
        ],
        "with requirements",
    )?;
    let server = serve()?;
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "reqs", "source": {"type": "git", "url": repo}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    assert_eq!(p["sync"]["commit"], head);
    let why = p["sync"]["requirements_error"].as_str().unwrap_or_default();
    assert!(why.contains("roles/requirements.yml"), "{p}");
    assert!(p["sync"].get("error").is_none());
    // Still usable.
    let run = run_and_wait(&server, pid, "site.yml").await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["commit"], head);
    // And reported again on sync.
    let p = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert!(p["sync"]["requirements_error"].is_string(), "{p}");
    Ok(())
}
