//! MQTT 3.1.1 and MQTT 5 source, through `rumqttc` (`protocol`, default `3.1.1`).
//!
//! The source connects with a stable client id (`client_id`, default `troupe-<source name>`)
//! and keeps its session (`clean_session = false`; in MQTT 5 `clean_start = false` with a
//! one-day session expiry interval), so the broker keeps its subscriptions and queues QoS 1
//! and 2 messages while troupe is away. It subscribes to every topic filter at `qos` after
//! each (re)connect. Acknowledgements are manual: a QoS 1/2 message is acknowledged only once
//! the sink reports it stored; when troupe stops first it stays unacknowledged and the broker
//! sends it again (flagged `dup`) on the next connection. QoS 0 is at most once.
//!
//! rumqttc's event loop must keep being polled (pings, acks, reconnects), so a task polls it
//! and hands publishes over a bounded channel to the loop that delivers them one at a time,
//! in order; acknowledgements go back through the client (not for a message received on an
//! earlier connection: the broker sends that one again, and its packet id may be reused).
//! The two protocol versions differ only in [`Client`], [`Poller`]'s event loop and
//! [`Message`]; the loops are shared.
//!
//! The routing key is the topic with `/` read as `.`; messages carry no id, so a redelivery
//! is recognised by the `dup` flag (`redelivered`). MQTT 3.1.1 messages have no headers; an
//! MQTT 5 message's content type and user properties become headers (lowercase names, at
//! most [`MAX_HEADERS`]). Only `mqtt://` (or `tcp://`) is supported for now: TLS (`mqtts://`)
//! is refused by [`validate`].

use crate::config::{FieldSecretError, MqttConfig, MqttProtocol, Secret};
use crate::sink::{Backoff, Inbound, PayloadFormat};
use crate::sources::{Sessions, Source, SourceContext, SourceStatus, reconnecting};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as packets5;
use rumqttc::{Outgoing, QoS, v5};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use troupe_core::url::redact_credentials;

/// Keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Largest accepted packet (rumqttc's default, 10 KiB, would turn every larger message into a
/// reconnect loop).
const MAX_PACKET: usize = 64 * 1024 * 1024;
/// Publishes waiting between the polling task and the delivering loop.
const FORWARD_CAPACITY: usize = 256;
/// rumqttc's request channel (acks, subscribes).
const REQUEST_CAPACITY: usize = 256;
/// Sending the last acks and the disconnect when stopping waits at most this.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// MQTT 5: how long the broker keeps the session (and queues messages) after a disconnect,
/// in seconds. Without it the broker drops the session at once.
const SESSION_EXPIRY_S: u32 = 24 * 3600;
/// MQTT 5: at most this many headers (content type, user properties) are kept per event,
/// each value at most `MAX_HEADER_VALUE` bytes.
const MAX_HEADERS: usize = 32;
/// See [`MAX_HEADERS`].
const MAX_HEADER_VALUE: usize = 1024;

/// What is wrong with an MQTT source's configuration. URLs are shown without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttConfigError {
    /// The URL is not `mqtt://` (or `tcp://`).
    #[error("url: {0:?} must start with mqtt://")]
    Scheme(String),
    /// The URL asks for TLS, which the source does not do yet.
    #[error("url: {0:?}: TLS (mqtts://) is not supported yet; use mqtt://")]
    Tls(String),
    /// The URL has a path or a query.
    #[error("url: {0:?}: a path or query is not supported")]
    Path(String),
    /// An IPv6 host without its `]`.
    #[error("url: {0:?}: unclosed `[` in the host")]
    UnclosedBracket(String),
    /// The URL has no host.
    #[error("url: {0:?} has no host")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("url: {url:?}: invalid port {port:?}")]
    Port {
        /// The URL, without credentials.
        url: String,
        /// The port as written.
        port: String,
    },
    /// No topic filter to subscribe to.
    #[error("topics: at least one topic filter is needed")]
    NoTopics,
    /// A topic filter is not MQTT filter syntax.
    #[error("topics: {topic:?} {problem}")]
    Topic {
        /// The filter.
        topic: String,
        /// What is wrong with it.
        problem: FilterError,
    },
    /// Not an MQTT QoS level.
    #[error("qos: {0} is not 0, 1 or 2")]
    Qos(u8),
    /// The client id is empty or too long.
    #[error("client_id: must be non-empty (and shorter than 64 KiB)")]
    ClientId,
    /// A password without a username cannot be sent.
    #[error("password: a password needs a username")]
    PasswordWithoutUsername,
}

