//! AMQP 0-9-1 source (RabbitMQ), through `lapin`.
//!
//! On every (re)connect (over TLS with `amqps://`, trusting `tls.ca_file` besides the system's
//! roots and presenting `tls.cert_file` when given) the source opens one channel, sets
//! `basic.qos` to `prefetch`, declares its queue (durable, exclusive and auto-deleted as
//! configured: durable by default; an exclusive or auto-deleted queue goes, with what it held,
//! when troupe's connection does), declares the exchange (when one is named, unless it is a built-in
//! `amq.*` exchange) and binds the queue with each binding key, then consumes with manual
//! acknowledgements. Messages are handed to the sink one at a time, in order; each is
//! acknowledged only once the sink reports it stored. When troupe stops meanwhile the
//! message is left unacknowledged and the connection closed: the broker requeues it and
//! redelivers it (flagged `redelivered`) to the next consumer.
//!
//! An event's routing key is the message's routing key; its delivery id is the `message_id`
//! property when the publisher set one (so a redelivery is recognised); its headers are the
//! string-valued AMQP headers and a few string properties (`content-type`, `type`,
//! `app-id`, `correlation-id`, `user-id`), with lowercase names.

use crate::config::{AmqpConfig, AmqpTls, FieldSecretError, Secret};
use crate::sink::{Backoff, Inbound, PayloadFormat};
use crate::sources::{Redacted, Sessions, Source, SourceContext, reconnecting, scrub};
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe_core::url::redact_credentials;

/// Exchange types `exchange_type` may name.
const EXCHANGE_TYPES: [&str; 4] = ["direct", "topic", "fanout", "headers"];
/// AMQP short strings (names, keys) are at most this long.
const MAX_NAME: usize = 255;
/// Connecting and setting up must finish within this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Closing the connection when stopping waits at most this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many headers are kept per event, each at most `MAX_HEADER_VALUE` bytes.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 1024;

/// What is wrong with an AMQP source's configuration. URLs are shown without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmqpConfigError {
    /// The URL is not `amqp://` or `amqps://`.
    #[error("url: {0:?} must start with amqp:// or amqps://")]
    Scheme(String),
    /// lapin cannot read the URL.
    #[error("url: {url:?} is invalid: {reason}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// lapin's reason (a plain message, with any password removed).
        reason: String,
    },
    /// A name that must be given is empty.
    #[error("{0}: must not be empty")]
    Empty(&'static str),
    /// A name or key is longer than an AMQP short string.
    #[error("{field}: {value:?} is longer than {MAX_NAME} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The name or key.
        value: String,
    },
    /// The queue is in RabbitMQ's reserved `amq.` namespace.
    #[error("queue: {0:?} starts with `amq.`, which RabbitMQ reserves")]
    ReservedQueue(String),
    /// An exchange without binding keys would deliver nothing.
    #[error("bindings: at least one binding key is needed when an exchange is named")]
    NoBindings,
    /// Not an exchange type AMQP knows.
    #[error("exchange_type: {0:?} is not one of {types}", types = EXCHANGE_TYPES.join(", "))]
    ExchangeType(String),
    /// A prefetch of 0 means no limit to RabbitMQ, not "none".
    #[error("prefetch: must be at least 1")]
    Prefetch,
    /// A client certificate needs its key, and a key its certificate.
    #[error("tls: cert_file and key_file go together")]
    TlsPair,
}

