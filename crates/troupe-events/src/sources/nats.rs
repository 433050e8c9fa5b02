//! NATS source, through `async-nats`: core NATS subjects, or a JetStream durable consumer.
//!
//! **Core NATS is at-most-once.** There is nothing to acknowledge: a message that arrives while
//! troupe is down, disconnected, or too slow (the client drops messages for a slow consumer)
//! is lost. With several subjects that overlap (`a.>` and `a.b`) a message arrives once per
//! matching subscription. A `queue_group` shares the messages between troupe replicas. The
//! client reconnects on its own and restores the subscriptions; the source's status follows.
//! The routing key is the subject; the delivery id is the `Nats-Msg-Id` header when set.
//!
//! **JetStream is at-least-once.** The source gets (or creates, file-backed, over `subjects`)
//! the stream and a durable pull consumer with explicit acks (`ack_wait` 30 s), then pulls
//! one message at a time, so nothing waits unacknowledged behind the message being handled,
//! and order is kept. With one subject the consumer filters on it; with several (the
//! server-side `filter_subjects` needs NATS 2.10) the source skips, acknowledging them, the
//! messages of a shared stream that match none. An existing stream or consumer is used as it
//! is. After the client reconnects, a new pull is sent at once. A message is acknowledged only once the sink reports it
//! stored; while the sink retries (store down) the source sends in-progress acks every third
//! of the consumer's `ack_wait`, so the server does not redeliver it meanwhile. When troupe
//! stops before the message is stored, it is negatively acknowledged (not acknowledged), so
//! the server redelivers it at once to the next consumer rather than after `ack_wait`. The
//! delivery id is the `Nats-Msg-Id` header when set, else `"{stream}:{stream sequence}"`,
//! stable across redeliveries; `redelivered` means the server delivered it before.
//!
//! Headers (the last value of each) are kept with lowercase names.

use crate::config::{FieldSecretError, NatsConfig, Secret};
use crate::sink::{Backoff, Inbound, PayloadFormat};
use crate::sources::{
    Redacted, Sessions, Source, SourceContext, SourceStatus, reconnecting, scrub,
};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use async_nats::{Client, ConnectOptions, Event, HeaderMap};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};
use troupe_core::url::redact_credentials;

/// Connecting and setting up must finish within this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The `ack_wait` troupe gives the consumers it creates.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull request waits for a message before the next is sent.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Final acks and flushes when stopping wait at most this.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many headers are kept per event, each at most `MAX_HEADER_VALUE` bytes.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 1024;

/// What is wrong with a NATS source's configuration. URLs are shown without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsConfigError {
    /// The URL is not `nats://` or `tls://`.
    #[error("url: {0:?} must start with nats:// or tls://")]
    Scheme(String),
    /// The client cannot read the URL.
    #[error("url: {url:?}: {reason}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// The client's reason, with any password removed.
        reason: String,
    },
    /// No subject to subscribe to.
    #[error("subjects: at least one subject is needed")]
    NoSubjects,
    /// A subject is not NATS subject syntax.
    #[error("subjects: {subject:?} {problem}")]
    Subject {
        /// The subject.
        subject: String,
        /// What is wrong with it.
        problem: SubjectError,
    },
    /// A queue group with JetStream, where the durable consumer is what replicas share.
    #[error(
        "queue_group: only for core NATS; with jetstream, replicas share the \
                        durable consumer instead"
    )]
    QueueGroupWithJetStream,
    /// The queue group is empty or has whitespace.
    #[error("queue_group: {0:?} must be non-empty, without whitespace")]
    QueueGroup(String),
    /// A stream or consumer name NATS would refuse.
    #[error("jetstream.{field}: {name:?} {problem}")]
    JetStreamName {
        /// `stream` or `durable`.
        field: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: JetStreamNameError,
    },
}

