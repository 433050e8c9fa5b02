//! The flow document: what a YAML flow file says, as types.
//!
//! ```yaml
//! name: web-upgrade
//! inputs:
//!   cluster: {type: string, required: true, validate: shellsafe}
//! nodes:
//!   web: {static: [web1, web2], at_least: 1}
//! steps:
//!   - id: upgrade
//!     playbook: {project: web, playbook: upgrade.yml, nodes: web}
//!     retry: {attempts: 3, delay: 10s}
//! on_failure:
//!   - slack: {webhook: "{{ inputs.hook }}", text: "{{ failure.step }} failed"}
//! ```
//!
//! A step and a node set are each one kind among several, written as one key of the mapping
//! (`playbook:`, `shell:`, … / `static:`, `consul:`, …) beside the keys every one has. They are
//! read through a raw form with every kind optional, then checked to have exactly one, so an
//! unknown key is an error that names it and its line.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// A whole flow document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDoc {
    /// The flow's name: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What an execution is given, by name, in order.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Node sets found before the first step, by name, in order.
    #[serde(default)]
    pub nodes: IndexMap<String, NodeSet>,
    /// Steps run before `steps` (a failure here is a failure of the flow).
    #[serde(default)]
    pub pre: Vec<Step>,
    /// The flow's body, in order.
    pub steps: Vec<Step>,
    /// Run when every step of `pre` and `steps` succeeded.
    #[serde(default)]
    pub on_success: Vec<Step>,
    /// Run when a step failed; they see `failure.step` and `failure.error`.
    #[serde(default)]
    pub on_failure: Vec<Step>,
    /// Run last, always, whatever happened.
    #[serde(default)]
    pub finally: Vec<Step>,
    /// How many executions may run at once, and what happens to more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// Named locks (templated) held for the whole execution, across replicas.
    #[serde(default)]
    pub locks: Vec<String>,
    /// The longest an execution may run; past it, the step in flight is stopped gracefully and
    /// the execution ends `timeout` (handlers still run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Where to tell that an execution ended.
    #[serde(default)]
    pub notify: Vec<Notify>,
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
    /// A list.
    Array,
    /// A mapping.
    Object,
}

/// A named check an input's value must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validator {
    /// No character a shell treats specially (`` ;&|<>`$(){}[]*?!~#'"\ `` and newlines).
    Shellsafe,
}

/// One input of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether an execution must give it (an input with a default never must).
    #[serde(default)]
    pub required: bool,
    /// Its value when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The only values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// A regular expression a string must match whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// What it is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Never shown in history, events or logs, and never stored in clear.
    #[serde(default)]
    pub secret: bool,
    /// A named check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Validator>,
}

/// What to do when discovery finds no node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenEmpty {
    /// The execution fails before its first step.
    #[default]
    Fail,
    /// The steps that use the set are skipped.
    Skip,
    /// Go on with an empty set.
    Continue,
}

/// A named set of nodes, found by one discovery kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawNodeSet", into = "RawNodeSet")]
pub struct NodeSet {
    /// How the nodes are found.
    pub source: NodeSource,
    /// Fewer nodes than this is a failure.
    pub at_least: Option<usize>,
    /// At most this many nodes are kept (the first, in the order found).
    pub limit: Option<usize>,
    /// What to do when none is found.
    pub when_empty: WhenEmpty,
    /// Host variables every node gets when the set is used as an inventory.
    pub vars: Map<String, Value>,
}

/// Where a node set comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSource {
    /// A list written in the flow (templated: an item may be `{{ inputs.host }}`).
    Static(Vec<String>),
    /// The hosts of a stored inventory matching an Ansible host pattern.
    Inventory(InventoryNodes),
    /// A YAML or JSON file in a project: a list of names, or a mapping with a `nodes` list.
    File(FileNodes),
    /// A shell command printing one name per line (or a JSON array).
    Command(CommandNodes),
    /// An HTTP GET returning JSON; a JSON pointer picks the list.
    Http(HttpNodes),
    /// PuppetDB: a PQL query over its HTTP API; the nodes are the `certname`s.
    Puppetdb(PuppetDbNodes),
    /// Consul's catalog: the nodes of a service, or every node.
    Consul(ConsulNodes),
    /// etcd (v3 JSON gateway): the keys under a prefix.
    Etcd(EtcdNodes),
}

