//! The rules document: sources, rules and settings, as written in YAML.
//!
//! Parsing checks the shape (unknown fields are errors, so a typo never silently disables a
//! rule); [`crate::Rules::compile`] checks the meaning (references, expressions, patterns).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe_core::inbound::ConcurrencyPolicy;
use troupe_core::run::RunOptions;

/// A rules document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Event sources by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Rules, tried in order; every matching rule acts.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Retention and limits.
    #[serde(default)]
    pub settings: Settings,
}

impl RulesFile {
    /// Every secret of the sources, with the field holding it (`sources.NAME.secret`).
    pub fn secrets_mut(&mut self) -> Vec<(String, &mut Secret)> {
        let mut out = Vec::new();
        for (name, source) in &mut self.sources {
            let fields: Vec<(&str, Option<&mut Secret>)> = match source {
                SourceConfig::Webhook(w) => {
                    vec![("secret", w.secret.as_mut()), ("token", w.token.as_mut())]
                }
                SourceConfig::Amqp(a) => vec![("url", Some(&mut a.url))],
                SourceConfig::Nats(n) => {
                    vec![("url", Some(&mut n.url)), ("token", n.token.as_mut())]
                }
                SourceConfig::Mqtt(m) => {
                    vec![("url", Some(&mut m.url)), ("password", m.password.as_mut())]
                }
                SourceConfig::Redis(r) => {
                    vec![("url", Some(&mut r.url)), ("password", r.password.as_mut())]
                }
                SourceConfig::Directory(_) | SourceConfig::Timer(_) => Vec::new(),
            };
            for (field, secret) in fields {
                if let Some(secret) = secret {
                    out.push((format!("sources.{name}.{field}"), secret));
                }
            }
        }
        out
    }

    /// Parses a YAML (or JSON) rules document.
    pub fn parse(text: &str) -> Result<RulesFile, ParseError> {
        if text.trim().is_empty() {
            return Ok(RulesFile::default());
        }
        Ok(serde_saphyr::from_str(text)?)
    }

    /// The document with every secret (tokens, passwords, HMAC keys, URL credentials)
    /// replaced by `<redacted>`: what the API shows.
    pub fn redacted(&self) -> RulesFile {
        let mut doc = self.clone();
        for source in doc.sources.values_mut() {
            source.redact();
        }
        // Notification URLs and header values may be secrets: scheme and host only.
        for rule in &mut doc.rules {
            for n in &mut rule.action.notify {
                for url in [&mut n.webhook, &mut n.slack].into_iter().flatten() {
                    *url = troupe_core::notify::mask_url(url);
                }
                for value in n.headers.values_mut() {
                    *value = REDACTED.to_owned();
                }
            }
        }
        doc
    }
}

/// Why a rules document is not one: YAML that does not parse, or a shape that does not fit
/// (unknown field, wrong type), with the place the parser names.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ParseError(#[from] serde_saphyr::Error);

/// Why a secret has no value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable it names is not set (or is not UTF-8).
    #[error("environment variable {env} is not set")]
    Env {
        /// The variable.
        env: String,
        /// Why it could not be read.
        #[source]
        source: std::env::VarError,
    },
    /// The file it names cannot be read.
    #[error("cannot read secret file {file}: {source}")]
    File {
        /// The file.
        file: String,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The credential it names could not be opened when the rules were put in force.
    #[error(
        "credential {credential} could not be opened when the rules were put in force (put them again once it exists)"
    )]
    Credential {
        /// The credential's name.
        credential: String,
    },
}

/// A source's secret without a value, named by the field that holds it (`url: environment
/// variable AMQP_URL is not set`).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct FieldSecretError {
    /// The configuration field (`url`, `token`, `password`, `secret`).
    pub field: &'static str,
    /// Why it has no value.
    #[source]
    pub source: SecretError,
}

