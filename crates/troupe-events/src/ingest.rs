//! The ingest path every source shares: read the payload, match the rules, build the runs
//! (or flow executions), and record the event with them in one store transaction; only then
//! is the event acknowledged.

use crate::routing::KeyError;
use crate::rules::{Match, Rules, Target};
use crate::sink::{Delivered, Inbound, NotStored, PayloadFormat, Sink};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use troupe_core::RunStatus;
use troupe_core::flow::Execution;
use troupe_core::inbound::{EventRecord, EventStatus, RuleResult};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::redact::REDACTED;
use troupe_core::run::{CancelMode, NewRun, Origin};
use troupe_launch::{
    self as launch, FlowStart, FlowStartError, InventorySource, Launch, LaunchError, LaunchOptions,
    LaunchRequest, ProjectRef, Ref, Reserved, StartFlow,
};
use troupe_store::{
    Concurrency, Gate, Ingested, NewEventRecord, Proposal, Start, Store, StoreError,
};
use troupe_telemetry::Telemetry;

/// The inventory of rules that name none: this machine only, as Loopabull ran, with the
/// Python that runs ansible (so modules find the same libraries).
pub const LOCAL_INVENTORY: &str = "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n";

/// Records events and starts the runs and flow executions their rules ask for.
pub struct Ingestor {
    store: Arc<dyn Store>,
    launch: Arc<dyn Launch>,
    flows: Arc<dyn StartFlow>,
    rules: RwLock<Arc<Rules>>,
    /// Where deliveries and failures are counted per source.
    telemetry: Arc<Telemetry>,
}