/// What is wrong with a topic filter (the message follows the filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is empty.
    #[error("is empty")]
    Empty,
    /// The filter is longer than MQTT allows or has a NUL.
    #[error("is too long or contains NUL")]
    TooLong,
    /// `#` anywhere but as the whole last level.
    #[error("uses `#` other than as the whole last level")]
    MultiLevel,
    /// `+` inside a level.
    #[error("uses `+` other than as a whole level")]
    SingleLevel,
    /// Anything else rumqttc refuses.
    #[error("is not a valid topic filter")]
    Invalid,
}

/// Why an MQTT session ended. Connection errors are not among them: the polling task
/// reports those itself and reconnects.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MqttError {
    /// The URL or the password has no value.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// The URL (from an environment variable or a file) is not one the source can use.
    #[error(transparent)]
    Config(#[from] MqttConfigError),
    /// The task polling rumqttc's event loop ended without being told to.
    #[error("the MQTT event loop task ended")]
    PollerEnded,
    /// The task sending acknowledgements ended (the client is gone).
    #[error("the MQTT ack task ended")]
    AckerEnded,
}

/// A failure of an MQTT client request, of either protocol version.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error(transparent)]
    V311(#[from] rumqttc::ClientError),
    #[error(transparent)]
    V5(#[from] v5::ClientError),
    /// An ack for a message received by a client of the other version.
    #[error("a message of another MQTT version")]
    OtherVersion,
}

/// A connection failure reported by an event loop, of either protocol version.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    V311(#[from] rumqttc::ConnectionError),
    #[error(transparent)]
    V5(#[from] v5::ConnectionError),
}

/// Checks an MQTT source's configuration without connecting.
pub fn validate(cfg: &MqttConfig) -> Result<(), MqttConfigError> {
    if let Secret::Literal(url) = &cfg.url {
        parse_url(url)?;
    }
    if cfg.topics.is_empty() {
        return Err(MqttConfigError::NoTopics);
    }
    for topic in &cfg.topics {
        check_filter(topic).map_err(|problem| MqttConfigError::Topic {
            topic: topic.clone(),
            problem,
        })?;
    }
    if cfg.qos > 2 {
        return Err(MqttConfigError::Qos(cfg.qos));
    }
    if let Some(id) = &cfg.client_id
        && (id.is_empty() || id.len() > 65535)
    {
        return Err(MqttConfigError::ClientId);
    }
    if cfg.password.is_some() && cfg.username.is_none() {
        return Err(MqttConfigError::PasswordWithoutUsername);
    }
    Ok(())
}

fn check_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.len() > 65535 || filter.contains('\0') {
        return Err(FilterError::TooLong);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(FilterError::MultiLevel);
        }
        if level.contains('+') && *level != "+" {
            return Err(FilterError::SingleLevel);
        }
    }
    if !rumqttc::valid_filter(filter) {
        return Err(FilterError::Invalid);
    }
    Ok(())
}

