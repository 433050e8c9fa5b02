//! The `troupe` binary: the server (`serve`), its setup, and the command-line client.

/// mimalloc: the event path allocates and frees many small buffers (parsing, serializing,
/// batching); glibc's allocator took about a third of the time there (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod cli;
mod client;
mod config;
mod flows;
mod looper;
mod pansible;
mod retention;
mod secrets;
mod serve;
mod tls;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Ansible as a service.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TROUPE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default ./.troupe).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How to reach a server. Global, so they may also follow a subcommand
/// (`troupe runs list --server URL`).
#[derive(Debug, clap::Args)]
struct Remote {
    /// Server URL (default: the local server's listen address, `https://` when it has a TLS
    /// certificate).
    #[arg(long, global = true, env = "TROUPE_SERVER")]
    server: Option<String>,
    /// API token (default: the local server's admin token file).
    #[arg(long, global = true, env = "TROUPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust besides the system's for an `https://` server
    /// (default: the configuration's `ca_file`).
    #[arg(long, global = true, env = "TROUPE_CA_FILE", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the embedded workers and the store.
    Serve {
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// `postgres://...` to use PostgreSQL instead of SQLite.
        #[arg(long, hide_env_values = true)]
        database_url: Option<String>,
        /// Runs executed at once.
        #[arg(long)]
        max_concurrent_runs: Option<usize>,
        /// The ansible-playbook to use.
        #[arg(long)]
        ansible_playbook: Option<PathBuf>,
        /// How runs that do not choose start ansible-playbook: `warm` (the default: forked
        /// from a parent that imported ansible once) or `exec` (see docs/architecture.md).
        #[arg(long)]
        launcher: Option<troupe_core::run::LauncherKind>,
        /// A directory of playbooks to register as a project on start (named after the
        /// directory). Repeatable.
        #[arg(long = "project")]
        projects: Vec<PathBuf>,
        /// A rules document (event sources and rules, YAML) to put in force on start,
        /// replacing the stored one. See docs/events.md.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Once listening, write the bound address (`host:port`) to this file (replaced
        /// atomically), so scripts and tests that listen on port 0 learn the port without
        /// reading the log.
        #[arg(long, env = "TROUPE_ADDR_FILE", value_name = "FILE")]
        addr_file: Option<PathBuf>,
        /// A Pansible configuration file (`pansible.yml`): its `port` and `hosts_per_task`
        /// are read into troupe's configuration. See docs/pansible.md.
        #[arg(long, value_name = "FILE")]
        pansible_config: Option<PathBuf>,
        /// Export each run's life as a trace to this OTLP/HTTP collector
        /// (`http://host:4318`). See docs/observability.md.
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
        otlp_endpoint: Option<String>,
    },
    /// Loopabull on troupe: run the playbook each event's routing key names, with the payload
    /// as extra vars, from a Loopabull config (`plugins` or `plugin`, `routing_keys`,
    /// `ansible`).
    Loop {
        /// The Loopabull configuration file.
        config_file: PathBuf,
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// `postgres://...` to use PostgreSQL instead of SQLite.
        #[arg(long, hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Install ansible-core into the data dir's venv if ansible-playbook is missing.
    Setup,
    /// Print the ansible, python and store versions troupe will use.
    Doctor,
    /// Run a playbook through the server, following its output (ansible-playbook's flags).
    Run {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: Box<cli::run::RunArgs>,
    },
    /// Inspect and control runs.
    Runs {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::runs::RunsCmd,
    },
    /// RedRunner jobs: tagged sets of units, and actions on them.
    Jobs {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::jobs::JobsCmd,
    },
    /// Print an inventory as Ansible's dynamic inventory JSON (an inventory script:
    /// `--list`, `--host H`).
    Inventory {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: cli::inventory::InventoryArgs,
    },
    /// Publish events and see what became of them.
    Events {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::events::EventsCmd,
    },
    /// Check, show and replace the event rules.
    Rules {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::events::RulesCmd,
    },
    /// Flows: check them, and (with a server) run and follow them.
    Flow {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::flow::FlowCmd,
    },
    /// Schedules: cron expressions that start a flow, a template or a playbook.
    Schedules {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::schedules::SchedulesCmd,
    },
    /// Credentials runs use: SSH keys, become and vault passwords, environment variables.
    Credentials {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::credentials::CredentialsCmd,
    },
    /// The key secrets are sealed with (offline: stop the server first).
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
    },
    /// Run a remote worker: claim runs from a server and execute them here.
    Worker {
        /// The server's URL (`https://...` for a server across a network).
        #[arg(long, env = "TROUPE_SERVER")]
        server: String,
        /// A worker token (`troupe token create NAME --role worker`).
        #[arg(long, env = "TROUPE_TOKEN", hide_env_values = true)]
        token: String,
        /// Labels runs may require of this worker (comma-separated).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Runs executed at once.
        #[arg(long, default_value_t = 2)]
        capacity: usize,
        /// Where the worker keeps its node id, its outbox, project bundles and run directories.
        #[arg(long, env = "TROUPE_WORKER_DATA_DIR", default_value = ".troupe-worker")]
        data_dir: PathBuf,
        /// CA certificates (PEM) to trust besides the system's for an `https://` server.
        #[arg(long, env = "TROUPE_CA_FILE", value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// The ansible-playbook to use.
        #[arg(long, env = "TROUPE_ANSIBLE_PLAYBOOK")]
        ansible_playbook: Option<PathBuf>,
        /// Seconds runs in flight get to finish when the worker is stopped.
        #[arg(long, default_value_t = 30)]
        shutdown_grace_s: u64,
    },
    /// See and drain workers.
    Workers {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::workers::WorkersCmd,
    },
    /// The audit log: who changed or launched what, when, from where (admin token).
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: cli::audit::AuditArgs,
    },
    /// Manage API tokens.
    Token {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: cli::tokens::TokenCmd,
    },
}

