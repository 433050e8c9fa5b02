//! Finding `ansible-playbook`, or bootstrapping a venv with a pinned ansible-core.

use crate::AnsibleError;
use crate::process::child_env;
use crate::spawner::spawn_child;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The ansible-core version troupe installs when it bootstraps its own venv.
pub const PINNED_ANSIBLE_CORE: &str = "2.19.14";
/// The `cryptography` installed with it: ansible-core leaves it open, and 51 warns on the DSA
/// import every ansible-core 2.19 makes, a line in every run's output.
pub const CRYPTOGRAPHY_REQUIREMENT: &str = "cryptography<51";

/// How long `ansible-playbook --version` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A working `ansible-playbook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ansible {
    /// The `ansible-playbook` executable.
    pub playbook: PathBuf,
    /// ansible-core's version, e.g. `2.19.14`.
    pub version: String,
    /// The Python interpreter ansible runs on, when `--version` tells.
    pub python: Option<PathBuf>,
    /// Whether `playbook` is a Python script (ansible-core's console script), so that troupe
    /// can start ansible's CLI itself on `python`, its callback attached in-process (see
    /// `plugin/troupe_boot.py`). Otherwise (a wrapper such as `uv run`, a synthetic producer)
    /// troupe executes `playbook` and enables its callback through ansible's configuration.
    pub python_script: bool,
}

impl Ansible {
    /// Finds `ansible-playbook`: the configured path (which must work if given; a bare name is
    /// looked up on `PATH`), then `<data_dir>/venv/bin/ansible-playbook`, then the first one on
    /// `PATH`. The path found is made absolute.
    pub async fn locate(
        configured: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Ansible, AnsibleError> {
        if let Some(path) = configured {
            if path.components().count() == 1 && !path.has_root() {
                let found = on_path(path).ok_or_else(|| AnsibleError::NotAnsible {
                    path: path.to_path_buf(),
                    reason: "no such executable on PATH".into(),
                })?;
                return probe(&found).await;
            }
            return probe(path).await;
        }
        let venv = venv_playbook(data_dir);
        if tokio::fs::metadata(&venv).await.is_ok() {
            return probe(&venv).await;
        }
        if let Some(found) = on_path(Path::new("ansible-playbook")) {
            return probe(&found).await;
        }
        Err(AnsibleError::NotFound {
            looked: format!("{}, PATH", venv.display()),
        })
    }

    /// Makes sure `<data_dir>/venv` holds ansible-core [`PINNED_ANSIBLE_CORE`]: reuses the venv if
    /// it already has that version, otherwise runs `python3 -m venv` (when there is no venv yet)
    /// and `pip install ansible-core==<pinned>`. Each line the tools print is passed to
    /// `progress`.
    pub async fn bootstrap(
        data_dir: &Path,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Ansible, AnsibleError> {
        let venv = data_dir.join("venv");
        let playbook = venv_playbook(data_dir);
        if tokio::fs::metadata(&playbook).await.is_ok()
            && let Ok(found) = probe(&playbook).await
            && found.version == PINNED_ANSIBLE_CORE
        {
            progress(&format!(
                "reusing {} (ansible-core {})",
                venv.display(),
                found.version
            ));
            return Ok(found);
        }
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|e| AnsibleError::io(format!("creating {}", data_dir.display()), e))?;
        let python = venv.join("bin").join("python");
        if tokio::fs::metadata(&python).await.is_err() {
            progress(&format!("creating a Python venv in {}", venv.display()));
            let mut cmd = Command::new("python3");
            cmd.arg("-m").arg("venv").arg(&venv);
            run_reporting(cmd, progress).await?;
        }
        progress(&format!("installing ansible-core=={PINNED_ANSIBLE_CORE}"));
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            &format!("ansible-core=={PINNED_ANSIBLE_CORE}"),
            CRYPTOGRAPHY_REQUIREMENT,
        ]);
        run_reporting(cmd, progress).await?;
        let found = probe(&playbook).await?;
        progress(&format!(
            "ansible-core {} ready at {}",
            found.version,
            found.playbook.display()
        ));
        Ok(found)
    }

    /// The interpreter troupe starts ansible's CLI on in-process, when it can (see
    /// [`Ansible::python_script`]).
    pub fn boot_python(&self) -> Option<&Path> {
        self.python.as_deref().filter(|_| self.python_script)
    }

    /// The directory holding `ansible-playbook` (put first on the child's `PATH`).
    pub fn bin_dir(&self) -> Option<&Path> {
        self.playbook.parent()
    }
}

