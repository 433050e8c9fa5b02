//! Starting and stopping `troupe worker`, a remote worker of a test server.

use crate::log::Log;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `troupe worker`. Dropping it kills the process.
pub struct RemoteWorker {
    child: Child,
    log: Log,
    /// Its data directory (node id, outbox, bundles, run directories).
    pub data_dir: PathBuf,
}

impl RemoteWorker {
    /// Starts `troupe worker` against `server` with a worker `token`, `labels` and
    /// `capacity`, keeping its state in `data_dir` (give the same one to restart it as the
    /// same node). `extra_env` is set last.
    pub fn start(
        troupe: &Path,
        server: &str,
        token: &str,
        labels: &[&str],
        capacity: usize,
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<RemoteWorker> {
        let mut cmd = Command::new(troupe);
        cmd.args(["worker", "--server", server, "--capacity"])
            .arg(capacity.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("TROUPE_TOKEN", token)
            .env("TROUPE_LOG", "info,troupe=debug")
            .env_remove("TROUPE_SERVER")
            .env_remove("TROUPE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !labels.is_empty() {
            cmd.arg("--labels").arg(labels.join(","));
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("starting troupe worker")?;
        let log = Log::new(None);
        if let Some(pipe) = child.stderr.take() {
            log.follow(pipe)?;
        }
        Ok(RemoteWorker {
            child,
            log,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash would, and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for it to exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        Ok(())
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A port of 127.0.0.1 free now (for a server that must keep its address across restarts).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
