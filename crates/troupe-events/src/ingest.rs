//! The ingest path every source shares: read the payload, match the rules, build the runs,
//! and record the event with its runs in one store transaction; only then is the event
//! acknowledged.

use crate::rules::{Match, Rules, Target};
use crate::sink::{Delivered, Inbound, NotStored, PayloadFormat, Sink};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use troupe_core::inbound::{EventRecord, EventStatus, RuleResult};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::project::PlaybookRef;
use troupe_core::run::{CancelMode, Labels, NewRun, Origin, RunOptions};
use troupe_store::{Concurrency, Gate, Ingested, NewEventRecord, Proposal, Store, StoreError};
use troupe_worker::WorkerPool;
use troupe_worker::playbooks::{project_root, resolve_playbook};

/// The inventory of rules that name none: this machine only, as Loopabull ran, with the
/// Python that runs ansible (so modules find the same libraries).
pub const LOCAL_INVENTORY: &str = "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n";

/// Records events and starts the runs their rules ask for.
pub struct Ingestor {
    store: Arc<dyn Store>,
    pool: Arc<WorkerPool>,
    projects_dir: PathBuf,
    rules: RwLock<Arc<Rules>>,
}

impl Ingestor {
    /// An ingestor applying `rules`.
    pub fn new(
        store: Arc<dyn Store>,
        pool: Arc<WorkerPool>,
        projects_dir: PathBuf,
        rules: Arc<Rules>,
    ) -> Ingestor {
        Ingestor {
            store,
            pool,
            projects_dir,
            rules: RwLock::new(rules),
        }
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
        let payload = match parse_payload(event) {
            Ok(p) => p,
            Err(why) => {
                record.status = EventStatus::Rejected;
                record.reason = Some(why);
                return record;
            }
        };
        match rules.evaluate(event, &payload) {
            Err(no) => record.reason = Some(no.0),
            Ok(matches) => {
                for m in matches {
                    record
                        .proposals
                        .push(self.propose(&m, event, &payload).await);
                }
            }
        }
        record
    }

    async fn propose(&self, m: &Match<'_>, event: &Inbound, payload: &Value) -> Proposal {
        let rule = m.rule;
        let (gates, run) = match &m.gates {
            Ok(g) => (
                g.iter()
                    .map(|(kind, key, within)| Gate {
                        kind: *kind,
                        key: key.clone(),
                        within: *within,
                    })
                    .collect(),
                self.build_run(m, event, payload).await,
            ),
            Err(e) => (Vec::new(), Err(e.to_string())),
        };
        Proposal {
            rule: rule.name().to_owned(),
            gates,
            concurrency: Some(Concurrency {
                key: m.concurrency.0.clone(),
                policy: m.concurrency.1,
            }),
            run,
        }
    }

