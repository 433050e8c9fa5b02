//! Event sources. Each is a real client of its transport, behind a cargo feature (all on by
//! default), and implements [`Source`]: it runs until told to stop, reconnects on its own
//! with backoff, hands each event to the [`Sink`], and acknowledges it only once the sink
//! reports it stored.

use crate::config::SourceConfig;
use crate::sink::{Backoff, Sink};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "directory")]
pub mod directory;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "timer")]
pub mod timer;
#[cfg(feature = "webhook")]
pub mod webhook;

/// What a running source gets.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's configured name (every event it delivers carries it).
    pub name: String,
    /// Where events go.
    pub sink: Arc<dyn Sink>,
    /// Cancelled when the source must stop (shutdown, or its configuration changed).
    pub stop: CancellationToken,
    /// Where it reports how it is doing.
    pub status: Arc<SourceStatus>,
}

/// A source that runs on its own (brokers, directories, timers). Webhooks are passive: the
/// API hands their requests to the sink.
#[async_trait]
pub trait Source: Send + 'static {
    /// Runs until `ctx.stop` is cancelled. Never returns early on a transport error:
    /// reconnects with [`crate::sink::Backoff`] instead, reporting through `ctx.status`.
    async fn run(self: Box<Self>, ctx: SourceContext);
}

/// A source that works in sessions: one connection, set up, consumed until it fails.
#[async_trait]
pub(crate) trait Sessions: Sync {
    /// Why a session ended; shown in the source's status and the log.
    type Error: std::fmt::Display + Send;

    /// Connects, sets up and consumes until an error (`Err`) or `ctx.stop` (`Ok`); resets
    /// `backoff` once it consumes.
    async fn session(&self, ctx: &SourceContext, backoff: &mut Backoff) -> Result<(), Self::Error>;
}

/// A session's error as it may be shown: transports quote the URL they were given in their
/// messages, password and all, so the message has the credentials of every URL, the
/// connection URL's password and the token (when there is one) replaced. Its `Debug` is the
/// same text, and the cause chain stops here for the same reason (the message already
/// includes each cause's).
pub(crate) struct Redacted<E> {
    error: E,
    url: String,
    token: Option<String>,
}

impl<E> Redacted<E> {
    /// `error`, to be shown without the secrets of `url` and `token`.
    pub(crate) fn new(error: E, url: &str, token: Option<&str>) -> Self {
        Redacted {
            error,
            url: url.to_owned(),
            token: token.map(str::to_owned),
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for Redacted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&scrub(
            &self.error.to_string(),
            &self.url,
            self.token.as_deref(),
        ))
    }
}

impl<E: std::fmt::Display> std::fmt::Debug for Redacted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl<E: std::fmt::Display> std::error::Error for Redacted<E> {}

