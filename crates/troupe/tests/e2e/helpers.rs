//! What the feature modules share beyond `troupe-testkit`: the binary under test, the
//! defaults every end-to-end server gets, and fixtures more than one module needs.

pub use troupe_testkit::fixtures::*;
pub use troupe_testkit::procs::*;
pub use troupe_testkit::wait::*;
pub use troupe_testkit::{Server, ServerOpts, TOKEN};

use anyhow::Context;
use std::path::{Path, PathBuf};

/// A playbook that greets each host with one debug task.
pub const HELLO: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "hello from {{ inventory_hostname }}"
"#;

/// The `troupe` binary of this build.
pub fn troupe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

/// A server with the end-to-end defaults.
pub fn serve() -> anyhow::Result<Server> {
    serve_with(ServerOpts::default())
}

/// A server with `opts` over the end-to-end defaults: troupe's own debug log (quoted when a
/// test fails) and forced cancels that escalate after 2 s instead of 5, so cancel and
/// shutdown tests do not wait. `opts.extra_env` comes after these, so it can override them.
pub fn serve_with(opts: ServerOpts) -> anyhow::Result<Server> {
    let mut env = vec![
        ("TROUPE_CANCEL_INTERRUPT_S".to_owned(), "2".to_owned()),
        ("TROUPE_CANCEL_TERMINATE_S".to_owned(), "2".to_owned()),
    ];
    env.extend(opts.extra_env);
    Server::start(
        Path::new(troupe_bin()),
        ServerOpts {
            log_filter: "info,troupe=debug".to_owned(),
            extra_env: env,
            ..opts
        },
    )
}

/// Options that register `dir` as a project on start (`serve --project`).
pub fn with_project(dir: &Path) -> ServerOpts {
    ServerOpts {
        extra_args: vec!["--project".into(), dir.display().to_string()],
        ..Default::default()
    }
}

/// The name `serve --project` gives a project: its directory's.
pub fn project_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A project directory with a name troupe accepts (temporary directories start with a dot).
pub struct Proj {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Proj {
    /// The project's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// A [`Proj`] holding `files` (name, text).
pub fn named_project(files: &[(&str, &str)]) -> anyhow::Result<Proj> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp
        .path()
        .join(format!("proj{}", uuid::Uuid::new_v4().simple()));
    write_files(&dir, files)?;
    Ok(Proj { _tmp: tmp, dir })
}

/// `psql` against `url` (the test server's superuser URL or a database of it); the trimmed
/// output of `sql`.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("psql")
        .args([url, "-qtAc", sql])
        .output()
        .context("running psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Runs git in `dir` as a test's repository owner (name, email, `main` as the first branch,
/// any directory trusted); its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        // The SSH test gives the repositories to the login user.
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .output()
        .context("running git")?;
    if !out.status.success() {
        anyhow::bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