/// Where a secret comes from. A literal is accepted, but `env`, `file` or `credential` keep it
/// out of the rules document (which the API shows redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The value itself.
    Literal(String),
    /// An environment variable of the troupe process.
    Env {
        /// Its name.
        env: String,
    },
    /// A file (trailing newline dropped).
    File {
        /// Its path.
        file: String,
    },
    /// A credential of the store, opened when the rules are put in force: a `git`
    /// credential's token, a `become` or `vault` credential's password, or with `var` one
    /// variable of an `env` credential.
    Credential {
        /// The credential's name.
        credential: String,
        /// The variable of an `env` credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
    },
    /// A [`Secret::Credential`] opened when the rules were put in force: never read from a
    /// document, shown as the credential it came from.
    #[serde(skip_deserializing)]
    Opened {
        /// The credential's name.
        credential: String,
        /// The variable of an `env` credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
        /// Its value.
        #[serde(skip)]
        value: OpenedValue,
    },
}

/// A secret value opened from a credential; its `Debug` shows no value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OpenedValue(pub String);

impl std::fmt::Debug for OpenedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("********")
    }
}

const REDACTED: &str = "<redacted>";

impl Secret {
    /// The secret's value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Literal(s) => Ok(s.clone()),
            Secret::Env { env } => std::env::var(env).map_err(|source| SecretError::Env {
                env: env.clone(),
                source,
            }),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| SecretError::File {
                    file: file.clone(),
                    source,
                }),
            // Replaced with its value when the rules are put in force; still here, it was not
            // there to open.
            Secret::Credential { credential, .. } => Err(SecretError::Credential {
                credential: credential.clone(),
            }),
            Secret::Opened { value, .. } => Ok(value.0.clone()),
        }
    }

    /// The value of the secret held by `field`, whose name the error carries.
    pub fn resolve_field(&self, field: &'static str) -> Result<String, FieldSecretError> {
        self.resolve()
            .map_err(|source| FieldSecretError { field, source })
    }

    fn redact(&mut self) {
        if let Secret::Literal(s) = self {
            *s = REDACTED.to_owned();
        }
    }

    fn redact_url(&mut self) {
        if let Secret::Literal(s) = self {
            *s = troupe_core::url::redact_credentials(s);
        }
    }
}

/// One event source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// `POST /api/v1/hooks/{source}`.
    Webhook(WebhookConfig),
    /// An AMQP 0-9-1 queue (RabbitMQ).
    Amqp(AmqpConfig),
    /// NATS subjects, optionally through a JetStream durable consumer.
    Nats(NatsConfig),
    /// MQTT 3.1.1 or 5 topic filters.
    Mqtt(MqttConfig),
    /// Redis pub/sub channels, or streams through a consumer group.
    Redis(RedisConfig),
    /// Files dropped into a directory.
    Directory(DirectoryConfig),
    /// A cron schedule.
    Timer(TimerConfig),
}

impl SourceConfig {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Webhook(_) => "webhook",
            SourceConfig::Amqp(_) => "amqp",
            SourceConfig::Nats(_) => "nats",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Redis(_) => "redis",
            SourceConfig::Directory(_) => "directory",
            SourceConfig::Timer(_) => "timer",
        }
    }

    fn redact(&mut self) {
        match self {
            SourceConfig::Webhook(w) => {
                w.secret.iter_mut().for_each(Secret::redact);
                w.token.iter_mut().for_each(Secret::redact);
            }
            SourceConfig::Amqp(a) => a.url.redact_url(),
            SourceConfig::Nats(n) => {
                n.url.redact_url();
                n.token.iter_mut().for_each(Secret::redact);
            }
            SourceConfig::Mqtt(m) => {
                m.url.redact_url();
                m.password.iter_mut().for_each(Secret::redact);
            }
            SourceConfig::Redis(r) => {
                r.url.redact_url();
                r.password.iter_mut().for_each(Secret::redact);
            }
            SourceConfig::Directory(_) | SourceConfig::Timer(_) => {}
        }
    }
}

/// Where a webhook's routing key comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoutingKeyFrom {
    /// The path suffix: `/api/v1/hooks/{source}/{routing_key}`.
    #[default]
    Path,
    /// A request header, e.g. `X-GitHub-Event`.
    Header(String),
    /// A JSON pointer into the body, e.g. `/action`.
    Pointer(String),
}

