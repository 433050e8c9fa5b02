//! Loopabull compatibility: a Loopabull configuration read as troupe rules.
//!
//! Two shapes are read. Loopabull 0.0.7 (as released) names a looper (where events come from)
//! and a translator (how a routing key names a playbook):
//!
//! ```yaml
//! routing_keys: [org.fedoraproject.prod.buildsys.build.state.change]   # or [all]
//! plugins:
//!   looper: {name: fedmsgrabbitmq, rabbitmq: {host: rabbitmq.example.org}, channel_queue: {name: q}}
//!   translator: {name: rkname}       # or rkdirectory
//! ansible:
//!   playbooks_dir: /srv/playbooks
//!   cfg_file_path: /srv/playbooks/ansible.cfg
//!   playbook_cmd: /usr/bin/ansible-playbook
//! ```
//!
//! The older shape (Loopabull's README) names only the translator: `plugin: rkname`.
//!
//! Loopabull runs `ansible-playbook <playbooks_dir>/<translated key>.yml -e @<payload file>` for
//! each event whose routing key is listed; `troupe loop` does the same through troupe's
//! engine: the playbooks directory becomes a project, the routing keys one rule, the
//! translator its translator, and the looper a source: `fedmsgrabbitmq` an AMQP source (the
//! payload passed as `msg`, as that looper does), `redis` a Redis pub/sub source on every
//! channel (a YAML mapping is the payload, anything else is `msg`, as that looper reads
//! messages). `fedmsg` (ZeroMQ) is refused, naming the AMQP alternative; so is any name troupe
//! does not know. Without a looper, events arrive through the `loopabull` webhook source
//! (`troupe events publish --source loopabull`); the optional `troupe:` section adds sources
//! as in a rules document.

use crate::config::{
    ActionConfig, AmqpConfig, AmqpTls, OneOrMany, PayloadRead, RedisConfig, RuleConfig, RulesFile,
    Secret, SourceConfig, Translator, WebhookConfig,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A Loopabull configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopConfig {
    /// The older shape: the translator's name (`rkname` or `rkdirectory`).
    #[serde(default)]
    pub plugin: Option<String>,
    /// Loopabull 0.0.7's shape: the looper and the translator.
    #[serde(default)]
    pub plugins: Option<LoopPlugins>,
    /// The routing keys that trigger playbooks; `[all]` for every key.
    pub routing_keys: Vec<String>,
    /// Where the playbooks are and how ansible runs.
    pub ansible: LoopAnsible,
    /// troupe's additions: event sources (default: one webhook source named `loopabull`).
    #[serde(default)]
    pub troupe: Option<LoopTroupe>,
}

/// The `plugins` section of Loopabull 0.0.7.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopPlugins {
    /// Where events come from.
    #[serde(default)]
    pub looper: Option<LoopPlugin>,
    /// How a routing key names a playbook (default `rkname`, as in Loopabull).
    #[serde(default)]
    pub translator: Option<LoopPlugin>,
}

/// One plugin: its name and its settings.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopPlugin {
    /// The plugin's name (any case, as Loopabull lowercases it).
    pub name: String,
    /// Its other settings.
    #[serde(flatten)]
    pub settings: Map<String, Value>,
}

/// The `ansible` section.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopAnsible {
    /// The directory of `<routing_key>.yml` playbooks.
    pub playbooks_dir: PathBuf,
    /// The `ansible.cfg` runs use (`ANSIBLE_CONFIG`).
    #[serde(default)]
    pub cfg_file_path: Option<PathBuf>,
    /// The ansible-playbook to run.
    #[serde(default)]
    pub playbook_cmd: Option<PathBuf>,
}

/// The optional `troupe` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopTroupe {
    /// Event sources, as in a rules document.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
}

