//! `troupe worker`: a remote worker. It registers with a server using a worker token, claims
//! runs matching its labels (long polling), fetches each run's plan and project bundle, runs
//! ansible-playbook exactly as a server's embedded pool does (the same pool code, plugin,
//! cancel and run directory), and reports through an on-disk outbox so that nothing is lost
//! while the server is away.

mod outbox;
mod remote;

use crate::client::Client;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use troupe_ansible::{Grace, Limits};
use troupe_wire::workers::{RegisterWorker, Registered};
use troupe_worker::{WorkerConfig, WorkerPool};

/// How a worker runs.
pub struct WorkerArgs {
    /// The server's URL.
    pub server: String,
    /// A worker token.
    pub token: String,
    /// Labels runs may require.
    pub labels: Vec<String>,
    /// Runs executed at once.
    pub capacity: usize,
    /// Where the node id, the outbox, bundles and run directories live.
    pub data_dir: PathBuf,
    /// CA certificates to trust for an `https://` server.
    pub ca_file: Option<PathBuf>,
    /// The ansible-playbook to use (found or installed in the data dir otherwise).
    pub ansible_playbook: Option<PathBuf>,
    /// How long a run may take to stop gracefully when the worker is stopped.
    pub shutdown_grace: Duration,
}

/// Runs the worker until SIGINT or SIGTERM.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    crate::serve::ensure_data_dir(&args.data_dir)?;
    for label in &args.labels {
        troupe_core::run::check_worker_label(label, "--labels")
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let ansible_cfg = crate::config::Config {
        data_dir: args.data_dir.clone(),
        ansible_playbook: args.ansible_playbook.clone(),
        ..crate::config::Config::default()
    };
    let ansible = crate::serve::ansible(&ansible_cfg).await?;
    tracing::info!(playbook = %ansible.playbook.display(), version = %ansible.version, "using ansible");
    let runs_dir = args.data_dir.join("runs");
    let bundles_dir = args.data_dir.join("bundles");
    for dir in [&runs_dir, &bundles_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runs_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let node = crate::serve::node_id(&args.data_dir)?;
    let client = Client::new(
        &args.server,
        Some(args.token.clone()),
        &args.data_dir,
        args.ca_file.as_deref(),
    )?;
    let outbox = outbox::Outbox::open(&args.data_dir.join("outbox"))?;
    tokio::spawn(Arc::clone(&outbox).send_forever(client.clone()));

    // What a previous start left running is killed first, before the server is told (below)
    // and ends those runs: once a run reads `error`, nothing of it is left.
    let orphans = troupe_ansible::reap_orphans(&runs_dir).await;
    if !orphans.is_empty() {
        tracing::warn!(
            count = orphans.len(),
            "killed processes left behind by a previous start"
        );
    }
    // What a previous start left unsent goes first: the server then ends those runs
    // (`error`, the worker restarted) with every event they produced stored.
    let left = outbox.pending()?.len();
    if left > 0 {
        tracing::info!(reports = left, "sending reports a previous start left");
        while !outbox.drained(Duration::from_secs(10)).await {
            tracing::warn!(
                "still waiting for the server to take the reports a previous start left"
            );
        }
    }
    let registered = register(&client, &node, &args).await;
    tracing::info!(worker = %registered.worker_id, server = %args.server, labels = ?args.labels, capacity = args.capacity, "worker registered");
    if !registered.failed_runs.is_empty() {
        tracing::warn!(runs = ?registered.failed_runs, "runs a previous start of this worker held were ended error");
    }

    let backend = Arc::new(remote::RemoteBackend {
        client,
        outbox: Arc::clone(&outbox),
        bundles_dir,
        unpacking: tokio::sync::Mutex::new(()),
        worker_id: std::sync::OnceLock::new(),
    });
    let _ = backend.worker_id.set(registered.worker_id.clone());
    let cfg = WorkerConfig {
        node_id: node,
        slots: args.capacity.max(1),
        job_slots: troupe_worker::JobSlots::Shared,
        lease: Duration::from_secs(registered.lease_s.max(3)),
        ansible,
        runs_dir,
        projects_dir: args.data_dir.join("bundles"),
        limits: Limits {
            max_result_bytes: ansible_cfg.max_result_bytes,
            max_output_bytes: ansible_cfg.max_output_bytes,
            max_event_bytes: ansible_cfg.max_event_bytes,
        },
        grace: Grace {
            interrupt: Duration::from_secs(ansible_cfg.cancel_interrupt_s),
            terminate: Duration::from_secs(ansible_cfg.cancel_terminate_s),
        },
        // Claims long-poll the server: no need to wait between them.
        poll_interval: Duration::from_millis(10),
        flush_interval: Duration::from_millis(ansible_cfg.event_flush_ms.max(50)),
        // Credentials arrive opened in each run's plan; nothing is sealed here.
        sealer: Arc::new(NoSealer),
        labels: args.labels.clone(),
        // Not scraped: a remote worker serves no API. Its server counts the events it stores.
        telemetry: Arc::default(),
        launcher: ansible_cfg.launcher,
        warm: Arc::new(troupe_ansible::WarmPool::new(
            ansible_cfg.warm_settings(),
            args.data_dir.join("runs"),
        )),
        // Runs get their files from bundles; no git project is synced here.
        git: Arc::new(troupe_worker::git::ProjectSyncer::new(
            args.data_dir.join("bundles"),
            None,
        )),
    };
    let pool = WorkerPool::start_remote(backend, cfg, registered.worker_id).await;
    crate::serve::shutdown_signal().await;
    tracing::info!(
        "stopping: runs in flight get {:?} to finish",
        args.shutdown_grace
    );
    pool.shutdown(args.shutdown_grace).await;
    Ok(())
}

/// Registers, retrying while the server is unreachable; a refusal (bad token, bad labels) is
/// fatal.
async fn register(client: &Client, node: &str, args: &WorkerArgs) -> Registered {
    let body = RegisterWorker {
        node: node.to_owned(),
        name: troupe_worker::host_name(),
        labels: args.labels.clone(),
        capacity: u32::try_from(args.capacity).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match client
            .post::<_, Registered>("/api/v1/worker/register", &body)
            .await
        {
            Ok(r) => return r,
            Err(e) => {
                if let Some(f) = e.downcast_ref::<crate::client::ApiFailure>()
                    && f.status.is_client_error()
                {
                    eprintln!("troupe worker: the server refused to register this worker: {f}");
                    std::process::exit(2);
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "could not register; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A worker never seals or opens secrets itself.
#[derive(Debug)]
struct NoSealer;

impl troupe_core::secret::Sealer for NoSealer {
    fn seal(&self, _plain: &[u8]) -> Result<String, troupe_core::secret::SealError> {
        Err(troupe_core::secret::SealError::Malformed(
            "a remote worker holds no sealing key".into(),
        ))
    }
    fn open(&self, _sealed: &str) -> Result<Vec<u8>, troupe_core::secret::SealError> {
        Err(troupe_core::secret::SealError::Malformed(
            "a remote worker holds no sealing key".into(),
        ))
    }
}
