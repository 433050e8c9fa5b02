//! `inventory`: the hosts of a stored inventory that match an Ansible host pattern.
//!
//! The pattern is evaluated by the real `ansible --list-hosts`, so groups, intersections
//! (`web:&prod`), exclusions (`all:!db1`), subscripts and regular expressions mean exactly what
//! they mean to ansible-playbook. The inventory is written to a private temporary directory
//! (0700, the file 0600) for the time of the call.

use super::SourceError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use troupe_core::inventory::{InventoryContent, InventoryFormat};

/// The longest `ansible --list-hosts` may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many lines of ansible's complaint an error keeps.
const MESSAGE_LINES: usize = 6;

/// `ansible` next to `ansible-playbook` (in `bin_dir`), else the first on `PATH`. Absolute, as
/// the spawner wants (see `troupe_ansible::spawn_child`).
pub(super) fn locate_ansible(bin_dir: Option<&Path>) -> Result<PathBuf, SourceError> {
    if let Some(dir) = bin_dir {
        let next_to = dir.join("ansible");
        if next_to.is_file() {
            return std::path::absolute(&next_to)
                .map_err(|e| SourceError::io(format!("resolving {}", next_to.display()), e));
        }
    }
    troupe_ansible::on_path(Path::new("ansible"))
        .and_then(|p| std::path::absolute(p).ok())
        .ok_or_else(|| SourceError::AnsibleNotFound {
            looked: match bin_dir {
                Some(dir) => format!("{}, PATH", dir.display()),
                None => "PATH".into(),
            },
        })
}

/// The hosts of `inventory` matching `pattern`, in the order ansible lists them.
pub(super) async fn list_hosts(
    ansible: &Path,
    inventory: &InventoryContent,
    pattern: &str,
) -> Result<Vec<String>, SourceError> {
    let content = inventory.clone();
    let (dir, file) = tokio::task::spawn_blocking(move || write_inventory(&content))
        .await
        .map_err(|e| SourceError::io("writing the inventory", std::io::Error::other(e)))??;
    let result = run(ansible, dir.path(), &file, pattern).await;
    // Removing the directory touches the filesystem: off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || drop(dir)).await;
    result
}

/// A private directory holding the inventory's hosts file.
fn write_inventory(
    inventory: &InventoryContent,
) -> Result<(tempfile::TempDir, PathBuf), SourceError> {
    let dir = tempfile::Builder::new()
        .prefix("troupe-discovery-")
        .tempdir()
        .map_err(|e| SourceError::io("creating a temporary directory", e))?;
    let file = dir.path().join(match inventory.format {
        InventoryFormat::Yaml => "hosts.yml",
        InventoryFormat::Ini => "hosts.ini",
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| SourceError::io(format!("creating {}", file.display()), e))?;
    f.write_all(inventory.hosts.as_bytes())
        .map_err(|e| SourceError::io(format!("writing {}", file.display()), e))?;
    Ok((dir, file))
}

async fn run(
    ansible: &Path,
    dir: &Path,
    file: &Path,
    pattern: &str,
) -> Result<Vec<String>, SourceError> {
    let mut cmd = tokio::process::Command::new(ansible);
    // `--` so that a pattern starting with `-` is a pattern, not an option.
    cmd.arg("-i")
        .arg(file)
        .arg("--list-hosts")
        .arg("--")
        .arg(pattern)
        // In the private directory: no stray ansible.cfg from troupe's working directory.
        .current_dir(dir)
        .env_clear()
        .envs(troupe_ansible::child_env(ansible.parent()))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
        // An inventory ansible cannot read is an error, not an empty list.
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(LIST_TIMEOUT, async {
        troupe_ansible::spawn_child(cmd)
            .await?
            .wait_with_output()
            .await
    })
    .await
    .map_err(|_| SourceError::Ansible {
        pattern: pattern.to_owned(),
        message: format!(
            "`ansible --list-hosts` did not answer within {}",
            humantime::format_duration(LIST_TIMEOUT)
        ),
    })?
    .map_err(|e| SourceError::io(format!("running {}", ansible.display()), e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(SourceError::Ansible {
            pattern: pattern.to_owned(),
            message: format!("({}) {}", out.status, complaint(&stderr)),
        });
    }
    parse_list_hosts(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| SourceError::Ansible {
        pattern: pattern.to_owned(),
        message: format!(
            "unexpected `--list-hosts` output; stderr: {}",
            complaint(&stderr)
        ),
    })
}

/// The part of ansible's stderr worth showing: from its first `[ERROR]` line up to the next
/// blank line (a traceback follows it), or else its first lines; at most a few lines either
/// way.
fn complaint(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let picked: Vec<&str> = match lines.iter().position(|l| l.starts_with("[ERROR]")) {
        Some(first) => lines[first..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .copied()
            .collect(),
        None => lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .copied()
            .collect(),
    };
    picked
        .iter()
        .take(MESSAGE_LINES)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads `  hosts (N):` and the N names under it; `None` when the output is not that.
pub(super) fn parse_list_hosts(stdout: &str) -> Option<Vec<String>> {
    let mut lines = stdout.lines();
    let count: usize = lines.find_map(|l| {
        l.trim()
            .strip_prefix("hosts (")?
            .strip_suffix("):")?
            .parse()
            .ok()
    })?;
    let hosts: Vec<String> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    (hosts.len() == count).then_some(hosts)
}