/// A webhook source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// HMAC-SHA256 key: the request must carry `X-Hub-Signature-256: sha256=<hex>` (GitHub's
    /// format) or `X-Troupe-Signature-256` over the exact body.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A shared token, sent as `X-Troupe-Token` or `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Where the routing key comes from.
    #[serde(default)]
    pub routing_key: RoutingKeyFrom,
    /// Largest accepted body; larger ones get 413.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
    /// How many events a second the source accepts (a token bucket); the server's
    /// `webhook_rate_per_second` and `webhook_rate_burst` when absent. Over it: 429 with
    /// `Retry-After`, and the event is not stored.
    #[serde(default)]
    pub rate: Option<RateLimit>,
}

/// A token bucket: `burst` events at once, then `per_second` on average. `per_second: 0`
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Events a second, on average (fractions allowed: 0.5 is one every two seconds).
    pub per_second: f64,
    /// Events accepted at once after a quiet time; `per_second` rounded up (at least 1) when
    /// absent.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
            .max(1)
    }

    /// Whether it limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0.0
    }
}

fn default_webhook_body() -> usize {
    1024 * 1024
}

/// An AMQP source: troupe declares the queue (and exchange, when named) and binds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:5672/vhost`.
    pub url: Secret,
    /// The exchange to bind to; declared with `exchange_type` if missing. None: the default
    /// exchange (routing key = queue name).
    #[serde(default)]
    pub exchange: Option<String>,
    /// `topic` (default), `direct`, `fanout` or `headers`.
    #[serde(default = "default_exchange_type")]
    pub exchange_type: String,
    /// The queue to consume; declared durable if missing.
    pub queue: String,
    /// Binding keys (AMQP patterns; default `#`, everything).
    #[serde(default = "default_bindings")]
    pub bindings: Vec<String>,
    /// Unacknowledged messages the broker may hand troupe at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Declare the queue durable (it survives a broker restart).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Declare the queue exclusive to troupe's connection (it goes when the connection does).
    #[serde(default)]
    pub exclusive: bool,
    /// Declare the queue auto-deleted once its last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// TLS settings beyond the system's roots (an `amqps://` URL uses TLS either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AmqpTls>,
    /// How message bodies are read (default `json`).
    #[serde(default, skip_serializing_if = "PayloadRead::is_json")]
    pub payload: PayloadRead,
}

/// TLS files of an AMQP source: a CA to trust, and a client certificate (with
/// `?auth_mechanism=external` in the URL, the broker takes the user from it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpTls {
    /// PEM file of the CA certificates to trust, besides the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate (chain).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<String>,
}

fn yes() -> bool {
    true
}

/// How a source reads a message body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadRead {
    /// JSON (an event that is not is recorded as rejected).
    #[default]
    Json,
    /// YAML (which JSON also is).
    Yaml,
    /// The body as one string (rules pass it on with `action.vars_key`).
    Text,
    /// As Loopabull's Redis looper: a YAML (or JSON) mapping is the payload as it is; any other
    /// body becomes `{msg: <the body as text>}`.
    Loopabull,
}

impl PayloadRead {
    fn is_json(&self) -> bool {
        *self == PayloadRead::Json
    }

    /// The format the ingest reads.
    pub fn format(self) -> crate::sink::PayloadFormat {
        use crate::sink::PayloadFormat;
        match self {
            PayloadRead::Json => PayloadFormat::Json,
            PayloadRead::Yaml => PayloadFormat::Yaml,
            PayloadRead::Text => PayloadFormat::Text,
            PayloadRead::Loopabull => PayloadFormat::Loopabull,
        }
    }
}

fn default_exchange_type() -> String {
    "topic".to_owned()
}

fn default_bindings() -> Vec<String> {
    vec!["#".to_owned()]
}

fn default_prefetch() -> u16 {
    64
}