/// Why an AMQP session ended (shown through [`Redacted`]: lapin's messages may quote the
/// URL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AmqpError {
    /// The URL's secret has no value.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// A name the configuration check let through does not fit (see [`AmqpConfigError`]).
    #[error(transparent)]
    Config(#[from] AmqpConfigError),
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    /// Connecting and setting up took longer than [`SETUP_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// One step of the set-up failed (`what` names it: "basic.qos", "declaring queue q").
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: lapin::Error,
    },
    /// The consumer's stream failed.
    #[error("consuming: {0}")]
    Consume(#[source] lapin::Error),
    /// The broker cancelled the consumer (queue deleted, for one).
    #[error("the broker cancelled the consumer")]
    Cancelled,
    /// A stored event could not be acknowledged (the broker redelivers it).
    #[error("acknowledging: {0}")]
    Ack(#[source] lapin::Error),
    /// A TLS file could not be read.
    #[error("tls.{field}: cannot read {file}: {source}")]
    TlsFile {
        field: &'static str,
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// The TLS settings lapin connects with: the CA file's certificates added to the roots, and the
/// client certificate and key (PEM).
fn tls_config(tls: Option<&AmqpTls>) -> Result<OwnedTLSConfig, AmqpError> {
    let Some(tls) = tls else {
        return Ok(OwnedTLSConfig::default());
    };
    let read = |field: &'static str, file: &Option<String>| {
        file.as_ref()
            .map(|f| {
                std::fs::read(f).map_err(|source| AmqpError::TlsFile {
                    field,
                    file: f.clone(),
                    source,
                })
            })
            .transpose()
    };
    let cert_chain =
        read("ca_file", &tls.ca_file)?.map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let identity = match (
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    ) {
        (Some(pem), Some(key)) => Some(OwnedIdentity::PKCS8 { pem, key }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Checks an AMQP source's configuration without connecting.
pub fn validate(cfg: &AmqpConfig) -> Result<(), AmqpConfigError> {
    if let Secret::Literal(url) = &cfg.url {
        check_url(url)?;
    }
    check_name("queue", &cfg.queue)?;
    if cfg.queue.starts_with("amq.") {
        return Err(AmqpConfigError::ReservedQueue(cfg.queue.clone()));
    }
    if let Some(exchange) = &cfg.exchange {
        check_name("exchange", exchange)?;
        if cfg.bindings.is_empty() {
            return Err(AmqpConfigError::NoBindings);
        }
    }
    if !EXCHANGE_TYPES.contains(&cfg.exchange_type.as_str()) {
        return Err(AmqpConfigError::ExchangeType(cfg.exchange_type.clone()));
    }
    for key in &cfg.bindings {
        short("bindings", key)?;
    }
    if cfg.prefetch == 0 {
        return Err(AmqpConfigError::Prefetch);
    }
    if let Some(tls) = &cfg.tls
        && tls.cert_file.is_some() != tls.key_file.is_some()
    {
        return Err(AmqpConfigError::TlsPair);
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), AmqpConfigError> {
    let shown = redact_credentials(url);
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("amqp" | "amqps")) {
        return Err(AmqpConfigError::Scheme(shown));
    }
    url.parse::<lapin::uri::AMQPUri>()
        .map(|_| ())
        .map_err(|e| AmqpConfigError::Url {
            url: shown,
            reason: scrub(&e, url, None),
        })
}

fn check_name(field: &'static str, name: &str) -> Result<(), AmqpConfigError> {
    if name.is_empty() {
        return Err(AmqpConfigError::Empty(field));
    }
    short(field, name).map(|_| ())
}

/// An AMQP source.
pub struct AmqpSource {
    cfg: AmqpConfig,
}

impl AmqpSource {
    /// A source consuming `cfg.queue`; nothing connects before [`Source::run`].
    pub fn new(cfg: AmqpConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait::async_trait]
impl Source for AmqpSource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        reconnecting(self.as_ref(), &ctx, "AMQP").await;
    }
}

#[async_trait::async_trait]
impl Sessions for AmqpSource {
    type Error = Redacted<AmqpError>;

    /// One connection: connect, set up, consume until an error or `stop`.
    async fn session(
        &self,
        ctx: &SourceContext,
        backoff: &mut Backoff,
    ) -> Result<(), Redacted<AmqpError>> {
        let url = self
            .cfg
            .url
            .resolve_field("url")
            .map_err(|e| Redacted::new(e.into(), "", None))?;
        let redacted = |e: AmqpError| Redacted::new(e, &url, None);
        let setup = async {
            let props = ConnectionProperties::default()
                .with_connection_name(format!("troupe:{}", ctx.name).into());
            let tls = tls_config(self.cfg.tls.as_ref())?;
            let runtime =
                lapin::runtime::default_runtime().map_err(|source| AmqpError::Connect {
                    url: redact_credentials(&url),
                    source,
                })?;
            let conn = Connection::connect_with_config(&url, props, tls, runtime)
                .await
                .map_err(|source| AmqpError::Connect {
                    url: redact_credentials(&url),
                    source,
                })?;
            // From here on, dropping `conn` closes it.
            let consumer = self.setup(&conn, &ctx.name).await;
            Ok::<_, AmqpError>((conn, consumer))
        };
        let (conn, consumer) = tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            r = tokio::time::timeout(SETUP_TIMEOUT, setup) => match r {
                Ok(r) => r.map_err(redacted)?,
                Err(_) => return Err(redacted(AmqpError::ConnectTimeout(
                    redact_credentials(&url)))),
            },
        };
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                close(&conn).await;
                return Err(redacted(e));
            }
        };
        ctx.status.connected();
        backoff.reset();
        tracing::info!(source = %ctx.name, url = %redact_credentials(&url),
            queue = %self.cfg.queue, "AMQP source consuming");

        let result = loop {
            let next = tokio::select! {
                _ = ctx.stop.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => break Err(AmqpError::Consume(e)),
                None => break Err(AmqpError::Cancelled),
            };
            let mut event = inbound(&ctx.name, &delivery);
            event.format = self.cfg.payload.format();
            match ctx.sink.deliver_until_stored(event, &ctx.stop).await {
                Some(_) => {
                    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                        // Stored but not acknowledged: the broker redelivers it and the store
                        // recognises it (message id, or redelivered flag).
                        break Err(AmqpError::Ack(e));
                    }
                    ctx.status.delivered();
                }
                // Stopping: leave it unacknowledged; closing requeues it.
                None => break Ok(()),
            }
        };
        drop(consumer);
        close(&conn).await;
        result.map_err(redacted)
    }
}

