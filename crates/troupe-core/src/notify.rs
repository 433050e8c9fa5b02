//! Notifications: where to tell that a run or a flow execution ended (a webhook or a Slack
//! incoming webhook), on which ends, and the record of each one sent.
//!
//! A target's URL (and a webhook's header values) may hold a secret (a Slack incoming webhook's
//! URL is one), so a target is kept as a [`SealedNotify`]: the whole [`Notify`] sealed with the
//! server's key, beside a [`NotifyShown`] (kind, scheme and host, header names, text, ends)
//! that is all the API, logs and errors ever show of it.

use crate::ValidationError;
use crate::secret::{SealError, SecretKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The ends of a run or an execution a notification can be sent on.
pub const ENDS: &[&str] = &[
    "successful",
    "failed",
    "canceled",
    "timeout",
    "error",
    "skipped",
];
/// Words of `on` that stand for several ends.
const ALIASES: &[&str] = &["always", "success", "failure"];

/// When a notification is sent: the ends it is sent on (empty: every end).
///
/// Written as one word or a list: the ends' names (`successful`, `failed`, `canceled`,
/// `timeout`, `error`, `skipped`), `always` (every end), `success` (`successful`) or `failure`
/// (`failed`, `timeout`, `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct NotifyOn(pub Vec<String>);

impl<'de> Deserialize<'de> for NotifyOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => NotifyOn(vec![s]),
            OneOrMany::Many(v) => NotifyOn(v),
        })
    }
}

impl NotifyOn {
    /// Whether a notification is due for an end with status `status`.
    pub fn matches(&self, status: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|w| match w.as_str() {
                "always" => true,
                "success" => status == "successful",
                "failure" => matches!(status, "failed" | "timeout" | "error"),
                end => end == status,
            })
    }

    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        for w in &self.0 {
            if !ENDS.contains(&w.as_str()) && !ALIASES.contains(&w.as_str()) {
                return Err(ValidationError::new(
                    "invalid_notify",
                    format!("{field}.on"),
                    format!(
                        "{w:?} is not an end (one of: {}, {})",
                        ENDS.join(", "),
                        ALIASES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where to tell that something ended: exactly one of `webhook` and `slack`.
///
/// The clear form, as templates, rules and flows are written; stored only sealed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A URL to POST a JSON summary of the end to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A Slack incoming webhook's URL, to POST `{"text": ...}` to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
    /// Headers sent with a webhook's POST (values kept sealed, like the URL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The Slack message, a Jinja template over the webhook's payload (`run` or `execution`,
    /// `status`, `link`); by default it names what ended, its status and its link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The ends it is sent on (default: every end).
    #[serde(default, skip_serializing_if = "is_every_end")]
    pub on: NotifyOn,
}

fn is_every_end(on: &NotifyOn) -> bool {
    on.0.is_empty()
}

/// The kind of a notification target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// A POST of a JSON summary.
    Webhook,
    /// A POST of `{"text": ...}` to a Slack incoming webhook.
    Slack,
}

// URLs and header values may be secrets: never shown by `Debug`.
impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown(), f)
    }
}

impl Notify {
    /// The target's kind and URL (`None` unless exactly one of `webhook`, `slack` is set).
    pub fn target(&self) -> Option<(NotifyKind, &str)> {
        match (&self.webhook, &self.slack) {
            (Some(u), None) => Some((NotifyKind::Webhook, u)),
            (None, Some(u)) => Some((NotifyKind::Slack, u)),
            _ => None,
        }
    }