/// A NATS source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222`.
    pub url: Secret,
    /// Subjects (wildcards `*` and `>` allowed).
    pub subjects: Vec<String>,
    /// Auth token, if the server wants one.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Core NATS only: a queue group, so several troupe replicas share the messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Consume through a JetStream durable consumer (at-least-once, acknowledged) instead of
    /// core NATS (at-most-once).
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
}

/// JetStream settings of a NATS source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// The stream; created over `subjects` if missing.
    pub stream: String,
    /// The durable consumer's name.
    pub durable: String,
}

/// An MQTT source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883`.
    pub url: Secret,
    /// Topic filters (`+` and `#` allowed).
    pub topics: Vec<String>,
    /// Client id; default `troupe-<source name>`. Keep it stable: the broker keeps the
    /// session (and queued QoS 1 messages) under it while troupe is away.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Subscription QoS, 0 to 2 (default 1: at least once).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The protocol version spoken: `3.1.1` (the default) or `5`.
    #[serde(default)]
    pub protocol: MqttProtocol,
}

fn default_qos() -> u8 {
    1
}

/// An MQTT protocol version; written `3.1.1` or `5` (a number or a string).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

impl<'de> Deserialize<'de> for MqttProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads `5`, `"5"`, `"3.1.1"` (or `5.0`).
        struct Version;

        impl serde::de::Visitor<'_> for Version {
            type Value = MqttProtocol;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an MQTT protocol version: \"3.1.1\" or 5")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MqttProtocol, E> {
                match v.trim() {
                    "3.1.1" => Ok(MqttProtocol::V311),
                    "5" | "5.0" => Ok(MqttProtocol::V5),
                    other => Err(E::custom(format!(
                        "protocol: {other:?} is not an MQTT version troupe speaks (\"3.1.1\" or 5)"
                    ))),
                }
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MqttProtocol, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MqttProtocol, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<MqttProtocol, E> {
                self.visit_str(&v.to_string())
            }
        }

        d.deserialize_any(Version)
    }
}

/// A Redis source: pub/sub channels (at most once), or streams read through a consumer group
/// (acknowledged with `XACK` once stored). Exactly one of `channels` and `streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:6379[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// The password (`AUTH`), when it is not in the URL.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Pub/sub: channel patterns (`PSUBSCRIBE` globs: `*`, `?`, `[abc]`); the channel a
    /// message was published on is its routing key.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Streams read with `XREADGROUP`; an entry's `routing_key` field is its routing key (the
    /// stream's name without one), its `payload` field the payload (all its fields as a JSON
    /// object without one).
    #[serde(default)]
    pub streams: Vec<String>,
    /// The consumer group of `streams`; made (with the stream) at the stream's end when missing.
    #[serde(default = "default_redis_group")]
    pub group: String,
    /// The consumer's name in the group (default `troupe-<source name>`). Keep it stable: on
    /// restart the consumer first reads again the entries it had not acknowledged.
    #[serde(default)]
    pub consumer: Option<String>,
    /// How message bodies (a stream entry's `payload` field) are read (default `json`).
    #[serde(default)]
    pub payload: PayloadRead,
}

fn default_redis_group() -> String {
    "troupe".to_owned()
}

/// A directory source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The directory watched; `done/` and `failed/` are made inside it.
    pub path: String,
    /// How often it is scanned, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    500
}

/// A timer source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerConfig {
    /// Cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in (default UTC).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The routing key of every tick.
    pub routing_key: String,
    /// The payload of every tick.
    #[serde(default = "empty_object")]
    pub payload: Value,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// One or several strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

/// A rule: which events, under which conditions, start what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name.
    pub name: String,
    /// Sources it listens to (default: all).
    #[serde(default)]
    pub sources: OneOrMany,
    /// Routing keys: exact keys, AMQP-style patterns (`*` one word, `#` any number of words),
    /// or `all`.
    pub routing_keys: OneOrMany,
    /// Jinja expressions on the event, all of which must be true (like Ansible's `when`).
    #[serde(default)]
    pub when: OneOrMany,
    /// What to run.
    pub action: ActionConfig,
    /// At most one run per window (per group).
    #[serde(default)]
    pub throttle: Option<ThrottleConfig>,
    /// One run per event id within a window.
    #[serde(default)]
    pub dedupe: Option<DedupeConfig>,
    /// What to do while an earlier run of this rule for the same routing key is active.
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
}