impl AmqpSource {
    /// Channel, QoS, queue, exchange, bindings, consumer.
    async fn setup(&self, conn: &Connection, name: &str) -> Result<lapin::Consumer, AmqpError> {
        let cfg = &self.cfg;
        let queue = short("queue", &cfg.queue)?;
        let channel = conn
            .create_channel()
            .await
            .map_err(setup_failed("opening a channel"))?;
        channel
            .basic_qos(cfg.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(setup_failed("basic.qos"))?;
        channel
            .queue_declare(
                queue.clone(),
                QueueDeclareOptions {
                    durable: cfg.durable,
                    exclusive: cfg.exclusive,
                    auto_delete: cfg.auto_delete,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(setup_failed(format!("declaring queue {}", cfg.queue)))?;
        if let Some(exchange) = &cfg.exchange {
            let exchange_name = short("exchange", exchange)?;
            if !exchange.starts_with("amq.") {
                channel
                    .exchange_declare(
                        exchange_name.clone(),
                        exchange_kind(&cfg.exchange_type),
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(setup_failed(format!("declaring exchange {exchange}")))?;
            }
            for key in &cfg.bindings {
                channel
                    .queue_bind(
                        queue.clone(),
                        exchange_name.clone(),
                        short("bindings", key)?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(setup_failed(format!(
                        "binding {} to {exchange} with {key:?}",
                        cfg.queue
                    )))?;
            }
        }
        let tag = ShortString::try_new(format!("troupe-{name}"))
            .unwrap_or_else(|_| ShortString::from(String::new()));
        channel
            .basic_consume(
                queue,
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(setup_failed(format!("consuming {}", cfg.queue)))
    }
}

/// Makes a lapin error the failure of the set-up step `what`.
fn setup_failed(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> AmqpError {
    move |source| AmqpError::Setup {
        what: what.into(),
        source,
    }
}

/// Closes the connection (the broker requeues what was not acknowledged).
async fn close(conn: &Connection) {
    let closing = conn.close(
        lapin::protocol::constants::REPLY_SUCCESS,
        ShortString::from(String::from("troupe source stopping")),
    );
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

fn short(field: &'static str, s: &str) -> Result<ShortString, AmqpConfigError> {
    ShortString::try_new(s).map_err(|_| AmqpConfigError::TooLong {
        field,
        value: s.to_owned(),
    })
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        "topic" => ExchangeKind::Topic,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// The event a delivery makes.
fn inbound(source: &str, delivery: &lapin::message::Delivery) -> Inbound {
    let props = &delivery.properties;
    Inbound {
        source: source.to_owned(),
        routing_key: delivery.routing_key.as_str().to_owned(),
        payload: Bytes::copy_from_slice(&delivery.data),
        format: PayloadFormat::Json,
        delivery_id: props
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .filter(|id| !id.is_empty()),
        redelivered: delivery.redelivered,
        headers: headers(props),
    }
}

/// String-valued headers and properties, lowercase names, bounded.
fn headers(props: &BasicProperties) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let named = [
        ("content-type", props.content_type()),
        ("type", props.kind()),
        ("app-id", props.app_id()),
        ("correlation-id", props.correlation_id()),
        ("user-id", props.user_id()),
    ];
    for (name, value) in named {
        if let Some(v) = value {
            out.insert(name.to_owned(), v.as_str().to_owned());
        }
    }
    if let Some(table) = props.headers() {
        for (name, value) in table {
            if out.len() >= MAX_HEADERS {
                break;
            }
            let text = match value {
                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                AMQPValue::LongString(s) => {
                    std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                }
                _ => None,
            };
            if let Some(text) = text.filter(|t| t.len() <= MAX_HEADER_VALUE) {
                out.insert(name.as_str().to_lowercase(), text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_passwords() {
        let url = "amqp://bob:hunter22@host:5672/%2f";
        assert_eq!(
            scrub(
                "Invalid URL: 'amqp://bob:hunter22@host:5672/%2f'",
                url,
                None
            ),
            "Invalid URL: 'amqp://host:5672/%2f'"
        );
        assert_eq!(
            scrub("auth hunter22 failed", url, None),
            "auth <redacted> failed"
        );
    }
}
