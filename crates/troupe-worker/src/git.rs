//! Git projects: cloning and fetching a project's repository with the `git` CLI, writing out
//! the files of the commit it is at, and installing its `requirements.yml` with
//! `ansible-galaxy`.
//!
//! A git project's clone lives at `<projects_dir>/<project id>` (no files checked out there)
//! and every commit a sync reaches gets its own tree, `<projects_dir>/<project
//! id>/commits/<sha>` ([`commit_tree`]), written before the sync returns (so starting a run
//! costs nothing) and never changed afterwards. A run executes in the tree of the commit the
//! project was at when it started ([`ProjectSyncer::tree_for`]) and holds it until it ends: a
//! sync during the run never changes a file under it.
//!
//! Pruning: after each successful sync, the trees of the project's other commits are removed
//! unless a run in this process still holds them ([`CommitTree`] counts its holders); a tree
//! held at that moment goes at the first sync after its last run ended. A run that starts on
//! a tree pruned since it read the project writes the tree again.
//!
//! A new project is cloned into a staging directory first ([`ProjectSyncer::stage`]) and moved
//! into place once it is stored, so a clone that fails leaves nothing behind. Syncs of one
//! project are serialised by a per-project lock; a failed sync leaves the last good tree in
//! place.

use chrono::Utc;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::process::Command;
use troupe_core::credential::CredentialSecret;
use troupe_core::project::{Project, ProjectSource, ProjectSync};
use troupe_core::url::redact_credentials;
pub use troupe_launch::playbooks::commit_tree;
use troupe_launch::playbooks::{COMMITS_DIR, is_commit_id, repo_dir};

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

/// How clones and fetches of one project authenticate: the secret of its `git` credential,
/// opened. Its `Debug` shows no value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitAuth {
    token: Option<String>,
    private_key: Option<String>,
}

impl GitAuth {
    /// No credential: the URL's own access (a public repository, a path, the server's
    /// `~/.ssh` and `GIT_SSH_COMMAND`).
    pub fn none() -> GitAuth {
        GitAuth::default()
    }

