//! What a source hands over, and the sink it hands it to.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use troupe_core::inbound::EventRecord;

/// How a payload is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// JSON (brokers, webhooks, timers).
    #[default]
    Json,
    /// YAML (which JSON also is): dropped `.yml`/`.yaml` files.
    Yaml,
    /// UTF-8 text, kept as one string.
    Text,
    /// Loopabull's Redis looper's reading: a YAML mapping as it is, anything else as
    /// `{msg: <text>}`.
    Loopabull,
}

/// One event as a source received it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The source's configured name.
    pub source: String,
    /// The routing key (AMQP routing key, NATS subject, MQTT topic with `/` read as `.`...).
    pub routing_key: String,
    /// The payload as received.
    pub payload: Bytes,
    /// How `payload` is written.
    pub format: PayloadFormat,
    /// The source's id for this delivery, when it has a stable one (AMQP `message_id`, a
    /// JetStream sequence, a file's name and digest, a timer tick): a redelivery with the same
    /// id is recognised and not run twice.
    pub delivery_id: Option<String>,
    /// The broker says it delivered this message before (and it carries no id): an event with
    /// the same routing key and payload recorded recently is taken to be this one.
    pub redelivered: bool,
    /// Headers or properties worth matching on (lowercase names), e.g. a webhook's
    /// `x-github-event`.
    pub headers: BTreeMap<String, String>,
}

impl Inbound {
    /// An event with a JSON payload and nothing else set.
    pub fn json(source: &str, routing_key: &str, payload: impl Into<Bytes>) -> Inbound {
        Inbound {
            source: source.to_owned(),
            routing_key: routing_key.to_owned(),
            payload: payload.into(),
            format: PayloadFormat::Json,
            delivery_id: None,
            redelivered: false,
            headers: BTreeMap::new(),
        }
    }
}

/// What became of a delivered event.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its record (for a duplicate: the record made the first time).
    pub record: EventRecord,
    /// Whether it had been recorded before (a redelivery): nothing was done now.
    pub duplicate: bool,
}

/// The store could not record the event; nothing was done. Retrying may succeed.
#[derive(Debug, thiserror::Error)]
#[error("event not stored: {0}")]
pub struct NotStored(pub String);

/// Where sources deliver events.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Records the event and starts the runs its rules ask for. `Ok` means it is durably
    /// stored (or was before): the source may acknowledge it now.
    async fn deliver(&self, event: Inbound) -> Result<Delivered, NotStored>;

    /// Delivers, retrying with [`Backoff`] while the store fails, until stored or `stop` is
    /// cancelled (then `None`: the source must not acknowledge).
    async fn deliver_until_stored(
        &self,
        event: Inbound,
        stop: &CancellationToken,
    ) -> Option<Delivered> {
        let mut backoff = Backoff::default();
        loop {
            match self.deliver(event.clone()).await {
                Ok(d) => return Some(d),
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(source = %event.source, routing_key = %event.routing_key,
                        error = %e, retry_in_ms = wait.as_millis() as u64,
                        "event not stored; it stays unacknowledged and is retried");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Exponential backoff for reconnects and retries: 100 ms doubling to at most 10 s, with a
/// little jitter so sources that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 25 % jitter, from the clock's low bits (no need for a random generator here).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64(f64::from(nanos % 250) / 1000.0)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        *self = Backoff {
            max: self.max,
            ..Backoff::default()
        };
    }
}
