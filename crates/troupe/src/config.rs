//! Configuration, layered: built-in defaults, then a TOML file (`--config`), then `TROUPE_*`
//! environment variables, then command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `troupe serve` (and the CLI, for finding the server) reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where troupe keeps its database, venv, tokens and per-run directories.
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL; SQLite in the data dir when absent.
    pub database_url: Option<String>,
    /// A specific ansible-playbook to run.
    pub ansible_playbook: Option<PathBuf>,
    /// Runs executed at once; the rest wait in FIFO order. Job unit actions do not count
    /// (see `max_concurrent_job_runs`).
    pub max_concurrent_runs: usize,
    /// Job unit actions (the runs of `/jobs/.../actions`) executed at once, apart from
    /// `max_concurrent_runs`: a job's fan-out is never held back by other runs, nor by the run
    /// that triggered it. Unset: no limit.
    pub max_concurrent_job_runs: Option<usize>,
    /// What a unit's relative `data_dir` is relative to; relative data_dirs cannot leave it.
    /// Unset: a unit's data_dir must be absolute.
    pub unit_data_dir_base: Option<PathBuf>,
    /// Seconds a worker's claim on a run lasts without renewal.
    pub lease_s: u64,
    /// Seconds an event source's lease lasts without renewal (replicas sharing a PostgreSQL
    /// store run each source on the one holding its lease; when it dies, another takes the
    /// source over within this time, plus a third of it).
    pub source_lease_s: u64,
    /// Seconds runs in flight get to finish on shutdown before they are canceled.
    pub shutdown_grace_s: u64,
    /// Seconds between SIGINT and SIGTERM on a forced cancel.
    pub cancel_interrupt_s: u64,
    /// Seconds between SIGTERM and SIGKILL on a forced cancel.
    pub cancel_terminate_s: u64,
    /// Largest result kept in one event; bigger ones are truncated with a marker.
    pub max_result_bytes: usize,
    /// Largest stdout (and stderr) kept per run.
    pub max_output_bytes: usize,
    /// Largest event kept whole (its stdout plus its `event_data` text); a bigger one is
    /// stored cut to this size, with markers. See docs/security.md, "Limits".
    pub max_event_bytes: usize,
    /// Largest accepted HTTP request body (but the worker protocol's); 413 beyond.
    pub max_body_bytes: usize,
    /// Largest accepted body on the worker protocol (`/api/v1/worker/...`): a remote worker's
    /// batches of events and output. Must be at least twice `max_event_bytes`.
    pub max_worker_body_bytes: usize,
    /// Live streams (WebSocket or SSE) one token may have open at once; 429 beyond.
    pub max_streams_per_token: usize,
    /// Events a second each webhook source accepts, unless its rules say otherwise
    /// (`rate: {per_second, burst}`); 0 for no limit. 429 beyond, the event not stored.
    pub webhook_rate_per_second: f64,
    /// Events a webhook source accepts at once after a quiet time (the token bucket's size).
    pub webhook_rate_burst: u32,
    /// Milliseconds between looks for queued runs nobody announced (shared stores).
    pub poll_interval_ms: u64,
    /// Longest time (ms) a captured event waits in memory before it is stored and streamed;
    /// busy runs flush sooner, every 500 events.
    pub event_flush_ms: u64,
    /// Messages a live stream subscriber may have queued before it is cut off (with a cursor
    /// to resume from) for not keeping up.
    pub stream_buffer_events: usize,
    /// Log filter (tracing's `EnvFilter` syntax).
    pub log: String,
    /// CA certificates (PEM) trusted besides the system's for what troupe sends over HTTPS:
    /// flow `http` and `slack` steps and handlers, and discovery.
    pub ca_file: Option<PathBuf>,
    /// The file of the key that seals secrets at rest (credentials, secret flow inputs):
    /// `<data_dir>/secret.key` when absent, made (0600) on first start. Never in the database.
    pub secret_key_file: Option<PathBuf>,
    /// The server's certificate chain (PEM, the server's own certificate first). With
    /// `tls_key_file`, `serve` listens in HTTPS only; one without the other is an error.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`'s certificate; readable by its owner only.
    pub tls_key_file: Option<PathBuf>,
    /// Labels runs may require of this server's embedded workers.
    pub worker_labels: Vec<String>,
    /// A regular expression of extra-var names (at any depth) whose values are secret: sealed
    /// in the store, redacted from what runs produce, masked in event records.
    pub redact_vars: String,
    /// How long the audit log keeps its entries (`90d`, `12h`...; pruned hourly); `off` keeps
    /// them forever.
    pub audit_retention: String,
    /// How long finished runs are kept (`90d`, `12h`...), with their events and output;
    /// `off` keeps them forever.
    pub run_retention: String,
    /// Each project keeps at most its newest this many runs; older finished ones are pruned.
    /// Unset: no limit.
    pub keep_runs_per_project: Option<u32>,
    /// Seconds between two retention passes.
    pub retention_interval_s: u64,
    /// Runs pruned per batch (each batch a few short writes, with a pause between batches).
    pub retention_batch: u32,
    /// A Pansible configuration file (`pansible.yml`), read as a layer between this file and
    /// the `TROUPE_*` variables: its `port` sets `listen`, its `hosts_per_task` sets
    /// `pansible_hosts_per_task` (`PANSIBLE_PORT` and `PANSIBLE_HOSTS_PER_TASK` over it). See
    /// docs/pansible.md.
    pub pansible_config: Option<PathBuf>,
    /// Jobs started through Pansible's API are split into slices of at most this many hosts,
    /// one ansible-playbook each, run in parallel. Unset: a job is one ansible-playbook.
    pub pansible_hosts_per_task: Option<u32>,
    /// An OTLP/HTTP collector (`http://host:4318`) to export each run's life to as a trace;
    /// no traces when unset. `--otlp-endpoint` and `OTEL_EXPORTER_OTLP_ENDPOINT` set it too.
    pub otlp_endpoint: Option<String>,
    /// How runs that do not choose start ansible-playbook: `warm` (the default: forked from a
    /// parent that imported ansible once per configuration; exec when a configuration cannot
    /// be shared) or `exec` (a new process each). See docs/architecture.md, "The warm
    /// launcher".
    pub launcher: troupe_core::run::LauncherKind,
    /// Warm parents kept at most (one per configuration); the least recently used is retired.
    pub warm_parents_max: usize,
    /// A warm parent whose resident memory grows past this many MiB is replaced.
    pub warm_parent_max_rss_mib: u64,
    /// What `pansible_config` holds that troupe has no use for (reported at start).
    #[serde(skip)]
    pub pansible_ignored: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".troupe"),
            database_url: None,
            ansible_playbook: None,
            max_concurrent_runs: (cores * 2).max(2),
            max_concurrent_job_runs: None,
            unit_data_dir_base: None,
            lease_s: 30,
            source_lease_s: 15,
            shutdown_grace_s: 30,
            cancel_interrupt_s: 5,
            cancel_terminate_s: 5,
            max_result_bytes: 256 * 1024,
            max_output_bytes: 64 * 1024 * 1024,
            max_event_bytes: troupe_ansible::DEFAULT_MAX_EVENT_BYTES,
            max_body_bytes: 8 * 1024 * 1024,
            max_worker_body_bytes: 64 * 1024 * 1024,
            max_streams_per_token: 64,
            webhook_rate_per_second: 100.0,
            webhook_rate_burst: 200,
            poll_interval_ms: 1000,
            stream_buffer_events: 1024,
            event_flush_ms: 20,
            log: "info".to_owned(),
            ca_file: None,
            secret_key_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            worker_labels: Vec::new(),
            redact_vars: troupe_core::redact::DEFAULT_SECRET_VARS.to_owned(),
            audit_retention: "90d".to_owned(),
            run_retention: "90d".to_owned(),
            keep_runs_per_project: None,
            retention_interval_s: 3600,
            retention_batch: troupe_store::retention::DEFAULT_BATCH,
            pansible_config: None,
            pansible_hosts_per_task: None,
            otlp_endpoint: None,
            launcher: troupe_core::run::LauncherKind::Warm,
            warm_parents_max: 4,
            warm_parent_max_rss_mib: 512,
            pansible_ignored: Vec::new(),
        }
    }
}

