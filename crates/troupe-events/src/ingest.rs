//! The ingest path every source shares: read the payload, match the rules, build the runs,
//! and record the event with its runs in one store transaction; only then is the event
//! acknowledged.

use crate::routing::KeyError;
use crate::rules::{Match, Rules, Target};
use crate::sink::{Delivered, Inbound, NotStored, PayloadFormat, Sink};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use troupe_core::inbound::{EventRecord, EventStatus, RuleResult};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::run::{CancelMode, NewRun, Origin};
use troupe_launch::{
    self as launch, InventorySource, Launch, LaunchError, LaunchOptions, LaunchRequest, ProjectRef,
    Ref,
};
use troupe_store::{Concurrency, Gate, Ingested, NewEventRecord, Proposal, Store, StoreError};

/// The inventory of rules that name none: this machine only, as Loopabull ran, with the
/// Python that runs ansible (so modules find the same libraries).
pub const LOCAL_INVENTORY: &str = "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n";

/// Records events and starts the runs their rules ask for.
pub struct Ingestor {
    store: Arc<dyn Store>,
    launch: Arc<dyn Launch>,
    rules: RwLock<Arc<Rules>>,
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
}

impl Ingestor {
    /// An ingestor applying `rules`, starting runs through `launch`.
    pub fn new(store: Arc<dyn Store>, launch: Arc<dyn Launch>, rules: Arc<Rules>) -> Ingestor {
        Ingestor {
            store,
            launch,
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
                record.reason = Some(why.to_string());
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
                self.build_run(m, event, payload)
                    .await
                    .map_err(|e| e.to_string()),
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
    ) -> Result<NewRun, BuildError> {
        let rule = m.rule;
        let action = rule.action();
        let inventory = action
            .inventory
            .clone()
            .map(|name| InventorySource::Stored(Ref::Name(name)));
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

    /// Tells the pool about new runs and cancels what a `cancel` policy displaced.
    async fn announce(&self, record: &EventRecord, runs: &[troupe_core::run::Run]) {
        for run in runs {
            self.launch.announce(run);
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
    if event.payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match event.format {
        PayloadFormat::Json => Ok(serde_json::from_slice(&event.payload)?),
        PayloadFormat::Yaml => {
            let text = std::str::from_utf8(&event.payload).map_err(|_| PayloadError::NotText)?;
            Ok(serde_saphyr::from_str(text)?)
        }
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
    }
}
