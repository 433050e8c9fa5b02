//! Live streams: one run's events (WebSocket and Server-Sent Events), and the queries of the
//! changes stream.
//!
//! The changes stream's messages (`ChangeMessage` in `troupe-api`) carry the worker's
//! `RunChange` as it is, so they are defined next to it rather than here.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

pub use troupe_core::{Event, RunStatus};

/// One message of a run stream.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunStreamMessage {
    /// An event of the run (frames of this shape are built by the hub, see `event_frame`).
    Event {
        /// The event (ansible-runner's fields).
        event: Event,
    },
    /// The run is over; the stream closes after this.
    End {
        /// Final status.
        status: RunStatus,
        /// ansible-playbook's exit code.
        #[serde(skip_serializing_if = "Option::is_none")]
        rc: Option<i32>,
        /// Why the run ended as it did, when that needs saying.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The last counter of the run.
        last_counter: i64,
    },
    /// The client fell behind; reconnect with `after=resume_after` to get the rest.
    Lagged {
        /// Every event up to this counter was sent.
        resume_after: i64,
        /// Why the stream was cut.
        message: String,
    },
}

impl RunStreamMessage {
    /// The message's SSE event name (`event`, `end`, `lagged`), which is also its `type`.
    pub fn sse_name(&self) -> &'static str {
        match self {
            RunStreamMessage::Event { .. } => "event",
            RunStreamMessage::End { .. } => "end",
            RunStreamMessage::Lagged { .. } => "lagged",
        }
    }
}

impl<'de> Deserialize<'de> for RunStreamMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde reads an internally tagged enum from a buffered copy of the message, and an
        // event's `event_data` (kept as the raw JSON it arrived as) cannot be read from that
        // copy. So the message is kept raw, its `type` read first, then the fields of that type.
        #[derive(Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct EventFields {
            event: Event,
        }
        #[derive(Deserialize)]
        struct EndFields {
            status: RunStatus,
            rc: Option<i32>,
            reason: Option<String>,
            last_counter: i64,
        }
        #[derive(Deserialize)]
        struct LaggedFields {
            resume_after: i64,
            message: String,
        }
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let tag: Tag = serde_json::from_str(text).map_err(D::Error::custom)?;
        let message = match tag.kind.as_str() {
            "event" => serde_json::from_str(text)
                .map(|f: EventFields| RunStreamMessage::Event { event: f.event }),
            "end" => serde_json::from_str(text).map(|f: EndFields| RunStreamMessage::End {
                status: f.status,
                rc: f.rc,
                reason: f.reason,
                last_counter: f.last_counter,
            }),
            "lagged" => {
                serde_json::from_str(text).map(|f: LaggedFields| RunStreamMessage::Lagged {
                    resume_after: f.resume_after,
                    message: f.message,
                })
            }
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["event", "end", "lagged"],
                ));
            }
        };
        message.map_err(D::Error::custom)
    }
}

/// The query of a run stream (`/api/v1/runs/{id}/events/ws` and `/sse`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunStreamQuery {
    /// Send events with a counter above this (default 0: everything). For SSE, a
    /// `Last-Event-ID` header does the same when `after` is absent.
    pub after: Option<i64>,
    /// A short-lived stream token (from `POST /api/v1/stream-tokens`) for clients that cannot
    /// set headers (browsers' EventSource and WebSocket).
    pub access_token: Option<String>,
}

/// The query of the changes stream (`/api/v1/stream/ws` and `/sse`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Only these runs (comma-separated ids).
    pub runs: Option<String>,
    /// Only runs with this label: `key` or `key=value`.
    pub label: Option<String>,
    /// Only runs with this tag.
    pub tag: Option<String>,
    /// Only runs of this project.
    pub project: Option<i64>,
    /// Only status changes (no run_created or summary_updated).
    #[serde(default)]
    pub status_only: bool,
    /// Only changes of these flow executions (comma-separated ids, or `*` for every execution),
    /// and no run changes. Without it, execution changes come with run changes when no run
    /// filter is given.
    pub executions: Option<String>,
    /// A short-lived stream token, for clients that cannot set headers.
    pub access_token: Option<String>,
}
