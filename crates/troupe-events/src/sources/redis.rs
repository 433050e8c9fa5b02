//! Redis source, through `redis` (tokio): pub/sub channel patterns, or streams read through a
//! consumer group.
//!
//! **Pub/sub is at-most-once.** The source `PSUBSCRIBE`s to each of `channels` (glob patterns:
//! `*` is every channel, as Loopabull's Redis looper subscribes) and hands every message to
//! the sink, in order. Redis keeps nothing for a subscriber: a message published while troupe
//! is down or reconnecting is lost, and one published while the store is down waits only in
//! the connection's buffer (Redis drops a subscriber whose buffer outgrows
//! `client-output-buffer-limit pubsub`). The routing key is the channel; the `pattern` header
//! is the pattern that matched. A `PING` every [`PING_EVERY`] notices a connection that went
//! away without closing.
//!
//! **Streams are at-least-once.** On every (re)connect the source makes the consumer `group`
//! on each stream (`XGROUP CREATE ... $ MKSTREAM`: entries added from then on; an existing
//! group is used as it is), then reads with `XREADGROUP` under its stable consumer name: first
//! its own pending entries (read before, never acknowledged: troupe stopped or crashed before
//! storing them), then new ones (`>`, blocking up to [`BLOCK`]). Each entry is acknowledged
//! (`XACK`) only once the sink reports it stored; when troupe stops before that, the entry
//! stays pending and is read again on restart. The delivery id is `<stream>/<entry id>`, so an
//! entry stored but not acknowledged (a crash between the two) is recognised when it comes
//! again. An entry's `routing_key` field is its routing key (the stream's name without one);
//! its `payload` field is the payload, read as `payload` says (without one, all its fields as
//! a JSON object of strings). An entry trimmed from the stream while pending is acknowledged
//! and skipped.
//!
//! The URL's password and `password` never appear in logs, statuses or errors.

use crate::config::{FieldSecretError, RedisConfig, Secret};
use crate::sink::{Backoff, Inbound, PayloadFormat};
use crate::sources::{Redacted, Sessions, Source, SourceContext, reconnecting, scrub};
use bytes::Bytes;
use futures_util::StreamExt;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe_core::url::redact_credentials;

/// Connecting and setting up must finish within this.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a pub/sub connection is checked with `PING`.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// How long one `XREADGROUP` waits for new entries before the next.
pub const BLOCK: Duration = Duration::from_secs(5);
/// A command's answer must come within this (beyond `BLOCK` for reads).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries read at once per stream.
const BATCH: usize = 32;
/// The fields of a stream entry that are not payload.
const ROUTING_KEY_FIELD: &str = "routing_key";
const PAYLOAD_FIELD: &str = "payload";

/// What is wrong with a Redis source's configuration. URLs are shown without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigError {
    /// The URL is not `redis://` or `rediss://`.
    #[error("url: {0:?} must start with redis:// or rediss://")]
    Scheme(String),
    /// The client cannot read the URL.
    #[error("url: {url:?} is invalid: {reason}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// The client's reason, with any password removed.
        reason: String,
    },
    /// Neither channels nor streams: nothing to read.
    #[error("channels or streams: one of them must list something to read")]
    Nothing,
    /// Both channels and streams: they deliver differently, so they are two sources.
    #[error(
        "channels and streams: a source reads either pub/sub channels or streams; make two sources"
    )]
    Both,
    /// A name that must be given is empty.
    #[error("{0}: must not be empty")]
    Empty(&'static str),
}