/// How a routing key names a playbook (Loopabull's translators).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Translator {
    /// `org.example.deploy` -> `org.example.deploy.yml`.
    #[default]
    Rkname,
    /// `org.example.deploy` -> `org/example/deploy.yml`.
    Rkdirectory,
}

/// What a rule runs: a playbook, the playbook the routing key names, a template, or a flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The project (by name); not needed with `template` or `flow`.
    #[serde(default)]
    pub project: Option<String>,
    /// A fixed playbook, relative to the project.
    #[serde(default)]
    pub playbook: Option<String>,
    /// Run the playbook the routing key names, under this directory of the project (`.` for
    /// its root).
    #[serde(default)]
    pub playbooks_dir: Option<String>,
    /// How the routing key names the playbook under `playbooks_dir`.
    #[serde(default)]
    pub translator: Translator,
    /// A template (by name) to launch.
    #[serde(default)]
    pub template: Option<String>,
    /// The inventory (by name); a template's own by default. Without one, runs use
    /// `localhost` only.
    #[serde(default)]
    pub inventory: Option<String>,
    /// Use the inventory ansible's configuration names (the project's `ansible.cfg`
    /// `inventory`): troupe passes no `-i`, as ansible-playbook without one. Not with
    /// `inventory`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ansible_inventory: bool,
    /// Pass the payload under this variable instead of at the top level of the extra vars.
    #[serde(default)]
    pub vars_key: Option<String>,
    /// Static extra vars (the payload wins over them).
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// ansible-playbook options (`limit`, `tags`, `timeout_s`...).
    #[serde(default)]
    pub options: Option<RunOptions>,
    /// Labels the runs carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where to tell each run's end (a webhook or Slack), besides a template's own targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<troupe_core::notify::Notify>,
    /// A flow (by name) to start an execution of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The flow's version (default: the newest when the event arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The flow's inputs: each value a Jinja template over the event (as conditions see it);
    /// a string that is one `{{ expression }}` keeps the expression's type, and an undefined
    /// one leaves the input out (its default applies).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
}

/// `throttle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// The window, e.g. `10m`.
    #[serde(with = "humantime_serde_compat")]
    pub once_within: Duration,
    /// Expressions whose values form the group (default: one group per routing key).
    #[serde(default)]
    pub group_by: Vec<String>,
}

/// `dedupe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// Expression giving the event's id, e.g. `payload.id`.
    pub key: String,
    /// The window, e.g. `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub within: Duration,
}

/// Retention and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long event records are kept.
    #[serde(default = "default_retention", with = "humantime_serde_compat")]
    pub retention: Duration,
    /// How much of each payload a record keeps.
    #[serde(default = "default_payload_keep")]
    pub payload_keep_bytes: usize,
    /// How long a redelivered message without an id is compared with recent events.
    #[serde(default = "default_redelivery_window", with = "humantime_serde_compat")]
    pub redelivery_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retention: default_retention(),
            payload_keep_bytes: default_payload_keep(),
            redelivery_window: default_redelivery_window(),
        }
    }
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_payload_keep() -> usize {
    16 * 1024
}

fn default_redelivery_window() -> Duration {
    Duration::from_secs(3600)
}

