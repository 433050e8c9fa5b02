//! The events ansible emits through troupe's callback plugin, in ansible-runner's shape so that
//! existing tooling reads them as they are.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub event_data: Value,
}

impl Event {
    /// The host the event is about, if any.
    pub fn host(&self) -> Option<&str> {
        self.event_data.get("host").and_then(Value::as_str)
    }

    /// The task name the event is about, if any.
    pub fn task(&self) -> Option<&str> {
        self.event_data.get("task").and_then(Value::as_str)
    }

    /// True for the events that mean a host failed a task (ignored failures excluded).
    pub fn is_host_failure(&self) -> bool {
        match self.event.as_str() {
            "runner_on_unreachable" => true,
            "runner_on_failed" => !self
                .event_data
                .get("ignore_errors")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            _ => false,
        }
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
            event_data: data,
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
}
