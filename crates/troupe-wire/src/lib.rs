//! troupe's HTTP API on the wire: every request body, query and response of `/api/v1`, one
//! module per resource, shared by the server (`troupe-api`), the CLI and the benchmark so that
//! neither side builds or reads JSON by hand.
//!
//! Domain types the API sends as they are (a [`runs::Run`], a [`projects::Project`]...) live in
//! `troupe-core` and are re-exported here, not copied.
//!
//! The types derive `utoipa` schemas, and the OpenAPI document is generated from them: a doc
//! comment on a field becomes that field's description in the published document. Fields that
//! have no description there carry `#[allow(missing_docs)]` instead of a doc comment, so that
//! moving the types here left the document unchanged; describing them is an API change of its
//! own. Request types skip absent optional fields when they are serialized (by clients), which
//! the server reads as it reads them missing.

pub mod audit;
pub mod credentials;
pub mod errors;
pub mod events;
pub mod flows;
pub mod health;
pub mod inventories;
pub mod jobs;
pub mod notifications;
pub mod pansible;
pub mod projects;
pub mod runs;
pub mod schedules;
pub mod streams;
pub mod templates;
pub mod tokens;
pub mod workers;

use serde::{Deserialize, Serialize};

/// A reference to a resource (a project, an inventory) by id or by name: `5` or `"web"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IdOrName {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}

impl std::fmt::Display for IdOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdOrName::Id(id) => write!(f, "with id {id}"),
            IdOrName::Name(n) => write!(f, "named {n:?}"),
        }
    }
}

impl From<i64> for IdOrName {
    fn from(id: i64) -> Self {
        IdOrName::Id(id)
    }
}

impl std::str::FromStr for IdOrName {
    type Err = std::convert::Infallible;

    /// A command-line argument: an id when it is a number, a name otherwise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse::<i64>()
            .map_or_else(|_| IdOrName::Name(s.to_owned()), IdOrName::Id))
    }
}

#[cfg(test)]
mod tests {
    use super::IdOrName;
    use crate::runs::{CreateRun, RunStatus};
    use crate::streams::RunStreamMessage;
    use serde_json::json;

    #[test]
    fn ids_and_names_from_arguments_and_json() -> Result<(), serde_json::Error> {
        assert_eq!("12".parse(), Ok(IdOrName::Id(12)));
        assert_eq!("web".parse(), Ok(IdOrName::Name("web".into())));
        assert_eq!(serde_json::to_value(IdOrName::Id(3))?, json!(3));
        assert_eq!(
            serde_json::from_value::<IdOrName>(json!("12"))?,
            IdOrName::Name("12".into())
        );
        Ok(())
    }

    #[test]
    fn a_run_to_launch_sends_only_what_was_given() -> Result<(), serde_json::Error> {
        let mut run = CreateRun::new(7, "site.yml");
        run.hosts = Some("localhost\n".into());
        let sent = serde_json::to_value(&run)?;
        assert_eq!(
            sent,
            json!({"project": 7, "playbook": "site.yml", "hosts": "localhost\n", "tags": [],
                "skip_tags": [], "check": false, "diff": false, "verbosity": 0, "labels": {}})
        );
        // What the server reads back is what was built (its fields are all known).
        assert_eq!(serde_json::from_value::<CreateRun>(sent)?, run);
        Ok(())
    }

    #[test]
    fn stream_messages_are_tagged_by_type() -> Result<(), serde_json::Error> {
        let end = RunStreamMessage::End {
            status: RunStatus::Failed,
            rc: Some(2),
            reason: None,
            last_counter: 9,
        };
        let sent = serde_json::to_value(&end)?;
        assert_eq!(
            sent,
            json!({"type": "end", "status": "failed", "rc": 2, "last_counter": 9})
        );
        assert_eq!(end.sse_name(), "end");
        assert_eq!(serde_json::from_value::<RunStreamMessage>(sent)?, end);
        Ok(())
    }

    #[test]
    fn event_messages_keep_the_event_data_as_sent() -> Result<(), serde_json::Error> {
        let frame = r#"{"type":"event","event":{"counter":3,"uuid":"u","event":"runner_on_ok","created":"2026-01-02T03:04:05Z","stdout":"ok: [h1]","start_line":1,"end_line":2,"event_data":{"host":"h1","task":"ping","res":{"changed":false}}}}"#;
        let RunStreamMessage::Event { event } = serde_json::from_str(frame)? else {
            panic!("not an event message: {frame}");
        };
        assert_eq!((event.counter, event.host()), (3, Some("h1")));
        assert_eq!(
            serde_json::to_value(RunStreamMessage::Event { event })?,
            serde_json::from_str::<serde_json::Value>(frame)?
        );
        let lagged = r#"{"type":"lagged","resume_after":7,"message":"slow"}"#;
        assert_eq!(
            serde_json::from_str::<RunStreamMessage>(lagged)?,
            RunStreamMessage::Lagged {
                resume_after: 7,
                message: "slow".into()
            }
        );
        assert!(serde_json::from_str::<RunStreamMessage>(r#"{"type":"other"}"#).is_err());
        Ok(())
    }
}