/// Durations written as `30s`, `10m`, `1h 30m`, `7d`.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source_kind_and_a_rule() {
        let doc = RulesFile::parse(
            r#"
sources:
  hook: {type: webhook, secret: {env: HOOK_SECRET}, routing_key: {header: X-GitHub-Event}}
  bus: {type: amqp, url: "amqp://guest:guest@127.0.0.1:5672/%2f", exchange: ev, queue: q}
  nats: {type: nats, url: "nats://127.0.0.1:4222", subjects: ["a.>"], jetstream: {stream: S, durable: d}}
  mqtt: {type: mqtt, url: "mqtt://127.0.0.1:1883", topics: ["a/#"]}
  drop: {type: directory, path: /tmp/x}
  tick: {type: timer, cron: "*/5 * * * *", timezone: Europe/Paris, routing_key: nightly}
rules:
  - name: deploy
    routing_keys: all
    when: "payload.branch == 'main'"
    action: {project: hello, playbooks_dir: playbooks, translator: rkdirectory}
    throttle: {once_within: 10m, group_by: [payload.host]}
    concurrency: cancel
"#,
        )
        .expect("parses");
        assert_eq!(doc.sources.len(), 6);
        assert_eq!(doc.sources["nats"].kind(), "nats");
        let rule = &doc.rules[0];
        assert_eq!(rule.routing_keys.to_vec(), vec!["all"]);
        assert_eq!(rule.action.translator, Translator::Rkdirectory);
        assert_eq!(
            rule.throttle.as_ref().map(|t| t.once_within),
            Some(Duration::from_secs(600))
        );
        assert_eq!(rule.concurrency, ConcurrencyPolicy::Cancel);
    }

    #[test]
    fn unknown_fields_and_types_are_errors() {
        let e = RulesFile::parse("rules:\n  - name: a\n    routing_key: x\n    action: {}\n")
            .expect_err("typo in routing_keys");
        assert!(e.to_string().contains("routing_key"), "{e}");
        let e = RulesFile::parse("sources:\n  s: {type: kafka}\n").expect_err("unknown type");
        assert!(e.to_string().contains("kafka"), "{e}");
        let e = RulesFile::parse(
            "rules:\n  - name: a\n    routing_keys: x\n    action: {}\n    throttle: {once_within: soon}\n",
        )
        .expect_err("bad duration");
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn mqtt_protocol_is_a_number_or_a_string() {
        let protocol = |extra: &str| {
            RulesFile::parse(&format!(
                "sources:\n  m: {{type: mqtt, url: \"mqtt://h\", topics: [a]{extra}}}\n"
            ))
            .map(|doc| match &doc.sources["m"] {
                SourceConfig::Mqtt(m) => m.protocol,
                other => panic!("not mqtt: {other:?}"),
            })
            .map_err(|e| e.to_string())
        };
        assert_eq!(protocol(""), Ok(MqttProtocol::V311));
        assert_eq!(protocol(", protocol: 5"), Ok(MqttProtocol::V5));
        assert_eq!(protocol(", protocol: \"5\""), Ok(MqttProtocol::V5));
        assert_eq!(protocol(", protocol: \"3.1.1\""), Ok(MqttProtocol::V311));
        assert_eq!(protocol(", protocol: 3.1.1"), Ok(MqttProtocol::V311));
        for bad in ["3", "6", "\"v5\"", "4.0"] {
            let e = protocol(&format!(", protocol: {bad}")).expect_err(bad);
            assert!(e.contains("MQTT version"), "{bad}: {e}");
        }
        let e = protocol(", protocol: [5]").expect_err("a list");
        assert!(e.contains("protocol"), "{e}");
        let json: MqttConfig = serde_json::from_value(
            serde_json::json!({"url": "mqtt://h", "topics": ["a"], "protocol": 5}),
        )
        .expect("json number");
        assert_eq!(json.protocol, MqttProtocol::V5);
        assert_eq!(
            serde_json::to_value(MqttProtocol::V5).expect("serializes"),
            serde_json::json!("5")
        );
    }

    #[test]
    fn redaction_hides_literal_secrets_and_url_passwords() {
        let doc = RulesFile::parse(
            r#"
sources:
  hook: {type: webhook, secret: "s3cret-hmac", token: {env: T}}
  bus: {type: amqp, url: "amqp://user:hunter2@host/%2f", queue: q}
"#,
        )
        .expect("parses");
        let shown = serde_json::to_string(&doc.redacted()).expect("serializes");
        assert!(!shown.contains("s3cret-hmac"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"env\":\"T\""), "{shown}");
        assert!(shown.contains("host/%2f"), "{shown}");
    }
}