impl NodeSource {
    /// The kind's name, as written in a flow.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeSource::Static(_) => "static",
            NodeSource::Inventory(_) => "inventory",
            NodeSource::File(_) => "file",
            NodeSource::Command(_) => "command",
            NodeSource::Http(_) => "http",
            NodeSource::Puppetdb(_) => "puppetdb",
            NodeSource::Consul(_) => "consul",
            NodeSource::Etcd(_) => "etcd",
        }
    }
}

/// Nodes from a stored inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryNodes {
    /// The stored inventory's name.
    pub name: String,
    /// An Ansible host pattern (`all` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Nodes from a file in a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNodes {
    /// The project's name.
    pub project: String,
    /// The file's path in the project.
    pub path: String,
}

/// Nodes printed by a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandNodes {
    /// The command, run by `sh -c`.
    pub command: String,
    /// Environment variables it gets.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// How long it may take (30 s when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

/// Nodes from a JSON HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpNodes {
    /// The URL (templated).
    pub url: String,
    /// Request headers (templated).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// A JSON pointer (RFC 6901) to the list in the answer; the whole answer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// When the list holds objects, the field naming each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Nodes from PuppetDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PuppetDbNodes {
    /// PuppetDB's base URL (`http://puppetdb:8080`).
    pub url: String,
    /// A PQL query (`nodes[certname] { facts.os.family = "Debian" }`), templated.
    pub query: String,
}

/// Nodes from Consul's catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulNodes {
    /// Consul's base URL (`http://consul:8500`).
    pub url: String,
    /// The nodes providing this service; every node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only service instances with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Use each node's address rather than its name.
    #[serde(default)]
    pub use_address: bool,
    /// An ACL token, sent as `X-Consul-Token` (templated; usually a secret input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Nodes from etcd's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdNodes {
    /// The v3 JSON gateway's base URL (`http://etcd:2379`).
    pub url: String,
    /// The key prefix; each key's rest after it (up to the next `/`) is a node's name.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeSet {
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    static_: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inventory: Option<InventoryNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<FileNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<CommandNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    puppetdb: Option<PuppetDbNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consul: Option<ConsulNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etcd: Option<EtcdNodes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_least: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(default)]
    when_empty: WhenEmpty,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    vars: Map<String, Value>,
}

const NODE_KINDS: &str = "static, inventory, file, command, http, puppetdb, consul or etcd";

impl TryFrom<RawNodeSet> for NodeSet {
    type Error = String;

    fn try_from(raw: RawNodeSet) -> Result<Self, String> {
        let mut found = Vec::new();
        if let Some(v) = raw.static_ {
            found.push(NodeSource::Static(v));
        }
        if let Some(v) = raw.inventory {
            found.push(NodeSource::Inventory(v));
        }
        if let Some(v) = raw.file {
            found.push(NodeSource::File(v));
        }
        if let Some(v) = raw.command {
            found.push(NodeSource::Command(v));
        }
        if let Some(v) = raw.http {
            found.push(NodeSource::Http(v));
        }
        if let Some(v) = raw.puppetdb {
            found.push(NodeSource::Puppetdb(v));
        }
        if let Some(v) = raw.consul {
            found.push(NodeSource::Consul(v));
        }
        if let Some(v) = raw.etcd {
            found.push(NodeSource::Etcd(v));
        }
        let source = one_of(found, "a node set", NODE_KINDS, NodeSource::kind)?;
        Ok(NodeSet {
            source,
            at_least: raw.at_least,
            limit: raw.limit,
            when_empty: raw.when_empty,
            vars: raw.vars,
        })
    }
}

