//! Live streams: one run's events (WebSocket and Server-Sent Events), and the queries of the
//! changes stream.
//!
//! The changes stream's messages (`ChangeMessage` in `troupe-api`) carry the worker's
//! `RunChange` as it is, so they are defined next to it rather than here.

use serde::{Deserialize, Serialize};

pub use troupe_core::{Event, RunStatus};

/// One message of a run stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A short-lived stream token, for clients that cannot set headers.
    pub access_token: Option<String>,
}