fn venv_playbook(data_dir: &Path) -> PathBuf {
    data_dir.join("venv").join("bin").join("ansible-playbook")
}

/// The first executable `name` in a directory of troupe's `PATH`.
///
/// Children are started by that path: std spawns a program named without a `/` under a changed
/// `PATH` with fork instead of posix_spawn (see `crate::spawner`).
pub fn on_path(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `<path> --version` and reads ansible-core's and Python's versions from it.
async fn probe(path: &Path) -> Result<Ansible, AnsibleError> {
    // Absolute: runs start in their project's directory, and std spawns a program named without
    // a `/` under a changed PATH with fork instead of posix_spawn (see `crate::spawner`).
    let path = &std::path::absolute(path)
        .map_err(|e| AnsibleError::io(format!("resolving {}", path.display()), e))?;
    let not_ansible = |reason: String| AnsibleError::NotAnsible {
        path: path.to_path_buf(),
        reason,
    };
    let mut cmd = Command::new(path);
    cmd.arg("--version")
        .env_clear()
        .envs(child_env(path.parent()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PROBE_TIMEOUT, async {
        spawn_child(cmd).await?.wait_with_output().await
    })
    .await
    .map_err(|_| not_ansible("`--version` did not answer within 60s".into()))?
    .map_err(|e| not_ansible(e.to_string()))?;
    if !out.status.success() {
        return Err(not_ansible(format!(
            "`--version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (version, python) = parse_version_output(&text)
        .ok_or_else(|| not_ansible(format!("unexpected `--version` output: {text:?}")))?;
    Ok(Ansible {
        python_script: is_python_script(path).await,
        playbook: path.to_path_buf(),
        version,
        python,
    })
}

/// Whether the file starts with a `#!` line naming a Python interpreter.
async fn is_python_script(path: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(256);
    let Ok(file) = tokio::fs::File::open(path).await else {
        return false;
    };
    if file.take(256).read_to_end(&mut head).await.is_err() {
        return false;
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    first.starts_with(b"#!") && first.windows(6).any(|w| w == b"python")
}

/// Reads `ansible-playbook [core 2.19.14]` and `python version = ... (/path/python3)`.
fn parse_version_output(text: &str) -> Option<(String, Option<PathBuf>)> {
    let first = text.lines().next()?;
    let start = first.find("[core ")? + "[core ".len();
    let end = first[start..].find(']')? + start;
    let version = first[start..end].trim().to_owned();
    if version.is_empty() {
        return None;
    }
    let python = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("python version ="))
        .and_then(|l| {
            let open = l.rfind('(')?;
            let close = l.rfind(')')?;
            (close > open + 1).then(|| PathBuf::from(&l[open + 1..close]))
        });
    Some((version, python))
}

/// Runs a bootstrap step, passing each line of its stdout and stderr to `progress`.
async fn run_reporting(
    mut cmd: Command,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), AnsibleError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let mut child = spawn_child(cmd)
        .await
        .map_err(|e| AnsibleError::Bootstrap(format!("cannot start {shown}: {e}")))?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(AnsibleError::Bootstrap("no pipes to the child".into()));
    };
    let mut out = BufReader::new(out).lines();
    let mut err = BufReader::new(err).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut last_err = String::new();
    while out_open || err_open {
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => progress(&l),
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) => { progress(&l); last_err = l; }
                _ => err_open = false,
            },
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| AnsibleError::Bootstrap(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(AnsibleError::Bootstrap(format!(
            "{shown} failed ({status}): {last_err}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_output() {
        let text = "ansible-playbook [core 2.19.14]\n  config file = None\n  python version = 3.11.2 (main, Mar 13 2023, 12:18:29) [GCC 12.2.0] (/root/venv/bin/python3)\n  jinja version = 3.1.6\n";
        let (v, py) = parse_version_output(text).expect("parses");
        assert_eq!(v, "2.19.14");
        assert_eq!(py, Some(PathBuf::from("/root/venv/bin/python3")));
        assert!(parse_version_output("something else\n").is_none());
        assert_eq!(
            parse_version_output("ansible-playbook [core 2.16.0]\n").map(|(v, p)| (v, p.is_none())),
            Some(("2.16.0".to_owned(), true))
        );
    }
}
