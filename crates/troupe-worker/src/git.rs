//! Git projects: cloning, fetching and checking out a project's repository with the `git` CLI,
//! and installing its `requirements.yml` with `ansible-galaxy`.
//!
//! A git project's checkout lives at `<projects_dir>/<project id>` (see
//! [`troupe_launch::playbooks::project_root`]). A new project is cloned into a staging directory first
//! ([`ProjectSyncer::stage`]) and moved into place once it is stored, so a clone that fails
//! leaves nothing behind. Syncs of one project are serialised by a per-project lock; a failed
//! sync leaves the last good checkout in place.

use chrono::Utc;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use troupe_core::project::{Project, ProjectSource, ProjectSync};
use troupe_core::url::redact_credentials;

/// The longest any one git or ansible-galaxy command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest message kept from a failing command's stderr.
const MAX_MESSAGE: usize = 2000;

/// Files whose roles and collections are installed on sync, and what is installed from each.
const REQUIREMENTS: &[(&str, bool, bool)] = &[
    // (path in the checkout, roles, collections)
    ("requirements.yml", true, true),
    ("roles/requirements.yml", true, false),
    ("collections/requirements.yml", false, true),
];

/// Why a clone or sync failed; the message is git's own (credentials removed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyncError(pub String);

/// Clones and syncs git projects. Shared by the API (one per server).
#[derive(Debug)]
pub struct ProjectSyncer {
    projects_dir: PathBuf,
    git: PathBuf,
    galaxy: PathBuf,
    ansible_bin: Option<PathBuf>,
    timeout: Duration,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

/// A fresh clone waiting for its project id. Removed on drop unless [`ProjectSyncer::adopt`]ed.
#[derive(Debug)]
pub struct Staged {
    dir: Option<PathBuf>,
    /// What the clone produced (commit, requirements outcome).
    pub sync: ProjectSync,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // Drop cannot await; the staging dir is small and this happens only on failures.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl ProjectSyncer {
    /// A syncer checking out into `projects_dir`, using the `ansible-galaxy` next to
    /// `ansible_bin_dir`'s `ansible-playbook` (or the one on `PATH`).
    pub fn new(projects_dir: PathBuf, ansible_bin_dir: Option<&Path>) -> Self {
        let galaxy = ansible_bin_dir
            .map(|d| d.join("ansible-galaxy"))
            .filter(|p| p.exists())
            .or_else(|| troupe_ansible::on_path(Path::new("ansible-galaxy")))
            .unwrap_or_else(|| PathBuf::from("ansible-galaxy"));
        // By absolute path, so that it is started with posix_spawn (see `troupe_ansible::on_path`).
        let git = troupe_ansible::on_path(Path::new("git")).unwrap_or_else(|| PathBuf::from("git"));
        Self {
            projects_dir,
            git,
            galaxy,
            ansible_bin: ansible_bin_dir.map(Path::to_path_buf),
            timeout: DEFAULT_TIMEOUT,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the per-command time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where a project's checkout lives.
    pub fn checkout_dir(&self, project_id: i64) -> PathBuf {
        self.projects_dir.join(project_id.to_string())
    }

    /// Clones `url` and checks out `git_ref` into a staging directory, before the project is
    /// stored. Fails (leaving nothing behind) when git cannot.
    pub async fn stage(&self, url: &str, git_ref: Option<&str>) -> Result<Staged, SyncError> {
        tokio::fs::create_dir_all(&self.projects_dir)
            .await
            .map_err(|e| SyncError(format!("cannot create the projects directory: {e}")))?;
        let dir = self
            .projects_dir
            .join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        let mut staged = Staged {
            dir: Some(dir.clone()),
            sync: ProjectSync::default(),
        };
        let commit = self.checkout(&dir, url, git_ref).await?;
        staged.sync = ProjectSync {
            commit: Some(commit),
            synced_at: Some(Utc::now()),
            error: None,
            requirements_error: self.install_requirements(&dir).await,
        };
        Ok(staged)
    }

    /// Moves a staged clone to the checkout of `project_id` (replacing any stale directory).
    pub async fn adopt(
        &self,
        mut staged: Staged,
        project_id: i64,
    ) -> Result<ProjectSync, SyncError> {
        let Some(from) = staged.dir.take() else {
            return Err(SyncError("the staged checkout is gone".into()));
        };
        let to = self.checkout_dir(project_id);
        let lock = self.lock(project_id);
        let _held = lock.lock().await;
        if tokio::fs::metadata(&to).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&to).await;
        }
        if let Err(e) = tokio::fs::rename(&from, &to).await {
            let _ = tokio::fs::remove_dir_all(&from).await;
            return Err(SyncError(format!(
                "cannot move the clone into {}: {e}",
                to.display()
            )));
        }
        Ok(staged.sync.clone())
    }

