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
    /// Connects, sets up and consumes until an error (`Err`) or `ctx.stop` (`Ok`); resets
    /// `backoff` once it consumes.
    async fn session(&self, ctx: &SourceContext, backoff: &mut Backoff) -> Result<(), String>;
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

/// Checks a source's configuration beyond its shape (URLs, cron expressions, time zones...).
pub fn validate(cfg: &SourceConfig) -> Result<(), String> {
    match cfg {
        SourceConfig::Webhook(c) => {
            #[cfg(feature = "webhook")]
            return webhook::validate(c);
            #[cfg(not(feature = "webhook"))]
            return Err(disabled("webhook", c));
        }
        SourceConfig::Amqp(c) => {
            #[cfg(feature = "amqp")]
            return amqp::validate(c);
            #[cfg(not(feature = "amqp"))]
            return Err(disabled("amqp", c));
        }
        SourceConfig::Nats(c) => {
            #[cfg(feature = "nats")]
            return nats::validate(c);
            #[cfg(not(feature = "nats"))]
            return Err(disabled("nats", c));
        }
        SourceConfig::Mqtt(c) => {
            #[cfg(feature = "mqtt")]
            return mqtt::validate(c);
            #[cfg(not(feature = "mqtt"))]
            return Err(disabled("mqtt", c));
        }
        SourceConfig::Directory(c) => {
            #[cfg(feature = "directory")]
            return directory::validate(c);
            #[cfg(not(feature = "directory"))]
            return Err(disabled("directory", c));
        }
        SourceConfig::Timer(c) => {
            #[cfg(feature = "timer")]
            return timer::validate(c);
            #[cfg(not(feature = "timer"))]
            return Err(disabled("timer", c));
        }
    }
}

#[allow(dead_code)]
fn disabled<T>(kind: &str, _cfg: &T) -> String {
    format!("this troupe was built without the `{kind}` source (cargo feature `{kind}`)")
}

/// The running form of an active source; `None` for webhooks (served by the API).
pub fn build(cfg: &SourceConfig) -> Result<Option<Box<dyn Source>>, String> {
    validate(cfg)?;
    Ok(match cfg {
        SourceConfig::Webhook(_) => None,
        #[cfg(feature = "amqp")]
        SourceConfig::Amqp(c) => Some(Box::new(amqp::AmqpSource::new(c.clone()))),
        #[cfg(feature = "nats")]
        SourceConfig::Nats(c) => Some(Box::new(nats::NatsSource::new(c.clone()))),
        #[cfg(feature = "mqtt")]
        SourceConfig::Mqtt(c) => Some(Box::new(mqtt::MqttSource::new(c.clone()))),
        #[cfg(feature = "directory")]
        SourceConfig::Directory(c) => Some(Box::new(directory::DirectorySource::new(c.clone()))),
        #[cfg(feature = "timer")]
        SourceConfig::Timer(c) => Some(Box::new(timer::TimerSource::new(c.clone())?)),
        #[allow(unreachable_patterns)]
        _ => return Err("source kind not built in".to_owned()),
    })
}