/// Why a Redis session ended (shown through [`Redacted`]: the client's messages may quote
/// the URL, and the password must never be shown).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// The URL or the password has no value.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// The URL could not be read (the configuration check passes secrets it cannot see).
    #[error(transparent)]
    Config(#[from] RedisConfigError),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// Connecting and setting up took longer than [`SETUP_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// A command failed (`what` names it: "PSUBSCRIBE *", "XREADGROUP").
    #[error("{what}: {source}")]
    Command {
        what: String,
        #[source]
        source: redis::RedisError,
    },
    /// The server did not answer in time.
    #[error("{0}: no answer from the server")]
    NoAnswer(&'static str),
    /// The pub/sub connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// An answer was not of the shape Redis documents.
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
}

/// Checks a Redis source's configuration without connecting.
pub fn validate(cfg: &RedisConfig) -> Result<(), RedisConfigError> {
    if let Secret::Literal(url) = &cfg.url {
        check_url(url)?;
    }
    match (cfg.channels.is_empty(), cfg.streams.is_empty()) {
        (true, true) => return Err(RedisConfigError::Nothing),
        (false, false) => return Err(RedisConfigError::Both),
        _ => {}
    }
    if cfg.channels.iter().any(String::is_empty) {
        return Err(RedisConfigError::Empty("channels"));
    }
    if cfg.streams.iter().any(String::is_empty) {
        return Err(RedisConfigError::Empty("streams"));
    }
    if cfg.group.is_empty() {
        return Err(RedisConfigError::Empty("group"));
    }
    if cfg.consumer.as_deref() == Some("") {
        return Err(RedisConfigError::Empty("consumer"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<redis::ConnectionInfo, RedisConfigError> {
    let shown = redact_credentials(url);
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(RedisConfigError::Scheme(shown));
    }
    url.into_connection_info()
        .map_err(|e| RedisConfigError::Url {
            url: shown,
            reason: scrub(&e.to_string(), url, None),
        })
}

/// A Redis source.
pub struct RedisSource {
    cfg: RedisConfig,
}

impl RedisSource {
    /// A source reading `cfg`'s channels or streams; nothing connects before [`Source::run`].
    pub fn new(cfg: RedisConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait::async_trait]
impl Source for RedisSource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        reconnecting(self.as_ref(), &ctx, "Redis").await;
    }
}

#[async_trait::async_trait]
impl Sessions for RedisSource {
    type Error = Redacted<RedisError>;

    /// One connection: connect, subscribe or make the groups, read until an error or `stop`.
    async fn session(
        &self,
        ctx: &SourceContext,
        backoff: &mut Backoff,
    ) -> Result<(), Redacted<RedisError>> {
        let url = self
            .cfg
            .url
            .resolve_field("url")
            .map_err(|e| Redacted::new(e.into(), "", None))?;
        let password = match &self.cfg.password {
            Some(p) => Some(
                p.resolve_field("password")
                    .map_err(|e| Redacted::new(e.into(), &url, None))?,
            ),
            None => None,
        };
        let redacted = |e: RedisError| Redacted::new(e, &url, password.as_deref());
        let shown = redact_credentials(&url);
        let mut info = check_url(&url).map_err(|e| redacted(e.into()))?;
        if let Some(p) = &password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|source| {
            redacted(RedisError::Connect {
                url: shown.clone(),
                source,
            })
        })?;
        let result = if self.cfg.streams.is_empty() {
            self.pubsub(ctx, &client, backoff, &shown).await
        } else {
            self.streams(ctx, &client, backoff, &shown).await
        };
        result.map_err(redacted)
    }
}

impl RedisSource {
    /// Subscribes to the channel patterns and delivers every message until an error or `stop`.
    async fn pubsub(
        &self,
        ctx: &SourceContext,
        client: &Client,
        backoff: &mut Backoff,
        shown: &str,
    ) -> Result<(), RedisError> {
        let setup = async {
            let mut pubsub =
                client
                    .get_async_pubsub()
                    .await
                    .map_err(|source| RedisError::Connect {
                        url: shown.to_owned(),
                        source,
                    })?;
            for pattern in &self.cfg.channels {
                pubsub
                    .psubscribe(pattern)
                    .await
                    .map_err(command(format!("PSUBSCRIBE {pattern}")))?;
            }
            Ok::<_, RedisError>(pubsub)
        };
        let Some(pubsub) = set_up(ctx, backoff, shown, setup).await? else {
            return Ok(());
        };
        tracing::info!(source = %ctx.name, url = %shown, channels = ?self.cfg.channels,
            "Redis pub/sub source subscribed");
        let format = self.cfg.payload.format();
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                _ = ping.tick() => {
                    match tokio::time::timeout(ANSWER_TIMEOUT, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(source)) => return Err(command("PING")(source)),
                        Err(_) => return Err(RedisError::NoAnswer("PING")),
                    }
                }
                msg = messages.next() => msg.ok_or(RedisError::Closed)?,
            };
            let mut headers = BTreeMap::new();
            if let Ok(pattern) = msg.get_pattern::<String>() {
                headers.insert("pattern".to_owned(), pattern);
            }
            let event = Inbound {
                source: ctx.name.clone(),
                routing_key: msg.get_channel_name().to_owned(),
                payload: Bytes::copy_from_slice(msg.get_payload_bytes()),
                format,
                delivery_id: None,
                redelivered: false,
                headers,
            };
            match ctx.sink.deliver_until_stored(event, &ctx.stop).await {
                Some(_) => ctx.status.delivered(),
                None => return Ok(()),
            }
        }
    }

    /// Makes the groups, then reads pending entries and new ones, acknowledging each once
    /// stored, until an error or `stop`.
    async fn streams(
        &self,
        ctx: &SourceContext,
        client: &Client,
        backoff: &mut Backoff,
        shown: &str,
    ) -> Result<(), RedisError> {
        let cfg = &self.cfg;
        let consumer = cfg
            .consumer
            .clone()
            .unwrap_or_else(|| format!("troupe-{}", ctx.name));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ANSWER_TIMEOUT))
            .set_response_timeout(Some(BLOCK + ANSWER_TIMEOUT));
        let setup = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|source| RedisError::Connect {
                    url: shown.to_owned(),
                    source,
                })?;
            for stream in &cfg.streams {
                let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(&cfg.group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match made {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(source) => {
                        return Err(command(format!("XGROUP CREATE {stream} {}", cfg.group))(
                            source,
                        ));
                    }
                }
            }
            Ok::<_, RedisError>(conn)
        };
        let Some(mut conn) = set_up(ctx, backoff, shown, setup).await? else {
            return Ok(());
        };
        tracing::info!(source = %ctx.name, url = %shown, streams = ?cfg.streams,
            group = %cfg.group, consumer = %consumer, "Redis stream source reading");

        // First what this consumer read before and never acknowledged, stream by stream from
        // the start of its pending list; then new entries.
        let mut pending: BTreeMap<&str, String> = cfg
            .streams
            .iter()
            .map(|s| (s.as_str(), "0".to_owned()))
            .collect();
        loop {
            let (ids, block): (Vec<(&str, String)>, _) = if pending.is_empty() {
                (
                    cfg.streams
                        .iter()
                        .map(|s| (s.as_str(), ">".to_owned()))
                        .collect(),
                    true,
                )
            } else {
                (
                    pending.iter().map(|(s, id)| (*s, id.clone())).collect(),
                    false,
                )
            };
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP").arg(&cfg.group).arg(&consumer);
            read.arg("COUNT").arg(BATCH);
            if block {
                read.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            read.arg("STREAMS");
            for (stream, _) in &ids {
                read.arg(*stream);
            }
            for (_, id) in &ids {
                read.arg(id);
            }
            let answer: Value = tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                r = read.query_async(&mut conn) => r.map_err(command("XREADGROUP"))?,
            };
            let batches = read_reply(answer).ok_or(RedisError::Unexpected("XREADGROUP"))?;
            if !block {
                // A stream whose pending list came back empty is done with it.
                for (stream, _) in &ids {
                    let empty = batches
                        .iter()
                        .find(|(s, _)| s == stream)
                        .is_none_or(|(_, entries)| entries.is_empty());
                    if empty {
                        pending.remove(stream);
                    }
                }
            }
            for (stream, entries) in batches {
                for entry in entries {
                    if let Some(cursor) = pending.get_mut(stream.as_str()) {
                        cursor.clone_from(&entry.id);
                    }
                    let stored = match entry.fields {
                        // Trimmed while pending: nothing left to deliver.
                        None => true,
                        Some(fields) => {
                            let event = entry_event(
                                &ctx.name,
                                &stream,
                                &entry.id,
                                fields,
                                cfg.payload.format(),
                                !block,
                            );
                            ctx.sink
                                .deliver_until_stored(event, &ctx.stop)
                                .await
                                .is_some()
                        }
                    };
                    if !stored {
                        // Stopping: the entry stays pending and is read again on restart.
                        return Ok(());
                    }
                    let _: Value = redis::cmd("XACK")
                        .arg(&stream)
                        .arg(&cfg.group)
                        .arg(&entry.id)
                        .query_async(&mut conn)
                        .await
                        .map_err(command("XACK"))?;
                    ctx.status.delivered();
                }
            }
        }
    }
}

