//! The one way a run is started.
//!
//! Every path that starts a run (the API and the CLI through it, templates, job actions, event
//! rules, relaunches, slices of a split run; flows and remote workers later) states what it
//! wants as a [`LaunchRequest`] with the run's [`Origin`], and [`Launcher::launch`] does the
//! rest the same way for all of them: look up what the request names, check the playbook is a
//! file inside its project, combine the template's defaults with the request's options (one
//! definition: [`troupe_core::overrides`]), validate, store the run `queued`, and announce it
//! to whatever executes runs ([`Queue`]) — or, when that executor has a free slot and nothing
//! waits, let it store the run already claimed and start it ([`Queue::admit`]).
//!
//! Paths that store runs in a transaction of their own (the event ingest stores an event and
//! its runs together) call [`Launcher::prepare`] and, once stored, [`Launcher::announce`]; for
//! admission at create they first [`Launch::reserve`] free slots, have their transaction
//! store the runs claimed ([`troupe_store::Admission`]) and start those on the slots
//! ([`Reserved::start`]).
//! Crates that only need to start and stop runs depend on the [`Launch`] capability, not on
//! the concrete launcher or on the worker pool.

use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use troupe_core::inventory::InventoryContent;
use troupe_core::notify::{Notify, SealedNotify};
use troupe_core::project::{PlaybookRef, Project};
use troupe_core::redact::SecretNames;
use troupe_core::run::{CancelMode, Labels, NewRun, Origin, Run, RunOptions};
use troupe_core::secret::SecretKey;
use troupe_core::template::Template;
use troupe_store::{Admission, Store, StoreError, StoreResult};

pub mod audit;
mod error;
pub mod flows;
pub mod jobs;
pub mod playbooks;
mod request;

pub use error::{LaunchError, LaunchResult};
pub use flows::{FlowStart, FlowStartError, StartFlow};
pub use request::{InventorySource, LaunchOptions, LaunchRequest, ProjectRef, Ref, Target};

/// What executes runs, as the launcher sees it: offered each new run to start at once, told
/// of every run stored `queued`, asked to stop runs. The worker pool implements it.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Admission at create: an executor with a free slot, and nothing it would take waiting,
    /// stores `new` already claimed and starts it, without a trip through the queue. `Some`:
    /// it stored the run (and announced it; it may have come back `queued` after all, when an
    /// older run was waiting); `None`: it did not, the launcher stores it `queued` and calls
    /// [`Queue::run_created`]. The default admits nothing.
    async fn admit(&self, new: &NewRun) -> Option<StoreResult<Run>> {
        let _ = new;
        None
    }

    /// Admission at create for runs a transaction of someone else's stores: holds up to
    /// `slots` free slots (at least one, or `None`) for runs that are not job unit actions.
    /// The default holds none.
    fn reserve(&self, slots: usize) -> Option<Box<dyn Reserved>> {
        let _ = slots;
        None
    }

    /// A run was just stored `queued`: wake whoever claims runs and tell live subscribers.
    fn run_created(&self, run: &Run);

    /// Asks a run to stop: a queued run is canceled on the spot, a running one is passed to
    /// the worker executing it. `Conflict` when it has already finished.
    async fn cancel_run(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run>;
}

/// Free slots an executor holds for runs that a transaction of someone else's stores (the
/// event ingest stores an event and its runs together), so that the transaction can store them
/// already claimed ([`Queue::reserve`]). Dropping it gives back the slots no run took.
pub trait Reserved: Send {
    /// What the transaction claims runs with: the executor's claimant and lease, and as many
    /// slots as are held.
    fn admission(&self) -> Admission<'_>;

    /// Starts `run`, which the transaction stored claimed under [`Reserved::admission`], on
    /// one of the held slots (and tells live subscribers of it).
    fn start(&mut self, run: &Run);
}