/// The settings of the `fedmsgrabbitmq` looper (pika's connection parameters and the queue).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitLooper {
    #[serde(default)]
    rabbitmq: RabbitParams,
    #[serde(default)]
    credentials: Option<RabbitCredentials>,
    #[serde(default)]
    tls: Option<RabbitTls>,
    #[serde(default)]
    exchange: Option<RabbitExchange>,
    #[serde(default)]
    routing_keys: Vec<String>,
    channel_queue: RabbitQueue,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitParams {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    virtual_host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitCredentials {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitTls {
    #[serde(default)]
    ca_cert: Option<String>,
    #[serde(default)]
    keyfile: Option<String>,
    #[serde(default)]
    certfile: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitExchange {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RabbitQueue {
    name: String,
    // pika's defaults as the looper passes them: a private queue that goes with troupe.
    #[serde(default)]
    durable: bool,
    #[serde(default = "yes")]
    exclusive: bool,
    #[serde(default = "yes")]
    auto_delete: bool,
}

fn yes() -> bool {
    true
}

/// The settings of the `redis` looper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisLooper {
    #[serde(default = "default_redis_host")]
    host: String,
    #[serde(default = "default_redis_port")]
    port: u16,
    #[serde(default)]
    db: u32,
}

fn default_redis_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_redis_port() -> u16 {
    6379
}

/// Why a Loopabull configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The file is not YAML of a Loopabull configuration's shape.
    #[error("not a Loopabull config: {0}")]
    Parse(#[source] serde_saphyr::Error),
    /// A translator troupe does not implement.
    #[error(
        "translator {0:?} is not supported by troupe loop: use rkname (routing key = playbook \
         name) or rkdirectory (dots become directories)"
    )]
    Translator(String),
    /// The fedmsg (ZeroMQ) looper.
    #[error(
        "looper \"fedmsg\" (ZeroMQ) is not supported by troupe loop: use the fedmsgrabbitmq \
         looper (fedora-messaging's AMQP broker), or an amqp source under troupe.sources"
    )]
    Fedmsg,
    /// A looper troupe does not implement.
    #[error(
        "looper {0:?} is not supported by troupe loop: use fedmsgrabbitmq (AMQP) or redis, or \
         configure sources under troupe.sources (AMQP, NATS, MQTT, Redis, webhook, directory, \
         timer)"
    )]
    Looper(String),
    /// The older `plugin` names something that is not a translator.
    #[error(
        "plugin {0:?} is not supported by troupe loop: use rkname (routing key = playbook \
         name) or rkdirectory (dots become directories), and name the looper under \
         plugins.looper (fedmsgrabbitmq or redis) or sources under troupe.sources"
    )]
    Plugin(String),
    /// Both shapes at once.
    #[error("plugin and plugins: use one (plugins: {{looper: ..., translator: ...}})")]
    BothShapes,
    /// Neither shape.
    #[error(
        "no plugins: name plugins.looper and plugins.translator (or plugin: rkname|rkdirectory)"
    )]
    NoPlugin,
    /// A looper's settings do not fit it.
    #[error("plugins.looper ({looper}): {message}")]
    LooperSettings {
        /// The looper.
        looper: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The looper's source would take the name of one under `troupe.sources`.
    #[error("troupe.sources.{LOOP_NAME}: that name is the looper's source; rename it")]
    SourceName,
    /// No routing key would ever start a playbook.
    #[error("routing_keys is empty: list the keys to act on, or [all] for every key")]
    NoRoutingKeys,
}

/// The name of the rule `troupe loop` makes, and of its looper's (or default webhook) source.
pub const LOOP_NAME: &str = "loopabull";

/// The environment variable `troupe loop` hands the looper's connection URL in (so its
/// password is in neither the rules file nor the store).
pub const LOOPER_URL_ENV: &str = "TROUPE_LOOPABULL_URL";

/// Where events come from.
#[derive(Debug, Clone, PartialEq)]
enum Looper {
    /// The `loopabull` webhook source, or the sources of the `troupe` section.
    None,
    /// `fedmsgrabbitmq`: an AMQP source, the payload as `msg`.
    Rabbit(Box<AmqpConfig>),
    /// `redis`: a Redis pub/sub source on every channel.
    Redis(Box<RedisConfig>),
}