/// Runs `setup` within [`SETUP_TIMEOUT`]; once it is done the source is connected. `None`
/// when told to stop meanwhile.
async fn set_up<T>(
    ctx: &SourceContext,
    backoff: &mut Backoff,
    shown: &str,
    setup: impl Future<Output = Result<T, RedisError>>,
) -> Result<Option<T>, RedisError> {
    let done = tokio::select! {
        _ = ctx.stop.cancelled() => return Ok(None),
        r = tokio::time::timeout(SETUP_TIMEOUT, setup) => match r {
            Ok(r) => r?,
            Err(_) => return Err(RedisError::ConnectTimeout(shown.to_owned())),
        },
    };
    ctx.status.connected();
    backoff.reset();
    Ok(Some(done))
}

/// Makes a client error the failure of the command `what`.
fn command(what: impl Into<String>) -> impl FnOnce(redis::RedisError) -> RedisError {
    move |source| RedisError::Command {
        what: what.into(),
        source,
    }
}

/// One entry of an `XREADGROUP` answer; `fields` is `None` for an entry trimmed from the stream
/// while pending.
#[derive(Debug, PartialEq)]
struct Entry {
    id: String,
    fields: Option<Vec<(String, Vec<u8>)>>,
}

/// The entries of an `XREADGROUP` answer, by stream (RESP2 arrays or RESP3 maps); `Nil` (a
/// block that timed out) is no entries.
fn read_reply(answer: Value) -> Option<Vec<(String, Vec<Entry>)>> {
    let rows: Vec<(Value, Value)> = match answer {
        Value::Nil => return Some(Vec::new()),
        Value::Map(rows) => rows,
        Value::Array(rows) => rows
            .into_iter()
            .map(|row| match row {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop()?;
                    Some((pair.pop()?, entries))
                }
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    rows.into_iter()
        .map(|(stream, entries)| {
            let Value::Array(entries) = entries else {
                return None;
            };
            let entries = entries
                .into_iter()
                .map(|entry| {
                    let Value::Array(mut parts) = entry else {
                        return None;
                    };
                    if parts.is_empty() {
                        return None;
                    }
                    let fields = parts.drain(1..).next();
                    let id = text(parts.pop()?)?;
                    let fields = match fields {
                        None | Some(Value::Nil) => None,
                        Some(Value::Array(flat)) => {
                            let mut pairs = Vec::with_capacity(flat.len() / 2);
                            let mut it = flat.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                pairs.push((text(k)?, bytes(v)?));
                            }
                            Some(pairs)
                        }
                        Some(Value::Map(map)) => Some(
                            map.into_iter()
                                .map(|(k, v)| Some((text(k)?, bytes(v)?)))
                                .collect::<Option<_>>()?,
                        ),
                        Some(_) => return None,
                    };
                    Some(Entry { id, fields })
                })
                .collect::<Option<Vec<_>>>()?;
            Some((text(stream)?, entries))
        })
        .collect()
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    String::from_utf8(bytes(v)?).ok()
}

/// The event a stream entry makes: its `routing_key` field (else the stream) and its `payload`
/// field (else its fields as a JSON object).
fn entry_event(
    source: &str,
    stream: &str,
    id: &str,
    fields: Vec<(String, Vec<u8>)>,
    format: PayloadFormat,
    redelivered: bool,
) -> Inbound {
    let routing_key = fields
        .iter()
        .find(|(k, _)| k == ROUTING_KEY_FIELD)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| stream.to_owned());
    let (payload, format) = match fields.iter().find(|(k, _)| k == PAYLOAD_FIELD) {
        Some((_, body)) => (Bytes::copy_from_slice(body), format),
        None => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .filter(|(k, _)| k != ROUTING_KEY_FIELD)
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned().into()))
                .collect();
            (
                Bytes::from(serde_json::Value::Object(object).to_string()),
                PayloadFormat::Json,
            )
        }
    };
    Inbound {
        source: source.to_owned(),
        routing_key,
        payload,
        format,
        delivery_id: Some(format!("{stream}/{id}")),
        redelivered,
        headers: BTreeMap::from([
            ("stream".to_owned(), stream.to_owned()),
            ("entry-id".to_owned(), id.to_owned()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_xreadgroup_answers_in_both_protocols() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("payload"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let expected = vec![(
            "s".to_owned(),
            vec![
                Entry {
                    id: "1-0".to_owned(),
                    fields: Some(vec![("payload".to_owned(), b"{}".to_vec())]),
                },
                Entry {
                    id: "2-0".to_owned(),
                    fields: None,
                },
            ],
        )];
        assert_eq!(read_reply(resp2), Some(expected));
        let resp3 = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("a"), bulk("b")]),
            ])]),
        )]);
        assert_eq!(
            read_reply(resp3).map(|r| r.len()),
            Some(1),
            "a RESP3 map of streams"
        );
        assert_eq!(read_reply(Value::Nil), Some(Vec::new()));
        assert_eq!(read_reply(Value::Int(3)), None);
    }

    #[test]
    fn entries_name_their_key_and_payload() {
        let e = entry_event(
            "r",
            "s",
            "1-0",
            vec![
                ("routing_key".to_owned(), b"a.b".to_vec()),
                ("payload".to_owned(), b"x: 1".to_vec()),
            ],
            PayloadFormat::Yaml,
            false,
        );
        assert_eq!(e.routing_key, "a.b");
        assert_eq!(&e.payload[..], b"x: 1");
        assert_eq!(e.format, PayloadFormat::Yaml);
        assert_eq!(e.delivery_id.as_deref(), Some("s/1-0"));
        let e = entry_event(
            "r",
            "s",
            "1-0",
            vec![("who".to_owned(), b"you".to_vec())],
            PayloadFormat::Yaml,
            true,
        );
        assert_eq!(e.routing_key, "s");
        assert_eq!(&e.payload[..], br#"{"who":"you"}"#);
        assert_eq!(e.format, PayloadFormat::Json);
        assert!(e.redelivered);
    }

    #[test]
    fn urls_are_checked_without_showing_passwords() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://h").is_ok());
        let e = check_url("amqp://u:hunter22@h").expect_err("scheme");
        assert!(!e.to_string().contains("hunter22"), "{e}");
        let e = check_url("redis://u:hunter22@h:notaport/0").expect_err("port");
        assert!(!e.to_string().contains("hunter22"), "{e}");
    }
}