/// `troupe secrets ...`.
#[derive(Debug, Subcommand)]
enum SecretsCmd {
    /// Make a new key and seal every stored secret again with it (credentials, flow
    /// executions' secret inputs, notification targets, runs' secret extra vars); the old key
    /// is kept as `<key file>.old-<timestamp>`. Run it with the server and every replica
    /// stopped, then give the replicas the new key file.
    RotateKey {
        /// `postgres://...` when the store is PostgreSQL.
        #[arg(long, hide_env_values = true)]
        database_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("troupe: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("troupe: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = std::env::var("TROUPE_LOG").unwrap_or_else(|_| filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let mut overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        ..Default::default()
    };
    match cli.command {
        Command::Serve {
            listen,
            database_url,
            max_concurrent_runs,
            ansible_playbook,
            launcher,
            projects,
            rules,
            addr_file,
            pansible_config,
            otlp_endpoint,
        } => {
            overrides.otlp_endpoint = otlp_endpoint;
            overrides.launcher = launcher;
            overrides.listen = listen;
            overrides.database_url = database_url;
            overrides.max_concurrent_runs = max_concurrent_runs;
            overrides.ansible_playbook = ansible_playbook;
            overrides.pansible_config = pansible_config;
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            init_tracing(&cfg.log);
            if !cfg.pansible_ignored.is_empty() {
                tracing::warn!(
                    keys = %cfg.pansible_ignored.join(", "),
                    "pansible.yml: these keys have no meaning in troupe and are ignored"
                );
            }
            let rules = match rules {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| {
                        format!("could not read the rules file {}", path.display())
                    })?;
                    Some((path.display().to_string(), text))
                }
                None => None,
            };
            serve::run(
                cfg,
                serve::Startup {
                    projects,
                    rules,
                    addr_file,
                },
            )
            .await?;
            Ok(0)
        }
        Command::Loop {
            config_file,
            listen,
            database_url,
        } => {
            overrides.listen = listen;
            overrides.database_url = database_url;
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            looper::run(&cfg, cli.config.as_deref(), &config_file).await
        }
        Command::Setup => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            serve::ensure_data_dir(&cfg.data_dir)?;
            let a = serve::ansible(&cfg).await?;
            println!("ansible-playbook {} at {}", a.version, a.playbook.display());
            Ok(0)
        }
        Command::Secrets {
            cmd: SecretsCmd::RotateKey { database_url },
        } => {
            overrides.database_url = database_url;
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            init_tracing(&cfg.log);
            secrets::rotate_key(&cfg).await
        }
        Command::Doctor => doctor(&Config::load(cli.config.as_deref(), &overrides)?).await,
        Command::Run { remote, args } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::run::run(&client(&cfg, remote)?, *args).await
        }
        Command::Runs { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::runs::run(&client(&cfg, remote)?, cmd).await
        }
        Command::Jobs { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::jobs::run(&client(&cfg, remote)?, cmd).await
        }
        Command::Inventory { remote, args } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::inventory::run(&client(&cfg, remote)?, args).await
        }
        Command::Events { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::events::run_events(&client(&cfg, remote)?, cmd).await
        }
        Command::Rules { remote, cmd } => {
            if let cli::events::RulesCmd::Check { file } = &cmd {
                // Needs no server.
                return cli::events::check(file);
            }
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::events::run_rules(&client(&cfg, remote)?, cmd).await
        }
        Command::Flow { remote, cmd } => {
            if let cli::flow::FlowCmd::Validate { file } = &cmd {
                // Needs no server.
                return cli::flow::validate(file);
            }
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::flow::remote(&client(&cfg, remote)?, cmd).await
        }
        Command::Schedules { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::schedules::run(&client(&cfg, remote)?, cmd).await
        }
        Command::Credentials { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::credentials::run(&client(&cfg, remote)?, cmd).await
        }
        Command::Worker {
            server,
            token,
            labels,
            capacity,
            data_dir,
            ca_file,
            ansible_playbook,
            shutdown_grace_s,
        } => {
            init_tracing("info");
            let data_dir = if data_dir.is_relative() {
                std::env::current_dir()?.join(data_dir)
            } else {
                data_dir
            };
            agent::run(agent::WorkerArgs {
                server,
                token,
                labels,
                capacity,
                data_dir,
                ca_file,
                ansible_playbook,
                shutdown_grace: Duration::from_secs(shutdown_grace_s),
            })
            .await?;
            Ok(0)
        }
        Command::Workers { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::workers::run(&client(&cfg, remote)?, cmd).await
        }
        Command::Audit { remote, args } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::audit::run(&client(&cfg, remote)?, args).await
        }
        Command::Token { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            let c = client(&cfg, remote)?;
            cli::tokens::run(&c, cmd).await
        }
    }
}