/// Keys `TROUPE_*` variables may set. Others (`TROUPE_TOKEN`, `TROUPE_ADMIN_TOKEN`...) are
/// read where they are used, never as configuration.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "ansible_playbook",
    "max_concurrent_runs",
    "max_concurrent_job_runs",
    "unit_data_dir_base",
    "lease_s",
    "source_lease_s",
    "shutdown_grace_s",
    "cancel_interrupt_s",
    "cancel_terminate_s",
    "max_result_bytes",
    "max_output_bytes",
    "max_event_bytes",
    "max_body_bytes",
    "max_worker_body_bytes",
    "max_streams_per_token",
    "webhook_rate_per_second",
    "webhook_rate_burst",
    "poll_interval_ms",
    "stream_buffer_events",
    "event_flush_ms",
    "log",
    "ca_file",
    "secret_key_file",
    "tls_cert_file",
    "tls_key_file",
    "worker_labels",
    "redact_vars",
    "audit_retention",
    "run_retention",
    "keep_runs_per_project",
    "retention_interval_s",
    "retention_batch",
    "pansible_config",
    "pansible_hosts_per_task",
    "otlp_endpoint",
    "launcher",
    "warm_parents_max",
    "warm_parent_max_rss_mib",
];

/// Flags that override configuration (only those given).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ansible_playbook: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pansible_config: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<troupe_core::run::LauncherKind>,
}

