//! Starting and stopping `troupe serve`.

use crate::api::Api;
use crate::log::Log;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start a server. `Default` gives a fresh data directory in a temporary directory,
/// SQLite, four slots and the harness's [`TOKEN`](crate::TOKEN).
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// Data directory (`--data-dir`); a fresh one that goes away with the server when `None`.
    /// A relative path is relative to `cwd`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`; SQLite in the data directory when `None`.
    pub database_url: Option<String>,
    /// `--max-concurrent-runs`.
    pub max_concurrent_runs: usize,
    /// `--ansible-playbook`; the one on `PATH` when `None`.
    pub ansible_playbook: Option<PathBuf>,
    /// The admin token the server creates on first start (`TROUPE_ADMIN_TOKEN`) and the
    /// client sends.
    pub token: String,
    /// `TROUPE_LOG`: what the server logs.
    pub log_filter: String,
    /// Lines of the log kept for failure messages: all when `None`, else the last ones.
    pub log_lines: Option<usize>,
    /// More environment variables for the server, set after the harness's own (so they win).
    pub extra_env: Vec<(String, String)>,
    /// Working directory of the server.
    pub cwd: Option<PathBuf>,
    /// More `serve` arguments (e.g. `--rules FILE`).
    pub extra_args: Vec<String>,
    /// How long the server may take to listen.
    pub ready_timeout: Duration,
    /// The HTTP client to talk to it with (e.g. with a larger connection pool).
    pub http: Option<reqwest::Client>,
    /// The address to listen on; a free port of 127.0.0.1 when `None`. A fixed one lets a
    /// restarted server keep its URL (for remote workers).
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS with this certificate and key (`TROUPE_TLS_CERT_FILE`,
    /// `TROUPE_TLS_KEY_FILE`); the [`Api`] then talks `https://` and, unless `http` is given,
    /// trusts the certificate's CA.
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        Self {
            data_dir: None,
            database_url: None,
            max_concurrent_runs: 4,
            ansible_playbook: None,
            token: crate::TOKEN.to_owned(),
            log_filter: "info".to_owned(),
            log_lines: None,
            extra_env: Vec::new(),
            cwd: None,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            http: None,
            listen: None,
            tls: None,
        }
    }
}

/// A running `troupe serve` (or a command that becomes one, like `troupe loop`), and the
/// [`Api`] to talk to it, which it dereferences to: `server.get(...)` reads as what it is.
/// Dropping it kills the process.
pub struct Server {
    child: Child,
    api: Api,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory (as given: relative to its working directory when relative).
    pub data_dir: PathBuf,
    log: Log,
    // Holds the address file and, when none was given, the data directory.
    _scratch: tempfile::TempDir,
}

impl Server {
    /// Starts `troupe serve` from the binary `troupe` and waits until it listens.
    pub fn start(troupe: &Path, opts: ServerOpts) -> anyhow::Result<Server> {
        let scratch = tempfile::tempdir().context("creating the server's scratch directory")?;
        let data_dir = match &opts.data_dir {
            Some(d) => d.clone(),
            None => scratch.path().join("data"),
        };
        let addr_file = addr_file(&scratch);
        let mut cmd = Command::new(troupe);
        let listen = opts
            .listen
            .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        cmd.args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&data_dir)
            .arg("--max-concurrent-runs")
            .arg(opts.max_concurrent_runs.to_string())
            .arg("--addr-file")
            .arg(&addr_file)
            .env("TROUPE_LOG", &opts.log_filter)
            .env_remove("TROUPE_DATABASE_URL");
        if let Some(url) = &opts.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(p) = &opts.ansible_playbook {
            cmd.arg("--ansible-playbook").arg(p);
        }
        cmd.args(&opts.extra_args);
        if let Some(tls) = &opts.tls {
            cmd.env("TROUPE_TLS_CERT_FILE", &tls.cert_file)
                .env("TROUPE_TLS_KEY_FILE", &tls.key_file);
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        Self::spawn(cmd, data_dir, scratch, &opts)
    }

    /// Starts a command that ends up serving (e.g. `troupe loop`, which execs `troupe serve`)
    /// and waits until it listens. The harness adds the token, the address file (as
    /// `TROUPE_ADDR_FILE`, which `serve` reads like `--addr-file`) and the pipes; `opts` gives
    /// the token, the log's length, the client and the timeout.
    pub fn start_command(
        mut cmd: Command,
        data_dir: PathBuf,
        opts: &ServerOpts,
    ) -> anyhow::Result<Server> {
        let scratch = tempfile::tempdir().context("creating the server's scratch directory")?;
        cmd.env("TROUPE_ADDR_FILE", addr_file(&scratch));
        Self::spawn(cmd, data_dir, scratch, opts)
    }

    fn spawn(
        mut cmd: Command,
        data_dir: PathBuf,
        scratch: tempfile::TempDir,
        opts: &ServerOpts,
    ) -> anyhow::Result<Server> {
        // The environment of the machine must not configure the server under test.
        cmd.env("TROUPE_ADMIN_TOKEN", &opts.token)
            .env_remove("TROUPE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let log = Log::new(opts.log_lines);
        let reader = child
            .stderr
            .take()
            .context("the server's stderr was not piped")
            .and_then(|pipe| Ok(log.follow(pipe)?));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let addr = match wait_listening(&mut child, &addr_file(&scratch), opts.ready_timeout) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                // Its last words are in the pipe: give the reader a moment to take them.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                bail!("{e:#}\n--- server log ---\n{}", log.text());
            }
        };
        let http = match (opts.http.clone(), &opts.tls) {
            (Some(http), _) => Ok(http),
            (None, Some(tls)) => troupe_http::builder(Some(&tls.ca_file))
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(b.build()?)),
            (None, None) => troupe_http::client().map_err(anyhow::Error::from),
        };
        let http = match http {
            Ok(http) => http,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        Ok(Server {
            child,
            api: Api::new(
                format!("{scheme}://{addr}"),
                opts.token.clone(),
                http,
                log.clone(),
            ),
            addr,
            data_dir,
            log,
            _scratch: scratch,
        })
    }

    /// The client for this server.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has logged so far (or its tail, see [`ServerOpts::log_lines`]).
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// SIGTERM, then waits for the server to exit, however long its shutdown takes.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then waits up to `grace` for the server to exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        // Already gone is as good as stopped.
        let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
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

    /// The server's exit status if it has exited (a crash the caller did not cause).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash would, and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, signal)?;
        Ok(())
    }
}

impl Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

fn addr_file(scratch: &tempfile::TempDir) -> PathBuf {
    scratch.path().join("serve.addr")
}

/// Waits until the server has written its address, failing early if it exits first.
fn wait_listening(
    child: &mut Child,
    addr_file: &Path,
    timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        // The server renames the file into place, so what is there is whole.
        if let Ok(text) = std::fs::read_to_string(addr_file) {
            return text
                .trim()
                .parse()
                .with_context(|| format!("{} holds {text:?}", addr_file.display()));
        }
        if let Some(status) = child.try_wait()? {
            bail!("troupe serve exited ({status}) before listening");
        }
        if Instant::now() > deadline {
            bail!(
                "troupe serve did not write its address to {} within {timeout:?}",
                addr_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