impl LoopConfig {
    /// Reads a Loopabull configuration; unknown top-level keys (`loglevel`, other plugins'
    /// settings) are ignored, as Loopabull does.
    pub fn parse(text: &str) -> Result<LoopConfig, LoopError> {
        let cfg: LoopConfig = serde_saphyr::from_str(text).map_err(LoopError::Parse)?;
        cfg.translator()?;
        let looper = cfg.looper()?;
        if looper != Looper::None
            && cfg
                .troupe
                .as_ref()
                .is_some_and(|t| t.sources.contains_key(LOOP_NAME))
        {
            return Err(LoopError::SourceName);
        }
        if cfg.routing_keys.is_empty() {
            return Err(LoopError::NoRoutingKeys);
        }
        Ok(cfg)
    }

    /// The translator the configuration names.
    pub fn translator(&self) -> Result<Translator, LoopError> {
        let named = |name: &str| match name.to_lowercase().as_str() {
            "rkname" => Ok(Translator::Rkname),
            "rkdirectory" => Ok(Translator::Rkdirectory),
            _ => Err(name.to_owned()),
        };
        match (&self.plugin, &self.plugins) {
            (Some(_), Some(_)) => Err(LoopError::BothShapes),
            (None, None) => Err(LoopError::NoPlugin),
            (Some(plugin), None) => named(plugin).map_err(|name| {
                if name.eq_ignore_ascii_case("fedmsg") {
                    LoopError::Fedmsg
                } else {
                    LoopError::Plugin(name)
                }
            }),
            (None, Some(plugins)) => match &plugins.translator {
                None => Ok(Translator::Rkname),
                Some(t) => named(&t.name).map_err(LoopError::Translator),
            },
        }
    }

    /// What the translator and looper are called, for messages.
    pub fn describe(&self) -> String {
        match (&self.plugin, &self.plugins) {
            (Some(plugin), _) => format!("plugin {plugin}"),
            (None, Some(p)) => format!(
                "looper {}, translator {}",
                p.looper
                    .as_ref()
                    .map_or("none (webhook)", |l| l.name.as_str()),
                p.translator.as_ref().map_or("rkname", |t| t.name.as_str())
            ),
            (None, None) => "no plugin".to_owned(),
        }
    }

    /// The looper's connection URL (to be handed in [`LOOPER_URL_ENV`]), if it has one.
    pub fn looper_url(&self) -> Result<Option<String>, LoopError> {
        Ok(match self.looper()? {
            Looper::None => None,
            Looper::Rabbit(_) => Some(self.rabbit()?.1),
            Looper::Redis(_) => Some(self.redis()?.1),
        })
    }

    fn looper(&self) -> Result<Looper, LoopError> {
        let Some(looper) = self.plugins.as_ref().and_then(|p| p.looper.as_ref()) else {
            return Ok(Looper::None);
        };
        match looper.name.to_lowercase().as_str() {
            "fedmsgrabbitmq" => Ok(Looper::Rabbit(Box::new(self.rabbit()?.0))),
            "redis" => Ok(Looper::Redis(Box::new(self.redis()?.0))),
            "fedmsg" => Err(LoopError::Fedmsg),
            _ => Err(LoopError::Looper(looper.name.clone())),
        }
    }

    fn settings<T: serde::de::DeserializeOwned>(
        &self,
        looper: &'static str,
    ) -> Result<T, LoopError> {
        let settings = self
            .plugins
            .as_ref()
            .and_then(|p| p.looper.as_ref())
            .map(|l| l.settings.clone())
            .unwrap_or_default();
        serde_json::from_value(Value::Object(settings)).map_err(|e| LoopError::LooperSettings {
            looper,
            message: e.to_string(),
        })
    }