    /// The token and key of a `git` credential; `None` for a credential of another kind.
    pub fn from_secret(secret: &CredentialSecret) -> Option<GitAuth> {
        match secret {
            CredentialSecret::Git { token, private_key } => Some(GitAuth {
                token: token.clone(),
                private_key: private_key.clone(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GitAuth(token: {}, private_key: {})",
            self.token.is_some(),
            self.private_key.is_some()
        )
    }
}

/// Name prefix of the private directories [`AuthFiles`] makes in the projects directory.
const AUTH_DIR_PREFIX: &str = ".auth-";

/// The files one checkout authenticates with, in a private directory (0700) of the projects
/// directory, removed when the checkout is done (on drop too): the token in a 0600 file that
/// a 0700 `GIT_ASKPASS` script prints, the key in a 0600 file `ssh -i` reads. git is given
/// their paths only, never a secret in its arguments, URL or configuration.
#[derive(Debug)]
struct AuthFiles {
    dir: Option<PathBuf>,
    env: Vec<(&'static str, std::ffi::OsString)>,
}

impl AuthFiles {
    /// Writes the files `auth` needs (none for no credential).
    fn write(projects_dir: &Path, auth: &GitAuth) -> std::io::Result<AuthFiles> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if auth.token.is_none() && auth.private_key.is_none() {
            return Ok(AuthFiles {
                dir: None,
                env: Vec::new(),
            });
        }
        let dir = projects_dir.join(format!(
            "{AUTH_DIR_PREFIX}{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .recursive(false)
            .mode(0o700)
            .create(&dir)?;
        // From here on, drop removes the directory whatever fails.
        let mut files = AuthFiles {
            dir: Some(dir.clone()),
            env: Vec::new(),
        };
        let write = |name: &str, mode: u32, text: &str| -> std::io::Result<PathBuf> {
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)?;
            f.write_all(text.as_bytes())?;
            Ok(path)
        };
        if let Some(token) = &auth.token {
            let token_file = write("token", 0o600, token)?;
            // git asks for a user name only when the URL has none; hosts taking tokens
            // accept any (GitHub documents this one).
            let script = format!(
                "#!/bin/sh
case \"$1\" in
  [Uu]sername*) echo x-access-token ;;
  *) cat {} ;;
esac
",
                shell_quote(&token_file.to_string_lossy())
            );
            let askpass = write("askpass", 0o700, &script)?;
            files.env.push(("GIT_ASKPASS", askpass.into_os_string()));
        }
        if let Some(key) = &auth.private_key {
            let mut key = key.clone();
            if !key.ends_with('\n') {
                // ssh refuses a key file whose last line is not ended.
                key.push('\n');
            }
            let key_file = write("ssh-key", 0o600, &key)?;
            let base = std::env::var("GIT_SSH_COMMAND")
                .ok()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "ssh -o BatchMode=yes".to_owned());
            let command = format!(
                "{base} -o IdentitiesOnly=yes -o IdentityAgent=none -i {}",
                shell_quote(&key_file.to_string_lossy())
            );
            files.env.push(("GIT_SSH_COMMAND", command.into()));
        }
        Ok(files)
    }

    /// The variables git runs with to use the files.
    fn env(&self) -> Vec<(&str, &OsStr)> {
        self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
    }
}

impl Drop for AuthFiles {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // Two or three small files; drop cannot await.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `text` as one single-quoted word of `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Clones and syncs git projects. Shared by the API (one per server).
#[derive(Debug)]
pub struct ProjectSyncer {
    projects_dir: PathBuf,
    git: PathBuf,
    galaxy: PathBuf,
    ansible_bin: Option<PathBuf>,
    timeout: Duration,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    holders: Arc<Holders>,
}

/// How many [`CommitTree`]s of this process hold each (project, commit) tree.
type Holders = Mutex<HashMap<(i64, String), usize>>;

/// The files a run executes: a git project's tree of one commit (held against pruning until
/// this is dropped), or a directory project's own directory.
#[derive(Debug)]
pub struct CommitTree {
    path: PathBuf,
    commit: Option<String>,
    _hold: Option<Hold>,
}

impl CommitTree {
    /// The directory to run in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit the tree holds (`None` for directory projects).
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }
}

/// One holder of a commit tree; released on drop.
#[derive(Debug)]
struct Hold {
    holders: Arc<Holders>,
    key: (i64, String),
}

impl Hold {
    fn new(holders: &Arc<Holders>, key: (i64, String)) -> Self {
        let mut map = holders.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(key.clone()).or_default() += 1;
        Self {
            holders: Arc::clone(holders),
            key,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut map = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
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
            holders: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Changes the per-command time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where a project's clone lives (its commit trees are under it).
    pub fn checkout_dir(&self, project_id: i64) -> PathBuf {
        repo_dir(&self.projects_dir, project_id)
    }

    /// The files a run of `project` executes, as the project is now: for a git project the
    /// tree of the commit its last successful sync recorded, held against pruning until the
    /// returned value is dropped (keep it for the whole run), and written again if it is
    /// missing; for a directory project its directory. Fails when a git project has never
    /// synced or its tree cannot be written.
    pub async fn tree_for(&self, project: &Project) -> Result<CommitTree, SyncError> {
        let ProjectSource::Git { .. } = &project.source else {
            return Ok(CommitTree {
                path: troupe_launch::playbooks::project_root(project, &self.projects_dir),
                commit: None,
                _hold: None,
            });
        };
        let Some(sha) = project.sync.commit.as_deref().filter(|c| is_commit_id(c)) else {
            return Err(SyncError(format!(
                "git project {:?} has never synced successfully{}; sync it with POST /api/v1/projects/{}/sync",
                project.name,
                project
                    .sync
                    .error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default(),
                project.id
            )));
        };
        // Held before looking at the disk: a prune that has not removed it by now will not.
        let hold = Hold::new(&self.holders, (project.id, sha.to_owned()));
        let repo = self.checkout_dir(project.id);
        let path = commit_tree(&self.projects_dir, project.id, sha);
        if tokio::fs::metadata(&path).await.is_err() {
            tracing::info!(
                project = project.id,
                commit = sha,
                "writing a missing commit tree"
            );
            self.write_tree(&repo, sha).await?;
        }
        Ok(CommitTree {
            path,
            commit: Some(sha.to_owned()),
            _hold: Some(hold),
        })
    }

    /// Writes the missing trees of the commits `projects` are at (a data dir from before
    /// per-commit trees, or trees removed by hand), so that their playbooks are found at
    /// launch again. Failures are logged: a run writes its tree again before it starts.
    pub async fn restore_trees(&self, projects: &[Project]) {
        self.remove_auth_leftovers().await;
        for project in projects {
            if !matches!(project.source, ProjectSource::Git { .. }) || project.sync.commit.is_none()
            {
                continue;
            }
            if let Err(e) = self.tree_for(project).await {
                tracing::warn!(project = project.id, error = %e, "could not restore the project's commit tree");
            }
        }
    }

    /// Points the clone of `project_id` (when there is one) at `url`: a URL changed outside a
    /// sync (a secret moved to a credential) leaves no copy of the old one in `.git/config`.
    pub async fn set_remote(&self, project_id: i64, url: &str) -> Result<(), SyncError> {
        let lock = self.lock(project_id);
        let _held = lock.lock().await;
        let dir = self.checkout_dir(project_id);
        if tokio::fs::metadata(dir.join(".git")).await.is_err() {
            return Ok(());
        }
        self.git(
            Some(&dir),
            "remote set-url",
            &["remote", "set-url", "origin", "--", url].map(OsStr::new),
        )
        .await
        .map(|_| ())
    }

    /// Removes what a crash left of [`AuthFiles`] directories.
    async fn remove_auth_leftovers(&self) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.projects_dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(AUTH_DIR_PREFIX)
            {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }

    /// Clones `url` and checks out `git_ref` into a staging directory, before the project is
    /// stored, authenticating with `auth`. Fails (leaving nothing behind) when git cannot.
    pub async fn stage(
        &self,
        url: &str,
        git_ref: Option<&str>,
        auth: &GitAuth,
    ) -> Result<Staged, SyncError> {
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
        let commit = self.checkout(&dir, url, git_ref, auth).await?;
        let requirements_error = self.write_tree(&dir, &commit).await?;
        staged.sync = ProjectSync {
            commit: Some(commit),
            synced_at: Some(Utc::now()),
            error: None,
            requirements_error,
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

    /// Fetches a git project and resolves its ref again; a commit reached for the first time
    /// gets its tree (with its requirements installed). Then prunes the project's trees no run
    /// holds. Returns the project's new sync state: on failure `error` says why and the
    /// previous tree stays in place. Syncs of one project never overlap. `auth` is what its
    /// credential holds.
    pub async fn sync(&self, project: &Project, auth: &GitAuth) -> ProjectSync {
        let ProjectSource::Git { url, git_ref, .. } = &project.source else {
            return ProjectSync {
                error: Some("only git projects can be synced".into()),
                ..project.sync.clone()
            };
        };
        let lock = self.lock(project.id);
        let _held = lock.lock().await;
        let dir = self.checkout_dir(project.id);
        let synced = match self.checkout(&dir, url, git_ref.as_deref(), auth).await {
            Ok(commit) => self.tree_of_sync(project, &dir, commit).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(sync) => {
                if let Some(current) = &sync.commit {
                    self.prune(project.id, current).await;
                }
                sync
            }
            Err(e) => ProjectSync {
                // Runs go on using the last good commit's tree.
                commit: project.sync.commit.clone(),
                synced_at: Some(Utc::now()),
                error: Some(e.0),
                requirements_error: project.sync.requirements_error.clone(),
            },
        }
    }

    /// The sync state once `commit` has its tree: written now when it is new, kept as it is
    /// (with what its requirements reported then) when an earlier sync wrote it.
    async fn tree_of_sync(
        &self,
        project: &Project,
        dir: &Path,
        commit: String,
    ) -> Result<ProjectSync, SyncError> {
        let tree = commit_tree(&self.projects_dir, project.id, &commit);
        let requirements_error = if tokio::fs::metadata(&tree).await.is_ok() {
            // Trees are never changed: one a run may be using is not installed into again.
            if project.sync.commit.as_deref() == Some(commit.as_str()) {
                project.sync.requirements_error.clone()
            } else {
                None
            }
        } else {
            self.write_tree(dir, &commit).await?
        };
        Ok(ProjectSync {
            commit: Some(commit),
            synced_at: Some(Utc::now()),
            error: None,
            requirements_error,
        })
    }

    /// Writes the files of `sha` (a full commit id of the clone in `repo`) to its tree under
    /// `repo`, with its requirements installed: into a hidden directory first, renamed into
    /// place when complete, so a tree is whole or absent. Returns what installing the
    /// requirements reported.
    async fn write_tree(&self, repo: &Path, sha: &str) -> Result<Option<String>, SyncError> {
        let commits = repo.join(COMMITS_DIR);
        let tree = commits.join(sha);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let staging = commits.join(format!(".new-{sha}-{token}"));
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| SyncError(format!("cannot create {}: {e}", staging.display())))?;
        // A private index: the clone's own is never touched, so writes of two commits (a sync
        // and a run's repair) can overlap.
        let index = repo.join(".git").join(format!("troupe-index-{token}"));
        let mut prefix = staging.clone().into_os_string();
        prefix.push("/");
        let written = async {
            self.git_env(
                Some(repo),
                "read-tree",
                &["read-tree", "--end-of-options", sha].map(OsStr::new),
                &[("GIT_INDEX_FILE", index.as_os_str())],
            )
            .await?;
            let mut prefix_arg = std::ffi::OsString::from("--prefix=");
            prefix_arg.push(&prefix);
            self.git_env(
                Some(repo),
                "checkout-index",
                &[
                    OsStr::new("checkout-index"),
                    OsStr::new("--all"),
                    OsStr::new("--force"),
                    &prefix_arg,
                ],
                &[("GIT_INDEX_FILE", index.as_os_str())],
            )
            .await
        }
        .await;
        let _ = tokio::fs::remove_file(&index).await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
        let requirements_error = self.install_requirements(&staging).await;
        if let Err(e) = tokio::fs::rename(&staging, &tree).await {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            // Someone else wrote the same commit meanwhile: theirs is as good.
            if tokio::fs::metadata(&tree).await.is_err() {
                return Err(SyncError(format!(
                    "cannot move the files of {sha} into {}: {e}",
                    tree.display()
                )));
            }
        }
        Ok(requirements_error)
    }

    /// Removes the trees of `project_id` other than `current` that no run holds, and what
    /// interrupted writes and removals left behind.
    async fn prune(&self, project_id: i64, current: &str) {
        let commits = self.checkout_dir(project_id).join(COMMITS_DIR);
        let holders = Arc::clone(&self.holders);
        let current = current.to_owned();
        let pruned = tokio::task::spawn_blocking(move || {
            prune_blocking(&commits, project_id, &current, &holders)
        })
        .await;
        match pruned {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(project = project_id, commits = ?removed, "pruned commit trees");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(project = project_id, error = %e, "could not prune commit trees")
            }
        }
    }

    fn lock(&self, project_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => Arc::clone(locks.entry(project_id).or_default()),
            // A panic while holding the map cannot leave it inconsistent (one insert).
            Err(poisoned) => Arc::clone(poisoned.into_inner().entry(project_id).or_default()),
        }
    }

    /// Brings the clone in `dir` up to date with `url` (cloning when it holds no repository
    /// yet), authenticating with `auth`, and returns the commit `git_ref` names. No files are
    /// checked out in `dir`.
    async fn checkout(
        &self,
        dir: &Path,
        url: &str,
        git_ref: Option<&str>,
        auth: &GitAuth,
    ) -> Result<String, SyncError> {
        let projects_dir = self.projects_dir.clone();
        let auth = auth.clone();
        let files = tokio::task::spawn_blocking(move || AuthFiles::write(&projects_dir, &auth))
            .await
            .map_err(|e| SyncError(format!("cannot write the credential's files: {e}")))?
            .map_err(|e| SyncError(format!("cannot write the credential's files: {e}")))?;
        let env = files.env();
        let fresh = tokio::fs::metadata(dir.join(".git")).await.is_err();
        if fresh {
            if tokio::fs::metadata(dir).await.is_ok() {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
            let cloned = self
                .git_env(
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
                    &env,
                )
                .await;
            if let Err(e) = cloned {
                let _ = tokio::fs::remove_dir_all(dir).await;
                return Err(e);
            }
        } else {
            // The URL may have changed since the clone (a secret moved to a credential).
            self.git(
                Some(dir),
                "remote set-url",
                &["remote", "set-url", "origin", "--", url].map(OsStr::new),
            )
            .await?;
            self.git_env(
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
                &env,
            )
            .await?;
            if git_ref.is_none() {
                // Follow a change of the remote's default branch.
                self.git_env(
                    Some(dir),
                    "remote set-head",
                    &["remote", "set-head", "origin", "--auto"].map(OsStr::new),
                    &env,
                )
                .await?;
            }
        }
        self.resolve(dir, git_ref, &env).await
    }

    /// The commit `git_ref` names: a branch of the remote, a tag, or a commit id; the remote's
    /// default branch when `None`.
    async fn resolve(
        &self,
        dir: &Path,
        git_ref: Option<&str>,
        env: &[(&str, &OsStr)],
    ) -> Result<String, SyncError> {
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
                .git_env(
                    Some(dir),
                    "fetch",
                    &["fetch", "--quiet", "origin", "--", r].map(OsStr::new),
                    env,
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

    /// Runs git with a clean environment, no prompts and a time limit; returns its stdout.
    async fn git(
        &self,
        cwd: Option<&Path>,
        what: &str,
        args: &[&OsStr],
    ) -> Result<String, SyncError> {
        self.git_env(cwd, what, args, &[]).await
    }

    /// [`Self::git`] with some variables added to its environment.
    async fn git_env(
        &self,
        cwd: Option<&Path>,
        what: &str,
        args: &[&OsStr],
        env: &[(&str, &OsStr)],
    ) -> Result<String, SyncError> {
        let mut cmd = Command::new(&self.git);
        // The `ext::` transport runs commands; never allow it, whatever git's defaults are.
        // No credential helper either: one configured for this user could store the token
        // the askpass script gives (`credential.helper=store` writes it in clear).
        cmd.args(["-c", "protocol.ext.allow=never", "-c", "credential.helper="])
            .args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.env_clear()
            .envs(git_env())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C")
            .envs(env.iter().copied());
        if std::env::var_os("GIT_SSH_COMMAND").is_none()
            && !env.iter().any(|(k, _)| *k == "GIT_SSH_COMMAND")
        {
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

/// The blocking part of [`ProjectSyncer::prune`]; returns the commits whose trees it removed.
/// Deciding and renaming a tree out of the way happen under the holders' lock, so a run
/// either holds a tree before it is chosen (and it stays) or finds it gone (and writes it).
fn prune_blocking(
    commits: &Path,
    project_id: i64,
    current: &str,
    holders: &Holders,
) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(commits) else {
        return Vec::new();
    };
    let mut doomed = Vec::new();
    let mut removed = Vec::new();
    {
        let held = holders.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_held = |sha: &str| held.contains_key(&(project_id, sha.to_owned()));
            if let Some(rest) = name.strip_prefix(".new-") {
                // A write in progress belongs to a sync (under the project's lock, so not
                // now) or to a run holding its commit; anything else was interrupted.
                let sha = rest.split('-').next().unwrap_or_default();
                if !is_held(sha) {
                    doomed.push(entry.path());
                }
            } else if name.starts_with(".trash-") {
                doomed.push(entry.path());
            } else if name != current && is_commit_id(&name) && !is_held(&name) {
                let trash = commits.join(format!(".trash-{}", uuid::Uuid::new_v4().simple()));
                if std::fs::rename(entry.path(), &trash).is_ok() {
                    doomed.push(trash);
                    removed.push(name);
                }
            }
        }
    }
    for dir in doomed {
        let _ = std::fs::remove_dir_all(dir);
    }
    removed
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

/// The `GIT_*` variables of the server's environment git commands get: how to reach remotes.
/// Others (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, ...) would point git at another
/// repository than the project's.
const GIT_KEPT: [&str; 2] = ["GIT_SSH_COMMAND", "GIT_SSL_CAINFO"];

/// The environment of troupe's git commands: ansible's children's, less the `GIT_*` variables
/// not in [`GIT_KEPT`].
fn git_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = troupe_ansible::child_env(None);
    env.retain(|(k, _)| {
        let k = k.to_string_lossy();
        !k.starts_with("GIT_") || GIT_KEPT.contains(&&*k)
    });
    env
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

    /// Runs the test's own git (not the syncer's) in `dir`.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().into(),
            other => panic!("git {args:?}: {other:?}"),
        }
    }

    fn commit(repo: &Path, text: &str) -> String {
        std::fs::write(repo.join("site.yml"), text).unwrap_or_else(|e| panic!("{e}"));
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", text]);
        git(repo, &["rev-parse", "HEAD"])
    }

    fn tree_names(syncer: &ProjectSyncer, id: i64) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(syncer.checkout_dir(id).join(COMMITS_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_tree_in_use_survives_syncs_and_is_pruned_once_released() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap_or_else(|e| panic!("{e}"));
        git(&repo, &["init", "-q"]);
        let a = commit(&repo, "- hosts: all # a\n");
        let syncer = ProjectSyncer::new(tmp.path().join("projects"), None);
        let url = repo.display().to_string();
        let staged = syncer
            .stage(&url, None, &GitAuth::none())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut project = Project {
            id: 1,
            name: "p".into(),
            source: ProjectSource::Git {
                url,
                git_ref: None,
                credential: None,
            },
            sync: ProjectSync::default(),
            created_at: Utc::now(),
        };
        project.sync = syncer
            .adopt(staged, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(project.sync.commit.as_deref(), Some(a.as_str()));
        assert_eq!(tree_names(&syncer, 1), vec![a.clone()]);

        // A run holds a's tree; two syncs move the project on.
        let held = syncer
            .tree_for(&project)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(held.path(), commit_tree(&syncer.projects_dir, 1, &a));
        assert_eq!(held.commit(), Some(a.as_str()));
        let b = commit(&repo, "- hosts: all # b\n");
        project.sync = syncer.sync(&project, &GitAuth::none()).await;
        assert_eq!(project.sync.commit.as_deref(), Some(b.as_str()));
        let c = commit(&repo, "- hosts: all # c\n");
        project.sync = syncer.sync(&project, &GitAuth::none()).await;
        assert_eq!(project.sync.commit.as_deref(), Some(c.as_str()));
        // b was never held: pruned; a is held: kept, unchanged.
        let mut expected = vec![a.clone(), c.clone()];
        expected.sort();
        assert_eq!(tree_names(&syncer, 1), expected);
        let text =
            std::fs::read_to_string(held.path().join("site.yml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "- hosts: all # a\n");

        // Released: the next sync removes it, even with nothing new upstream.
        drop(held);
        project.sync = syncer.sync(&project, &GitAuth::none()).await;
        assert_eq!(project.sync.error, None);
        assert_eq!(tree_names(&syncer, 1), vec![c.clone()]);

        // A run whose commit's tree was pruned since it read the project writes it again.
        let mut stale = project.clone();
        stale.sync.commit = Some(a.clone());
        let again = syncer
            .tree_for(&stale)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(again.path().join("site.yml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "- hosts: all # a\n");
        // Two holders of one tree: it stays until both are gone.
        let second = syncer
            .tree_for(&stale)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(again);
        project.sync = syncer.sync(&project, &GitAuth::none()).await;
        assert!(tree_names(&syncer, 1).contains(&a));
        drop(second);
        project.sync = syncer.sync(&project, &GitAuth::none()).await;
        assert_eq!(tree_names(&syncer, 1), vec![c]);
    }

    #[tokio::test]
    async fn a_project_never_synced_has_no_tree() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let syncer = ProjectSyncer::new(tmp.path().to_path_buf(), None);
        let project = Project {
            id: 3,
            name: "never".into(),
            source: ProjectSource::Git {
                url: "/nowhere".into(),
                git_ref: None,
                credential: None,
            },
            sync: ProjectSync {
                error: Some("boom".into()),
                ..ProjectSync::default()
            },
            created_at: Utc::now(),
        };
        let err = syncer.tree_for(&project).await.err().map(|e| e.0);
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("never synced") && e.contains("boom")),
            "{err:?}"
        );
    }

    #[test]
    fn the_environment_has_no_troupe_secrets_and_no_repository_of_the_caller() {
        let env = git_env();
        assert!(env.iter().all(|(k, _)| {
            let k = k.to_string_lossy();
            !k.starts_with("TROUPE_") && (!k.starts_with("GIT_") || GIT_KEPT.contains(&&*k))
        }));
    }
}