    /// Checks the target; `field` names it in errors (`notify[0]`). With `templated`, URLs
    /// and header values may hold Jinja (`{{ ... }}`), rendered later by their owner (a flow).
    pub fn validate(&self, field: &str, templated: bool) -> Result<(), ValidationError> {
        let invalid = |sub: &str, msg: String| {
            let at = if sub.is_empty() {
                field.to_owned()
            } else {
                format!("{field}.{sub}")
            };
            Err(ValidationError::new("invalid_notify", at, msg))
        };
        let Some((kind, url)) = self.target() else {
            return invalid("", "needs a webhook or a slack URL (exactly one)".into());
        };
        let sub = match kind {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
        };
        if !(templated && url.contains("{{")) && http_host(url).is_none() {
            return invalid(
                sub,
                format!(
                    "{} is not an http:// or https:// URL with a host",
                    mask_url(url)
                ),
            );
        }
        if kind == NotifyKind::Slack && !self.headers.is_empty() {
            return invalid("headers", "headers go with a webhook, not slack".into());
        }
        if kind == NotifyKind::Webhook && self.text.is_some() {
            return invalid("text", "text goes with slack, not a webhook".into());
        }
        for name in self.headers.keys() {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return invalid("headers", format!("{name:?} is not a header name"));
            }
        }
        for (name, value) in &self.headers {
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return invalid("headers", format!("the value of {name} spans lines"));
            }
        }
        self.on.validate(field)
    }

    /// What may be shown of it: kind, scheme and host, header names, text and ends.
    pub fn shown(&self) -> NotifyShown {
        let (kind, url) = self
            .target()
            .map(|(k, u)| (k, mask_url(u)))
            .unwrap_or((NotifyKind::Webhook, String::new()));
        NotifyShown {
            kind,
            url,
            headers: self.headers.keys().cloned().collect(),
            text: self.text.clone(),
            on: self.on.clone(),
        }
    }

    /// It sealed with `key`.
    pub fn seal(&self, key: &SecretKey) -> Result<SealedNotify, SealError> {
        self.seal_with(|clear| key.seal(clear))
    }

    /// It sealed by `seal` (which encrypts the clear JSON).
    pub fn seal_with<E>(
        &self,
        seal: impl FnOnce(&[u8]) -> Result<String, E>,
    ) -> Result<SealedNotify, E> {
        // A struct of strings always serializes.
        let clear = serde_json::to_vec(self).unwrap_or_default();
        Ok(SealedNotify {
            shown: self.shown(),
            sealed: seal(&clear)?,
        })
    }
}

/// What is shown of a notification target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotifyShown {
    /// Webhook or Slack.
    pub kind: NotifyKind,
    /// The URL's scheme and host only (`https://hooks.slack.com`).
    pub url: String,
    /// The names of the headers sent (their values are not shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The Slack text template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The ends it is sent on (empty: every end).
    #[serde(default)]
    pub on: NotifyOn,
}

/// A target as it is stored: shown parts in clear, the whole sealed.
///
/// Serializes whole (for the store); answers of the API use [`shown_only`] so the sealed text
/// never leaves the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedNotify {
    /// What may be shown.
    pub shown: NotifyShown,
    /// The [`Notify`] as JSON, sealed with the server's key.
    #[serde(default)]
    pub sealed: String,
}

impl SealedNotify {
    /// The clear target, opened with `key`.
    pub fn open(&self, key: &SecretKey) -> Result<Notify, SealError> {
        self.open_with(|s| key.open(s))
    }

    /// The clear target, opened by `open`.
    pub fn open_with<E: From<SealError>>(
        &self,
        open: impl FnOnce(&str) -> Result<Vec<u8>, E>,
    ) -> Result<Notify, E> {
        let clear = open(&self.sealed)?;
        serde_json::from_slice(&clear)
            .map_err(|e| E::from(SealError::Malformed(format!("not a notify target: {e}"))))
    }
}

/// Serializes targets as their shown parts only (`#[serde(serialize_with = ...)]`).
pub mod shown_only {
    use super::SealedNotify;
    use serde::Serializer;

    /// A list of targets, shown parts only.
    pub fn serialize<S: Serializer>(v: &[SealedNotify], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|n| &n.shown))
    }

    /// A list of shown targets, as an answer of the API has them (nothing sealed).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<SealedNotify>, D::Error> {
        use serde::Deserialize;
        Ok(Vec::<super::NotifyShown>::deserialize(d)?
            .into_iter()
            .map(|shown| SealedNotify {
                shown,
                sealed: String::new(),
            })
            .collect())
    }
}

/// Serializes one target as its shown part only.
pub mod shown_one {
    use super::SealedNotify;
    use serde::{Serialize, Serializer};

    /// One target, shown part only.
    pub fn serialize<S: Serializer>(v: &SealedNotify, s: S) -> Result<S::Ok, S::Error> {
        v.shown.serialize(s)
    }

    /// One shown target, as an answer of the API has it (nothing sealed).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SealedNotify, D::Error> {
        use serde::Deserialize;
        Ok(SealedNotify {
            shown: super::NotifyShown::deserialize(d)?,
            sealed: String::new(),
        })
    }
}

/// Scheme and host (with port) of an `http(s)://` URL, without user info.
fn http_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((scheme, host))
}

