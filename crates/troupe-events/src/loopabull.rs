//! Loopabull compatibility: a Loopabull configuration read as troupe rules.
//!
//! ```yaml
//! routing_keys: [org.fedoraproject.prod.autocloud.image.success]   # or [all]
//! plugin: rkname          # or rkdirectory
//! ansible:
//!   playbooks_dir: /srv/playbooks
//!   cfg_file_path: /srv/playbooks/ansible.cfg
//!   playbook_cmd: /usr/bin/ansible-playbook
//! ```
//!
//! Loopabull runs `ansible-playbook <routing_key>.yml -e @<payload file>` for each event whose
//! routing key is listed; `troupe loop` does the same through troupe's engine: the playbooks
//! directory becomes a project, the routing keys one rule, the plugin its translator. Events
//! arrive through the `loopabull` webhook source (`troupe events publish --source loopabull`)
//! unless the optional `troupe:` section configures others (e.g. an AMQP queue for
//! fedora-messaging).

use crate::config::{
    ActionConfig, OneOrMany, RuleConfig, RulesFile, SourceConfig, Translator, WebhookConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A Loopabull configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopConfig {
    /// Which event plugin: `rkname` or `rkdirectory` (Loopabull's routing-key translators).
    pub plugin: String,
    /// The routing keys that trigger playbooks; `[all]` for every key.
    pub routing_keys: Vec<String>,
    /// Where the playbooks are and how ansible runs.
    pub ansible: LoopAnsible,
    /// troupe's additions: event sources (default: one webhook source named `loopabull`).
    #[serde(default)]
    pub troupe: Option<LoopTroupe>,
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

/// Why a Loopabull configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The file is not YAML of a Loopabull configuration's shape.
    #[error("not a Loopabull config: {0}")]
    Parse(#[source] serde_saphyr::Error),
    /// The plugin is none of the routing-key translators troupe implements.
    #[error(
        "plugin {0:?} is not supported by troupe loop: use rkname (routing key = \
         playbook name) or rkdirectory (dots become directories), and configure where \
         events come from under troupe.sources (AMQP, NATS, MQTT, webhook, directory, \
         timer)"
    )]
    Plugin(String),
    /// No routing key would ever start a playbook.
    #[error("routing_keys is empty: list the keys to act on, or [all] for every key")]
    NoRoutingKeys,
}

/// The name of the rule `troupe loop` makes, and of its default webhook source.
pub const LOOP_NAME: &str = "loopabull";

impl LoopConfig {
    /// Reads a Loopabull configuration; unknown top-level keys (other plugins' settings) are
    /// ignored, as Loopabull does.
    pub fn parse(text: &str) -> Result<LoopConfig, LoopError> {
        let cfg: LoopConfig = serde_saphyr::from_str(text).map_err(LoopError::Parse)?;
        cfg.translator()?;
        if cfg.routing_keys.is_empty() {
            return Err(LoopError::NoRoutingKeys);
        }
        Ok(cfg)
    }

    /// The translator the plugin names.
    pub fn translator(&self) -> Result<Translator, LoopError> {
        match self.plugin.as_str() {
            "rkname" => Ok(Translator::Rkname),
            "rkdirectory" => Ok(Translator::Rkdirectory),
            other => Err(LoopError::Plugin(other.to_owned())),
        }
    }

    /// The rules document it amounts to, for the project `project` (the playbooks
    /// directory, registered under that name).
    pub fn rules(&self, project: &str) -> Result<RulesFile, LoopError> {
        let translator = self.translator()?;
        let mut sources = self.troupe.clone().unwrap_or_default().sources;
        if sources.is_empty() {
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
        let e = LoopConfig::parse(
            "routing_keys: [all]\nplugin: fedmsg\nansible: {playbooks_dir: /x}\n",
        )
        .expect_err("fedmsg");
        assert!(e.to_string().contains("fedmsg"), "{e}");
    }
}
