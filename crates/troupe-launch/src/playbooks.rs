//! Finding playbooks inside a project, never outside it.

use std::path::{Path, PathBuf};
pub use troupe_ansible::PlaybookError;
use troupe_core::project::{Project, ProjectSource};

/// The directory a project's playbooks are in: its own for `dir` projects; for git projects
/// the tree of the commit its last successful sync recorded ([`commit_tree`]), or the
/// repository's directory when it has none yet (nothing is found there).
pub fn project_root(project: &Project, projects_dir: &Path) -> PathBuf {
    match &project.source {
        ProjectSource::Dir { path } => PathBuf::from(path),
        ProjectSource::Git { .. } => match project.sync.commit.as_deref() {
            Some(sha) if is_commit_id(sha) => commit_tree(projects_dir, project.id, sha),
            _ => repo_dir(projects_dir, project.id),
        },
    }
}

/// Where a git project's clone lives (its `.git`; no files are checked out there).
pub fn repo_dir(projects_dir: &Path, project_id: i64) -> PathBuf {
    projects_dir.join(project_id.to_string())
}

/// The directory holding the files of one commit of a git project: created when a sync
/// reaches the commit, never changed afterwards, removed once no run uses it and it is no
/// longer the project's current commit. Callers pass a full commit id ([`is_commit_id`]).
pub fn commit_tree(projects_dir: &Path, project_id: i64, sha: &str) -> PathBuf {
    repo_dir(projects_dir, project_id)
        .join(COMMITS_DIR)
        .join(sha)
}

/// The directory under a git project's [`repo_dir`] that holds its [`commit_tree`]s.
pub const COMMITS_DIR: &str = "commits";

/// True for a full commit id as git prints it (40 or 64 lowercase hex digits): the only
/// names a [`commit_tree`] may have, so a path can never leave the project.
pub fn is_commit_id(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Resolves `playbook` inside `project_dir`, following symlinks, and refuses anything that
/// ends up outside the project. Returns the canonical path.
pub async fn resolve_playbook(
    project_dir: &Path,
    playbook: &str,
) -> Result<PathBuf, PlaybookError> {
    // One hand-over to a blocking thread for the three lookups, not one each.
    let (dir, name) = (project_dir.to_path_buf(), playbook.to_owned());
    tokio::task::spawn_blocking(move || troupe_ansible::resolve_playbook_blocking(&dir, &name))
        .await
        .unwrap_or_else(|_| Err(PlaybookError::ProjectDir(project_dir.display().to_string())))
}

/// Directories never searched for playbooks: they hold roles, variables or tooling.
const SKIP_DIRS: &[&str] = &[
    "roles",
    "group_vars",
    "host_vars",
    "collections",
    "library",
    "filter_plugins",
    "module_utils",
    "templates",
    "files",
    "vars",
    "tasks",
    "handlers",
    "defaults",
    "meta",
    "node_modules",
    "venv",
];
const MAX_DEPTH: usize = 4;
const MAX_FILES: usize = 5000;
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Lists the playbooks in a project: `.yml`/`.yaml` files (up to four directories deep, hidden
/// and role directories skipped) whose top level is a list of plays. Paths are relative,
/// sorted. Blocking: call it from a blocking thread.
pub fn list_playbooks(project_dir: &Path) -> std::io::Result<Vec<String>> {
    let root = std::fs::canonicalize(project_dir)?;
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if ft.is_dir() {
                if depth + 1 < MAX_DEPTH && !SKIP_DIRS.contains(&name.as_ref()) {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !(name.ends_with(".yml") || name.ends_with(".yaml")) {
                continue;
            }
            seen += 1;
            if seen > MAX_FILES {
                break;
            }
            // Symlinks that leave the project are not listed.
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if !real.starts_with(&root) || !is_playbook_file(&real) {
                continue;
            }
            if let Ok(rel) = path.strip_prefix(&root) {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_playbook_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    is_playbook_text(&text)
}

/// True when YAML text is a list of plays (each a mapping with `hosts` or an import).
pub fn is_playbook_text(text: &str) -> bool {
    let Ok(serde_json::Value::Array(items)) = serde_saphyr::from_str::<serde_json::Value>(text)
    else {
        return false;
    };
    !items.is_empty()
        && items.iter().all(|item| {
            item.as_object().is_some_and(|m| {
                [
                    "hosts",
                    "import_playbook",
                    "ansible.builtin.import_playbook",
                ]
                .iter()
                .any(|k| m.contains_key(*k))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_projects_run_from_their_commit_tree() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let mut project = Project {
            id: 7,
            name: "p".into(),
            source: ProjectSource::Git {
                url: "https://example.com/r.git".into(),
                git_ref: None,
                credential: None,
            },
            sync: Default::default(),
            created_at: Default::default(),
        };
        let dir = Path::new("/data/projects");
        assert_eq!(project_root(&project, dir), dir.join("7"));
        project.sync.commit = Some(sha.into());
        assert_eq!(
            project_root(&project, dir),
            dir.join("7").join("commits").join(sha)
        );
        project.sync.commit = Some("../../etc".into());
        assert_eq!(project_root(&project, dir), dir.join("7"));
        assert!(!is_commit_id("ABCDEF0123456789abcdef0123456789abcdef01"));
        assert!(!is_commit_id("abc"));
    }

    #[test]
    fn recognises_playbooks() {
        assert!(is_playbook_text("- hosts: all\n  tasks: []\n"));
        assert!(is_playbook_text("- import_playbook: other.yml\n"));
        assert!(!is_playbook_text("- name: a task\n  debug: msg=x\n"));
        assert!(!is_playbook_text("all:\n  hosts:\n"));
        assert!(!is_playbook_text("[: bad"));
    }

    #[tokio::test]
    async fn resolution_stays_inside_the_project() -> std::io::Result<()> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("evil.yml"), "- hosts: all\n")?;
        let project = tempfile::tempdir()?;
        let p = project.path();
        std::fs::write(p.join("site.yml"), "- hosts: all\n  tasks: []\n")?;
        std::fs::create_dir_all(p.join("sub"))?;
        std::fs::write(p.join("sub/deploy.yaml"), "- hosts: web\n")?;
        std::fs::create_dir_all(p.join("roles/r/tasks"))?;
        std::fs::write(p.join("roles/r/tasks/main.yml"), "- hosts: x\n")?;
        std::fs::write(p.join("vars.yml"), "a: 1\n")?;
        std::os::unix::fs::symlink(outside.path().join("evil.yml"), p.join("link.yml"))?;
        std::os::unix::fs::symlink(p.join("site.yml"), p.join("alias.yml"))?;

        assert!(resolve_playbook(p, "site.yml").await.is_ok());
        assert!(resolve_playbook(p, "alias.yml").await.is_ok());
        assert!(matches!(
            resolve_playbook(p, "link.yml").await,
            Err(PlaybookError::Escapes(_))
        ));
        assert!(matches!(
            resolve_playbook(p, "nope.yml").await,
            Err(PlaybookError::Missing(_))
        ));
        assert!(matches!(
            resolve_playbook(p, "../x.yml").await,
            Err(PlaybookError::Invalid(_))
        ));
        std::fs::create_dir_all(p.join("dir.yml"))?;
        assert!(matches!(
            resolve_playbook(p, "dir.yml").await,
            Err(PlaybookError::NotAFile(_))
        ));

        assert_eq!(
            list_playbooks(p)?,
            vec!["alias.yml", "site.yml", "sub/deploy.yaml"]
        );
        Ok(())
    }
}