    /// Fetches a git project and checks its ref out again, then installs its requirements.
    /// Returns the project's new sync state: on failure `error` says why and the previous
    /// checkout stays in place. Syncs of one project never overlap.
    pub async fn sync(&self, project: &Project) -> ProjectSync {
        let ProjectSource::Git { url, git_ref } = &project.source else {
            return ProjectSync {
                error: Some("only git projects can be synced".into()),
                ..project.sync.clone()
            };
        };
        let lock = self.lock(project.id);
        let _held = lock.lock().await;
        let dir = self.checkout_dir(project.id);
        match self.checkout(&dir, url, git_ref.as_deref()).await {
            Ok(commit) => ProjectSync {
                commit: Some(commit),
                synced_at: Some(Utc::now()),
                error: None,
                requirements_error: self.install_requirements(&dir).await,
            },
            Err(e) => ProjectSync {
                // Whatever is checked out now is what runs will use.
                commit: self
                    .head(&dir)
                    .await
                    .or_else(|| project.sync.commit.clone()),
                synced_at: Some(Utc::now()),
                error: Some(e.0),
                requirements_error: project.sync.requirements_error.clone(),
            },
        }
    }

    fn lock(&self, project_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => Arc::clone(locks.entry(project_id).or_default()),
            // A panic while holding the map cannot leave it inconsistent (one insert).
            Err(poisoned) => Arc::clone(poisoned.into_inner().entry(project_id).or_default()),
        }
    }

    /// Brings `dir` to `git_ref` of `url` (cloning when it holds no repository yet) and
    /// returns the commit checked out.
    async fn checkout(
        &self,
        dir: &Path,
        url: &str,
        git_ref: Option<&str>,
    ) -> Result<String, SyncError> {
        let fresh = tokio::fs::metadata(dir.join(".git")).await.is_err();
        if fresh {
            if tokio::fs::metadata(dir).await.is_ok() {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
            let cloned = self
                .git(
                    None,
                    "clone",
                    &[
                        "clone".as_ref(),
                        "--quiet".as_ref(),
                        "--no-checkout".as_ref(),
                        "--".as_ref(),
                        url.as_ref(),
                        dir.as_os_str(),
                    ],
                )
                .await;
            if let Err(e) = cloned {
                let _ = tokio::fs::remove_dir_all(dir).await;
                return Err(e);
            }
        } else {
            self.git(
                Some(dir),
                "fetch",
                &[
                    "fetch",
                    "--quiet",
                    "--force",
                    "--prune",
                    "--prune-tags",
                    "--tags",
                    "origin",
                ]
                .map(OsStr::new),
            )
            .await?;
            if git_ref.is_none() {
                // Follow a change of the remote's default branch.
                self.git(
                    Some(dir),
                    "remote set-head",
                    &["remote", "set-head", "origin", "--auto"].map(OsStr::new),
                )
                .await?;
            }
        }
        let commit = self.resolve(dir, git_ref).await?;
        self.git(
            Some(dir),
            "checkout",
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--force",
                "--detach",
                &commit,
            ]
            .map(OsStr::new),
        )
        .await?;
        // Files the previous commit left behind (not ignored ones: installed roles survive).
        self.git(Some(dir), "clean", &["clean", "-ffdq"].map(OsStr::new))
            .await?;
        Ok(commit)
    }

