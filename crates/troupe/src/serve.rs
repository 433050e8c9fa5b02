//! `troupe serve`: API, embedded workers and store in one process.

use crate::config::Config;
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use troupe_ansible::{Ansible, Grace, Limits};
use troupe_api::run_json::RunJsonCache;
use troupe_api::{ApiConfig, AppState, TokenSet, generate_token, hash_token};
use troupe_core::project::{NewProject, ProjectSource};
use troupe_flow::discovery::Discovery;
use troupe_flow::engine::{Engine, EngineConfig, Parts};
use troupe_store::Store;
use troupe_worker::{LiveHub, WorkerConfig, WorkerPool};

use crate::flows::{HubObserver, HubRuns};

/// JSON of runs kept for the runs list (a few thousand runs; nothing until the list is read).
const RUN_JSON_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Opens the store the configuration names: PostgreSQL for `postgres://` URLs, SQLite in the
/// data dir otherwise.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_backend(cfg).await?.0)
}

/// Opens the store, and for PostgreSQL the live bus replicas sharing it announce on (SQLite is
/// one process: its hub needs no bus).
async fn open_backend(
    cfg: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<dyn troupe_store::LiveBus>>)> {
    match cfg.database_url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = troupe_postgres::PgStore::connect(url)
                .await
                .context("could not open the PostgreSQL store")?;
            let bus: Arc<dyn troupe_store::LiveBus> = Arc::new(store.live_bus());
            Ok((Arc::new(store), Some(bus)))
        }
        Some(url) => {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Ok((open_sqlite(Path::new(path)).await?, None))
        }
        None => Ok((open_sqlite(&cfg.data_dir.join("troupe.db")).await?, None)),
    }
}

async fn open_sqlite(path: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let store = troupe_sqlite::SqliteStore::open(path)
        .await
        .with_context(|| format!("could not open the SQLite store at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Creates the data dir, private to this user.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("could not restrict data dir {}", dir.display()))?;
    Ok(())
}

/// Finds ansible-playbook, or installs ansible-core into the data dir's venv.
pub async fn ansible(cfg: &Config) -> anyhow::Result<Ansible> {
    match Ansible::locate(cfg.ansible_playbook.as_deref(), &cfg.data_dir).await {
        Ok(a) => Ok(a),
        Err(e) if cfg.ansible_playbook.is_some() => Err(anyhow::anyhow!(
            "configured ansible_playbook is not usable: {e}"
        )),
        Err(_) => {
            eprintln!(
                "troupe: ansible-playbook not found; installing ansible-core {} into {}",
                troupe_ansible::PINNED_ANSIBLE_CORE,
                cfg.data_dir.join("venv").display()
            );
            let mut progress = |line: &str| eprintln!("troupe setup: {line}");
            Ansible::bootstrap(&cfg.data_dir, &mut progress)
                .await
                .context("could not install ansible-core")
        }
    }
}

/// This node's stable id, kept in the data dir so a restart recognises its own runs.
pub(crate) fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, &id).with_context(|| format!("could not write {}", path.display()))?;
    Ok(id)
}

/// On first start, creates the admin token: `TROUPE_ADMIN_TOKEN` if set, else a new one that
/// is printed once. Either way it is written 0600 into the data dir for the local CLI.
async fn ensure_admin_token(cfg: &Config, store: &dyn Store) -> anyhow::Result<()> {
    if !store.list_tokens().await?.is_empty() {
        return Ok(());
    }
    let (token, generated) = match std::env::var("TROUPE_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => (t.trim().to_owned(), false),
        _ => (generate_token(), true),
    };
    store
        .create_token(
            "admin",
            &hash_token(&token),
            troupe_core::worker::TokenRole::Admin,
        )
        .await?;
    write_secret(&cfg.token_file(), &token)?;
    if generated {
        eprintln!(
            "troupe: created the admin API token (shown once; also saved to {}):\n  {token}",
            cfg.token_file().display()
        );
    }
    Ok(())
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    Ok(())
}