fn client(cfg: &Config, remote: Remote) -> anyhow::Result<client::Client> {
    let server = remote
        .server
        .unwrap_or_else(|| format!("{}://{}", cfg.scheme(), cfg.listen));
    let ca_file = remote.ca_file.as_deref().or(cfg.ca_file.as_deref());
    client::Client::new(&server, remote.token, &cfg.data_dir, ca_file)
}

/// Whether opening the store failed only because a running troupe has the SQLite file.
fn in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<troupe_store::StoreError>(),
            Some(troupe_store::StoreError::Conflict(_))
        )
    })
}

async fn doctor(cfg: &Config) -> anyhow::Result<i32> {
    let mut ok = true;
    match troupe_ansible::Ansible::locate(cfg.ansible_playbook.as_deref(), &cfg.data_dir).await {
        Ok(a) => {
            println!("ansible-playbook  {} ({})", a.version, a.playbook.display());
            match &a.python {
                Some(p) => println!("python            {}", p.display()),
                None => println!("python            unknown"),
            }
        }
        Err(e) => {
            ok = false;
            println!("ansible-playbook  not found: {e} (run `troupe setup`)");
        }
    }
    if cfg.data_dir.exists() || cfg.database_url.is_some() {
        match serve::open_store(cfg).await {
            Ok(store) => match store.server_version().await {
                Ok(v) => println!("store             {} {v}", store.backend()),
                Err(e) => {
                    ok = false;
                    println!("store             {} unavailable: {e}", store.backend());
                }
            },
            Err(e) if in_use(&e) => {
                println!("store             sqlite, open in a running troupe ({e:#})");
            }
            Err(e) => {
                ok = false;
                println!("store             unavailable: {e:#}");
            }
        }
    } else {
        println!(
            "store             sqlite (created at {} on first start)",
            cfg.data_dir.join("troupe.db").display()
        );
    }
    println!("data dir          {}", cfg.data_dir.display());
    println!("listen            {}", cfg.listen);
    for (name, value) in cfg.limits_summary() {
        println!("limit             {name}: {value}");
    }
    println!(
        "launcher          {} (warm parents: at most {}, {} MiB each)",
        cfg.launcher, cfg.warm_parents_max, cfg.warm_parent_max_rss_mib
    );
    for parent in troupe_ansible::read_parents(&cfg.data_dir.join("runs")) {
        println!(
            "warm parent       pid {}, key {}, {} runs, {} MiB, in {}",
            parent.pid,
            parent.key,
            parent.runs,
            parent.rss_bytes.unwrap_or(0) / (1024 * 1024),
            parent.cwd.display()
        );
    }
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Global arguments (`--server`, `--token`, `--ca-file`) must not clash with any
        // subcommand's own: clap checks that here rather than on a user's command line.
        Cli::command().debug_assert();
    }

    #[test]
    fn remote_options_may_follow_the_subcommand() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "troupe",
            "runs",
            "list",
            "--server",
            "https://troupe.example:8443",
            "--ca-file",
            "/etc/troupe/ca.pem",
        ])?;
        let Command::Runs { remote, .. } = cli.command else {
            anyhow::bail!("not runs: {cli:?}");
        };
        assert_eq!(
            remote.server.as_deref(),
            Some("https://troupe.example:8443")
        );
        assert_eq!(
            remote.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/troupe/ca.pem"))
        );
        Ok(())
    }
}