    /// The commit `git_ref` names: a branch of the remote, a tag, or a commit id; the remote's
    /// default branch when `None`.
    async fn resolve(&self, dir: &Path, git_ref: Option<&str>) -> Result<String, SyncError> {
        let Some(r) = git_ref else {
            return self
                .rev_parse(dir, "refs/remotes/origin/HEAD")
                .await
                .ok_or_else(|| {
                    SyncError("the remote has no default branch (is the repository empty?)".into())
                });
        };
        for candidate in [format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}")] {
            if let Some(c) = self.rev_parse(dir, &candidate).await {
                return Ok(c);
            }
        }
        let looks_like_commit =
            (4..=64).contains(&r.len()) && r.chars().all(|c| c.is_ascii_hexdigit());
        if looks_like_commit {
            if let Some(c) = self.rev_parse(dir, r).await {
                return Ok(c);
            }
            // A commit no branch or tag reaches: ask for it by id (servers may refuse).
            if self
                .git(
                    Some(dir),
                    "fetch",
                    &["fetch", "--quiet", "origin", "--", r].map(OsStr::new),
                )
                .await
                .is_ok()
                && let Some(c) = self.rev_parse(dir, "FETCH_HEAD").await
                && c.starts_with(&r.to_ascii_lowercase())
            {
                return Ok(c);
            }
        }
        Err(SyncError(format!(
            "ref {r:?} is not a branch, tag or commit of the repository"
        )))
    }

    async fn rev_parse(&self, dir: &Path, rev: &str) -> Option<String> {
        let spec = format!("{rev}^{{commit}}");
        self.git(
            Some(dir),
            "rev-parse",
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ]
            .map(OsStr::new),
        )
        .await
        .ok()
        .map(|out| out.trim().to_owned())
        .filter(|c| !c.is_empty())
    }

    async fn head(&self, dir: &Path) -> Option<String> {
        if tokio::fs::metadata(dir.join(".git")).await.is_err() {
            return None;
        }
        self.rev_parse(dir, "HEAD").await
    }

    /// Runs git with a clean environment, no prompts and a time limit; returns its stdout.
    async fn git(
        &self,
        cwd: Option<&Path>,
        what: &str,
        args: &[&OsStr],
    ) -> Result<String, SyncError> {
        let mut cmd = Command::new(&self.git);
        // The `ext::` transport runs commands; never allow it, whatever git's defaults are.
        cmd.args(["-c", "protocol.ext.allow=never"]).args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.env_clear()
            .envs(troupe_ansible::child_env(None))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let out = run(cmd, self.timeout)
            .await
            .map_err(|e| SyncError(format!("git {what} {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(SyncError(format!(
                "git {what} failed: {}",
                message_of(&out.stderr, &out.stdout)
            )))
        }
    }

    /// Installs the roles and collections the checkout's requirement files name, into its own
    /// `roles/` and `collections/` (where ansible looks next to a playbook). Returns what went
    /// wrong, if anything; never fails the sync.
    async fn install_requirements(&self, dir: &Path) -> Option<String> {
        let mut problems = Vec::new();
        for (file, roles, collections) in REQUIREMENTS {
            let path = dir.join(file);
            if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                continue;
            }
            let kinds = [
                ("role", *roles, "roles"),
                ("collection", *collections, "collections"),
            ];
            for (kind, wanted, into) in kinds {
                if !wanted {
                    continue;
                }
                let mut cmd = Command::new(&self.galaxy);
                cmd.args([kind, "install", "-r"])
                    .arg(&path)
                    .arg("-p")
                    .arg(dir.join(into))
                    .current_dir(dir)
                    .env_clear()
                    .envs(troupe_ansible::child_env(self.ansible_bin.as_deref()))
                    .env("ANSIBLE_NOCOLOR", "1");
                match run(cmd, self.timeout).await {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => problems.push(format!(
                        "{file} ({kind}s): {}",
                        message_of(&out.stderr, &out.stdout)
                    )),
                    Err(e) => problems.push(format!("{file} ({kind}s): ansible-galaxy {e}")),
                }
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Why a git or ansible-galaxy command did not run to its end; the message follows the
/// command's name ("git fetch timed out after 300s").
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// The process could not be spawned.
    #[error("could not start: {0}")]
    Start(#[source] std::io::Error),
    /// Waiting for the process or reading its output failed.
    #[error("failed: {0}")]
    Wait(#[source] std::io::Error),
    /// The process ran past the time limit and was killed.
    #[error("timed out after {}s", .0.as_secs())]
    TimedOut(Duration),
}

/// Runs a prepared command to its end with no stdin, killing it after `timeout`.
async fn run(mut cmd: Command, timeout: Duration) -> Result<std::process::Output, CommandError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = troupe_ansible::spawn_child(cmd)
        .await
        .map_err(CommandError::Start)?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(CommandError::Wait(e)),
        Err(_) => Err(CommandError::TimedOut(timeout)),
    }
}

/// The useful part of a failing command's output: stderr (stdout when it is empty), trimmed,
/// bounded, credentials removed.
fn message_of(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.iter().all(u8::is_ascii_whitespace) {
        stdout
    } else {
        stderr
    });
    let mut text = redact_credentials(text.trim());
    if text.len() > MAX_MESSAGE {
        let mut cut = text.len() - MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = format!("...{}", &text[cut..]);
    }
    if text.is_empty() {
        "no message".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded() {
        let long = "x".repeat(5000);
        let m = message_of(long.as_bytes(), b"");
        assert!(m.len() <= MAX_MESSAGE + 3);
        assert_eq!(message_of(b"  ", b"from stdout\n"), "from stdout");
    }

    #[test]
    fn the_environment_has_no_troupe_secrets() {
        let env = troupe_ansible::child_env(Some(Path::new("/opt/ansible/bin")));
        assert!(
            env.iter()
                .all(|(k, _)| !k.to_string_lossy().starts_with("TROUPE_"))
        );
    }
}