    /// The `fedmsgrabbitmq` looper as an AMQP source, and its URL. As the looper: TLS (with
    /// the client certificate, and the EXTERNAL mechanism) when `tls` is set, else the
    /// `credentials` (pika's guest/guest without them); the queue declared as `channel_queue`
    /// says, bound to `exchange.name` (default `amq.topic`) with each of its `routing_keys`;
    /// one message at a time.
    fn rabbit(&self) -> Result<(AmqpConfig, String), LoopError> {
        const NAME: &str = "fedmsgrabbitmq";
        let l: RabbitLooper = self.settings(NAME)?;
        let tls = l.tls.is_some();
        let host = l.rabbitmq.host.as_deref().unwrap_or("localhost");
        let port = l.rabbitmq.port.unwrap_or(if tls { 5671 } else { 5672 });
        let vhost = l.rabbitmq.virtual_host.as_deref().unwrap_or("/");
        let userinfo = match (&l.tls, &l.credentials) {
            (Some(_), _) => String::new(),
            (None, Some(c)) => format!(
                "{}:{}@",
                encode(c.username.as_deref().unwrap_or("guest")),
                encode(c.password.as_deref().unwrap_or(""))
            ),
            (None, None) => "guest:guest@".to_owned(),
        };
        let url = format!(
            "{}://{userinfo}{host}:{port}/{}{}",
            if tls { "amqps" } else { "amqp" },
            encode(vhost),
            if tls { "?auth_mechanism=external" } else { "" }
        );
        let (exchange, bindings) = if l.routing_keys.is_empty() {
            (None, Vec::new())
        } else {
            (
                Some(
                    l.exchange
                        .map_or_else(|| "amq.topic".to_owned(), |e| e.name),
                ),
                l.routing_keys,
            )
        };
        let cfg = AmqpConfig {
            url: Secret::Env {
                env: LOOPER_URL_ENV.to_owned(),
            },
            exchange,
            exchange_type: "topic".to_owned(),
            queue: l.channel_queue.name,
            bindings,
            prefetch: 1,
            durable: l.channel_queue.durable,
            exclusive: l.channel_queue.exclusive,
            auto_delete: l.channel_queue.auto_delete,
            tls: l.tls.map(|t| AmqpTls {
                ca_file: t.ca_cert,
                cert_file: t.certfile,
                key_file: t.keyfile,
            }),
            payload: PayloadRead::Json,
        };
        crate::sources::validate(&SourceConfig::Amqp(cfg.clone())).map_err(|e| {
            LoopError::LooperSettings {
                looper: NAME,
                message: e.to_string(),
            }
        })?;
        Ok((cfg, url))
    }

    /// The `redis` looper as a Redis source on every channel (`PSUBSCRIBE *`), and its URL.
    fn redis(&self) -> Result<(RedisConfig, String), LoopError> {
        let l: RedisLooper = self.settings("redis")?;
        let host = if l.host.contains(':') {
            format!("[{}]", l.host)
        } else {
            l.host
        };
        let url = format!("redis://{host}:{}/{}", l.port, l.db);
        let cfg = RedisConfig {
            url: Secret::Env {
                env: LOOPER_URL_ENV.to_owned(),
            },
            password: None,
            channels: vec!["*".to_owned()],
            streams: Vec::new(),
            group: "troupe".to_owned(),
            consumer: None,
            payload: PayloadRead::Loopabull,
        };
        Ok((cfg, url))
    }

    /// The rules document it amounts to, for the project `project` (the playbooks
    /// directory, registered under that name). The looper's source reads its URL from
    /// [`LOOPER_URL_ENV`] (see [`LoopConfig::looper_url`]).
    pub fn rules(&self, project: &str) -> Result<RulesFile, LoopError> {
        let translator = self.translator()?;
        let mut sources = self.troupe.clone().unwrap_or_default().sources;
        let mut vars_key = None;
        match self.looper()? {
            Looper::None if sources.is_empty() => {
                sources.insert(
                    LOOP_NAME.to_owned(),
                    SourceConfig::Webhook(WebhookConfig {
                        secret: None,
                        token: None,
                        routing_key: Default::default(),
                        max_body_bytes: 1024 * 1024,
                        rate: None,
                    }),
                );
            }
            Looper::None => {}
            Looper::Rabbit(cfg) => {
                // The looper hands the playbook `{"msg": <the JSON body>}`.
                vars_key = Some("msg".to_owned());
                sources.insert(LOOP_NAME.to_owned(), SourceConfig::Amqp(*cfg));
            }
            Looper::Redis(cfg) => {
                sources.insert(LOOP_NAME.to_owned(), SourceConfig::Redis(*cfg));
            }
        }
        let routing_keys = if self.routing_keys.iter().any(|k| k == "all") {
            OneOrMany::One("all".to_owned())
        } else {
            OneOrMany::Many(self.routing_keys.clone())
        };
        Ok(RulesFile {
            sources,
            rules: vec![RuleConfig {
                name: LOOP_NAME.to_owned(),
                sources: OneOrMany::default(),
                routing_keys,
                when: OneOrMany::default(),
                action: ActionConfig {
                    project: Some(project.to_owned()),
                    playbooks_dir: Some(".".to_owned()),
                    translator,
                    vars_key,
                    ..ActionConfig::default()
                },
                throttle: None,
                dedupe: None,
                concurrency: Default::default(),
            }],
            settings: Default::default(),
        })
    }
}