/// What is wrong with a subject (the message follows the subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject is empty.
    #[error("is empty")]
    Empty,
    /// The subject has whitespace or control characters.
    #[error("contains whitespace")]
    Whitespace,
    /// Two dots in a row, or one at an end.
    #[error("has an empty token (leading, trailing or double dot)")]
    EmptyToken,
    /// `*` or `>` inside a token.
    #[error("uses a wildcard inside a token (`*` and `>` must be whole tokens)")]
    PartialWildcard,
    /// `>` anywhere but last.
    #[error("has `>` before the last token")]
    TailNotLast,
}

/// What is wrong with a stream or consumer name (the message follows the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JetStreamNameError {
    /// The name is empty.
    #[error("is empty")]
    Empty,
    /// The name has a character NATS does not allow in it.
    #[error("may not contain whitespace, `.`, `*`, `>`, `/` or `\\`")]
    Forbidden,
}

/// Why a NATS session ended (shown through [`Redacted`]: the client's messages may quote
/// the URL, and the token must never be shown).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NatsError {
    /// The URL or the token has no value.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// Connecting took longer than [`SETUP_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// A subscription was refused.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    /// The server did not confirm the subscriptions.
    #[error("subscribing: {0}")]
    Flush(#[source] async_nats::client::FlushError),
    /// The client gave up on the connection.
    #[error("the connection was closed")]
    Closed,
    /// The JetStream loop ran for a source without JetStream settings.
    #[error("jetstream settings missing")]
    NoJetStream,
    /// The stream could not be found or created.
    #[error("stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// The durable consumer could not be found or created.
    #[error("consumer {durable} on stream {stream}: {source}")]
    Consumer {
        durable: String,
        stream: String,
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    /// Setting up the stream and consumer took longer than [`SETUP_TIMEOUT`].
    #[error("setting up the JetStream consumer timed out")]
    SetupTimeout,
    /// A pull request could not be sent.
    #[error("pulling from {durable}: {source}")]
    Pull {
        durable: String,
        #[source]
        source: async_nats::jetstream::consumer::pull::BatchError,
    },
    /// A pull request failed while waiting for its message.
    #[error("pulling from {durable}: {source}")]
    Pulled {
        durable: String,
        #[source]
        source: async_nats::Error,
    },
    /// A message has no JetStream metadata to identify it by.
    #[error("reading the message's JetStream metadata: {0}")]
    Info(#[source] async_nats::Error),
    /// A message could not be acknowledged (the server redelivers it).
    #[error("acknowledging: {0}")]
    Ack(#[source] async_nats::Error),
}

/// Checks a NATS source's configuration without connecting.
pub fn validate(cfg: &NatsConfig) -> Result<(), NatsConfigError> {
    if let Secret::Literal(url) = &cfg.url {
        check_url(url)?;
    }
    if cfg.subjects.is_empty() {
        return Err(NatsConfigError::NoSubjects);
    }
    for subject in &cfg.subjects {
        check_subject(subject).map_err(|problem| NatsConfigError::Subject {
            subject: subject.clone(),
            problem,
        })?;
    }
    if let Some(group) = &cfg.queue_group {
        if cfg.jetstream.is_some() {
            return Err(NatsConfigError::QueueGroupWithJetStream);
        }
        if group.is_empty() || group.chars().any(char::is_whitespace) {
            return Err(NatsConfigError::QueueGroup(group.clone()));
        }
    }
    if let Some(js) = &cfg.jetstream {
        for (field, name) in [("stream", &js.stream), ("durable", &js.durable)] {
            check_js_name(name).map_err(|problem| NatsConfigError::JetStreamName {
                field,
                name: name.clone(),
                problem,
            })?;
        }
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), NatsConfigError> {
    let shown = redact_credentials(url);
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("nats" | "tls")) {
        return Err(NatsConfigError::Scheme(shown));
    }
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| NatsConfigError::Url {
            url: shown,
            reason: scrub(&e.to_string(), url, None),
        })
}

/// Subject syntax: dot-separated non-empty tokens without whitespace; `*` and `>` only as
/// whole tokens, `>` only last.
fn check_subject(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubjectError::Whitespace);
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(SubjectError::PartialWildcard);
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(SubjectError::TailNotLast);
        }
    }
    Ok(())
}