impl From<NodeSet> for RawNodeSet {
    fn from(set: NodeSet) -> Self {
        let mut raw = RawNodeSet {
            static_: None,
            inventory: None,
            file: None,
            command: None,
            http: None,
            puppetdb: None,
            consul: None,
            etcd: None,
            at_least: set.at_least,
            limit: set.limit,
            when_empty: set.when_empty,
            vars: set.vars,
        };
        match set.source {
            NodeSource::Static(v) => raw.static_ = Some(v),
            NodeSource::Inventory(v) => raw.inventory = Some(v),
            NodeSource::File(v) => raw.file = Some(v),
            NodeSource::Command(v) => raw.command = Some(v),
            NodeSource::Http(v) => raw.http = Some(v),
            NodeSource::Puppetdb(v) => raw.puppetdb = Some(v),
            NodeSource::Consul(v) => raw.consul = Some(v),
            NodeSource::Etcd(v) => raw.etcd = Some(v),
        }
        raw
    }
}

/// The one item of `found`, or an error saying there were none or several.
fn one_of<T>(
    mut found: Vec<T>,
    what: &str,
    kinds: &str,
    kind: impl Fn(&T) -> &'static str,
) -> Result<T, String> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("{what} needs one of {kinds}")),
        _ => Err(format!(
            "{what} has {}; give exactly one",
            found.iter().map(kind).collect::<Vec<_>>().join(" and ")
        )),
    }
}

/// How a failed step is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the second try.
    #[serde(default)]
    pub delay: Dur,
    /// Each next wait is the previous one times this (1 when absent: a fixed delay).
    #[serde(default = "one")]
    pub backoff: f64,
    /// The longest wait, whatever the backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Dur>,
    /// An expression over `result` (and everything else); while false, the step is tried
    /// again, even if it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct Step {
    /// Its id, unique in the flow: later steps see its result as `steps.<id>`.
    pub id: Option<String>,
    /// A name for people.
    pub name: Option<String>,
    /// What it does.
    pub action: Action,
    /// An expression; the step is skipped when it is false.
    pub when: Option<String>,
    /// The longest one attempt may take.
    pub timeout: Option<Dur>,
    /// How it is tried again.
    pub retry: Option<Retry>,
    /// A failure of this step does not fail the flow.
    pub continue_on_error: bool,
    /// Values (templates over `result` and the rest) later steps see as `published.<name>`
    /// and `steps.<id>.published.<name>`.
    pub publish: IndexMap<String, String>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Runs a playbook (or a template) through troupe's run engine.
    Playbook(PlaybookStep),
    /// Runs a shell command.
    Shell(ShellStep),
    /// Makes an HTTP request.
    Http(HttpStep),
    /// Posts to a Slack incoming webhook.
    Slack(SlackStep),
    /// Runs another flow, linked to this execution.
    Flow(FlowStep),
    /// Waits.
    Sleep(Dur),
    /// Waits for approve or deny through the API.
    Approval(ApprovalStep),
    /// Writes a templated line to the execution's log.
    Log(String),
}

impl Action {
    /// The kind's name, as written in a flow.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Playbook(_) => "playbook",
            Action::Shell(_) => "shell",
            Action::Http(_) => "http",
            Action::Slack(_) => "slack",
            Action::Flow(_) => "flow",
            Action::Sleep(_) => "sleep",
            Action::Approval(_) => "approval",
            Action::Log(_) => "log",
        }
    }
}

/// A playbook run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookStep {
    /// The project's name (with `playbook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The playbook's path in the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    /// A stored template's name (instead of `project` and `playbook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A node set of the flow to run against (its nodes as the inventory, or as `--limit` on
    /// `inventory` when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// A stored inventory's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// Extra variables (values templated).
    #[serde(default)]
    pub extra_vars: Map<String, Value>,
    /// Run options (`limit`, `tags`, `check`, `forks`, …), as a run or template launch takes
    /// them.
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// A shell command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellStep {
    /// The command (templated), run by `sh -c`.
    pub command: String,
    /// Environment variables (values templated).
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// An HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    /// The method (`GET` when absent).
    #[serde(default = "get")]
    pub method: String,
    /// The URL (templated).
    pub url: String,
    /// Headers (templated).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// The body: a string (templated) or a structure sent as JSON (strings in it templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The statuses that count as success (any 2xx when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<u16>,
}

