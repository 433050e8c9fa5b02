//! The `troupe` binary: the server (`serve`), its setup, and the command-line client.

/// mimalloc: the event path allocates and frees many small buffers (parsing, serializing,
/// batching); glibc's allocator took about a third of the time there (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod client;
mod config;
mod serve;

use clap::{Parser, Subcommand};
use config::{Config, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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

/// How to reach a server.
#[derive(Debug, clap::Args)]
struct Remote {
    /// Server URL (default: the local server's listen address).
    #[arg(long, env = "TROUPE_SERVER")]
    server: Option<String>,
    /// API token (default: the local server's admin token file).
    #[arg(long, env = "TROUPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
        /// A directory of playbooks to register as a project on start (named after the
        /// directory). Repeatable.
        #[arg(long = "project")]
        projects: Vec<PathBuf>,
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
        args: cli::run::RunArgs,
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
    /// Manage API tokens.
    Token {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Issue a new API token and print it (once).
    Create {
        /// What the token is for.
        name: String,
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
            projects,
        } => {
            overrides.listen = listen;
            overrides.database_url = database_url;
            overrides.max_concurrent_runs = max_concurrent_runs;
            overrides.ansible_playbook = ansible_playbook;
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            init_tracing(&cfg.log);
            serve::run(cfg, &projects).await?;
            Ok(0)
        }
        Command::Setup => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            serve::ensure_data_dir(&cfg.data_dir)?;
            let a = serve::ansible(&cfg).await?;
            println!("ansible-playbook {} at {}", a.version, a.playbook.display());
            Ok(0)
        }
        Command::Doctor => doctor(&Config::load(cli.config.as_deref(), &overrides)?).await,
        Command::Run { remote, args } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            cli::run::run(&client(&cfg, remote)?, args).await
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
        Command::Token { remote, cmd } => {
            let cfg = Config::load(cli.config.as_deref(), &overrides)?;
            let c = client(&cfg, remote)?;
            match cmd {
                TokenCmd::Create { name } => {
                    let t: serde_json::Value = c
                        .post("/api/v1/tokens", &serde_json::json!({"name": name}))
                        .await?;
                    println!("{}", t["token"].as_str().unwrap_or_default());
                    Ok(0)
                }
            }
        }
    }
}

fn client(cfg: &Config, remote: Remote) -> anyhow::Result<client::Client> {
    let server = remote
        .server
        .unwrap_or_else(|| format!("http://{}", cfg.listen));
    client::Client::new(&server, remote.token, &cfg.data_dir)
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
    Ok(if ok { 0 } else { 1 })
}