/// Starting and stopping runs: the capability crates such as the event sources depend on.
#[async_trait]
pub trait Launch: Send + Sync {
    /// Looks up, checks and combines everything `request` names into a run ready to store.
    async fn prepare(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<NewRun>;

    /// Tells the executors about a run stored from [`Launch::prepare`]'s answer.
    fn announce(&self, run: &Run);

    /// Prepares, stores and announces a run.
    async fn launch(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<Run>;

    /// Asks a run to stop.
    async fn cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run>;

    /// [`Launch::launch`] for a run that `actor` (`flow:<execution id>`, `schedule:<name>`...)
    /// starts, not an API request: the run is recorded in the audit log as `actor`'s.
    async fn launch_by(
        &self,
        request: LaunchRequest,
        origin: Origin,
        actor: &str,
    ) -> LaunchResult<Run> {
        let _ = actor;
        self.launch(request, origin).await
    }

    /// [`Launch::announce`] for a run that `actor` (`rule:<name>`...) started: the run is
    /// recorded in the audit log as `actor`'s.
    fn announce_by(&self, run: &Run, actor: &str) {
        self.announce(run);
        self.audit_by(run, actor);
    }

    /// Records in the audit log that `actor` started `run`, which the caller stored and
    /// started itself (on slots of [`Launch::reserve`]). The default records nothing.
    fn audit_by(&self, run: &Run, actor: &str) {
        let _ = (run, actor);
    }

    /// Free slots for runs the caller's own transaction will store claimed
    /// ([`Queue::reserve`]). The default holds none: the caller announces its runs.
    fn reserve(&self, slots: usize) -> Option<Box<dyn Reserved>> {
        let _ = slots;
        None
    }

    /// The names of extra vars (and payload keys) whose values are secret (`redact_vars`).
    fn secret_names(&self) -> &SecretNames {
        default_secret_names()
    }
}

/// The default `redact_vars`, built once.
fn default_secret_names() -> &'static SecretNames {
    static NAMES: std::sync::OnceLock<SecretNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(SecretNames::default)
}

/// The launch service over a store and a [`Queue`].
#[derive(Clone)]
pub struct Launcher {
    store: Arc<dyn Store>,
    projects_dir: PathBuf,
    queue: Arc<dyn Queue>,
    /// Seals notification targets; without it, a launch asking for notifications is refused.
    key: Option<Arc<SecretKey>>,
    /// Extra vars named like these are sealed before a run is stored (with `key`).
    secret_names: SecretNames,
    /// Where runs not started through the API are recorded (the API records its requests).
    audit: Option<Arc<audit::AuditLog>>,
    /// What a relative unit `data_dir` is relative to (`unit_data_dir_base`); without it,
    /// a unit's data_dir must be absolute.
    unit_data_dir_base: Option<PathBuf>,
    /// Where the store's `create_run` latency is measured.
    telemetry: Option<Arc<troupe_telemetry::Telemetry>>,
}

/// A template and what the request's target resolved to.
struct Resolved {
    project: Project,
    playbook: String,
    template: Option<Template>,
}

impl Launcher {
    /// A launcher storing runs in `store`, finding git projects' checkouts under
    /// `projects_dir`, and announcing runs to `queue`.
    pub fn new(store: Arc<dyn Store>, projects_dir: PathBuf, queue: Arc<dyn Queue>) -> Self {
        Self {
            store,
            projects_dir,
            queue,
            key: None,
            secret_names: default_secret_names().clone(),
            audit: None,
            unit_data_dir_base: None,
            telemetry: None,
        }
    }

    /// The launcher measuring how long storing a run takes in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<troupe_telemetry::Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The launcher resolving relative unit data_dirs against `base` (never outside it).
    pub fn with_unit_data_dir_base(mut self, base: Option<PathBuf>) -> Self {
        self.unit_data_dir_base = base;
        self
    }