/// Where to connect, from `mqtt://[user[:password]@]host[:port][/]`.
struct Endpoint {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

fn parse_url(url: &str) -> Result<Endpoint, MqttConfigError> {
    let shown = redact_credentials(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(MqttConfigError::Scheme(shown));
    };
    match scheme {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" => return Err(MqttConfigError::Tls(shown)),
        _ => return Err(MqttConfigError::Scheme(shown)),
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if !rest[authority.len()..].trim_matches('/').is_empty() {
        return Err(MqttConfigError::Path(shown));
    }
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                Some((percent_decode(user), percent_decode(password))),
                hostport,
            )
        }
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(MqttConfigError::UnclosedBracket(shown));
        };
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(MqttConfigError::NoHost(shown));
    }
    let port = match port {
        None => 1883,
        Some(p) => {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| MqttConfigError::Port {
                    url: shown,
                    port: p.to_owned(),
                })?
        }
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn qos5(level: u8) -> v5::mqttbytes::QoS {
    match level {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        2 => v5::mqttbytes::QoS::ExactlyOnce,
        _ => v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// What the client is given, whatever the protocol version.
struct Settings {
    client_id: String,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// A client of either protocol version (cheap to clone).
#[derive(Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// An event loop of either protocol version (boxed: they are large and of unequal size).
enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A received publish, kept whole to acknowledge it.
enum Message {
    V311(rumqttc::Publish),
    V5(packets5::Publish),
}

/// What polling an event loop gives, whatever the protocol version.
enum Polled {
    /// Connected, unless `refused` says why not.
    ConnAck {
        refused: Option<String>,
        session_present: bool,
    },
    /// Subscribed, unless `refused` gives the broker's codes.
    SubAck {
        refused: Option<String>,
    },
    Publish(Message),
    /// The disconnect this client sent went out.
    Disconnected,
    Other,
}

/// A client and its event loop for `protocol`; nothing connects before the loop is polled.
fn client(protocol: MqttProtocol, s: Settings) -> (Client, EventLoop) {
    match protocol {
        MqttProtocol::V311 => {
            let mut options = rumqttc::MqttOptions::new(s.client_id, s.host, s.port);
            options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_request_channel_capacity(REQUEST_CAPACITY);
            if let Some((user, password)) = s.credentials {
                options.set_credentials(user, password);
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
            (Client::V311(client), EventLoop::V311(Box::new(eventloop)))
        }
        MqttProtocol::V5 => {
            let mut options = v5::MqttOptions::new(s.client_id, s.host, s.port);
            options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
                .set_manual_acks(true)
                .set_max_packet_size(u32::try_from(MAX_PACKET).ok())
                .set_request_channel_capacity(REQUEST_CAPACITY);
            if let Some((user, password)) = s.credentials {
                options.set_credentials(user, password);
            }
            let (client, eventloop) = v5::AsyncClient::new(options, REQUEST_CAPACITY);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}

impl Client {
    async fn subscribe(&self, topics: &[String], level: u8) -> Result<(), ClientError> {
        match self {
            Client::V311(c) => c
                .subscribe_many(
                    topics
                        .iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos(level))),
                )
                .await
                .map_err(ClientError::from),
            Client::V5(c) => c
                .subscribe_many(
                    topics
                        .iter()
                        .map(|t| packets5::Filter::new(t.clone(), qos5(level))),
                )
                .await
                .map_err(ClientError::from),
        }
    }

    async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        match (self, message) {
            (Client::V311(c), Message::V311(p)) => Ok(c.ack(p).await?),
            (Client::V5(c), Message::V5(p)) => Ok(c.ack(p).await?),
            _ => Err(ClientError::OtherVersion),
        }
    }

    async fn disconnect(&self) -> Result<(), ClientError> {
        match self {
            Client::V311(c) => Ok(c.disconnect().await?),
            Client::V5(c) => Ok(c.disconnect().await?),
        }
    }
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Polled, ConnectionError> {
        use rumqttc::Packet;
        use v5::mqttbytes::v5::Packet as Packet5;
        Ok(match self {
            EventLoop::V311(l) => match l.poll().await? {
                rumqttc::Event::Incoming(Packet::ConnAck(ack)) => Polled::ConnAck {
                    refused: (ack.code != rumqttc::ConnectReturnCode::Success)
                        .then(|| format!("{:?}", ack.code)),
                    session_present: ack.session_present,
                },
                rumqttc::Event::Incoming(Packet::SubAck(ack)) => Polled::SubAck {
                    refused: ack
                        .return_codes
                        .contains(&rumqttc::SubscribeReasonCode::Failure)
                        .then(|| format!("{:?}", ack.return_codes)),
                },
                rumqttc::Event::Incoming(Packet::Publish(p)) => Polled::Publish(Message::V311(p)),
                rumqttc::Event::Outgoing(Outgoing::Disconnect) => Polled::Disconnected,
                _ => Polled::Other,
            },
            EventLoop::V5(l) => match l.poll().await? {
                v5::Event::Incoming(Packet5::ConnAck(ack)) => Polled::ConnAck {
                    refused: (ack.code != packets5::ConnectReturnCode::Success)
                        .then(|| format!("{:?}", ack.code)),
                    session_present: ack.session_present,
                },
                v5::Event::Incoming(Packet5::SubAck(ack)) => Polled::SubAck {
                    refused: ack
                        .return_codes
                        .iter()
                        .any(|c| !matches!(c, packets5::SubscribeReasonCode::Success(_)))
                        .then(|| format!("{:?}", ack.return_codes)),
                },
                v5::Event::Incoming(Packet5::Publish(p)) => Polled::Publish(Message::V5(p)),
                v5::Event::Outgoing(Outgoing::Disconnect) => Polled::Disconnected,
                _ => Polled::Other,
            },
        })
    }
}

impl Message {
    /// The topic; `None` if it is not UTF-8 (MQTT 5 carries it as bytes).
    fn topic(&self) -> Option<&str> {
        match self {
            Message::V311(p) => Some(&p.topic),
            Message::V5(p) => std::str::from_utf8(&p.topic).ok(),
        }
    }

    /// The topic to show in logs.
    fn shown_topic(&self) -> Cow<'_, str> {
        match self {
            Message::V311(p) => Cow::Borrowed(&p.topic),
            Message::V5(p) => String::from_utf8_lossy(&p.topic),
        }
    }

    fn payload(&self) -> Bytes {
        match self {
            Message::V311(p) => p.payload.clone(),
            Message::V5(p) => p.payload.clone(),
        }
    }

    fn dup(&self) -> bool {
        match self {
            Message::V311(p) => p.dup,
            Message::V5(p) => p.dup,
        }
    }

    /// MQTT 5: the content type and user properties, lowercase names, bounded.
    fn headers(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Message::V5(packets5::Publish {
            properties: Some(props),
            ..
        }) = self
        else {
            return out;
        };
        let content_type = props.content_type.iter().map(|v| ("content-type", v));
        let user = props.user_properties.iter().map(|(k, v)| (k.as_str(), v));
        for (name, value) in content_type.chain(user) {
            if out.len() >= MAX_HEADERS {
                break;
            }
            if value.len() <= MAX_HEADER_VALUE {
                out.insert(name.to_lowercase(), value.clone());
            }
        }
        out
    }
}

/// An MQTT source.
pub struct MqttSource {
    cfg: MqttConfig,
}

impl MqttSource {
    /// A source for `cfg`; nothing connects before [`Source::run`].
    pub fn new(cfg: MqttConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait::async_trait]
impl Source for MqttSource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        reconnecting(self.as_ref(), &ctx, "MQTT").await;
    }
}

#[async_trait::async_trait]
impl Sessions for MqttSource {
    type Error = MqttError;

    /// Builds the client anew (secrets resolved) and runs it until `stop` (`Ok`), a
    /// configuration or secret problem, or its polling task ending unexpectedly. The polling
    /// task reconnects on its own meanwhile, with its own backoff.
    async fn session(&self, ctx: &SourceContext, _backoff: &mut Backoff) -> Result<(), MqttError> {
        let (settings, url) = self.settings(ctx)?;
        self.client_session(ctx, settings, &url).await
    }
}

impl MqttSource {
    /// What the client is given, secrets resolved; and the URL to show (redacted).
    fn settings(&self, ctx: &SourceContext) -> Result<(Settings, String), MqttError> {
        let url = self.cfg.url.resolve_field("url")?;
        let endpoint = parse_url(&url)?;
        let client_id = self
            .cfg
            .client_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("troupe-{}", ctx.name));
        let password = match &self.cfg.password {
            Some(p) => Some(p.resolve_field("password")?),
            None => None,
        };
        let credentials = match (&self.cfg.username, endpoint.credentials) {
            (Some(user), _) => Some((user.clone(), password.unwrap_or_default())),
            (None, credentials) => credentials,
        };
        let settings = Settings {
            client_id,
            host: endpoint.host,
            port: endpoint.port,
            credentials,
        };
        Ok((settings, redact_credentials(&url)))
    }

    /// One event loop (which reconnects on its own) until `stop`; `Err` if its polling task
    /// ends unexpectedly.
    async fn client_session(
        &self,
        ctx: &SourceContext,
        settings: Settings,
        url: &str,
    ) -> Result<(), MqttError> {
        let (client, eventloop) = client(self.cfg.protocol, settings);
        let (publish_tx, mut publishes) = mpsc::channel::<Received>(FORWARD_CAPACITY);
        let connection = Arc::new(AtomicU64::new(0));
        let poller_stop = CancellationToken::new();
        let mut poller = tokio::spawn(poll(Poller {
            eventloop,
            client: client.clone(),
            topics: self.cfg.topics.clone(),
            qos: self.cfg.qos,
            forward: publish_tx,
            connection: connection.clone(),
            status: ctx.status.clone(),
            stop: poller_stop.clone(),
            name: ctx.name.clone(),
            url: url.to_owned(),
        }));
        // Acks go through their own task so this loop never waits on rumqttc's request
        // channel (which only the polling task drains); they keep their order. A message
        // received on an earlier connection is not acknowledged: the broker sent it again
        // on the current one, maybe under a packet id now reused for another message.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Received>();
        let ack_client = client.clone();
        let acker = tokio::spawn(async move {
            while let Some(r) = ack_rx.recv().await {
                if r.connection != connection.load(Ordering::SeqCst) {
                    tracing::debug!(topic = %r.message.shown_topic(), "not acknowledging a \
                        message from an earlier connection: it comes again");
                    continue;
                }
                if let Err(e) = ack_client.ack(&r.message).await {
                    tracing::debug!(error = %e, "MQTT ack not sent");
                    return;
                }
            }
        });

        let result = loop {
            let next = tokio::select! {
                _ = ctx.stop.cancelled() => break Ok(()),
                next = publishes.recv() => next,
            };
            let Some(received) = next else {
                break Err(MqttError::PollerEnded);
            };
            let message = &received.message;
            let Some(topic) = message.topic() else {
                // Not deliverable; acknowledged so that the broker does not send it forever.
                tracing::warn!(source = %ctx.name, topic = %message.shown_topic(),
                    "MQTT message with a topic that is not UTF-8 skipped");
                if ack_tx.send(received).is_err() {
                    break Err(MqttError::AckerEnded);
                }
                continue;
            };
            let event = Inbound {
                source: ctx.name.clone(),
                routing_key: topic.replace('/', "."),
                payload: message.payload(),
                format: PayloadFormat::Json,
                delivery_id: None,
                redelivered: message.dup(),
                headers: message.headers(),
            };
            match ctx.sink.deliver_until_stored(event, &ctx.stop).await {
                Some(_) => {
                    if ack_tx.send(received).is_err() {
                        break Err(MqttError::AckerEnded);
                    }
                    ctx.status.delivered();
                }
                // Stopping: not acknowledged; the broker sends it again next time.
                None => break Ok(()),
            }
        };

        // Shut down: what was not delivered stays unacknowledged; send the acks already
        // due, then disconnect (the broker keeps the session), all within a bound.
        drop(publishes);
        drop(ack_tx);
        let shutdown = async {
            let _ = acker.await;
            let _ = client.disconnect().await;
            let _ = (&mut poller).await;
        };
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown).await;
        poller_stop.cancel();
        poller.abort();
        result
    }
}