impl Config {
    /// Loads the layers in order; errors name the bad key.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("TROUPE_").only(ENV_KEYS);
        // A pansible.yml, wherever it is named, is the layer after troupe's own file.
        let pansible_file: Option<PathBuf> = fig
            .clone()
            .merge(env.clone())
            .merge(Serialized::defaults(overrides))
            .extract_inner("pansible_config")
            .ok();
        let mut ignored = Vec::new();
        if let Some(path) = pansible_file {
            let layer = crate::pansible::load(&path, |k| std::env::var(k).ok())?;
            ignored.clone_from(&layer.ignored);
            fig = fig.merge(Serialized::defaults(layer));
        }
        let mut cfg: Config = fig
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.pansible_ignored = ignored;
        if cfg
            .pansible_hosts_per_task
            .is_some_and(|n| !(1..=1000).contains(&n))
        {
            anyhow::bail!(
                "invalid configuration: pansible_hosts_per_task must be between 1 and 1000"
            );
        }
        // ansible-playbook runs in the project directory: every path troupe hands it (the run
        // directory under the data dir) must be absolute.
        if cfg.data_dir.is_relative() {
            let cwd = std::env::current_dir()
                .map_err(|e| anyhow::anyhow!("cannot resolve the data dir: {e}"))?;
            cfg.data_dir = cwd.join(&cfg.data_dir);
        }
        if cfg.max_concurrent_runs == 0 {
            anyhow::bail!("invalid configuration: max_concurrent_runs must be at least 1");
        }
        if cfg.max_concurrent_job_runs == Some(0) {
            anyhow::bail!(
                "invalid configuration: max_concurrent_job_runs must be at least 1 (leave it \
                 unset for no limit)"
            );
        }
        if let Some(base) = &cfg.unit_data_dir_base
            && base.is_relative()
        {
            let cwd = std::env::current_dir()
                .map_err(|e| anyhow::anyhow!("cannot resolve unit_data_dir_base: {e}"))?;
            cfg.unit_data_dir_base = Some(cwd.join(base));
        }
        if cfg.event_flush_ms == 0 || cfg.event_flush_ms > 10_000 {
            anyhow::bail!("invalid configuration: event_flush_ms must be between 1 and 10000");
        }
        if cfg.lease_s < 3 {
            anyhow::bail!("invalid configuration: lease_s must be at least 3");
        }
        if cfg.source_lease_s < 3 {
            anyhow::bail!("invalid configuration: source_lease_s must be at least 3");
        }
        cfg.check_limits()?;
        cfg.secret_names()?;
        cfg.run_retention()?;
        cfg.audit_retention()?;
        if cfg.keep_runs_per_project == Some(0) {
            anyhow::bail!(
                "invalid configuration: keep_runs_per_project must be at least 1 (leave it \
                 unset for no limit)"
            );
        }
        if cfg.retention_interval_s == 0 {
            anyhow::bail!("invalid configuration: retention_interval_s must be at least 1");
        }
        if cfg.warm_parents_max == 0 {
            anyhow::bail!("invalid configuration: warm_parents_max must be at least 1");
        }
        if cfg.retention_batch == 0 {
            anyhow::bail!("invalid configuration: retention_batch must be at least 1");
        }
        Ok(cfg)
    }

    fn check_limits(&self) -> anyhow::Result<()> {
        if self.max_event_bytes < 4096 {
            anyhow::bail!("invalid configuration: max_event_bytes must be at least 4096");
        }
        if self.max_body_bytes == 0 {
            anyhow::bail!("invalid configuration: max_body_bytes must be more than 0");
        }
        if self.max_worker_body_bytes < self.max_event_bytes.saturating_mul(2) {
            anyhow::bail!(
                "invalid configuration: max_worker_body_bytes ({}) must be at least twice \
                 max_event_bytes ({}), or a remote worker's batch could not be sent",
                self.max_worker_body_bytes,
                self.max_event_bytes
            );
        }
        if self.max_streams_per_token == 0 {
            anyhow::bail!("invalid configuration: max_streams_per_token must be at least 1");
        }
        if !self.webhook_rate_per_second.is_finite() || self.webhook_rate_per_second < 0.0 {
            anyhow::bail!(
                "invalid configuration: webhook_rate_per_second must be 0 (no limit) or more"
            );
        }
        if self.webhook_rate_burst == 0 {
            anyhow::bail!("invalid configuration: webhook_rate_burst must be at least 1");
        }
        Ok(())
    }

    /// The bounds of the warm launcher's parents.
    pub fn warm_settings(&self) -> troupe_ansible::WarmSettings {
        troupe_ansible::WarmSettings {
            max_parents: self.warm_parents_max,
            max_parent_rss_bytes: self.warm_parent_max_rss_mib.saturating_mul(1024 * 1024),
        }
    }

    /// The limits, one per line, as `troupe doctor` shows them.
    pub fn limits_summary(&self) -> Vec<(&'static str, String)> {
        let rate = if self.webhook_rate_per_second > 0.0 {
            format!(
                "{}/s, burst {} (per source; rules may set their own)",
                self.webhook_rate_per_second, self.webhook_rate_burst
            )
        } else {
            "no limit (rules may set one per source)".to_owned()
        };
        vec![
            ("max_body_bytes", self.max_body_bytes.to_string()),
            (
                "max_worker_body_bytes",
                self.max_worker_body_bytes.to_string(),
            ),
            ("max_event_bytes", self.max_event_bytes.to_string()),
            ("max_result_bytes", self.max_result_bytes.to_string()),
            ("max_output_bytes", self.max_output_bytes.to_string()),
            (
                "max_streams_per_token",
                self.max_streams_per_token.to_string(),
            ),
            ("webhook rate", rate),
        ]
    }

    /// The scheme `serve` answers in: `https` when a TLS certificate is configured.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The names of secret extra vars (`redact_vars`), compiled.
    pub fn secret_names(&self) -> anyhow::Result<troupe_core::redact::SecretNames> {
        troupe_core::redact::SecretNames::new(&self.redact_vars).map_err(|e| {
            anyhow::anyhow!("invalid configuration: redact_vars is not a regular expression: {e}")
        })
    }

    /// How long the audit log keeps its entries (`audit_retention`); `None` when forever
    /// (`off`).
    pub fn audit_retention(&self) -> anyhow::Result<Option<std::time::Duration>> {
        retention_period("audit_retention", &self.audit_retention)
    }

    /// How long finished runs are kept (`run_retention`); `None` when forever (`off`).
    pub fn run_retention(&self) -> anyhow::Result<Option<std::time::Duration>> {
        retention_period("run_retention", &self.run_retention)
    }

    /// The file the local admin token is written to.
    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    /// The file of the key secrets are sealed with: `secret_key_file`, or `secret.key` in the
    /// data dir.
    pub fn key_file(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}

