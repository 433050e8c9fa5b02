//! The event service: the rules in force, the sources they configure, and retention.
//!
//! The rules document lives in the store, so every replica sharing a PostgreSQL store applies
//! the same one: each looks for a new revision every few seconds and restarts its sources
//! when it changes. Each active source runs on the one replica holding its lease
//! ([`crate::leader`]); retention runs on the one holding the retention lease.

use crate::config::{RulesFile, Secret, SourceConfig};
use crate::ingest::Ingestor;
use crate::leader::{self, LeaseConfig};
use crate::rules::Rules;
use crate::sink::Sink;
use crate::sources::{self, SourceContext, SourceState, SourceStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troupe_core::credential::CredentialSecret;
use troupe_core::secret::Sealer;
use troupe_store::{RulesDoc, Store, StoreError};

/// Why rules could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The document is not valid; every problem is listed.
    #[error("invalid rules: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The store refused or failed (a stale revision is `StoreError::Conflict`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Running {
    /// The stored revision last looked at.
    revision: i64,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// Each source's kind and status, by name.
type Statuses = BTreeMap<String, (String, Arc<SourceStatus>)>;

/// Sources, rules and retention. Cheap to share: wrap in `Arc`.
pub struct EventService {
    ingestor: Arc<Ingestor>,
    /// Held while rules change (across the sources' restart).
    running: Mutex<Running>,
    /// What requests read, never waiting for a rules change: the sources' statuses and the
    /// revision in force.
    statuses: std::sync::RwLock<Arc<Statuses>>,
    revision_in_force: std::sync::atomic::AtomicI64,
    shutdown: CancellationToken,
    /// This replica's name in leases, and their length.
    lease: LeaseConfig,
    /// Opens the credentials sources' secrets name (none: a `credential` secret is an error).
    sealer: Option<Arc<dyn Sealer>>,
}

/// How often a replica looks for rules changed elsewhere, and prunes old records.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The lease retention runs under, so it runs on one replica per period. No source can be
/// named so: source names are letters, digits, '.', '_' and '-' only.
pub const RETENTION_LEASE: &str = "~retention";

impl EventService {
    /// Starts with the stored rules (none stored: no sources, no rules), watching for changes.
    /// Rules start runs through `launch` and flows' executions through `flows`. Sources run
    /// under leases held by an anonymous replica name; see [`EventService::start_with`].
    pub async fn start(
        store: Arc<dyn Store>,
        launch: Arc<dyn troupe_launch::Launch>,
        flows: Arc<dyn troupe_launch::StartFlow>,
    ) -> Result<Arc<EventService>, ApplyError> {
        Self::start_with(
            store,
            launch,
            flows,
            LeaseConfig::default(),
            None,
            Arc::default(),
        )
        .await
    }

    /// As [`EventService::start`], with this replica's lease holder name and lease length: each
    /// active source runs only on the replica holding its lease. `sealer` opens the
    /// credentials sources name as secrets (`{credential: NAME}`).
    pub async fn start_with(
        store: Arc<dyn Store>,
        launch: Arc<dyn troupe_launch::Launch>,
        flows: Arc<dyn troupe_launch::StartFlow>,
        lease: LeaseConfig,
        sealer: Option<Arc<dyn Sealer>>,
        telemetry: Arc<troupe_telemetry::Telemetry>,
    ) -> Result<Arc<EventService>, ApplyError> {
        let empty = Arc::new(Rules::compile(RulesFile::default()).map_err(ApplyError::Invalid)?);
        let service = Arc::new(EventService {
            ingestor: Arc::new(Ingestor::new(store, launch, flows, empty).counted(telemetry)),
            running: Mutex::new(Running {
                revision: 0,
                stop: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
            statuses: std::sync::RwLock::new(Arc::new(Statuses::new())),
            revision_in_force: std::sync::atomic::AtomicI64::new(0),
            shutdown: CancellationToken::new(),
            lease,
            sealer,
        });
        leader::release_dead_self(service.store().as_ref(), &service.lease).await;
        service.reload().await?;
        tokio::spawn(Arc::clone(&service).watch());
        tokio::spawn(Arc::clone(&service).prune());
        Ok(service)
    }

    /// The ingest path (webhooks deliver through it).
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.ingestor.store()
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.ingestor.rules()
    }

    /// Validates `text`, stores it (with `expected_revision`, only over that revision) and
    /// puts it in force, restarting the sources.
    pub async fn apply(
        &self,
        text: &str,
        expected_revision: Option<i64>,
    ) -> Result<RulesDoc, ApplyError> {
        let mut file =
            RulesFile::parse(text).map_err(|e| ApplyError::Invalid(vec![e.to_string()]))?;
        let problems = self.open_credentials(&mut file).await?;
        if !problems.is_empty() {
            return Err(ApplyError::Invalid(problems));
        }
        let rules = Rules::compile(file).map_err(ApplyError::Invalid)?;
        // Held across the store write, so concurrent changes are put in force in order.
        let mut running = self.running.lock().await;
        let doc = self.store().put_rules(text, expected_revision).await?;
        self.switch(&mut running, doc.revision, rules).await;
        Ok(doc)
    }

    /// Loads the stored rules if they changed since they were put in force here.
    pub async fn reload(&self) -> Result<(), ApplyError> {
        let Some(doc) = self.store().get_rules().await? else {
            return Ok(());
        };
        let mut running = self.running.lock().await;
        if doc.revision == running.revision {
            return Ok(());
        }
        let file = match RulesFile::parse(&doc.text) {
            Ok(mut file) => {
                // A credential deleted since: its sources fail with the field's message
                // (`Secret::resolve`), the others run.
                for problem in self.open_credentials(&mut file).await? {
                    tracing::error!(%problem, "a source's secret names a credential that cannot be opened");
                }
                Ok(file)
            }
            Err(e) => Err(vec![e.to_string()]),
        };
        match file.and_then(Rules::compile) {
            Ok(rules) => {
                self.switch(&mut running, doc.revision, rules).await;
                Ok(())
            }
            Err(errors) => {
                // Stored by an older troupe, or edited in the database: keep what runs.
                running.revision = doc.revision;
                Err(ApplyError::Invalid(errors))
            }
        }
    }

    /// Replaces each `{credential: NAME}` secret of `file` with the credential's value; answers
    /// the secrets it could not (naming the field), which stay as they are.
    async fn open_credentials(&self, file: &mut RulesFile) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        for (field, secret) in file.secrets_mut() {
            let Secret::Credential { credential, var } = &*secret else {
                continue;
            };
            match self.credential_value(credential, var.as_deref()).await? {
                Ok(value) => {
                    *secret = Secret::Opened {
                        credential: credential.clone(),
                        var: var.clone(),
                        value: crate::config::OpenedValue(value),
                    }
                }
                Err(why) => problems.push(format!("{field}: {why}")),
            }
        }
        Ok(problems)
    }

    /// The value a `{credential: name, var}` secret stands for, or why there is none (never
    /// quoting a value).
    async fn credential_value(
        &self,
        name: &str,
        var: Option<&str>,
    ) -> Result<Result<String, String>, StoreError> {
        let Some(sealer) = &self.sealer else {
            return Ok(Err("this server opens no credentials".to_owned()));
        };
        let Some(stored) = self.store().sealed_credential(name).await? else {
            return Ok(Err(format!("there is no credential {name:?}")));
        };
        let secret = match troupe_core::credential::open(sealer.as_ref(), &stored.sealed) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("credential {name:?} cannot be opened: {e}"))),
        };
        let kind = secret.kind();
        Ok(match (secret, var) {
            (CredentialSecret::Env { mut vars }, Some(var)) => vars
                .remove(var)
                .ok_or_else(|| format!("credential {name:?} has no variable {var:?}")),
            (CredentialSecret::Env { .. }, None) => Err(format!(
                "credential {name:?} is an env credential: name one of its variables with var"
            )),
            (_, Some(_)) => Err(format!(
                "var is for env credentials; {name:?} is a {kind} credential"
            )),
            (CredentialSecret::Git { token: Some(t), .. }, None) => Ok(t),
            (
                CredentialSecret::Become { password, .. }
                | CredentialSecret::Vault { password, .. },
                None,
            ) => Ok(password),
            (_, None) => Err(format!(
                "credential {name:?} is a {kind} credential without a single secret value (use a git token, a become or vault password, or an env variable)"
            )),
        })
    }

    async fn switch(&self, running: &mut Running, revision: i64, rules: Rules) {
        running.stop.cancel();
        running.tracker.close();
        running.tracker.wait().await;
        let rules = Arc::new(rules);
        self.ingestor.set_rules(Arc::clone(&rules));
        let stop = self.shutdown.child_token();
        let tracker = TaskTracker::new();
        let mut statuses = Statuses::new();
        let sink: Arc<dyn Sink> = Arc::clone(&self.ingestor) as Arc<dyn Sink>;
        for (name, cfg) in &rules.file().sources {
            let kind = cfg.kind().to_owned();
            match sources::build(cfg) {
                Ok(None) => {
                    statuses.insert(name.clone(), (kind, Arc::new(SourceStatus::new("ready"))));
                }
                Ok(Some(_)) => {
                    // Built again by the replica that takes the lease, each time it does.
                    let status = Arc::new(SourceStatus::new("starting"));
                    statuses.insert(name.clone(), (kind, Arc::clone(&status)));
                    let ctx = SourceContext {
                        name: name.clone(),
                        sink: Arc::clone(&sink),
                        stop: stop.clone(),
                        status,
                    };
                    tracker.spawn(leader::lead(
                        Arc::clone(self.store()),
                        self.lease.clone(),
                        cfg.clone(),
                        ctx,
                    ));
                }
                Err(e) => {
                    // Compile validated it; only a source that fails to build now lands here.
                    tracing::error!(source = %name, error = %e, "event source not started");
                    let status = Arc::new(SourceStatus::new("failed"));
                    status.disconnected(&e);
                    statuses.insert(name.clone(), (kind, status));
                }
            }
        }
        tracing::info!(
            revision,
            sources = statuses.len(),
            rules = rules.rules().len(),
            "event rules in force"
        );
        *running = Running {
            revision,
            stop,
            tracker,
        };
        self.revision_in_force
            .store(revision, std::sync::atomic::Ordering::Relaxed);
        match self.statuses.write() {
            Ok(mut s) => *s = Arc::new(statuses),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(statuses),
        }
    }

    fn statuses(&self) -> Arc<Statuses> {
        match self.statuses.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Every configured source with its kind and state.
    pub fn source_states(&self) -> BTreeMap<String, (String, SourceState)> {
        self.statuses()
            .iter()
            .map(|(name, (kind, s))| (name.clone(), (kind.clone(), s.snapshot())))
            .collect()
    }

    /// The revision of the rules in force here (0: none); it lags the stored one when a stored
    /// document does not compile.
    pub fn revision_in_force(&self) -> i64 {
        self.revision_in_force
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts an event a passive source (a webhook) delivered.
    pub fn note_delivered(&self, source: &str) {
        if let Some((_, status)) = self.statuses().get(source) {
            status.delivered();
        }
    }

    /// The webhook source of this name, if one is configured.
    pub fn webhook(&self, name: &str) -> Option<crate::config::WebhookConfig> {
        match self.rules().file().sources.get(name) {
            Some(SourceConfig::Webhook(w)) => Some(w.clone()),
            _ => None,
        }
    }

    /// Stops every source (their unacknowledged messages go back to the brokers).
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let running = self.running.lock().await;
        running.tracker.close();
        running.tracker.wait().await;
    }

    async fn watch(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "could not load the stored event rules");
            }
        }
    }

    /// This replica's name in leases.
    pub fn lease_holder(&self) -> &str {
        &self.lease.holder
    }

    async fn prune(self: Arc<Self>) {
        loop {
            // Whoever holds the retention lease prunes, and keeps it for the period (acquiring
            // again renews it): one replica prunes per period, another once it has died.
            let now = chrono::Utc::now();
            let period =
                chrono::Duration::from_std(PRUNE_EVERY).unwrap_or(chrono::Duration::hours(1));
            match self
                .store()
                .acquire_source_lease(RETENTION_LEASE, &self.lease.holder, now, now + period)
                .await
            {
                Ok(true) => self.prune_once().await,
                Ok(false) => tracing::debug!("another replica holds the retention lease"),
                Err(e) => tracing::warn!(error = %e, "could not take the retention lease"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    async fn prune_once(&self) {
        {
            let retention = self.rules().settings().retention;
            let now = chrono::Utc::now();
            let before = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            match self.store().prune_event_records(before, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "pruned event records past retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune event records"),
            }
        }
    }
}
