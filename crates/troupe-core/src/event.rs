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

/// The key of the marker that says something of an event was cut: in `event_data` itself when
/// the event was cut to fit `max_event_bytes`, and in each value replaced (`res` over
/// `max_result_bytes`, say) as `{"_troupe_truncated": true, "_troupe_original_bytes": N}`.
pub const TRUNCATED_KEY: &str = "_troupe_truncated";
/// Beside [`TRUNCATED_KEY`]: how many bytes the cut thing had.
pub const ORIGINAL_BYTES_KEY: &str = "_troupe_original_bytes";

impl Event {
    /// What the event takes in the store: its `stdout` and its `event_data` JSON text.
    pub fn stored_bytes(&self) -> usize {
        self.stdout.len() + self.event_data.json().len()
    }

    /// Cuts the event to at most `max` [stored bytes](Self::stored_bytes), visibly: the largest
    /// values of `event_data` give way to `{"_troupe_truncated": true, "_troupe_original_bytes":
    /// N}` until it takes at most half of `max`, `event_data` gets the same two keys for the
    /// whole event, and `stdout` is cut (at a character boundary) with a line saying so. The
    /// line numbers stay those of the run's stdout. Returns the size it had when it was cut.
    ///
    /// With a `max` of less than a few hundred bytes the markers alone may take more.
    pub fn truncate_to(&mut self, max: usize) -> Option<usize> {
        let original = self.stored_bytes();
        if original <= max {
            return None;
        }
        self.event_data = shrink_event_data(&self.event_data, max / 2, original);
        let marker = format!(
            "\n[troupe: the output of this event was cut to fit max_event_bytes ({max}); \
             the event had {original} bytes]\n"
        );
        let budget = max.saturating_sub(self.event_data.json().len() + marker.len());
        if self.stdout.len() > budget {
            let mut cut = budget;
            while !self.stdout.is_char_boundary(cut) {
                cut -= 1;
            }
            self.stdout.truncate(cut);
            self.stdout.push_str(&marker);
        }
        Some(original)
    }
}

/// `data` marked as cut (the whole event had `original` bytes), its largest values replaced by
/// markers until its text takes at most `budget` bytes.
fn shrink_event_data(data: &EventData, budget: usize, original: usize) -> EventData {
    let marker =
        |bytes: usize| serde_json::json!({ TRUNCATED_KEY: true, ORIGINAL_BYTES_KEY: bytes });
    let mut map = match data.to_value() {
        Value::Object(map) => map,
        // The plugin only writes objects; anything else is kept as a marker of its size.
        _ => serde_json::Map::from_iter([("value".to_owned(), marker(data.json().len()))]),
    };
    // Cut before (by a remote worker, say): the size it had first is the one to tell.
    let first = map
        .get(ORIGINAL_BYTES_KEY)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|_| map.get(TRUNCATED_KEY) == Some(&Value::Bool(true)))
        .map_or(original, |n| n.max(original));
    map.insert(TRUNCATED_KEY.to_owned(), Value::Bool(true));
    map.insert(ORIGINAL_BYTES_KEY.to_owned(), Value::from(first));
    let size = |v: &Value| serde_json::to_string(v).map_or(0, |s| s.len());
    let mut total = size(&Value::Object(map.clone()));
    let mut by_size: Vec<(usize, String)> = map
        .iter()
        .filter(|(k, _)| *k != TRUNCATED_KEY && *k != ORIGINAL_BYTES_KEY)
        .map(|(k, v)| (size(v), k.clone()))
        .collect();
    by_size.sort_unstable_by(|a, b| b.cmp(a));
    for (bytes, key) in by_size {
        if total <= budget {
            break;
        }
        let replacement = marker(bytes);
        let smaller = size(&replacement);
        if smaller < bytes {
            map.insert(key, replacement);
            total -= bytes - smaller;
        }
    }
    if total > budget {
        // Thousands of small keys: only the markers stay.
        map.retain(|k, _| k == TRUNCATED_KEY || k == ORIGINAL_BYTES_KEY);
    }
    EventData::from(Value::Object(map))
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
    fn small_events_are_not_cut() {
        let mut e = ev(
            "runner_on_ok",
            serde_json::json!({"host": "a", "res": {"x": 1}}),
        );
        e.stdout = "ok: [a]\n".into();
        let before = e.clone();
        assert_eq!(e.truncate_to(e.stored_bytes()), None);
        assert_eq!(e, before);
    }

    #[test]
    fn big_events_are_cut_visibly_within_the_limit() {
        let big = "x".repeat(300_000);
        let mut e = ev(
            "runner_on_ok",
            serde_json::json!({"host": "web1", "task": "t", "res": {"msg": big}, "duration": 1}),
        );
        e.stdout = format!("ok: [web1] => {{\"msg\": \"{}\"}}\n", "é".repeat(200_000));
        e.start_line = 7;
        e.end_line = 10;
        let original = e.stored_bytes();
        let max = 64 * 1024;
        assert_eq!(e.truncate_to(max), Some(original));
        assert!(e.stored_bytes() <= max, "{} > {max}", e.stored_bytes());
        assert_eq!(e.host(), Some("web1"), "small values stay");
        assert_eq!(e.task(), Some("t"));
        assert_eq!(e.event_data.get(TRUNCATED_KEY), Some(Value::Bool(true)));
        assert_eq!(
            e.event_data.get(ORIGINAL_BYTES_KEY),
            Some(Value::from(original))
        );
        let res = e.event_data.get("res").unwrap_or_default();
        assert_eq!(res[TRUNCATED_KEY], Value::Bool(true), "{res}");
        assert!(res[ORIGINAL_BYTES_KEY].as_u64() > Some(300_000));
        assert!(e.stdout.starts_with("ok: [web1]"));
        assert!(
            e.stdout.contains("was cut to fit max_event_bytes"),
            "marked"
        );
        assert!(
            e.stdout.len() > 30_000,
            "keeps what fits: {}",
            e.stdout.len()
        );
        assert_eq!((e.start_line, e.end_line), (7, 10));
        // Twice is a no-op; cut again smaller, it still tells the first size.
        assert_eq!(e.truncate_to(max), None);
        assert!(e.truncate_to(8192).is_some());
        assert!(e.stored_bytes() <= 8192);
        assert_eq!(
            e.event_data.get(ORIGINAL_BYTES_KEY),
            Some(Value::from(original))
        );
    }

    #[test]
    fn many_small_keys_leave_only_the_markers() {
        let data: serde_json::Map<String, Value> = (0..5000)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        let mut e = ev("verbose", Value::Object(data));
        assert!(e.truncate_to(4096).is_some());
        assert!(e.stored_bytes() <= 4096);
        assert_eq!(e.event_data.get(TRUNCATED_KEY), Some(Value::Bool(true)));
        assert_eq!(e.event_data.get("k1"), None);
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