/// A retention setting: a duration like `90d` or `12h`, or `off` (`None`: kept forever).
fn retention_period(setting: &str, text: &str) -> anyhow::Result<Option<std::time::Duration>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(age) if !age.is_zero() => Ok(Some(age)),
        Ok(_) => {
            anyhow::bail!("invalid configuration: {setting} must be longer than 0 (or \"off\")")
        }
        Err(e) => anyhow::bail!(
            "invalid configuration: {setting} {text:?} is not a duration like 90d or 12h, nor \"off\": {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // figment's Jail closures return its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("troupe.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nlease_s = 10\nlog = \"debug\"\n",
        )?;
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_LEASE_S", "20");
            jail.set_env("TROUPE_ADMIN_TOKEN", "not config");
            let over = Overrides {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
                ..Default::default()
            };
            let cfg = Config::load(Some(&file), &over).map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen.port(), 9100, "flag beats file");
            assert_eq!(cfg.lease_s, 20, "env beats file");
            assert_eq!(cfg.log, "debug", "file beats default");
            assert_eq!(cfg.shutdown_grace_s, 30, "default");
            Ok(())
        });
        Ok(())
    }

    #[test]
    fn the_data_dir_is_made_absolute() -> anyhow::Result<()> {
        let over = Overrides {
            data_dir: Some(PathBuf::from("rel/data")),
            ..Default::default()
        };
        let cfg = Config::load(None, &over)?;
        assert!(cfg.data_dir.is_absolute());
        assert!(cfg.data_dir.ends_with("rel/data"));
        Ok(())
    }

    #[test]
    // figment's Jail closures return its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn limits_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_MAX_STREAMS_PER_TOKEN", "3");
            jail.set_env("TROUPE_WEBHOOK_RATE_PER_SECOND", "0.5");
            let cfg = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(cfg.max_streams_per_token, 3);
            assert!((cfg.webhook_rate_per_second - 0.5).abs() < f64::EPSILON);
            jail.set_env("TROUPE_MAX_WORKER_BODY_BYTES", "1000000");
            let err = Config::load(None, &Overrides::default()).expect_err("too small");
            assert!(err.to_string().contains("max_worker_body_bytes"), "{err}");
            jail.set_env("TROUPE_MAX_WORKER_BODY_BYTES", "67108864");
            jail.set_env("TROUPE_WEBHOOK_RATE_BURST", "0");
            let err = Config::load(None, &Overrides::default()).expect_err("no burst");
            assert!(err.to_string().contains("webhook_rate_burst"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_file_keys_are_errors() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("troupe.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n")?;
        let err = Config::load(Some(&file), &Overrides::default()).expect_err("typo");
        assert!(err.to_string().contains("lisen"), "{err}");
        Ok(())
    }

    #[test]
    fn run_retention_is_an_age_or_off() -> anyhow::Result<()> {
        let with = |text: &str| Config {
            run_retention: text.to_owned(),
            ..Config::default()
        };
        assert_eq!(
            Config::default().run_retention()?,
            Some(std::time::Duration::from_secs(90 * 24 * 3600)),
            "90 days by default"
        );
        assert_eq!(
            with("12h").run_retention()?,
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        assert_eq!(with("off").run_retention()?, None);
        for bad in ["0s", "soon", ""] {
            let err = with(bad).run_retention().expect_err(bad);
            assert!(err.to_string().contains("run_retention"), "{err}");
        }
        Ok(())
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn retention_keys_come_from_the_environment_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_RUN_RETENTION", "30d");
            jail.set_env("TROUPE_KEEP_RUNS_PER_PROJECT", "100");
            let cfg = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(cfg.run_retention, "30d");
            assert_eq!(cfg.keep_runs_per_project, Some(100));
            jail.set_env("TROUPE_KEEP_RUNS_PER_PROJECT", "0");
            let err = Config::load(None, &Overrides::default()).expect_err("keep 0");
            assert!(err.to_string().contains("keep_runs_per_project"), "{err}");
            Ok(())
        });
    }
}