/// What `serve` starts with besides its configuration.
#[derive(Debug, Default)]
pub struct Startup {
    /// Directories to register as projects.
    pub projects: Vec<PathBuf>,
    /// A rules document to put in force (replacing the stored one), and where it came from.
    pub rules: Option<(String, String)>,
    /// Where to write the bound address once listening (`--addr-file`).
    pub addr_file: Option<PathBuf>,
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(cfg: Config, startup: Startup) -> anyhow::Result<()> {
    // Validate the rules before anything starts, so a typo fails fast with every problem.
    if let Some((origin, text)) = &startup.rules
        && let Err(errors) = troupe_events::Rules::from_yaml(text)
    {
        anyhow::bail!("invalid rules in {origin}:\n  {}", errors.join("\n  "));
    }
    // So is a TLS certificate or key that cannot serve.
    let tls = crate::tls::server_config(cfg.tls_cert_file.as_deref(), cfg.tls_key_file.as_deref())?;
    ensure_data_dir(&cfg.data_dir)?;
    let ansible = ansible(&cfg).await?;
    tracing::info!(playbook = %ansible.playbook.display(), version = %ansible.version, "using ansible");
    let (store, bus) = open_backend(&cfg).await?;
    ensure_admin_token(&cfg, store.as_ref()).await?;
    let tokens = Arc::new(TokenSet::load(store.as_ref()).await?);
    for dir in &startup.projects {
        register_project(store.as_ref(), dir).await?;
    }

    let runs_dir = cfg.data_dir.join("runs");
    let projects_dir = cfg.data_dir.join("projects");
    std::fs::create_dir_all(&projects_dir)?;
    std::fs::create_dir_all(&runs_dir)?;
    std::fs::set_permissions(&runs_dir, std::fs::Permissions::from_mode(0o700))?;
    let git = Arc::new(troupe_worker::git::ProjectSyncer::new(
        projects_dir.clone(),
        ansible.bin_dir(),
    ));
    match store.list_projects().await {
        Ok(projects) => {
            let git = Arc::clone(&git);
            tokio::spawn(async move { git.restore_trees(&projects).await });
        }
        Err(e) => tracing::warn!(error = %e, "could not list projects to restore their trees"),
    }
    let node = node_id(&cfg.data_dir)?;
    let key_file = cfg.key_file();
    let key = troupe_flow::load_or_create_key(&key_file)
        .with_context(|| format!("could not load the secret key {}", key_file.display()))?;
    let sealer: Arc<dyn troupe_core::secret::Sealer> = Arc::new(key.clone());
    crate::secrets::move_git_secrets(store.as_ref(), sealer.as_ref(), &git)
        .await
        .context("could not move the passwords of git URLs into credentials")?;
    let ansible_bin_dir = ansible.bin_dir().map(Path::to_path_buf);
    let telemetry = Arc::new(telemetry(&cfg, &node)?);
    let worker_cfg = WorkerConfig {
        node_id: node.clone(),
        slots: cfg.max_concurrent_runs,
        job_slots: troupe_worker::JobSlots::Own(cfg.max_concurrent_job_runs),
        lease: Duration::from_secs(cfg.lease_s),
        ansible,
        runs_dir,
        projects_dir: projects_dir.clone(),
        git: Arc::clone(&git),
        limits: Limits {
            max_result_bytes: cfg.max_result_bytes,
            max_output_bytes: cfg.max_output_bytes,
            max_event_bytes: cfg.max_event_bytes,
        },
        grace: Grace {
            interrupt: Duration::from_secs(cfg.cancel_interrupt_s),
            terminate: Duration::from_secs(cfg.cancel_terminate_s),
        },
        poll_interval: Duration::from_millis(cfg.poll_interval_ms),
        flush_interval: Duration::from_millis(cfg.event_flush_ms),
        sealer: Arc::clone(&sealer),
        labels: cfg.worker_labels.clone(),
        telemetry: Arc::clone(&telemetry),
        launcher: cfg.launcher,
        warm: Arc::new(troupe_ansible::WarmPool::new(
            cfg.warm_settings(),
            cfg.data_dir.join("runs"),
        )),
    };
    // This process's name among replicas: in source leases and on the live bus.
    let lease = troupe_events::LeaseConfig::new(&node, Duration::from_secs(cfg.source_lease_s));
    let relay_stop = tokio_util::sync::CancellationToken::new();
    let hub = match &bus {
        Some(bus) => {
            let hub = Arc::new(LiveHub::with_bus(Arc::clone(bus), lease.holder.clone()));
            tokio::spawn(troupe_worker::relay::run(
                Arc::clone(&hub),
                Arc::clone(&store),
                Arc::clone(bus),
                relay_stop.clone(),
            ));
            hub
        }
        None => Arc::new(LiveHub::default()),
    };
    let pool = WorkerPool::start(Arc::clone(&store), Arc::clone(&hub), worker_cfg).await;
    // The same key seals flows' secret inputs and every notification target.
    let key = Arc::new(key);
    let launcher = Arc::new(
        troupe_launch::Launcher::new(
            Arc::clone(&store),
            projects_dir.clone(),
            Arc::clone(&pool) as Arc<dyn troupe_launch::Queue>,
        )
        .with_key(Arc::clone(&key))
        .with_unit_data_dir_base(cfg.unit_data_dir_base.clone())
        .with_secret_names(cfg.secret_names()?)
        .with_telemetry(Arc::clone(&telemetry))
        .with_audit(troupe_launch::audit::AuditLog::start(
            Arc::clone(&store),
            cfg.audit_retention()?,
        )),
    );
    // Before the event service: its rules can start flows.
    let flow_work_dir = cfg.data_dir.join("flows");
    std::fs::create_dir_all(&flow_work_dir)?;
    // One client for what troupe sends: flow http and slack steps, notifications.
    let http = troupe_http::builder(cfg.ca_file.as_deref())?
        .timeout(Duration::from_secs(60))
        .build()
        .context("could not build the HTTP client")?;
    let mut discovery = Discovery::new(
        Arc::clone(&store),
        projects_dir.clone(),
        ansible_bin_dir.clone(),
    );
    if let Some(ca_file) = &cfg.ca_file {
        discovery = discovery.trusting(ca_file);
    }
    let flows = Engine::new(
        Parts {
            store: Arc::clone(&store),
            launch: Arc::clone(&launcher) as Arc<dyn troupe_launch::Launch>,
            runs: Arc::new(HubRuns {
                store: Arc::clone(&store),
                hub: Arc::clone(&hub),
            }),
            nodes: Arc::new(discovery),
            seal: Arc::clone(&sealer),
            observe: Arc::new(HubObserver(Arc::clone(&hub))),
            http: http.clone(),
        },
        EngineConfig {
            bin_dir: ansible_bin_dir,
            ..EngineConfig::new(node.clone(), flow_work_dir)
        },
    );
    let lease_holder = lease.holder.clone();
    let events = match troupe_events::EventService::start_with(
        Arc::clone(&store),
        Arc::clone(&launcher) as Arc<dyn troupe_launch::Launch>,
        Arc::clone(&flows) as Arc<dyn troupe_launch::StartFlow>,
        lease,
        Some(Arc::clone(&sealer)),
        Arc::clone(&telemetry),
    )
    .await
    {
        Ok(e) => e,
        Err(troupe_events::ApplyError::Store(e)) => {
            return Err(e).context("could not load the event rules");
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    if let Some((origin, text)) = &startup.rules {
        let doc = events
            .apply(text, None)
            .await
            .with_context(|| format!("could not put the rules of {origin} in force"))?;
        eprintln!(
            "troupe: rules from {origin} in force (revision {}, {} sources, {} rules)",
            doc.revision,
            events.rules().file().sources.len(),
            events.rules().rules().len()
        );
    }

    let flows_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(Arc::clone(&flows).run(flows_stop.clone()));
    // Schedules fire through the engine and the launcher; they stop with the engine.
    let scheduler = troupe_flow::schedule::Scheduler::new(
        Arc::clone(&store),
        Arc::clone(&flows),
        Arc::clone(&launcher) as Arc<dyn troupe_launch::Launch>,
        Arc::new(troupe_flow::schedule::SystemClock),
        troupe_flow::schedule::SchedulerConfig::default(),
    );
    tokio::spawn(scheduler.run(flows_stop.clone()));
    let notifier = troupe_notify::Notifier::new(
        Arc::clone(&store),
        key,
        troupe_notify::Sender::new(http.clone()),
        troupe_notify::NotifierConfig::new(node.clone()),
    );
    tokio::spawn(Arc::clone(&notifier).run(flows_stop.clone()));
    tokio::spawn(crate::flows::wake_on_ends(
        Arc::clone(&hub),
        notifier,
        flows_stop.clone(),
    ));
    // Old runs are pruned on the replica holding the retention lease, like event records.
    tokio::spawn(crate::retention::run(
        Arc::clone(&store),
        lease_holder,
        crate::retention::RetentionConfig {
            max_age: cfg.run_retention()?,
            keep_per_project: cfg.keep_runs_per_project,
            interval: Duration::from_secs(cfg.retention_interval_s),
            batch: cfg.retention_batch,
        },
        flows_stop.clone(),
    ));
    let state = AppState {
        flows,
        store: Arc::clone(&store),
        pool: Arc::clone(&pool),
        launcher,
        tokens,
        hub,
        stream_buffer_events: cfg.stream_buffer_events,
        projects_dir,
        git,
        events: Arc::clone(&events),
        run_json: Arc::new(RunJsonCache::new(RUN_JSON_CACHE_BYTES)),
        sealer,
        bundles: Arc::new(troupe_api::bundle::Bundles::default()),
        retention_batch: cfg.retention_batch,
        pansible: troupe_api::PansibleSettings {
            hosts_per_task: cfg.pansible_hosts_per_task,
        },
        telemetry,
        limits: Arc::new(troupe_api::limits::Limits::new(ApiConfig {
            max_body_bytes: cfg.max_body_bytes,
            max_worker_body_bytes: cfg.max_worker_body_bytes,
            max_event_bytes: cfg.max_event_bytes,
            max_streams_per_token: cfg.max_streams_per_token,
            webhook_rate: troupe_events::config::RateLimit {
                per_second: cfg.webhook_rate_per_second,
                burst: Some(cfg.webhook_rate_burst),
            },
        })),
    };
    let app = troupe_api::router(state);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("could not listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "troupe: listening on {}://{addr} (store: {})",
        if tls.is_some() { "https" } else { "http" },
        store.backend()
    );
    if let Some(path) = &startup.addr_file {
        write_addr_file(path, addr)?;
    }

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = Duration::from_secs(cfg.shutdown_grace_s);
    let shutdown_pool = Arc::clone(&pool);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new runs are claimed");
        // Executions stay running in the store; the next start takes them up again. Schedules
        // stop firing.
        flows_stop.cancel();
        // Sources stop first: what they have not acknowledged goes back to the brokers.
        events.shutdown().await;
        // The API keeps answering while runs wind down, so followers see them end.
        shutdown_pool.shutdown(grace).await;
        relay_stop.cancel();
        let _ = stopped_tx.send(());
    });
    let stopped = async {
        let _ = stopped_rx.await;
    };
    match tls {
        // HTTPS only: a plain HTTP request fails its handshake.
        Some(tls) => {
            use axum::serve::ListenerExt;
            // `tap_io` makes axum give handlers the peer's address (`ConnectInfo`), as it
            // does for a plain TCP listener.
            let listener = crate::tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }
    }
    .context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The metrics, and the trace exporter when `otlp_endpoint` names a collector.
fn telemetry(cfg: &Config, node: &str) -> anyhow::Result<troupe_telemetry::Telemetry> {
    let telemetry = troupe_telemetry::Telemetry::new();
    let Some(endpoint) = cfg
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Ok(telemetry);
    };
    let client = troupe_http::builder(cfg.ca_file.as_deref())?
        .build()
        .context("could not build the OTLP exporter's HTTP client")?;
    let traces =
        troupe_telemetry::Traces::start(endpoint, client, node).context("invalid configuration")?;
    tracing::info!("exporting run traces over OTLP");
    Ok(telemetry.with_traces(traces))
}

/// Writes the bound address for programs that started troupe on port 0. A reader that polls
/// for the file sees it whole or not at all: it is written beside and renamed into place.
fn write_addr_file(path: &Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("could not write the address file {}", path.display()))
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Registers a directory as a project named after it, unless a project has that name.
async fn register_project(store: &dyn Store, dir: &Path) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(dir)
        .with_context(|| format!("project directory {} not found", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_owned());
    if let Some(existing) = store.find_project(&name).await? {
        tracing::info!(project = %name, id = existing.id, "project already registered");
        return Ok(());
    }
    let new = NewProject {
        name: name.clone(),
        source: ProjectSource::Dir {
            path: path.to_string_lossy().into_owned(),
        },
    };
    new.validate()
        .map_err(|e| anyhow::anyhow!("cannot register {}: {e}", path.display()))?;
    let p = store.create_project(&new).await?;
    eprintln!(
        "troupe: project {:?} (id {}) serves {}",
        p.name,
        p.id,
        path.display()
    );
    Ok(())
}