/// Percent-encodes a URL component (user, password, virtual host).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_loopabull_config() {
        let cfg = LoopConfig::parse(
            r#"
routing_keys:
  - org.fedoraproject.prod.autocloud.image.success
plugin: rkdirectory
fedmsg_setting: ignored
ansible:
  playbooks_dir: /srv/playbooks
  cfg_file_path: /srv/ansible.cfg
  playbook_cmd: /usr/bin/ansible-playbook
"#,
        )
        .expect("valid");
        let doc = cfg.rules("pb").expect("rules");
        assert_eq!(doc.sources.len(), 1);
        assert_eq!(doc.sources[LOOP_NAME].kind(), "webhook");
        let rule = &doc.rules[0];
        assert_eq!(rule.action.translator, Translator::Rkdirectory);
        assert_eq!(
            rule.routing_keys.to_vec(),
            ["org.fedoraproject.prod.autocloud.image.success"]
        );
        let compiled = crate::Rules::compile(doc).expect("compiles");
        assert_eq!(
            compiled.rules()[0].playbook_for("org.fedoraproject.prod.foo"),
            Ok(Some("org/fedoraproject/prod/foo.yml".to_owned()))
        );
    }

    #[test]
    fn all_and_unsupported_plugins() {
        let cfg = LoopConfig::parse(
            "routing_keys: [all]\nplugin: rkname\nansible: {playbooks_dir: /x}\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.rules("pb").expect("rules").rules[0]
                .routing_keys
                .to_vec(),
            ["all"]
        );
        let refused = |plugins: &str| {
            LoopConfig::parse(&format!(
                "routing_keys: [all]\n{plugins}\nansible: {{playbooks_dir: /x}}\n"
            ))
            .expect_err(plugins)
            .to_string()
        };
        let e = refused("plugin: fedmsg");
        assert!(e.contains("fedmsgrabbitmq"), "{e}");
        let e = refused("plugin: nosuch");
        assert!(e.contains("\"nosuch\" is not supported"), "{e}");
        let e = refused("plugins: {looper: {name: fedmsg}}");
        assert!(e.contains("fedmsgrabbitmq") && e.contains("ZeroMQ"), "{e}");
        let e = refused("plugins: {looper: {name: kafka}}");
        assert!(e.contains("looper \"kafka\" is not supported"), "{e}");
        let e = refused("plugins: {looper: {name: redis}, translator: {name: rkfancy}}");
        assert!(e.contains("translator \"rkfancy\""), "{e}");
        let e = refused("plugins: {looper: {name: redis, hostname: x}}");
        assert!(
            e.contains("plugins.looper (redis)") && e.contains("hostname"),
            "{e}"
        );
        let e = refused("plugin: rkname\nplugins: {translator: {name: rkname}}");
        assert!(e.contains("use one"), "{e}");
        let e = refused("loglevel: info");
        assert!(e.contains("no plugins"), "{e}");
    }

    /// Loopabull 0.0.7's `examples/configs/fedmsg_rabbitmq_example.yml`.
    const RABBIT: &str = r#"
loglevel: info
ansible:
  playbooks_dir: examples/playbooks
  cfg_file_path: examples/ansible.cfg
  playbook_cmd: /usr/bin/ansible-playbook
routing_keys:
    - org.fedoraproject.prod.ansible.playbook.start
