//! troupe's callback plugin (Python, embedded) and the parser of the lines it writes.
//!
//! The plugin writes one JSON object per line to the pipe named by `TROUPE_EVENT_FD`; see
//! `plugin/troupe.py` for what each event carries and how its `stdout` is captured.

use troupe_core::Event;

/// The plugin's name, as given to `ANSIBLE_CALLBACKS_ENABLED` (when ansible-playbook is not a
/// Python script and is started directly).
pub const PLUGIN_NAME: &str = "troupe";

/// The plugin's Python source, written as `troupe.py` into each run's plugin directory.
pub const PLUGIN_SOURCE: &str = include_str!("../plugin/troupe.py");

/// The file troupe starts ansible-playbook's CLI with, the plugin attached in-process.
pub const BOOT_FILE: &str = "troupe_boot.py";

/// [`BOOT_FILE`]'s Python source.
pub const BOOT_SOURCE: &str = include_str!("../plugin/troupe_boot.py");

/// Why a line from the event pipe is not an event.
#[derive(Debug, thiserror::Error)]
pub enum EventLineError {
    /// The line is empty (or only whitespace).
    #[error("empty event line")]
    Empty,
    /// The line is not valid UTF-8.
    #[error("event line is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The line is not a JSON event in ansible-runner's shape.
    #[error("event line is not a valid event: {0}")]
    Json(#[from] serde_json::Error),
    /// The counter is not a positive number.
    #[error("event counter {0} is not positive")]
    Counter(i64),
}

/// Parses one line written by the plugin (with or without its trailing newline).
///
/// A line that fails to parse is reported, never panics; the supervisor logs it, counts it in
/// [`crate::Exit::malformed_event_lines`] and skips it (events keep their own counters, so a
/// skipped line shows up as a gap the caller can detect).
pub fn parse_event_line(line: &[u8]) -> Result<Event, EventLineError> {
    let text = std::str::from_utf8(line)?.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(EventLineError::Empty);
    }
    let event: Event = serde_json::from_str(text)?;
    if event.counter < 1 {
        return Err(EventLineError::Counter(event.counter));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plugin_lines() {
        let line = br#"{"event": "runner_on_ok", "uuid": "u1", "counter": 4, "parent_uuid": "t1", "created": "2026-11-22T02:04:20.235719+00:00", "stdout": "ok: [h1]\n", "start_line": 3, "end_line": 4, "pid": 7, "event_data": {"host": "h1", "res": {"changed": false}}}
"#;
        let ev = parse_event_line(line).expect("valid line");
        assert_eq!(ev.counter, 4);
        assert_eq!(ev.host(), Some("h1"));
        assert_eq!(ev.stdout, "ok: [h1]\n");
        assert_eq!(ev.parent_uuid.as_deref(), Some("t1"));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(matches!(parse_event_line(b""), Err(EventLineError::Empty)));
        assert!(matches!(
            parse_event_line(b"  \n"),
            Err(EventLineError::Empty)
        ));
        assert!(matches!(
            parse_event_line(b"{\"event\": \"x\""),
            Err(EventLineError::Json(_))
        ));
        assert!(matches!(
            parse_event_line(b"not json at all"),
            Err(EventLineError::Json(_))
        ));
        assert!(matches!(
            parse_event_line(&[0xff, 0xfe, b'{']),
            Err(EventLineError::Utf8(_))
        ));
        // Valid JSON, wrong shape.
        assert!(matches!(
            parse_event_line(b"[1,2,3]"),
            Err(EventLineError::Json(_))
        ));
        assert!(matches!(
            parse_event_line(
                br#"{"event":"x","uuid":"u","counter":0,"created":"2026-11-22T02:04:20Z"}"#
            ),
            Err(EventLineError::Counter(0))
        ));
        // A lone surrogate escape is rejected by serde_json; the plugin never writes one.
        assert!(
            parse_event_line(
                br#"{"event":"x","uuid":"u","counter":1,"created":"2026-11-22T02:04:20Z","stdout":"\udc80"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn plugin_source_is_embedded() {
        assert!(PLUGIN_SOURCE.contains("CALLBACK_NAME = 'troupe'"));
        assert!(PLUGIN_SOURCE.contains("TROUPE_EVENT_FD"));
    }
}