/// A publish, and the connection it came on.
struct Received {
    message: Message,
    connection: u64,
}

/// What the polling task needs.
struct Poller {
    eventloop: EventLoop,
    client: Client,
    topics: Vec<String>,
    qos: u8,
    forward: mpsc::Sender<Received>,
    /// Counts connections (ConnAcks).
    connection: Arc<AtomicU64>,
    status: Arc<SourceStatus>,
    stop: CancellationToken,
    name: String,
    url: String,
}

/// Polls the event loop until `stop` or the disconnect it sent: subscribes after every
/// connect, forwards publishes, reports errors and backs off before polling again (which
/// reconnects).
async fn poll(mut p: Poller) {
    let mut backoff = Backoff::default();
    let mut forwarding = true;
    loop {
        let event = tokio::select! {
            _ = p.stop.cancelled() => return,
            event = p.eventloop.poll() => event,
        };
        match event {
            Ok(Polled::ConnAck {
                refused,
                session_present,
            }) => {
                if let Some(code) = refused {
                    p.status.disconnected(format!("connection refused: {code}"));
                    continue;
                }
                p.connection.fetch_add(1, Ordering::SeqCst);
                // Subscribing from another task: this one must keep polling for the
                // request to go out.
                let client = p.client.clone();
                let topics = p.topics.clone();
                let qos = p.qos;
                let name = p.name.clone();
                tokio::spawn(async move {
                    if let Err(error) = client.subscribe(&topics, qos).await {
                        tracing::warn!(source = %name, %error, "MQTT subscribe not sent");
                    }
                });
                backoff.reset();
                tracing::info!(source = %p.name, url = %p.url, session_present,
                    "MQTT source connected");
            }
            Ok(Polled::SubAck { refused }) => {
                if let Some(codes) = refused {
                    let error = "the broker refused a subscription";
                    tracing::warn!(source = %p.name, %codes, "{error}");
                    p.status.disconnected(error);
                } else {
                    // Connected and subscribed: consuming.
                    p.status.connected();
                }
            }
            Ok(Polled::Publish(message)) => {
                // After the delivering loop is gone (stopping), publishes are left
                // unacknowledged for the broker to send again.
                if forwarding {
                    let sent = tokio::select! {
                        _ = p.stop.cancelled() => return,
                        sent = p.forward.send(Received {
                            message,
                            connection: p.connection.load(Ordering::SeqCst),
                        }) => sent,
                    };
                    forwarding = sent.is_ok();
                }
            }
            Ok(Polled::Disconnected) => return,
            Ok(Polled::Other) => {}
            Err(e) => {
                let wait = backoff.next_delay();
                let error = redact_credentials(&e.to_string());
                tracing::warn!(source = %p.name, url = %p.url, %error,
                    retry_in_ms = wait.as_millis() as u64, "MQTT connection error");
                p.status.disconnected(&error);
                tokio::select! {
                    _ = p.stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = parse_url("mqtt://127.0.0.1").expect("plain");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 1883));
        let e = parse_url("mqtt://u:p%40ss@broker:1884/").expect("credentials");
        assert_eq!((e.host.as_str(), e.port), ("broker", 1884));
        assert_eq!(e.credentials, Some(("u".to_owned(), "p@ss".to_owned())));
        let e = parse_url("tcp://[::1]:1999").expect("v6");
        assert_eq!((e.host.as_str(), e.port), ("::1", 1999));
        let err = parse_url("mqtts://u:secret@h").err().expect("tls refused");
        let err = err.to_string();
        assert!(err.contains("TLS") && !err.contains("secret"), "{err}");
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("mqtt://h:99999").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
    }

    #[test]
    fn filters() {
        for ok in ["a", "a/b", "a/+/c", "a/#", "#", "+", "/a"] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