    async fn build_run(
        &self,
        m: &Match<'_>,
        event: &Inbound,
        payload: &Value,
    ) -> Result<NewRun, String> {
        let rule = m.rule;
        let action = rule.action();
        let backend = |e: StoreError| format!("store: {e}");
        let (project, playbook, inventory_name, mut options, template_id, mut labels) =
            match &rule.target {
                Target::Template(name) => {
                    let t = self
                        .store
                        .find_template(name)
                        .await
                        .map_err(backend)?
                        .ok_or_else(|| format!("no template named {name:?}"))?;
                    let project = self
                        .store
                        .get_project(t.project_id)
                        .await
                        .map_err(backend)?;
                    let inventory = match &action.inventory {
                        Some(name) => Some(name.clone()),
                        None => Some(
                            self.store
                                .get_inventory(t.inventory_id)
                                .await
                                .map_err(|_| {
                                    format!("the inventory of template {name:?} no longer exists")
                                })?
                                .name,
                        ),
                    };
                    let mut options = t.defaults.clone();
                    if let Some(o) = &action.options {
                        merge_options(&mut options, o);
                    }
                    (
                        project,
                        t.playbook.clone(),
                        inventory,
                        options,
                        Some(t.id),
                        t.labels,
                    )
                }
                _ => {
                    let name = action.project.as_deref().unwrap_or_default();
                    let project = self
                        .store
                        .find_project(name)
                        .await
                        .map_err(backend)?
                        .ok_or_else(|| format!("no project named {name:?}"))?;
                    let playbook = rule
                        .playbook_for(&event.routing_key)
                        .map_err(|e| e.to_string())?
                        .unwrap_or_default();
                    (
                        project,
                        playbook,
                        action.inventory.clone(),
                        action.options.clone().unwrap_or_default(),
                        None,
                        Labels::new(),
                    )
                }
            };
        let pb = PlaybookRef::parse(&playbook).map_err(|e| e.to_string())?;
        resolve_playbook(&project_root(&project, &self.projects_dir), pb.as_str())
            .await
            .map_err(|e| format!("{e} (project {:?})", project.name))?;
        let (inventory_id, inventory) = match inventory_name {
            Some(name) => {
                let inv = self
                    .store
                    .find_inventory(&name)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| format!("no inventory named {name:?}"))?;
                (Some(inv.id), inv.content)
            }
            None => (
                None,
                InventoryContent {
                    format: InventoryFormat::Ini,
                    hosts: LOCAL_INVENTORY.to_owned(),
                    vars: None,
                },
            ),
        };
        let mut vars = options.extra_vars.clone();
        vars.extend(action.vars.clone());
        match (&action.vars_key, payload) {
            (Some(key), p) => {
                vars.insert(key.clone(), p.clone());
            }
            (None, Value::Object(fields)) => vars.extend(fields.clone()),
            (None, other) => {
                return Err(format!(
                    "the payload is {}, not an object, so it cannot be extra vars; set \
                     action.vars_key to pass it under a variable",
                    troupe_core::text::json_kind(other)
                ));
            }
        }
        vars.insert(
            "troupe_event".to_owned(),
            serde_json::json!({
                "source": event.source,
                "routing_key": event.routing_key,
                "rule": rule.name(),
            }),
        );
        options.extra_vars = vars;
        labels.extend(action.labels.clone());
        labels.insert("troupe/rule".to_owned(), rule.name().to_owned());
        labels.insert("troupe/source".to_owned(), event.source.clone());
        let new = NewRun {
            project_id: project.id,
            playbook: pb,
            inventory_id,
            inventory,
            options,
            labels,
            tag: None,
            origin: Origin::Rule {
                rule: rule.name().to_owned(),
                source: event.source.clone(),
                template_id,
            },
        };
        new.validate().map_err(|e| e.to_string())?;
        Ok(new)
    }

    /// Tells the pool about new runs and cancels what a `cancel` policy displaced.
    async fn announce(&self, record: &EventRecord, runs: &[troupe_core::run::Run]) {
        for run in runs {
            self.pool.run_created(run);
        }
        for outcome in &record.rules {
            if let RuleResult::Started { canceled, .. } = &outcome.result {
                for id in canceled {
                    match self.pool.cancel_run(*id, CancelMode::Graceful).await {
                        Ok(_) | Err(StoreError::Conflict(_)) => {}
                        Err(e) => tracing::warn!(run = id, error = %e,
                            "could not cancel a run displaced by a newer event"),
                    }
                }
            }
        }
    }

    async fn record(&self, new: &NewEventRecord) -> Result<Delivered, StoreError> {
        match self.store.ingest_event(new).await? {
            Ingested::Recorded { record, runs } => {
                self.announce(&record, &runs).await;
                tracing::info!(event = record.id, source = %record.source,
                    routing_key = %record.routing_key, status = %record.status,
                    runs = ?record.run_ids, "event recorded");
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

fn parse_payload(event: &Inbound) -> Result<Value, String> {
    if event.payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match event.format {
        PayloadFormat::Json => serde_json::from_slice(&event.payload)
            .map_err(|e| format!("the payload is not valid JSON: {e}")),
        PayloadFormat::Yaml => {
            let text = std::str::from_utf8(&event.payload)
                .map_err(|_| "the payload is not UTF-8 text".to_owned())?;
            serde_saphyr::from_str(text).map_err(|e| format!("the payload is not valid YAML: {e}"))
        }
    }
}

/// Options a rule sets over a template's defaults (each one given replaces the default).
fn merge_options(base: &mut RunOptions, over: &RunOptions) {
    let defaults = RunOptions::default();
    if over.limit.is_some() {
        base.limit.clone_from(&over.limit);
    }
    if !over.tags.is_empty() {
        base.tags.clone_from(&over.tags);
    }
    if !over.skip_tags.is_empty() {
        base.skip_tags.clone_from(&over.skip_tags);
    }
    if over.check != defaults.check {
        base.check = over.check;
    }
    if over.diff != defaults.diff {
        base.diff = over.diff;
    }
    if over.forks.is_some() {
        base.forks = over.forks;
    }
    if over.verbosity != defaults.verbosity {
        base.verbosity = over.verbosity;
    }
    if over.timeout_s.is_some() {
        base.timeout_s = over.timeout_s;
    }
    if over.start_at_task.is_some() {
        base.start_at_task.clone_from(&over.start_at_task);
    }
    if over.slices.is_some() {
        base.slices = over.slices;
    }
    if over.slice_size.is_some() {
        base.slice_size = over.slice_size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn payloads_are_read_by_format() {
        let mut ev = Inbound::json("s", "k", "{\"a\": 1}");
        assert_eq!(parse_payload(&ev), Ok(serde_json::json!({"a": 1})));
        ev.payload = Bytes::from_static(b"  ");
        assert_eq!(parse_payload(&ev), Ok(serde_json::json!({})));
        ev.payload = Bytes::from_static(b"{nope");
        assert!(parse_payload(&ev).is_err_and(|e| e.contains("not valid JSON")));
        ev.format = PayloadFormat::Yaml;
        ev.payload = Bytes::from_static(b"a: 1\nb: [x]\n");
        assert_eq!(
            parse_payload(&ev),
            Ok(serde_json::json!({"a": 1, "b": ["x"]}))
        );
    }
}