fn get() -> String {
    "GET".into()
}

/// A Slack message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackStep {
    /// The incoming webhook's URL (templated; usually `{{ inputs.slack_hook }}`, a secret).
    pub webhook: String,
    /// The message (templated).
    pub text: String,
}

/// Another flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowStep {
    /// The flow's name (its newest version runs).
    pub name: String,
    /// Its inputs (values templated).
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Give it this execution's inputs too (those it declares), under `inputs`.
    #[serde(default)]
    pub pass_inputs: bool,
}

/// An approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// What is asked (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long to wait; past it the step fails (`timeout`). One hour when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    playbook: Option<PlaybookStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shell: Option<ShellStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slack: Option<SlackStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flow: Option<FlowStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sleep: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<Retry>,
    #[serde(default)]
    continue_on_error: bool,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    publish: IndexMap<String, String>,
}

const STEP_KINDS: &str = "playbook, shell, http, slack, flow, sleep, approval or log";

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Self, String> {
        let mut found = Vec::new();
        if let Some(v) = raw.playbook {
            found.push(Action::Playbook(v));
        }
        if let Some(v) = raw.shell {
            found.push(Action::Shell(v));
        }
        if let Some(v) = raw.http {
            found.push(Action::Http(v));
        }
        if let Some(v) = raw.slack {
            found.push(Action::Slack(v));
        }
        if let Some(v) = raw.flow {
            found.push(Action::Flow(v));
        }
        if let Some(v) = raw.sleep {
            found.push(Action::Sleep(v));
        }
        if let Some(v) = raw.approval {
            found.push(Action::Approval(v));
        }
        if let Some(v) = raw.log {
            found.push(Action::Log(v));
        }
        let what = match &raw.id {
            Some(id) => format!("step {id:?}"),
            None => "a step".to_string(),
        };
        let action = one_of(found, &what, STEP_KINDS, Action::kind)?;
        Ok(Step {
            id: raw.id,
            name: raw.name,
            action,
            when: raw.when,
            timeout: raw.timeout,
            retry: raw.retry,
            continue_on_error: raw.continue_on_error,
            publish: raw.publish,
        })
    }
}

impl From<Step> for RawStep {
    fn from(step: Step) -> Self {
        let mut raw = RawStep {
            id: step.id,
            name: step.name,
            playbook: None,
            shell: None,
            http: None,
            slack: None,
            flow: None,
            sleep: None,
            approval: None,
            log: None,
            when: step.when,
            timeout: step.timeout,
            retry: step.retry,
            continue_on_error: step.continue_on_error,
            publish: step.publish,
        };
        match step.action {
            Action::Playbook(v) => raw.playbook = Some(v),
            Action::Shell(v) => raw.shell = Some(v),
            Action::Http(v) => raw.http = Some(v),
            Action::Slack(v) => raw.slack = Some(v),
            Action::Flow(v) => raw.flow = Some(v),
            Action::Sleep(v) => raw.sleep = Some(v),
            Action::Approval(v) => raw.approval = Some(v),
            Action::Log(v) => raw.log = Some(v),
        }
        raw
    }
}

/// What happens when a concurrency group is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    /// The new execution waits, queued, for a place.
    #[default]
    Queue,
    /// The new execution ends at once, `skipped`.
    Skip,
    /// The oldest running executions of the group are canceled to make room.
    CancelOlder,
}

/// A concurrency group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySpec {
    /// The group (templated over `inputs`); the flow's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many executions of the group may run at once.
    #[serde(default = "one_u32")]
    pub limit: u32,
    /// What happens to one more.
    #[serde(default)]
    pub behavior: Behavior,
}

fn one_u32() -> u32 {
    1
}

/// A notification at the end of an execution: troupe's one notification target (shared
/// with templates and rules). In a flow, its URLs and header values may be Jinja over
/// `inputs` and `flow`, rendered when the execution starts.
pub use troupe_core::notify::{Notify, NotifyOn};

