//! The events ansible emits through troupe's callback plugin, in ansible-runner's shape so that
//! existing tooling reads them as they are.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;

/// One event of a run, as the callback plugin wrote it (ansible-runner's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the run: 1, 2, 3... with no gap.
    pub counter: i64,
    /// Unique id of this event.
    pub uuid: String,
    /// The event name, e.g. `runner_on_ok` or `playbook_on_stats`.
    pub event: String,
    /// The event this one belongs to (a task start for a host result, a play for a task...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<String>,
    /// When ansible emitted it.
    pub created: DateTime<Utc>,
    /// The text ansible's stdout callback printed for this event.
    #[serde(default)]
    pub stdout: String,
    /// First line of `stdout` in the run's stdout (0-based, inclusive).
    #[serde(default)]
    pub start_line: i64,
    /// Line after the last line of `stdout` in the run's stdout (exclusive).
    #[serde(default)]
    pub end_line: i64,
    /// Event details: `playbook`, `play`, `task`, `task_action`, `host`, `res`, `duration`...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub event_data: EventData,
}

impl Event {
    /// The host the event is about, if any.
    pub fn host(&self) -> Option<&str> {
        self.event_data.host.as_deref()
    }

    /// The task name the event is about, if any.
    pub fn task(&self) -> Option<&str> {
        self.event_data.task.as_deref()
    }

    /// True for the events that mean a host failed a task (ignored failures excluded).
    pub fn is_host_failure(&self) -> bool {
        match self.event.as_str() {
            "runner_on_unreachable" => true,
            "runner_on_failed" => !self.event_data.ignore_errors,
            _ => false,
        }
    }
}

/// An event's `event_data`, kept as the JSON text the plugin wrote.
///
/// Events are stored and streamed far more often than they are looked into, so the text is
/// carried as it came (validated, never rebuilt as a tree and written back) and the three fields
/// troupe reads of every event (`host`, `task`, `ignore_errors`) are taken out once, when it is
/// parsed. Anything else is read with [`EventData::get`] or [`EventData::to_value`].
#[derive(Clone)]
pub struct EventData {
    raw: Box<RawValue>,
    host: Option<String>,
    task: Option<String>,
    ignore_errors: bool,
}

/// The fields of `event_data` read for every event, borrowed from its text.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    host: Option<&'a RawValue>,
    #[serde(borrow)]
    task: Option<&'a RawValue>,
    #[serde(borrow)]
    ignore_errors: Option<&'a RawValue>,
}

impl EventData {
    /// Wraps validated JSON text.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        let (host, task, ignore_errors) = match serde_json::from_str::<Peek>(raw.get()) {
            Ok(p) => {
                let text =
                    |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str(v.get()).ok());
                let flag = p
                    .ignore_errors
                    .and_then(|v| serde_json::from_str(v.get()).ok());
                (text(p.host), text(p.task), flag.unwrap_or(false))
            }
            // Not an object, or one with a key twice (the last one counts, as in a `Value`).
            Err(_) => {
                let v: Value = serde_json::from_str(raw.get()).unwrap_or_default();
                let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                let flag = v.get("ignore_errors").and_then(Value::as_bool);
                (text("host"), text("task"), flag.unwrap_or(false))
            }
        };
        EventData {
            raw,
            host,
            task,
            ignore_errors,
        }
    }

    /// Parses JSON text (a stored column, say), keeping it as it is.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self::from_raw)
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The value of one key, parsed (`None` when it is absent or `event_data` is not an object).
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.to_value() {
            Value::Object(mut map) => map.remove(key),
            _ => None,
        }
    }

    /// The whole of it, parsed.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.raw.get()).unwrap_or_default()
    }
}

impl From<Value> for EventData {
    fn from(value: Value) -> Self {
        // A `Value` always serializes; `null` stands in for the impossible.
        EventData::from_raw(serde_json::value::to_raw_value(&value).unwrap_or_default())
    }
}

impl Default for EventData {
    fn default() -> Self {
        EventData::from(Value::Object(serde_json::Map::new()))
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(EventData::from_raw)
    }
}

/// Event names that end a run's stream of results with the per-host totals.
pub const STATS_EVENT: &str = "playbook_on_stats";

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: Value) -> Event {
        Event {
            counter: 1,
            uuid: "u".into(),
            event: name.into(),
            parent_uuid: None,
            created: Utc::now(),
            stdout: String::new(),
            start_line: 0,
            end_line: 0,
            event_data: data.into(),
        }
    }

    #[test]
    fn ignored_failures_are_not_host_failures() {
        let e = ev(
            "runner_on_failed",
            serde_json::json!({"host": "a", "ignore_errors": true}),
        );
        assert!(!e.is_host_failure());
        let e = ev("runner_on_failed", serde_json::json!({"host": "a"}));
        assert!(e.is_host_failure());
        assert_eq!(e.host(), Some("a"));
        assert!(ev("runner_on_unreachable", Value::Null).is_host_failure());
        assert!(!ev("runner_on_ok", Value::Null).is_host_failure());
    }

    #[test]
    fn parses_a_runner_shaped_line() {
        let line = r#"{"counter":3,"uuid":"x","event":"runner_on_ok","parent_uuid":"p","created":"2026-11-22T01:02:03.123456Z","stdout":"ok: [a]","start_line":4,"end_line":5,"event_data":{"host":"a","task":"t"}}"#;
        let e: Event = serde_json::from_str(line).expect("valid event");
        assert_eq!(e.counter, 3);
        assert_eq!(e.task(), Some("t"));
        assert_eq!(e.parent_uuid.as_deref(), Some("p"));
    }

    #[test]
    fn event_data_is_kept_as_written() {
        let text = r#"{"task":"t\u00e9","host":{"not":"a name"},"n":9007199254740993,"res":{"x":[1,2.50]}}"#;
        let data = EventData::from_json(text.to_owned()).expect("valid JSON");
        assert_eq!(data.json(), text, "stored and streamed byte for byte");
        assert_eq!(data.task, Some("té".to_owned()));
        assert_eq!(data.host, None, "a host that is not a string is no host");
        assert_eq!(data.get("res"), Some(serde_json::json!({"x": [1, 2.5]})));
        assert_eq!(data.get("missing"), None);
        let line = format!(
            r#"{{"counter":1,"uuid":"u","event":"e","created":"2026-11-22T01:02:03Z","event_data":{text}}}"#
        );
        let e: Event = serde_json::from_str(&line).expect("valid event");
        let again = serde_json::to_string(&e).expect("serializes");
        assert!(again.contains(text), "{again}");
        assert!(EventData::from_json("{\"a\":".to_owned()).is_err());
    }

    #[test]
    fn event_data_reads_like_a_value() {
        // A repeated key: the last one counts, as when parsed into a Value.
        let data = EventData::from_json(r#"{"host":"a","host":"b","ignore_errors":true}"#.into())
            .expect("valid JSON");
        assert_eq!(data.host.as_deref(), Some("b"));
        assert!(data.ignore_errors);
        let e = ev("runner_on_failed", Value::Null);
        assert_eq!(e.event_data.get("host"), None);
        assert!(e.is_host_failure());
        assert_eq!(EventData::default().to_value(), serde_json::json!({}));
        let a = EventData::from_json(r#"{"a": 1, "b": [true]}"#.into()).expect("valid");
        assert_eq!(a, EventData::from(serde_json::json!({"b": [true], "a": 1})));
    }
}
