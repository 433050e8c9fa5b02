//! The audit log: who changed or launched what, when, and from where.
//!
//! Every non-GET request to the API is recorded once it has been answered (refusals too), and
//! so is every run started by something other than an API request (an event rule, a flow, a
//! schedule). An entry never holds a request body: names and ids only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest text kept in any one field of an entry (a user agent, an unknown path...).
pub const MAX_FIELD_CHARS: usize = 256;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Store-assigned id; increases with time.
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who: `token:<id>` for an API token, `anonymous` for a request without a valid token,
    /// `webhook:<source>` for a webhook delivery signed by its source, `rule:<name>`,
    /// `flow:<execution id>` or `schedule:<name>` for runs they started.
    pub actor: String,
    /// The token's id, when a token of ours was presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    /// The token's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// The token's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What was done: `run.launch`, `project.create`, `credential.delete`, `token.revoke`...
    pub action: String,
    /// The HTTP method, for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The route's pattern (`/api/v1/runs/{id}/cancel`), for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What kind of thing it was done to (`run`, `project`, `credential`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<String>,
    /// Its id (or name, for things named in paths: flows, sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Its name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// The HTTP status answered, for requests (401 and 403 are recorded too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// The client's address (the connection's peer), for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The client's `User-Agent`, for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A little more: ids and names only, never a request body or a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// An entry to record (the store gives it its id).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who (see [`AuditEntry::actor`]).
    pub actor: String,
    /// The token's id.
    pub token_id: Option<i64>,
    /// The token's name.
    pub token_name: Option<String>,
    /// The token's role.
    pub role: Option<String>,
    /// What was done.
    pub action: String,
    /// The HTTP method.
    pub method: Option<String>,
    /// The route's pattern.
    pub route: Option<String>,
    /// What kind of thing it was done to.
    pub target_kind: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// Its name.
    pub target_name: Option<String>,
    /// The HTTP status answered.
    pub status: Option<i32>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// Ids and names only (an object; `null` for nothing).
    pub detail: serde_json::Value,
}

impl NewAuditEntry {
    /// The entry with every text cut to [`MAX_FIELD_CHARS`] and rid of NUL characters, which
    /// PostgreSQL's text cannot hold.
    pub fn bounded(mut self) -> Self {
        fn cut(s: &mut String) {
            if s.contains('\0') {
                *s = s.replace('\0', "");
            }
            if let Some((i, _)) = s.char_indices().nth(MAX_FIELD_CHARS) {
                s.truncate(i);
            }
        }
        cut(&mut self.actor);
        cut(&mut self.action);
        for s in [
            &mut self.token_name,
            &mut self.role,
            &mut self.method,
            &mut self.route,
            &mut self.target_kind,
            &mut self.target_id,
            &mut self.target_name,
            &mut self.client_addr,
            &mut self.user_agent,
        ]
        .into_iter()
        .flatten()
        {
            cut(s);
        }
        self
    }
}

/// Which entries to list. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The actor (`token:3`, `rule:deploy`...) or a token's name.
    pub actor: Option<String>,
    /// The action (`run.launch`), or every action of a kind when it ends in `.` (`run.`).
    pub action: Option<String>,
    /// The target's kind (`run`), or kind and id (`run:42`).
    pub target: Option<String>,
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// The target condition as (kind, id).
    pub fn target_parts(&self) -> Option<(&str, Option<&str>)> {
        self.target.as_deref().map(|t| match t.split_once(':') {
            Some((kind, id)) => (kind, Some(id)),
            None => (t, None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_text_and_nuls() {
        let e = NewAuditEntry {
            actor: "a\0b".into(),
            user_agent: Some("x".repeat(1000)),
            ..Default::default()
        }
        .bounded();
        assert_eq!(e.actor, "ab");
        assert_eq!(e.user_agent.map(|u| u.len()), Some(MAX_FIELD_CHARS));
    }

    #[test]
    fn target_filter_parts() {
        let f = |t: &str| AuditFilter {
            target: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(f("run:4").target_parts(), Some(("run", Some("4"))));
        assert_eq!(f("run").target_parts(), Some(("run", None)));
        assert_eq!(AuditFilter::default().target_parts(), None);
    }
}