/// Whether `subject` matches the `pattern` (`*` one token, `>` one or more).
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        if p == ">" {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(t) if p == "*" || p == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Stream and consumer names: non-empty, no whitespace, `.`, `*`, `>`, `/` or `\`.
fn check_js_name(name: &str) -> Result<(), JetStreamNameError> {
    if name.is_empty() {
        return Err(JetStreamNameError::Empty);
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(JetStreamNameError::Forbidden);
    }
    Ok(())
}

/// A NATS source.
pub struct NatsSource {
    cfg: NatsConfig,
}

impl NatsSource {
    /// A source for `cfg`; nothing connects before [`Source::run`].
    pub fn new(cfg: NatsConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        reconnecting(self.as_ref(), &ctx, "NATS").await;
    }
}

/// Where a session is, for its client's connection events: they update the status only while
/// it consumes (a reconnect is reported, not a connect that may still fail to set up).
/// It also tells the JetStream loop when the client reconnected, so it pulls again at once
/// instead of waiting for the lost pull request to time out.
#[derive(Clone)]
struct Phase(Arc<AtomicU8>, Arc<Notify>);

const SETTING_UP: u8 = 0;
const CONSUMING: u8 = 1;
const OVER: u8 = 2;

impl Phase {
    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::SeqCst);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    /// Resolves after the client reconnected (once per reconnect).
    async fn reconnected(&self) {
        self.1.notified().await;
    }
}

/// Marks the session over when it ends, however it ends.
struct OverOnDrop(Phase);

impl Drop for OverOnDrop {
    fn drop(&mut self) {
        self.0.set(OVER);
    }
}

#[async_trait::async_trait]
impl Sessions for NatsSource {
    type Error = Redacted<NatsError>;

    /// One client: connect, subscribe or set up the consumer, consume until `stop` (`Ok`) or
    /// an error.
    async fn session(
        &self,
        ctx: &SourceContext,
        backoff: &mut Backoff,
    ) -> Result<(), Redacted<NatsError>> {
        let url = self
            .cfg
            .url
            .resolve_field("url")
            .map_err(|e| Redacted::new(e.into(), "", None))?;
        let token = match &self.cfg.token {
            Some(t) => Some(
                t.resolve_field("token")
                    .map_err(|e| Redacted::new(e.into(), &url, None))?,
            ),
            None => None,
        };
        let secret = token.clone();
        let redacted = |e: NatsError| Redacted::new(e, &url, secret.as_deref());

        let phase = Phase(Arc::new(AtomicU8::new(SETTING_UP)), Arc::new(Notify::new()));
        let _over = OverOnDrop(phase.clone());
        let mut options = ConnectOptions::new()
            .name(format!("troupe:{}", ctx.name))
            .connection_timeout(Duration::from_secs(10))
            .event_callback(event_callback(
                ctx.name.clone(),
                ctx.status.clone(),
                phase.clone(),
            ));
        if let Some(token) = token {
            options = options.token(token);
        }
        let shown = redact_credentials(&url);
        let connecting = async {
            options
                .connect(url.as_str())
                .await
                .map_err(|source| NatsError::Connect {
                    url: shown.clone(),
                    source,
                })
        };
        let client = tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            r = timeout(SETUP_TIMEOUT, connecting) => match r {
                Ok(r) => r.map_err(redacted)?,
                Err(_) => return Err(redacted(NatsError::ConnectTimeout(shown))),
            },
        };
        let result = match &self.cfg.jetstream {
            None => self.core(ctx, &client, backoff, &shown, &phase).await,
            Some(_) => self.jetstream(ctx, &client, backoff, &shown, &phase).await,
        };
        // Let final acks / naks reach the server before the client goes.
        let _ = timeout(FLUSH_TIMEOUT, client.flush()).await;
        result.map_err(redacted)
    }
}

impl NatsSource {
    /// Core NATS: subscriptions, at most once.
    async fn core(
        &self,
        ctx: &SourceContext,
        client: &Client,
        backoff: &mut Backoff,
        shown: &str,
        phase: &Phase,
    ) -> Result<(), NatsError> {
        let mut subscriptions = Vec::with_capacity(self.cfg.subjects.len());
        for subject in &self.cfg.subjects {
            let sub = match &self.cfg.queue_group {
                Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                None => client.subscribe(subject.clone()).await,
            }
            .map_err(|source| NatsError::Subscribe {
                subject: subject.clone(),
                source,
            })?;
            subscriptions.push(sub);
        }
        // The server has the subscriptions once it answers a ping.
        client.flush().await.map_err(NatsError::Flush)?;
        let mut messages = futures_util::stream::select_all(subscriptions);
        phase.set(CONSUMING);
        ctx.status.connected();
        backoff.reset();
        tracing::info!(source = %ctx.name, url = %shown, subjects = ?self.cfg.subjects,
            "NATS source subscribed");
        loop {
            let next = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(msg) = next else {
                return Err(NatsError::Closed);
            };
            let event = Inbound {
                source: ctx.name.clone(),
                routing_key: msg.subject.as_str().to_owned(),
                payload: msg.payload.clone(),
                format: PayloadFormat::Json,
                delivery_id: msg_id(msg.headers.as_ref()),
                redelivered: false,
                headers: headers(msg.headers.as_ref()),
            };
            match ctx.sink.deliver_until_stored(event, &ctx.stop).await {
                Some(_) => ctx.status.delivered(),
                None => return Ok(()),
            }
        }
    }

    /// JetStream: a durable pull consumer, one message at a time, acknowledged once stored.
    async fn jetstream(
        &self,
        ctx: &SourceContext,
        client: &Client,
        backoff: &mut Backoff,
        shown: &str,
        phase: &Phase,
    ) -> Result<(), NatsError> {
        let Some(js_cfg) = &self.cfg.jetstream else {
            return Err(NatsError::NoJetStream);
        };
        let js = jetstream::new(client.clone());
        let setup = async {
            let stream = js
                .get_or_create_stream(jetstream::stream::Config {
                    name: js_cfg.stream.clone(),
                    subjects: self.cfg.subjects.clone(),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|source| NatsError::Stream {
                    stream: js_cfg.stream.clone(),
                    source,
                })?;
            // One subject: the server filters. Several: `filter_subjects` needs NATS 2.10,
            // so the consumer takes the whole stream and the source filters.
            let filter_subject = match self.cfg.subjects.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            };
            stream
                .get_or_create_consumer::<jetstream::consumer::pull::Config>(
                    &js_cfg.durable,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(js_cfg.durable.clone()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        filter_subject,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|source| NatsError::Consumer {
                    durable: js_cfg.durable.clone(),
                    stream: js_cfg.stream.clone(),
                    source,
                })
        };
        let consumer: PullConsumer = tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            r = timeout(SETUP_TIMEOUT, setup) => match r {
                Ok(r) => r?,
                Err(_) => return Err(NatsError::SetupTimeout),
            },
        };
        let ack_wait = consumer.cached_info().config.ack_wait;
        let progress_every = if ack_wait.is_zero() {
            ACK_WAIT / 3
        } else {
            (ack_wait / 3).max(Duration::from_secs(1))
        };
        phase.set(CONSUMING);
        ctx.status.connected();
        backoff.reset();
        tracing::info!(source = %ctx.name, url = %shown, stream = %js_cfg.stream,
            durable = %js_cfg.durable, "NATS JetStream source consuming");

        loop {
            let pull = consumer
                .batch()
                .max_messages(1)
                .expires(PULL_EXPIRES)
                .messages();
            let mut batch = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                b = pull => b.map_err(|source| NatsError::Pull {
                    durable: js_cfg.durable.clone(),
                    source,
                })?,
            };
            loop {
                let next = tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    // The pull request died with the old connection: send a new one.
                    _ = phase.reconnected() => break,
                    next = batch.next() => next,
                };
                let msg = match next {
                    None => break,
                    Some(Ok(msg)) => msg,
                    Some(Err(source)) => {
                        return Err(NatsError::Pulled {
                            durable: js_cfg.durable.clone(),
                            source,
                        });
                    }
                };
                if !self
                    .cfg
                    .subjects
                    .iter()
                    .any(|s| subject_matches(s, &msg.subject))
                {
                    // Another subject of a shared stream: not an event of this source.
                    msg.ack().await.map_err(NatsError::Ack)?;
                    continue;
                }
                if !handle_js_message(ctx, msg, progress_every).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// Delivers one JetStream message; `Ok(false)` when stopping.
async fn handle_js_message(
    ctx: &SourceContext,
    msg: jetstream::Message,
    progress_every: Duration,
) -> Result<bool, NatsError> {
    let info = msg.info().map_err(NatsError::Info)?;
    let delivery_id = msg_id(msg.headers.as_ref())
        .unwrap_or_else(|| format!("{}:{}", info.stream, info.stream_sequence));
    let event = Inbound {
        source: ctx.name.clone(),
        routing_key: msg.subject.as_str().to_owned(),
        payload: msg.payload.clone(),
        format: PayloadFormat::Json,
        delivery_id: Some(delivery_id),
        redelivered: info.delivered > 1,
        headers: headers(msg.headers.as_ref()),
    };
    let delivering = ctx.sink.deliver_until_stored(event, &ctx.stop);
    tokio::pin!(delivering);
    let mut progress = tokio::time::interval_at(Instant::now() + progress_every, progress_every);
    let outcome = loop {
        tokio::select! {
            outcome = &mut delivering => break outcome,
            _ = progress.tick() => {
                // Still working on it: keep the server from redelivering it meanwhile.
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(source = %ctx.name, error = %e, "in-progress ack failed");
                }
            }
        }
    };
    match outcome {
        Some(_) => {
            msg.ack().await.map_err(NatsError::Ack)?;
            ctx.status.delivered();
            Ok(true)
        }
        None => {
            // Not stored: redeliver it now (to the next consumer) rather than after ack_wait.
            let _ = timeout(FLUSH_TIMEOUT, msg.ack_with(AckKind::Nak(None))).await;
            Ok(false)
        }
    }
}

/// Reports the client's own disconnects and reconnects in the source's status.
fn event_callback(
    name: String,
    status: Arc<SourceStatus>,
    phase: Phase,
) -> impl Fn(Event) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    move |event| {
        let name = name.clone();
        let status = status.clone();
        let phase = phase.clone();
        Box::pin(async move {
            if phase.get() == OVER {
                return;
            }
            match event {
                Event::Connected if phase.get() == CONSUMING => {
                    tracing::info!(source = %name, "NATS connection restored");
                    status.connected();
                    phase.1.notify_one();
                }
                Event::Disconnected => {
                    tracing::warn!(source = %name, "NATS connection lost; reconnecting");
                    status.disconnected("connection lost; reconnecting");
                }
                Event::SlowConsumer(_) => {
                    tracing::warn!(source = %name, "NATS slow consumer: messages were dropped");
                }
                other => tracing::info!(source = %name, event = %other, "NATS client event"),
            }
        })
    }
}

/// The `Nats-Msg-Id` header.
fn msg_id(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned())
        .filter(|v| !v.is_empty())
}

/// Headers, last value of each, lowercase names, bounded.
fn headers(headers: Option<&HeaderMap>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(headers) = headers else {
        return out;
    };
    for (name, values) in headers.iter() {
        if out.len() >= MAX_HEADERS {
            break;
        }
        if let Some(value) = values
            .last()
            .filter(|v| v.as_str().len() <= MAX_HEADER_VALUE)
        {
            let name: &str = name.as_ref();
            out.insert(name.to_lowercase(), value.as_str().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["a", "a.b", "a.*", "a.>", ">", "*.b.>", "orders.EU-1"] {
            assert_eq!(check_subject(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a b", "a.b*", "a.>x"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches(">", "x"));
    }

    #[test]
    fn scrub_removes_token_and_password() {
        assert_eq!(
            scrub(
                "nats://u:pw123@h:4222 bad t0k3n",
                "nats://u:pw123@h:4222",
                Some("t0k3n")
            ),
            "nats://h:4222 bad <redacted>"
        );
    }
}