/// A URL as it may be shown: its scheme and host only (`https://hooks.slack.com`); `<url>`
/// for text that is not an http(s) URL.
pub fn mask_url(url: &str) -> String {
    match http_host(url) {
        Some((scheme, host)) => format!("{}://{host}", scheme.to_ascii_lowercase()),
        None => "<url>".to_owned(),
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A run.
    Run(i64),
    /// A flow execution.
    Execution(i64),
}

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationState {
    /// Waiting for its run or execution to end, or for its next attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Given up: every attempt failed (`last_error` says why).
    Failed,
    /// Not wanted for the end reached (its `on` does not name it).
    Skipped,
}

impl NotificationState {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
            NotificationState::Skipped => "skipped",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<NotificationState> {
        Some(match s {
            "pending" => NotificationState::Pending,
            "sent" => NotificationState::Sent,
            "failed" => NotificationState::Failed,
            "skipped" => NotificationState::Skipped,
            _ => return None,
        })
    }
}

/// One notification of one run or execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// Its id.
    pub id: i64,
    /// The run it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// The execution it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<i64>,
    /// Where it goes (shown parts only in answers).
    #[serde(with = "shown_one")]
    #[schema(value_type = NotifyShown)]
    pub target: SealedNotify,
    /// Where it is.
    pub state: NotificationState,
    /// Attempts made so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (after a failed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was sent, given up or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// What it is about.
    pub fn subject(&self) -> Subject {
        match (self.run_id, self.execution_id) {
            (Some(id), _) => Subject::Run(id),
            (None, Some(id)) => Subject::Execution(id),
            (None, None) => Subject::Run(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack(url: &str) -> Notify {
        Notify {
            slack: Some(url.into()),
            ..Notify::default()
        }
    }

    #[test]
    fn urls_are_shown_as_scheme_and_host() {
        assert_eq!(
            mask_url("https://hooks.slack.com/services/T0/B0/s3cr3t"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            mask_url("HTTP://user:pw@127.0.0.1:8080/x?token=t"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(mask_url("ftp://h/x"), "<url>");
        assert_eq!(mask_url("not a url"), "<url>");
        let n = slack("https://hooks.slack.com/services/T0/B0/s3cr3t");
        assert!(!format!("{n:?}").contains("s3cr3t"));
        assert!(
            !serde_json::to_string(&n.shown())
                .expect("json")
                .contains("s3cr3t")
        );
    }

    #[test]
    fn on_reads_a_word_or_a_list_and_matches_ends() {
        let one: NotifyOn = serde_json::from_str("\"failure\"").expect("one word");
        assert!(one.matches("failed") && one.matches("timeout") && one.matches("error"));
        assert!(!one.matches("successful") && !one.matches("canceled"));
        let many: NotifyOn = serde_json::from_str("[\"successful\", \"canceled\"]").expect("list");
        assert!(many.matches("canceled") && !many.matches("failed"));
        assert!(NotifyOn::default().matches("skipped"));
        let bad = Notify {
            on: NotifyOn(vec!["sometimes".into()]),
            ..slack("http://h/x")
        };
        let e = bad.validate("notify[0]", false).expect_err("unknown end");
        assert_eq!(e.field, "notify[0].on");
    }

    #[test]
    fn a_target_needs_one_url_and_fitting_fields() {
        assert!(
            slack("https://hooks.slack.com/x")
                .validate("n", false)
                .is_ok()
        );
        let neither = Notify::default();
        assert_eq!(neither.validate("n", false).expect_err("none").field, "n");
        let both = Notify {
            webhook: Some("http://a/".into()),
            ..slack("http://b/")
        };
        assert!(both.validate("n", false).is_err());
        let e = slack("hooks.slack.com/x")
            .validate("n", false)
            .expect_err("no scheme");
        assert_eq!(e.field, "n.slack");
        assert!(slack("{{ inputs.hook }}").validate("n", true).is_ok());
        assert!(slack("{{ inputs.hook }}").validate("n", false).is_err());
        let headers = Notify {
            headers: BTreeMap::from([("Bad Name".into(), "v".into())]),
            webhook: Some("http://h/".into()),
            ..Notify::default()
        };
        assert_eq!(
            headers.validate("n", false).expect_err("header").field,
            "n.headers"
        );
        let text_on_webhook = Notify {
            webhook: Some("http://h/".into()),
            text: Some("hi".into()),
            ..Notify::default()
        };
        assert!(text_on_webhook.validate("n", false).is_err());
    }

    #[test]
    fn a_sealed_target_opens_whole_and_shows_nothing_secret() {
        let key = SecretKey::generate().expect("key");
        let n = Notify {
            webhook: Some("https://ops.example/hook?token=s3cr3t".into()),
            headers: BTreeMap::from([("Authorization".into(), "Bearer t0ken".into())]),
            on: NotifyOn(vec!["failed".into()]),
            ..Notify::default()
        };
        let sealed = n.seal(&key).expect("sealed");
        assert_eq!(sealed.open(&key).expect("opens"), n);
        let stored = serde_json::to_string(&sealed).expect("json");
        assert!(!stored.contains("s3cr3t") && !stored.contains("t0ken"));
        assert_eq!(sealed.shown.url, "https://ops.example");
        assert_eq!(sealed.shown.headers, vec!["Authorization".to_owned()]);
        let other = SecretKey::generate().expect("key");
        assert!(sealed.open(&other).is_err());
    }
}