/// Why a rule's run could not be built; stored as the rule's result in the event record.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    /// The rule cannot name a playbook for this event.
    #[error(transparent)]
    Rule(#[from] KeyError),
    /// The payload cannot be extra vars.
    #[error(
        "the payload is {0}, not an object, so it cannot be extra vars; set action.vars_key to \
         pass it under a variable"
    )]
    PayloadNotObject(&'static str),
    /// The launch service refused the run.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A flow's input could not be rendered from the event.
    #[error(transparent)]
    Input(#[from] crate::inputs::InputError),
    /// The flow refused the execution (unknown flow, wrong inputs).
    #[error(transparent)]
    Flow(#[from] FlowStartError),
}

impl Ingestor {
    /// An ingestor applying `rules`, starting runs through `launch` and flows' executions
    /// through `flows`.
    pub fn new(
        store: Arc<dyn Store>,
        launch: Arc<dyn Launch>,
        flows: Arc<dyn StartFlow>,
        rules: Arc<Rules>,
    ) -> Ingestor {
        Ingestor {
            store,
            launch,
            flows,
            rules: RwLock::new(rules),
            telemetry: Arc::default(),
        }
    }

    /// The ingestor counting deliveries and failures per source in `telemetry`.
    pub fn counted(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts new rules in force for the events that arrive from now on.
    pub fn set_rules(&self, rules: Arc<Rules>) {
        match self.rules.write() {
            Ok(mut r) => *r = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What would be recorded for `event`, with the runs its rules propose.
    async fn prepare(&self, rules: &Rules, event: &Inbound) -> NewEventRecord {
        let settings = rules.settings();
        // A bounded copy, cut on a character boundary when the payload is text.
        let keep = settings.payload_keep_bytes;
        let (copy, kept) = match std::str::from_utf8(&event.payload) {
            Ok(text) => {
                let copy = &text[..text.floor_char_boundary(keep)];
                (copy.replace('\0', "\u{fffd}"), copy.len())
            }
            Err(_) => {
                let end = keep.min(event.payload.len());
                (
                    String::from_utf8_lossy(&event.payload[..end]).replace('\0', "\u{fffd}"),
                    end,
                )
            }
        };
        let mut hasher = Sha256::new();
        hasher.update(event.routing_key.as_bytes());
        hasher.update([0]);
        hasher.update(&event.payload);
        let mut record = NewEventRecord {
            received_at: Utc::now(),
            source: event.source.clone(),
            routing_key: event.routing_key.clone(),
            delivery_id: event.delivery_id.clone(),
            content_hash: hex::encode(hasher.finalize()),
            redelivery_window: (event.redelivered && event.delivery_id.is_none())
                .then_some(settings.redelivery_window),
            payload_size: event.payload.len() as i64,
            payload: Some(copy),
            payload_truncated: kept < event.payload.len(),
            status: EventStatus::Unmatched,
            reason: None,
            proposals: Vec::new(),
        };
        let names = self.launch.secret_names();
        let payload = match parse_payload(event) {
            Ok(p) => p,
            Err(why) => {
                record.status = EventStatus::Rejected;
                record.reason = Some(why.to_string());
                // Unreadable, so its secret keys cannot be told apart: a copy that may hold
                // one is not kept.
                if record
                    .payload
                    .as_deref()
                    .is_some_and(|p| names.is_secret(p))
                {
                    record.payload = Some(REDACTED.to_owned());
                }
                return record;
            }
        };
        // The record keeps the payload with the values of secret keys replaced; the runs
        // still get them (sealed in their extra vars by the launcher). The text is scanned
        // first: a payload naming nothing secret costs no walk.
        if record
            .payload
            .as_deref()
            .is_some_and(|p| names.is_secret(p))
        {
            let mut masked = payload.clone();
            if names.mask(&mut masked) {
                let text = serde_json::to_string(&masked).unwrap_or_default();
                let end = text.floor_char_boundary(settings.payload_keep_bytes);
                record.payload_truncated = end < text.len();
                record.payload = Some(text[..end].to_owned());
            }
        }
        match rules.evaluate(event, &payload) {
            Err(no) => record.reason = Some(no.0),
            Ok(matches) => {
                for m in matches {
                    record
                        .proposals
                        .push(self.propose(rules, &m, event, &payload).await);
                }
            }
        }
        record
    }

    async fn propose(
        &self,
        rules: &Rules,
        m: &Match<'_>,
        event: &Inbound,
        payload: &Value,
    ) -> Proposal {
        let rule = m.rule;
        let flow = match &rule.target {
            Target::Flow { name, version } => Some((name.as_str(), *version)),
            _ => None,
        };
        let is_flow = flow.is_some();
        let (gates, start) = match &m.gates {
            Ok(g) => (
                g.iter()
                    .map(|(kind, key, within)| Gate {
                        kind: *kind,
                        key: key.clone(),
                        within: *within,
                    })
                    .collect(),
                if let Some((name, version)) = flow {
                    self.build_execution(rules, m, (name, version), event, payload)
                        .await
                } else {
                    self.build_run(m, event, payload)
                        .await
                        .map(|run| Start::Run(Box::new(run)))
                }
                .map_err(|e| e.to_string()),
            ),
            Err(e) => (Vec::new(), Err(e.to_string())),
        };
        Proposal {
            rule: rule.name().to_owned(),
            gates,
            // A flow's executions follow the flow's own concurrency setting.
            concurrency: (!is_flow).then(|| Concurrency {
                key: m.concurrency.0.clone(),
                policy: m.concurrency.1,
            }),
            start,
        }
    }

    /// The execution a `flow` rule starts for `event`: its inputs rendered from the event and
    /// checked by the flow (secret ones sealed there).
    async fn build_execution(
        &self,
        rules: &Rules,
        m: &Match<'_>,
        (name, version): (&str, Option<i64>),
        event: &Inbound,
        payload: &Value,
    ) -> Result<Start, BuildError> {
        let rule = m.rule;
        let inputs = rules.flow_inputs(rule, event, payload)?;
        let new = self
            .flows
            .prepare(FlowStart {
                flow: name.to_owned(),
                version,
                inputs,
                started_by: format!("rule:{}", rule.name()),
            })
            .await?;
        Ok(Start::Flow(new))
    }

    async fn build_run(
        &self,
        m: &Match<'_>,
        event: &Inbound,
        payload: &Value,
    ) -> Result<NewRun, BuildError> {
        let rule = m.rule;
        let action = rule.action();
        let inventory = match (&action.inventory, action.ansible_inventory) {
            (_, true) => Some(InventorySource::AnsibleConfig),
            (Some(name), false) => Some(InventorySource::Stored(Ref::Name(name.clone()))),
            (None, false) => None,
        };
        let (target, inventory) = match &rule.target {
            Target::Template(name) => {
                (launch::Target::Template(Ref::Name(name.clone())), inventory)
            }
            _ => {
                let project = action.project.clone().unwrap_or_default();
                let playbook = rule.playbook_for(&event.routing_key)?.unwrap_or_default();
                (
                    launch::Target::Playbook {
                        project: ProjectRef::Ref(Ref::Name(project)),
                        playbook,
                    },
                    Some(inventory.unwrap_or_else(|| {
                        InventorySource::Inline(InventoryContent {
                            format: InventoryFormat::Ini,
                            hosts: LOCAL_INVENTORY.to_owned(),
                            vars: None,
                        })
                    })),
                )
            }
        };
        // The rule's options over the template's defaults (or the plain defaults), then its
        // vars, the payload and what troupe tells the playbook about the event, each over the
        // one before.
        let mut overrides = rule.overrides().clone();
        overrides.add_extra_vars(action.vars.clone());
        match (&action.vars_key, payload) {
            (Some(key), p) => overrides.add_extra_vars(Map::from_iter([(key.clone(), p.clone())])),
            (None, Value::Object(fields)) => overrides.add_extra_vars(fields.clone()),
            (None, other) => {
                return Err(BuildError::PayloadNotObject(troupe_core::text::json_kind(
                    other,
                )));
            }
        }
        overrides.add_extra_vars(Map::from_iter([(
            "troupe_event".to_owned(),
            serde_json::json!({
                "source": event.source,
                "routing_key": event.routing_key,
                "rule": rule.name(),
            }),
        )]));
        let mut labels = action.labels.clone();
        labels.insert("troupe/rule".to_owned(), rule.name().to_owned());
        labels.insert("troupe/source".to_owned(), event.source.clone());
        let request = LaunchRequest {
            target,
            inventory,
            options: LaunchOptions::Over(overrides),
            labels,
            tag: None,
            notify: action.notify.clone(),
        };
        let origin = Origin::Rule {
            rule: rule.name().to_owned(),
            source: event.source.clone(),
            template_id: None,
        };
        Ok(self.launch.prepare(request, origin).await?)
    }

    /// Starts the runs stored claimed on the slots reserved for them and tells the pool about
    /// the queued ones, tells the engine about new executions, and cancels what a `cancel`
    /// policy displaced.
    async fn announce(
        &self,
        record: &EventRecord,
        runs: &[troupe_core::run::Run],
        executions: &[Execution],
        mut slots: Option<Box<dyn Reserved>>,
    ) {
        for run in runs {
            // The ingest labels every run it starts with its rule.
            let actor = run
                .labels
                .get("troupe/rule")
                .map(|rule| format!("rule:{rule}"));
            match (slots.as_mut(), run.status) {
                (Some(slots), RunStatus::Running) => slots.start(run),
                _ => self.launch.announce(run),
            }
            if let Some(actor) = &actor {
                self.launch.audit_by(run, actor);
            }
        }
        // The slots no run took are given back.
        drop(slots);
        for execution in executions {
            self.flows.announce(execution).await;
        }
        for outcome in &record.rules {
            if let RuleResult::Started { canceled, .. } = &outcome.result {
                for id in canceled {
                    match self.launch.cancel(*id, CancelMode::Graceful).await {
                        Ok(_) | Err(StoreError::Conflict(_)) => {}
                        Err(e) => tracing::warn!(run = id, error = %e,
                            "could not cancel a run displaced by a newer event"),
                    }
                }
            }
        }
    }

    async fn record(&self, new: &NewEventRecord) -> Result<Delivered, StoreError> {
        // Admission at create: free slots for the runs this event may start, so that they are
        // stored already claimed and started at once, without a trip through the queue.
        let wanted = new
            .proposals
            .iter()
            .filter(|p| matches!(p.start, Ok(Start::Run(_))))
            .count();
        let slots = (wanted > 0).then(|| self.launch.reserve(wanted)).flatten();
        let admission = slots.as_ref().map(|s| s.admission());
        match self.store.ingest_event(new, admission).await? {
            Ingested::Recorded {
                record,
                runs,
                executions,
            } => {
                self.announce(&record, &runs, &executions, slots).await;
                let execution_ids: Vec<i64> = executions.iter().map(|e| e.id).collect();
                tracing::info!(event = record.id, source = %record.source,
                    routing_key = %record.routing_key, status = %record.status,
                    runs = ?record.run_ids, executions = ?execution_ids, "event recorded");
                Ok(Delivered {
                    record,
                    duplicate: false,
                })
            }
            Ingested::Duplicate(record) => {
                tracing::info!(event = record.id, source = %record.source,
                    "redelivered event already recorded; not run again");
                Ok(Delivered {
                    record,
                    duplicate: true,
                })
            }
        }
    }
}

#[async_trait]
impl Sink for Ingestor {
    async fn deliver(&self, event: Inbound) -> Result<Delivered, NotStored> {
        let source = event.source.clone();
        let delivered = self.deliver_uncounted(event).await;
        let metrics = &self.telemetry.metrics;
        match &delivered {
            Ok(d) if d.record.status == EventStatus::Rejected => metrics.source_failed(&source),
            Ok(_) => metrics.source_delivered(&source),
            Err(_) => metrics.source_failed(&source),
        }
        delivered
    }
}

impl Ingestor {
    async fn deliver_uncounted(&self, event: Inbound) -> Result<Delivered, NotStored> {
        let rules = self.rules();
        let new = self.prepare(&rules, &event).await;
        match self.record(&new).await {
            Ok(d) => Ok(d),
            Err(first) => {
                // A store that answers but refuses this event would refuse it forever: record
                // it as rejected (without its runs) so it is acknowledged, not redelivered in a
                // loop. A store that does not answer keeps the event unacknowledged.
                if self.store.ping().await.is_err() {
                    return Err(NotStored(first.to_string()));
                }
                let mut rejected = new.clone();
                rejected.proposals.clear();
                rejected.status = EventStatus::Rejected;
                rejected.reason = Some(format!("could not be recorded: {first}"));
                self.record(&rejected)
                    .await
                    .map_err(|e| NotStored(e.to_string()))
            }
        }
    }
}

/// Why a payload could not be read; the event is recorded as rejected with this reason.
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    /// Not JSON.
    #[error("the payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not text, so not YAML either.
    #[error("the payload is not UTF-8 text")]
    NotText,
    /// Not YAML.
    #[error("the payload is not valid YAML: {0}")]
    Yaml(#[from] serde_saphyr::Error),
}

fn parse_payload(event: &Inbound) -> Result<Value, PayloadError> {
    let text = || std::str::from_utf8(&event.payload).map_err(|_| PayloadError::NotText);
    match event.format {
        PayloadFormat::Text => return Ok(Value::String(text()?.to_owned())),
        PayloadFormat::Loopabull => {
            let text = text()?;
            return Ok(match serde_saphyr::from_str::<Value>(text) {
                Ok(Value::Object(fields)) => Value::Object(fields),
                _ => serde_json::json!({ "msg": text }),
            });
        }
        PayloadFormat::Json | PayloadFormat::Yaml => {}
    }
    if event.payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match event.format {
        PayloadFormat::Yaml => Ok(serde_saphyr::from_str(text()?)?),
        _ => Ok(serde_json::from_slice(&event.payload)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn payloads_are_read_by_format() {
        let mut ev = Inbound::json("s", "k", "{\"a\": 1}");
        let read = |ev: &Inbound| parse_payload(ev).map_err(|e| e.to_string());
        assert_eq!(read(&ev), Ok(serde_json::json!({"a": 1})));
        ev.payload = Bytes::from_static(b"  ");
        assert_eq!(read(&ev), Ok(serde_json::json!({})));
        ev.payload = Bytes::from_static(b"{nope");
        assert!(read(&ev).is_err_and(|e| e.contains("not valid JSON")));
        ev.format = PayloadFormat::Yaml;
        ev.payload = Bytes::from_static(b"a: 1\nb: [x]\n");
        assert_eq!(read(&ev), Ok(serde_json::json!({"a": 1, "b": ["x"]})));
        ev.payload = Bytes::from_static(b"\xff\xfe");
        assert_eq!(read(&ev), Err("the payload is not UTF-8 text".to_owned()));
        ev.format = PayloadFormat::Text;
        ev.payload = Bytes::from_static(b"a: 1");
        assert_eq!(read(&ev), Ok(serde_json::json!("a: 1")));
        // Loopabull's Redis looper: a mapping is the payload, anything else is `msg`.
        ev.format = PayloadFormat::Loopabull;
        assert_eq!(read(&ev), Ok(serde_json::json!({"a": 1})));
        ev.payload = Bytes::from_static(b"{\"who\": \"you\"}");
        assert_eq!(read(&ev), Ok(serde_json::json!({"who": "you"})));
        for text in ["hello world", "[1, 2]", "{nope", ""] {
            ev.payload = Bytes::from(text);
            assert_eq!(read(&ev), Ok(serde_json::json!({"msg": text})), "{text}");
        }
    }

    /// A stand-in for the flow engine: remembers what it was asked, checks the one input its
    /// pretend flow requires, and builds executions of the flow stored in the test's store.
    #[derive(Default)]
    struct Flows {
        asked: std::sync::Mutex<Vec<FlowStart>>,
        announced: std::sync::Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl StartFlow for Flows {
        async fn prepare(
            &self,
            start: FlowStart,
        ) -> Result<troupe_core::flow::NewExecution, FlowStartError> {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(start.clone());
            }
            if start.flow != "deploy" {
                return Err(FlowStartError::UnknownFlow(start.flow));
            }
            if !start.inputs.contains_key("host") {
                return Err(FlowStartError::Invalid(
                    "inputs.host: is required and was not given".to_owned(),
                ));
            }
            Ok(troupe_core::flow::NewExecution {
                flow: start.flow,
                version: start.version.unwrap_or(1),
                inputs: start.inputs,
                sealed_secrets: None,
                concurrency_key: None,
                parent: None,
                started_by: start.started_by,
                notify: Vec::new(),
            })
        }

        async fn announce(&self, execution: &Execution) {
            if let Ok(mut announced) = self.announced.lock() {
                announced.push(execution.id);
            }
        }
    }

    const RULES: &str = r#"
sources:
  hook: {type: webhook}
rules:
  - name: deploy
    routing_keys: ["deploy.*"]
    when: "payload.kind != 'ignored'"
    action:
      flow: deploy
      inputs:
        host: "{{ payload.host }}"
        hosts: "{{ payload.hosts }}"
        note: "from {{ event.routing_key }}"
    dedupe: {key: payload.id, within: 1h}
  - name: nowhere
    routing_keys: ["other"]
    action: {flow: missing}
  - name: label
    routing_keys: ["label"]
    action: {flow: deploy, inputs: {host: "h-{{ payload.host }}"}}
"#;

    struct Fixture {
        ingestor: Ingestor,
        flows: Arc<Flows>,
        store: Arc<dyn Store>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            troupe_sqlite::SqliteStore::open(&dir.path().join("troupe.db"))
                .await
                .expect("store"),
        );
        store
            .put_flow("deploy", "name: deploy\nsteps: []\n")
            .await
            .expect("flow");
        let launch = Arc::new(launch::Launcher::new(
            Arc::clone(&store),
            dir.path().join("projects"),
            // No free slot, and no rule here runs a playbook: it starts nothing.
            Arc::new(SlotQueue::default()),
        ));
        let flows = Arc::new(Flows::default());
        let rules = Arc::new(Rules::from_yaml(RULES).expect("rules"));
        Fixture {
            ingestor: Ingestor::new(
                Arc::clone(&store),
                launch,
                Arc::clone(&flows) as Arc<dyn StartFlow>,
                rules,
            ),
            flows,
            store,
            _dir: dir,
        }
    }

    async fn deliver(f: &Fixture, key: &str, payload: &str) -> EventRecord {
        f.ingestor
            .deliver(Inbound::json("hook", key, payload.to_owned()))
            .await
            .expect("stored")
            .record
    }

    /// A queue with `free` slots (none by default) that records what it was told: the runs
    /// started on its slots and the runs announced queued.
    #[derive(Default)]
    struct SlotQueue {
        free: std::sync::atomic::AtomicUsize,
        started: Arc<std::sync::Mutex<Vec<i64>>>,
        announced: std::sync::Mutex<Vec<i64>>,
    }

    struct HeldSlots {
        held: usize,
        started: Arc<std::sync::Mutex<Vec<i64>>>,
    }

    impl Reserved for HeldSlots {
        fn admission(&self) -> troupe_store::Admission<'_> {
            troupe_store::Admission {
                claimant: troupe_store::Claimant::embedded("test-pool"),
                lease: std::time::Duration::from_secs(60),
                slots: self.held,
            }
        }

        fn start(&mut self, run: &troupe_core::run::Run) {
            assert!(self.held > 0, "started on a slot not held: {run:?}");
            self.held -= 1;
            if let Ok(mut started) = self.started.lock() {
                started.push(run.id);
            }
        }
    }

    #[async_trait]
    impl launch::Queue for SlotQueue {
        fn reserve(&self, slots: usize) -> Option<Box<dyn Reserved>> {
            use std::sync::atomic::Ordering::SeqCst;
            let free = self.free.load(SeqCst);
            let held = slots.min(free);
            self.free.store(free - held, SeqCst);
            (held > 0).then(|| {
                Box::new(HeldSlots {
                    held,
                    started: Arc::clone(&self.started),
                }) as Box<dyn Reserved>
            })
        }

        fn run_created(&self, run: &troupe_core::run::Run) {
            if let Ok(mut announced) = self.announced.lock() {
                announced.push(run.id);
            }
        }

        async fn cancel_run(
            &self,
            run_id: i64,
            _mode: CancelMode,
        ) -> troupe_store::StoreResult<troupe_core::run::Run> {
            Err(StoreError::not_found("run", run_id))
        }
    }

    #[tokio::test]
    async fn runs_an_event_starts_are_stored_claimed_while_slots_are_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project_dir = dir.path().join("ops");
        std::fs::create_dir(&project_dir).expect("project dir");
        std::fs::write(project_dir.join("a.yml"), "- hosts: all\n  tasks: []\n").expect("a");
        let store: Arc<dyn Store> = Arc::new(
            troupe_sqlite::SqliteStore::open(&dir.path().join("troupe.db"))
                .await
                .expect("store"),
        );
        store
            .create_project(&troupe_core::project::NewProject {
                name: "ops".into(),
                source: troupe_core::project::ProjectSource::Dir {
                    path: project_dir.display().to_string(),
                },
            })
            .await
            .expect("project");
        let queue = Arc::new(SlotQueue::default());
        queue.free.store(2, std::sync::atomic::Ordering::SeqCst);
        let launch = Arc::new(launch::Launcher::new(
            Arc::clone(&store),
            dir.path().join("projects"),
            Arc::clone(&queue) as Arc<dyn launch::Queue>,
        ));
        // Two rules match every event: two runs each.
        let rules = r#"
sources:
  hook: {type: webhook}
rules:
  - name: one
    routing_keys: ["go"]
    action: {project: ops, playbook: a.yml}
  - name: two
    routing_keys: ["go"]
    action: {project: ops, playbook: a.yml}
"#;
        let ingestor = Ingestor::new(
            Arc::clone(&store),
            launch,
            Arc::new(Flows::default()) as Arc<dyn StartFlow>,
            Arc::new(Rules::from_yaml(rules).expect("rules")),
        );
        let status = |id: i64| {
            let store = Arc::clone(&store);
            async move { store.get_run(id).await.expect("run") }
        };
        let deliver = || async {
            ingestor
                .deliver(Inbound::json("hook", "go", "{}".to_owned()))
                .await
                .expect("stored")
                .record
        };

        // Two slots free: both runs stored running under the pool's claim and started.
        let first = deliver().await;
        assert_eq!(first.run_ids.len(), 2, "{first:?}");
        for &id in &first.run_ids {
            let run = status(id).await;
            assert_eq!(run.status, troupe_core::RunStatus::Running, "{run:?}");
            assert_eq!(run.worker_id.as_deref(), Some("test-pool"));
        }
        let started = queue.started.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(started, first.run_ids);

        // No slot left: both stored queued and announced.
        let second = deliver().await;
        for &id in &second.run_ids {
            assert_eq!(status(id).await.status, troupe_core::RunStatus::Queued);
        }
        let announced = queue
            .announced
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        assert_eq!(announced, second.run_ids);

        // One slot free again, but older runs wait: it is not used, and given back.
        queue.free.store(1, std::sync::atomic::Ordering::SeqCst);
        let third = deliver().await;
        for &id in &third.run_ids {
            assert_eq!(status(id).await.status, troupe_core::RunStatus::Queued);
        }
        let started = queue.started.lock().map(|s| s.len()).unwrap_or_default();
        assert_eq!(started, 2, "nothing more started");
    }

    #[tokio::test]
    async fn a_flow_rule_starts_an_execution_with_inputs_from_the_event() {
        let f = fixture().await;
        let record = deliver(
            &f,
            "deploy.web",
            r#"{"host": "web1", "hosts": ["a", "b"], "id": 7}"#,
        )
        .await;
        assert_eq!(record.status, EventStatus::Accepted, "{record:?}");
        let [outcome] = &record.rules[..] else {
            panic!("one rule matched: {record:?}");
        };
        assert_eq!(outcome.rule, "deploy");
        let RuleResult::StartedFlow { execution_id } = outcome.result else {
            panic!("an execution was started: {outcome:?}");
        };
        assert!(record.run_ids.is_empty());

        let asked = f.flows.asked.lock().map(|a| a.clone()).unwrap_or_default();
        assert_eq!(
            asked,
            vec![FlowStart {
                flow: "deploy".into(),
                version: None,
                inputs: serde_json::json!({
                    "host": "web1",
                    "hosts": ["a", "b"],
                    "note": "from deploy.web",
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
                started_by: "rule:deploy".into(),
            }]
        );
        let stored = f.store.get_execution(execution_id).await.expect("stored");
        assert_eq!(stored.flow, "deploy");
        assert_eq!(stored.started_by, "rule:deploy");
        assert_eq!(stored.inputs["host"], "web1");
        let announced = f
            .flows
            .announced
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        assert_eq!(
            announced,
            vec![execution_id],
            "handed to the engine once stored"
        );

        // The same dedupe id: held back by the gate the execution closed; nothing announced.
        let again = deliver(&f, "deploy.db", r#"{"host": "db1", "id": 7}"#).await;
        assert_eq!(again.status, EventStatus::Skipped, "{again:?}");
        assert!(
            matches!(again.rules[0].result, RuleResult::Gated { by_event, .. } if by_event == record.id),
            "{again:?}"
        );
        let announced = f
            .flows
            .announced
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        assert_eq!(announced.len(), 1);
    }

    #[tokio::test]
    async fn input_problems_fail_the_rule_with_the_reason() {
        let f = fixture().await;
        // No `host`: the sole expression is undefined, so the input is left out and the flow
        // says it is required.
        let record = deliver(&f, "deploy.web", r#"{"id": 1}"#).await;
        assert_eq!(record.status, EventStatus::Failed, "{record:?}");
        assert_eq!(
            record.rules[0].result,
            RuleResult::Failed {
                error: "inputs.host: is required and was not given".into()
            }
        );
        // A template printing an undefined value fails before the flow is asked.
        let before = f.flows.asked.lock().map(|a| a.len()).unwrap_or_default();
        let record = deliver(&f, "label", "{}").await;
        let RuleResult::Failed { error } = &record.rules[0].result else {
            panic!("failed: {record:?}");
        };
        assert!(error.starts_with("inputs.host: "), "{error}");
        assert!(error.contains("undefined"), "{error}");
        let after = f.flows.asked.lock().map(|a| a.len()).unwrap_or_default();
        assert_eq!(before, after, "the flow was not asked");
        // An unknown flow.
        let record = deliver(&f, "other", "{}").await;
        assert_eq!(
            record.rules[0].result,
            RuleResult::Failed {
                error: "no flow named \"missing\"".into()
            }
        );
        let announced = f
            .flows
            .announced
            .lock()
            .map(|a| a.len())
            .unwrap_or_default();
        assert_eq!(announced, 0, "nothing started");
        let executions = f
            .store
            .list_executions(
                &troupe_core::flow::ExecutionFilter::default(),
                troupe_store::Page {
                    before: None,
                    limit: 10,
                },
            )
            .await
            .expect("list");
        assert!(executions.is_empty());
    }
}