/// `text` with URL credentials, `url`'s password and `token` removed (secrets shorter than
/// three characters are left: replacing them would mangle the message, not protect them).
pub(crate) fn scrub(text: &str, url: &str, token: Option<&str>) -> String {
    let mut out = troupe_core::url::redact_credentials(text);
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p);
    for secret in [password, token].into_iter().flatten() {
        if secret.len() >= 3 {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

/// Runs `source`'s sessions one after another until `ctx.stop` is cancelled: after each failure
/// the source is reported disconnected and waits its [`Backoff`] delay.
pub(crate) async fn reconnecting(source: &impl Sessions, ctx: &SourceContext, what: &str) {
    let mut backoff = Backoff::default();
    while !ctx.stop.is_cancelled() {
        if let Err(error) = source.session(ctx, &mut backoff).await {
            let wait = backoff.next_delay();
            tracing::warn!(source = %ctx.name, %error,
                retry_in_ms = wait.as_millis() as u64, "{what} source disconnected");
            ctx.status.disconnected(&error);
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// How a source is doing, as `GET /api/v1/sources` shows it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SourceState {
    /// `starting`, `connected` or `disconnected` (passive sources: `ready`).
    pub state: String,
    /// The last error, if the source is not connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events delivered since the source started.
    pub delivered: u64,
    /// The replica running the source (its node id and incarnation), as its lease in the
    /// store says; `None` for passive sources (webhooks), which every replica serves, and
    /// while nobody holds the lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// A source's shared status.
#[derive(Debug, Default)]
pub struct SourceStatus {
    inner: Mutex<SourceState>,
}

impl SourceStatus {
    /// A status in state `starting`.
    pub fn new(initial: &str) -> SourceStatus {
        SourceStatus {
            inner: Mutex::new(SourceState {
                state: initial.to_owned(),
                ..SourceState::default()
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SourceState)) {
        match self.inner.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The source is connected and consuming.
    pub fn connected(&self) {
        self.update(|s| {
            s.state = "connected".to_owned();
            s.last_error = None;
        });
    }

    /// The source lost (or could not reach) its transport.
    pub fn disconnected(&self, error: impl std::fmt::Display) {
        let error = error.to_string();
        self.update(|s| {
            s.state = "disconnected".to_owned();
            s.last_error = Some(error);
        });
    }

    /// This replica holds the source's lease and runs it (`holder` is this replica).
    pub fn leading(&self, holder: &str) {
        let holder = holder.to_owned();
        self.update(|s| {
            s.state = "starting".to_owned();
            s.last_error = None;
            s.holder = Some(holder);
        });
    }

    /// Another replica (`holder`, if known) runs the source; this one waits to take over.
    pub fn standby(&self, holder: Option<String>) {
        self.update(|s| {
            s.state = "standby".to_owned();
            s.last_error = None;
            s.holder = holder;
        });
    }

    /// The lease could not be read or kept: the source is not running here.
    pub fn lease_failed(&self, error: impl std::fmt::Display) {
        let error = error.to_string();
        self.update(|s| {
            s.state = "standby".to_owned();
            s.last_error = Some(error);
            s.holder = None;
        });
    }

    /// One more event delivered.
    pub fn delivered(&self) {
        self.update(|s| s.delivered += 1);
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> SourceState {
        match self.inner.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// What is wrong with a source's configuration, beyond its shape; the message starts with the
/// field at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SourceConfigError {
    /// A webhook source's.
    #[cfg(feature = "webhook")]
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookConfigError),
    /// An AMQP source's.
    #[cfg(feature = "amqp")]
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpConfigError),
    /// A NATS source's.
    #[cfg(feature = "nats")]
    #[error(transparent)]
    Nats(#[from] nats::NatsConfigError),
    /// An MQTT source's.
    #[cfg(feature = "mqtt")]
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttConfigError),
    /// A Redis source's.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] redis::RedisConfigError),
    /// A directory source's.
    #[cfg(feature = "directory")]
    #[error(transparent)]
    Directory(#[from] directory::DirectoryConfigError),
    /// A timer source's.
    #[cfg(feature = "timer")]
    #[error(transparent)]
    Timer(#[from] timer::TimerConfigError),
    /// A source of a kind this build leaves out.
    #[error("this troupe was built without the `{0}` source (cargo feature `{0}`)")]
    Disabled(&'static str),
}

/// Checks a source's configuration beyond its shape (URLs, cron expressions, time zones...).
pub fn validate(cfg: &SourceConfig) -> Result<(), SourceConfigError> {
    match cfg {
        SourceConfig::Webhook(c) => {
            #[cfg(feature = "webhook")]
            return Ok(webhook::validate(c)?);
            #[cfg(not(feature = "webhook"))]
            return Err(disabled("webhook", c));
        }
        SourceConfig::Amqp(c) => {
            #[cfg(feature = "amqp")]
            return Ok(amqp::validate(c)?);
            #[cfg(not(feature = "amqp"))]
            return Err(disabled("amqp", c));
        }
        SourceConfig::Nats(c) => {
            #[cfg(feature = "nats")]
            return Ok(nats::validate(c)?);
            #[cfg(not(feature = "nats"))]
            return Err(disabled("nats", c));
        }
        SourceConfig::Mqtt(c) => {
            #[cfg(feature = "mqtt")]
            return Ok(mqtt::validate(c)?);
            #[cfg(not(feature = "mqtt"))]
            return Err(disabled("mqtt", c));
        }
        SourceConfig::Redis(c) => {
            #[cfg(feature = "redis")]
            return Ok(redis::validate(c)?);
            #[cfg(not(feature = "redis"))]
            return Err(disabled("redis", c));
        }
        SourceConfig::Directory(c) => {
            #[cfg(feature = "directory")]
            return Ok(directory::validate(c)?);
            #[cfg(not(feature = "directory"))]
            return Err(disabled("directory", c));
        }
        SourceConfig::Timer(c) => {
            #[cfg(feature = "timer")]
            return Ok(timer::validate(c)?);
            #[cfg(not(feature = "timer"))]
            return Err(disabled("timer", c));
        }
    }
}

#[allow(dead_code)]
fn disabled<T>(kind: &'static str, _cfg: &T) -> SourceConfigError {
    SourceConfigError::Disabled(kind)
}

/// The running form of an active source; `None` for webhooks (served by the API).
pub fn build(cfg: &SourceConfig) -> Result<Option<Box<dyn Source>>, SourceConfigError> {
    validate(cfg)?;
    Ok(match cfg {
        SourceConfig::Webhook(_) => None,
        #[cfg(feature = "amqp")]
        SourceConfig::Amqp(c) => Some(Box::new(amqp::AmqpSource::new(c.clone()))),
        #[cfg(feature = "nats")]
        SourceConfig::Nats(c) => Some(Box::new(nats::NatsSource::new(c.clone()))),
        #[cfg(feature = "mqtt")]
        SourceConfig::Mqtt(c) => Some(Box::new(mqtt::MqttSource::new(c.clone()))),
        #[cfg(feature = "redis")]
        SourceConfig::Redis(c) => Some(Box::new(redis::RedisSource::new(c.clone()))),
        #[cfg(feature = "directory")]
        SourceConfig::Directory(c) => Some(Box::new(directory::DirectorySource::new(c.clone()))),
        #[cfg(feature = "timer")]
        SourceConfig::Timer(c) => Some(Box::new(timer::TimerSource::new(c.clone())?)),
        #[allow(unreachable_patterns)]
        _ => return Err(SourceConfigError::Disabled(cfg.kind())),
    })
}