/// A duration, written `30s`, `5m`, `1h 30m` or as a number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Secs(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Either::Text(t) => humantime::parse_duration(t.trim())
                .map(Dur)
                .map_err(|e| serde::de::Error::custom(format!("duration {t:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<FlowDoc, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_document_reads() {
        let doc = parse(
            r#"
name: upgrade
inputs:
  cluster: {type: string, required: true, validate: shellsafe}
  hook: {type: string, secret: true, default: ""}
nodes:
  web: {static: [a, b], at_least: 1, vars: {ansible_connection: local}}
  db: {consul: {url: "http://127.0.0.1:8500", service: db}, when_empty: skip}
steps:
  - id: up
    playbook: {project: web, playbook: up.yml, nodes: web, extra_vars: {v: 2}}
    retry: {attempts: 3, delay: 2s, backoff: 2, until: "result.status == 'successful'"}
    timeout: 10m
  - shell: {command: "echo hi"}
    publish: {greeting: "{{ result.stdout }}"}
  - sleep: 1
  - log: "done {{ inputs.cluster }}"
on_failure:
  - flow: {name: rollback, pass_inputs: true}
concurrency: {key: "{{ inputs.cluster }}", behavior: cancel_older}
locks: [lb]
"#,
        )
        .expect("reads");
        assert_eq!(doc.inputs.keys().collect::<Vec<_>>(), ["cluster", "hook"]);
        assert!(doc.inputs["hook"].secret);
        assert_eq!(
            doc.nodes["web"].source,
            NodeSource::Static(vec!["a".into(), "b".into()])
        );
        assert_eq!(doc.nodes["db"].when_empty, WhenEmpty::Skip);
        assert_eq!(doc.steps.len(), 4);
        assert_eq!(doc.steps[0].action.kind(), "playbook");
        assert_eq!(doc.steps[0].timeout, Some(Dur(Duration::from_secs(600))));
        let retry = doc.steps[0].retry.as_ref().expect("retry");
        assert_eq!((retry.attempts, retry.backoff), (3, 2.0));
        assert_eq!(
            doc.steps[2].action,
            Action::Sleep(Dur(Duration::from_secs(1)))
        );
        assert_eq!(
            doc.concurrency.as_ref().map(|c| (c.limit, c.behavior)),
            Some((1, Behavior::CancelOlder))
        );
    }

    #[test]
    fn a_step_needs_exactly_one_kind() {
        let none = parse("name: f\nsteps:\n  - id: x\n    when: 'true'\n").expect_err("an error");
        assert!(none.contains("step \"x\" needs one of playbook"), "{none}");
        let two = parse("name: f\nsteps:\n  - log: a\n    sleep: 1\n").expect_err("an error");
        assert!(two.contains("has sleep and log"), "{two}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("name: f\nsteps:\n  - log: a\n    retries: 3\n").expect_err("an error");
        assert!(e.contains("retries"), "{e}");
        let e = parse("name: f\nsteps: []\nnodes:\n  x: {static: [a], atleast: 1}\n")
            .expect_err("an error");
        assert!(e.contains("atleast"), "{e}");
    }

    #[test]
    fn steps_and_node_sets_round_trip() {
        let doc = parse(
            "name: f\nnodes:\n  n: {etcd: {url: 'http://e', prefix: /nodes/}}\nsteps:\n  - id: a\n    http: {url: 'http://x'}\n    continue_on_error: true\n",
        )
        .expect("reads");
        let json = serde_json::to_value(&doc).expect("writes");
        let back: FlowDoc = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, doc);
    }

    #[test]
    fn durations_read_in_every_form() {
        for (text, secs) in [("30", 30), ("'30s'", 30), ("'5m'", 300), ("'1h 30m'", 5400)] {
            let d: Dur = serde_saphyr::from_str(text).expect(text);
            assert_eq!(d.0, Duration::from_secs(secs), "{text}");
        }
        assert!(serde_saphyr::from_str::<Dur>("'soon'").is_err());
    }
}