plugins:
  looper:
    name: fedmsgrabbitmq
    credentials:
        username: fedora
        password:
    tls:
        ca_cert: "/etc/fedora-messaging/cacert.pem"
        keyfile: "/etc/fedora-messaging/fedora-key.pem"
        certfile: "/etc/fedora-messaging/fedora-cert.pem"
    rabbitmq:
        host: rabbitmq.fedoraproject.org
        virtual_host: /public_pubsub
    routing_keys:
        - org.fedoraproject.prod.ansible.playbook.start
    exchange:
        name: amq.topic
    channel_queue:
        name: 00000000-0000-0000-0000-000000000000
        durable: false
        auto_delete: true
        exclusive: true
  translator:
    name: rkname
"#;

    #[test]
    fn fedmsgrabbitmq_is_an_amqp_source_passing_msg() {
        let cfg = LoopConfig::parse(RABBIT).expect("valid");
        assert_eq!(
            cfg.looper_url().expect("url").as_deref(),
            Some(
                "amqps://rabbitmq.fedoraproject.org:5671/%2Fpublic_pubsub?auth_mechanism=external"
            )
        );
        let doc = cfg.rules("playbooks").expect("rules");
        let SourceConfig::Amqp(a) = &doc.sources[LOOP_NAME] else {
            panic!("not amqp: {:?}", doc.sources);
        };
        assert_eq!(a.exchange.as_deref(), Some("amq.topic"));
        assert_eq!(
            a.bindings,
            ["org.fedoraproject.prod.ansible.playbook.start"]
        );
        assert_eq!(a.queue, "00000000-0000-0000-0000-000000000000");
        assert!(!a.durable && a.exclusive && a.auto_delete);
        assert_eq!(a.prefetch, 1);
        assert_eq!(
            a.tls.as_ref().and_then(|t| t.key_file.as_deref()),
            Some("/etc/fedora-messaging/fedora-key.pem")
        );
        assert_eq!(
            a.url,
            Secret::Env {
                env: LOOPER_URL_ENV.to_owned()
            }
        );
        assert_eq!(doc.rules[0].action.vars_key.as_deref(), Some("msg"));
        crate::Rules::compile(doc).expect("compiles");

        // Without TLS: the credentials, pika's defaults for the rest.
        let plain = RABBIT.replace("    tls:\n", "    tls_unused:\n");
        let e = LoopConfig::parse(&plain).expect_err("unknown setting");
        assert!(e.to_string().contains("tls_unused"), "{e}");
        let plain = RABBIT
            .lines()
            .filter(|l| !l.contains("tls:") && !l.contains("file:") && !l.contains("ca_cert"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("password:", "password: s3cr/t");
        let cfg = LoopConfig::parse(&plain).expect("valid");
        assert_eq!(
            cfg.looper_url().expect("url").as_deref(),
            Some("amqp://fedora:s3cr%2Ft@rabbitmq.fedoraproject.org:5672/%2Fpublic_pubsub")
        );
        let doc = cfg.rules("playbooks").expect("rules");
        let shown = serde_json::to_string(&doc).expect("json");
        assert!(
            !shown.contains("s3cr"),
            "the password is not in the rules: {shown}"
        );
    }

    #[test]
    fn redis_is_a_redis_source_on_every_channel() {
        let cfg = LoopConfig::parse(
            "routing_keys: [a.b]\nplugins:\n  looper: {name: Redis, host: 127.0.0.1, port: 6380, db: 2}\n  translator: {name: rkdirectory}\nansible: {playbooks_dir: /x}\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.looper_url().expect("url").as_deref(),
            Some("redis://127.0.0.1:6380/2")
        );
        let doc = cfg.rules("pb").expect("rules");
        let SourceConfig::Redis(r) = &doc.sources[LOOP_NAME] else {
            panic!("not redis: {:?}", doc.sources);
        };
        assert_eq!(r.channels, ["*"]);
        assert_eq!(r.payload, PayloadRead::Loopabull);
        assert_eq!(doc.rules[0].action.vars_key, None);
        assert_eq!(doc.rules[0].action.translator, Translator::Rkdirectory);
        // Loopabull's defaults.
        let cfg = LoopConfig::parse(
            "routing_keys: [a.b]\nplugins: {looper: {name: redis}}\nansible: {playbooks_dir: /x}\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.looper_url().expect("url").as_deref(),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(cfg.translator().expect("rkname"), Translator::Rkname);
    }
}