    /// The launcher recording the runs started by [`Launch::launch_by`] and
    /// [`Launch::announce_by`] in `audit`.
    pub fn with_audit(mut self, audit: Arc<audit::AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The audit log, when the launcher has one.
    pub fn audit(&self) -> Option<&Arc<audit::AuditLog>> {
        self.audit.as_ref()
    }

    fn audit_run(&self, run: &Run, actor: &str) {
        if let Some(audit) = &self.audit {
            audit.record_later(audit::run_launched(run, actor));
        }
    }

    /// The launcher sealing the values of extra vars named like `names` (instead of the
    /// default `redact_vars`).
    pub fn with_secret_names(mut self, names: SecretNames) -> Self {
        self.secret_names = names;
        self
    }

    /// The launcher sealing notification targets with `key` (the server's secret key).
    pub fn with_key(mut self, key: Arc<SecretKey>) -> Self {
        self.key = Some(key);
        self
    }

    /// Checks notification targets (`field` names the list in errors) and seals them: the one
    /// place targets given in clear (a template's, a rule's) are sealed.
    pub fn seal_notify(&self, targets: &[Notify], field: &str) -> LaunchResult<Vec<SealedNotify>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| LaunchError::Seal("this server has no secret key".into()))?;
        targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.validate(&format!("{field}[{i}]"), false)?;
                t.seal(key).map_err(|e| LaunchError::Seal(e.to_string()))
            })
            .collect()
    }

    /// The store runs are kept in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where git projects are checked out.
    pub fn projects_dir(&self) -> &std::path::Path {
        &self.projects_dir
    }

    /// Prepares, stores and announces a run: every way of starting a run ends here.
    pub async fn launch(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<Run> {
        let new = self.prepare(request, origin).await?;
        self.submit(&new).await
    }

    /// Stores a prepared run and announces it; an executor with a free slot starts it at once.
    pub async fn submit(&self, new: &NewRun) -> LaunchResult<Run> {
        let asked = std::time::Instant::now();
        // Admitted: stored already claimed (one statement) and handed to a free slot.
        let run = match self.queue.admit(new).await {
            Some(admitted) => admitted?,
            None => {
                let run = self.store.create_run(new).await?;
                // Announced first: nothing is added between the store and the announcement.
                self.queue.run_created(&run);
                run
            }
        };
        if let Some(t) = &self.telemetry {
            t.metrics
                .store_op(troupe_telemetry::StoreOp::create_run, asked.elapsed());
        }
        Ok(run)
    }

    /// Tells the executors about a run stored `queued` by someone else's transaction.
    pub fn announce(&self, run: &Run) {
        self.queue.run_created(run);
    }

    /// Asks a run to stop.
    pub async fn cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        self.queue.cancel_run(run_id, mode).await
    }

    /// Looks up, checks and combines everything `request` names into a run ready to store.
    ///
    /// A template target takes the template's project, playbook, inventory (unless the
    /// request names one), default options (with the request's overrides applied) and labels
    /// (the request's added), and the template becomes part of the run's origin.
    pub async fn prepare(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<NewRun> {
        let LaunchRequest {
            target,
            inventory,
            options,
            labels,
            tag,
            notify,
        } = request;
        let mut sealed = self.seal_notify(&notify, "notify")?;
        // A template's options are checked before its inventory, as a launch body names them.
        let template = match &target {
            Target::Template(r) => Some(self.template(r).await?),
            Target::Playbook { .. } => None,
        };
        let defaults = template.as_ref().map(|t| &t.defaults);
        let options = combine(defaults, options)?;
        let resolved = match target {
            Target::Playbook { project, playbook } => Resolved {
                project: self.project(project).await?,
                playbook,
                template: None,
            },
            Target::Template(r) => {
                let template = match template {
                    Some(t) => t,
                    None => self.template(&r).await?,
                };
                Resolved {
                    project: self.store.get_project(template.project_id).await?,
                    playbook: template.playbook.clone(),
                    template: Some(template),
                }
            }
        };
        let playbook = self.playbook(&resolved.project, &resolved.playbook).await?;
        let (inventory_id, inventory) = self
            .inventory(inventory, resolved.template.as_ref())
            .await?;
        let (labels, origin) = match resolved.template {
            Some(t) => {
                let mut all: Labels = t.labels;
                all.extend(labels);
                // The template's targets first, then the request's own.
                let mut targets = t.notify;
                targets.append(&mut sealed);
                sealed = targets;
                (all, with_template(origin, t.id))
            }
            None => (labels, origin),
        };
        let new = NewRun {
            project_id: resolved.project.id,
            playbook,
            inventory_id,
            inventory,
            options,
            labels,
            tag,
            origin,
            notify: sealed,
        };
        new.validate()?;
        self.check_credentials(&new.options.credentials).await?;
        let mut new = new;
        self.seal_extra_vars(&mut new.options.extra_vars)?;
        Ok(new)
    }

    /// Seals the values of extra vars whose names say they are secret (at any depth), so the
    /// store never holds them in clear; the worker opens them just before the run starts.
    /// Without a key (a launcher of tests, or of a worker relaunching a slice whose options
    /// were sealed already) nothing is sealed. A template's defaults are sealed the same way
    /// before they are stored.
    pub fn seal_extra_vars(
        &self,
        vars: &mut serde_json::Map<String, serde_json::Value>,
    ) -> LaunchResult<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        if vars.is_empty() {
            return Ok(());
        }
        self.secret_names
            .seal(vars, key.as_ref())
            .map_err(|e| LaunchError::Seal(e.to_string()))
    }

    /// The credentials a run asks for exist, and there is at most one of each kind (vault: one
    /// per vault id). They are looked up again when the run starts: one deleted meanwhile
    /// fails the run then.
    async fn check_credentials(&self, names: &[String]) -> LaunchResult<()> {
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            match self.store.find_credential(name).await? {
                Some(c) => found.push(c),
                None => return Err(LaunchError::UnknownCredential(name.clone())),
            }
        }
        troupe_core::credential::check_run_credentials(&found, "credentials")?;
        Ok(())
    }

    /// The project a request names.
    async fn project(&self, project: ProjectRef) -> LaunchResult<Project> {
        let r = match project {
            ProjectRef::Found(p) => return Ok(*p),
            ProjectRef::Ref(r) => r,
        };
        let found = match &r {
            Ref::Id(id) => self.store.get_project(*id).await.map(Some),
            Ref::Name(name) => self.store.find_project(name).await,
        };
        match found {
            Ok(Some(p)) => Ok(p),
            Ok(None) | Err(StoreError::NotFound { .. }) => Err(LaunchError::UnknownProject(r)),
            Err(e) => Err(e.into()),
        }
    }

    /// The template a request names: by id, a missing one is the store's `NotFound`; by name,
    /// it is [`LaunchError::UnknownTemplate`].
    async fn template(&self, r: &Ref) -> LaunchResult<Template> {
        match r {
            Ref::Id(id) => Ok(self.store.get_template(*id).await?),
            Ref::Name(name) => self
                .store
                .find_template(name)
                .await?
                .ok_or_else(|| LaunchError::UnknownTemplate(r.clone())),
        }
    }

    /// Checks the playbook is a file inside the project (symlinks followed).
    async fn playbook(&self, project: &Project, playbook: &str) -> LaunchResult<PlaybookRef> {
        let pb = PlaybookRef::parse(playbook)?;
        let root = playbooks::project_root(project, &self.projects_dir);
        playbooks::resolve_playbook(&root, pb.as_str())
            .await
            .map_err(|source| LaunchError::Playbook {
                project: project.name.clone(),
                source,
            })?;
        Ok(pb)
    }

    /// The inventory the run will use, and the stored inventory it is a copy of.
    async fn inventory(
        &self,
        source: Option<InventorySource>,
        template: Option<&Template>,
    ) -> LaunchResult<(Option<i64>, InventoryContent)> {
        match (source, template) {
            (Some(InventorySource::Stored(r)), _) => {
                let found = match &r {
                    Ref::Id(id) => self.store.get_inventory(*id).await.map(Some),
                    Ref::Name(name) => self.store.find_inventory(name).await,
                };
                match found {
                    Ok(Some(inv)) => Ok((Some(inv.id), inv.content)),
                    Ok(None) | Err(StoreError::NotFound { .. }) => {
                        Err(LaunchError::UnknownInventory(r))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (Some(InventorySource::Inline(content)), _) => {
                content.validate()?;
                Ok((None, content))
            }
            (Some(InventorySource::AnsibleConfig), _) => {
                Ok((None, InventoryContent::from_ansible_config()))
            }
            (Some(InventorySource::Snapshot { id, content }), _) => Ok((id, content)),
            (None, Some(t)) => match self.store.get_inventory(t.inventory_id).await {
                Ok(inv) => Ok((Some(inv.id), inv.content)),
                Err(StoreError::NotFound { .. }) => {
                    Err(LaunchError::TemplateInventoryGone(t.name.clone()))
                }
                Err(e) => Err(e.into()),
            },
            (None, None) => Err(LaunchError::MissingInventory),
        }
    }
}

/// A launch's options over the template's defaults (or the plain defaults).
fn combine(defaults: Option<&RunOptions>, options: LaunchOptions) -> LaunchResult<RunOptions> {
    match options {
        LaunchOptions::Exact(options) => Ok(*options),
        LaunchOptions::Over(overrides) => {
            let plain = RunOptions::default();
            Ok(overrides.apply(defaults.unwrap_or(&plain))?)
        }
    }
}

/// `origin` of a run launched through template `template_id`.
fn with_template(origin: Origin, template_id: i64) -> Origin {
    match origin {
        Origin::Api | Origin::Template { .. } => Origin::Template { template_id },
        Origin::Rule { rule, source, .. } => Origin::Rule {
            rule,
            source,
            template_id: Some(template_id),
        },
        other => other,
    }
}

#[async_trait]
impl Launch for Launcher {
    async fn prepare(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<NewRun> {
        Launcher::prepare(self, request, origin).await
    }

    fn announce(&self, run: &Run) {
        Launcher::announce(self, run);
    }

    async fn launch(&self, request: LaunchRequest, origin: Origin) -> LaunchResult<Run> {
        Launcher::launch(self, request, origin).await
    }

    async fn cancel(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        Launcher::cancel(self, run_id, mode).await
    }

    async fn launch_by(
        &self,
        request: LaunchRequest,
        origin: Origin,
        actor: &str,
    ) -> LaunchResult<Run> {
        let run = Launcher::launch(self, request, origin).await?;
        self.audit_run(&run, actor);
        Ok(run)
    }

    fn audit_by(&self, run: &Run, actor: &str) {
        self.audit_run(run, actor);
    }

    fn reserve(&self, slots: usize) -> Option<Box<dyn Reserved>> {
        self.queue.reserve(slots)
    }

    fn secret_names(&self) -> &SecretNames {
        &self.secret_names
    }
}

#[cfg(test)]
mod tests;
