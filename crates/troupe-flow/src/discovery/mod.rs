//! Node discovery: the named node sets a flow finds before its first step.
//!
//! A [`NodeSet`] names one source ([`NodeSource`]) and a policy. [`Discovery::discover`] asks the
//! source for names, then applies the policy the same way for every kind:
//!
//! 1. names in the order the source gives them, surrounding blanks trimmed, empty ones and
//!    duplicates dropped (a name with blanks or control characters inside is an error);
//! 2. `limit` keeps the first N;
//! 3. no node left: `when_empty` decides (fail, [`Found::Skip`], or an empty list);
//! 4. otherwise fewer than `at_least` is an error saying how many were found and needed.
//!
//! One file per kind that needs more than a line: [`inventory`] (a stored inventory and a host
//! pattern, evaluated by the real `ansible`), [`file`] (a file inside a project), [`command`]
//! (a shell command), [`http`] (the HTTP client and a generic JSON API), [`puppetdb`],
//! [`consul`], [`etcd`].
//!
//! Strings in a node set arrive rendered: templates are the caller's business.

mod command;
mod consul;
mod etcd;
mod file;
mod http;
mod inventory;
mod puppetdb;

use crate::doc::{NodeSet, NodeSource, WhenEmpty};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_store::{Store, StoreError};

/// Finds the nodes of node sets, from any [`NodeSource`].
#[derive(Clone)]
pub struct Discovery {
    store: Arc<dyn Store>,
    projects_dir: PathBuf,
    ansible_bin_dir: Option<PathBuf>,
    /// The client for every HTTP kind. Building one hardly ever fails; when it does, the HTTP
    /// kinds report it, and `new` stays infallible for everything else.
    http: Result<reqwest::Client, String>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("projects_dir", &self.projects_dir)
            .field("ansible_bin_dir", &self.ansible_bin_dir)
            .finish_non_exhaustive()
    }
}

/// What a node set turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The nodes, in order (possibly none, with `when_empty: continue`).
    Nodes(Vec<String>),
    /// No node was found and the set says `when_empty: skip`: the steps using it are skipped.
    Skip,
}

/// Why a node set could not be found: names the set, its kind and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The source could not be asked, or answered something unusable.
    #[error("node set {set:?} ({kind}): {problem}")]
    Source {
        /// The node set's name.
        set: String,
        /// Its discovery kind (`consul`, `file`, …).
        kind: &'static str,
        /// What went wrong.
        #[source]
        problem: SourceError,
    },
    /// No node was found and the set says `when_empty: fail` (the default).
    #[error("node set {set:?} ({kind}): no node found (when_empty: fail)")]
    Empty {
        /// The node set's name.
        set: String,
        /// Its discovery kind.
        kind: &'static str,
    },
    /// Some nodes were found, but fewer than `at_least`.
    #[error("node set {set:?} ({kind}): found {found} node(s), needs at least {needed}")]
    TooFew {
        /// The node set's name.
        set: String,
        /// Its discovery kind.
        kind: &'static str,
        /// How many were found (after `limit`).
        found: usize,
        /// The set's `at_least`.
        needed: usize,
    },
}

/// What went wrong asking one source. URLs in it carry neither credentials nor query strings.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No stored inventory has this name.
    #[error("no inventory named {0:?}")]
    InventoryNotFound(String),
    /// No project has this name.
    #[error("no project named {0:?}")]
    ProjectNotFound(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No `ansible` executable was found.
    #[error("`ansible` not found (looked in: {looked})")]
    AnsibleNotFound {
        /// Where troupe looked.
        looked: String,
    },
    /// `ansible --list-hosts` refused the inventory or the pattern.
    #[error("ansible rejected pattern {pattern:?}: {message}")]
    Ansible {
        /// The host pattern.
        pattern: String,
        /// The first lines of what ansible said.
        message: String,
    },
    /// A file path that is not usable (absolute, `..`, outside the project, missing).
    #[error("path {path:?}: {reason}")]
    Path {
        /// The path as written in the flow.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// Reading a file, writing a temporary one or starting a process failed.
    #[error("{context}: {source}")]
    Io {
        /// What troupe was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// What the source gave is not a list of names in a shape troupe reads.
    #[error("{what}: {reason}")]
    Shape {
        /// What was read (`the file`, `the command's output`, an URL…).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that cannot be a node.
    #[error("{name:?} is not a node name: {reason}")]
    BadName {
        /// The name (as found).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The command exited with a failure.
    #[error("the command failed ({status}){}", stderr_tail(.stderr))]
    CommandFailed {
        /// The exit code or signal, as text.
        status: String,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The command ran longer than its timeout and was killed.
    #[error("the command did not finish within {}; it was killed", humantime::format_duration(*.after))]
    CommandTimeout {
        /// The timeout.
        after: Duration,
    },
    /// The HTTP client could not be set up.
    #[error("the HTTP client could not be set up: {0}")]
    HttpClient(String),
    /// A URL that is not one.
    #[error("invalid URL {url}: {reason}")]
    BadUrl {
        /// The URL, without credentials or query.
        url: String,
        /// Why.
        reason: String,
    },
    /// A header that cannot be sent.
    #[error("invalid header {name:?}: {reason}")]
    BadHeader {
        /// The header's name.
        name: String,
        /// Why (never its value).
        reason: &'static str,
    },
    /// The request did not get an answer (connection refused, timeout, TLS…).
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL, without credentials or query.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The server answered with a status other than 2xx.
    #[error("{url} answered {status}{}", body_excerpt(.body))]
    Status {
        /// The URL, without credentials or query.
        url: String,
        /// The status.
        status: u16,
        /// The beginning of the answer's body, on one line.
        body: String,
    },
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

fn body_excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl SourceError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SourceError::Io {
            context: context.into(),
            source,
        }
    }

    fn shape(what: impl Into<String>, reason: impl Into<String>) -> Self {
        SourceError::Shape {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl Discovery {
    /// A discovery reading stored inventories and projects from `store`, git projects' checkouts
    /// under `projects_dir` (as the launcher finds them), and running the `ansible` found in
    /// `ansible_bin_dir` (next to `ansible-playbook`), else on `PATH`.
    pub fn new(
        store: Arc<dyn Store>,
        projects_dir: PathBuf,
        ansible_bin_dir: Option<PathBuf>,
    ) -> Self {
        Discovery {
            store,
            projects_dir,
            ansible_bin_dir,
            http: http::client(None),
        }
    }

    /// The same discovery, trusting the CAs of `ca_file` (PEM) besides the system's for the
    /// HTTP kinds.
    pub fn trusting(mut self, ca_file: &std::path::Path) -> Self {
        self.http = http::client(Some(ca_file));
        self
    }

    /// Finds one node set's nodes and applies its policy (`limit`, `when_empty`, `at_least`).
    /// Strings in `set` are already rendered (templates done by the caller).
    pub async fn discover(&self, name: &str, set: &NodeSet) -> Result<Found, DiscoveryError> {
        let kind = set.source.kind();
        let source_error = |problem| DiscoveryError::Source {
            set: name.to_owned(),
            kind,
            problem,
        };
        let raw = self.ask(&set.source).await.map_err(source_error)?;
        let nodes = clean(raw).map_err(source_error)?;
        tracing::debug!(set = name, kind, found = nodes.len(), "node set discovered");
        apply_policy(name, set, nodes)
    }

    /// The names the source gives, as it gives them.
    async fn ask(&self, source: &NodeSource) -> Result<Vec<String>, SourceError> {
        match source {
            NodeSource::Static(list) => Ok(list.clone()),
            NodeSource::Inventory(spec) => {
                let stored = self
                    .store
                    .find_inventory(&spec.name)
                    .await?
                    .ok_or_else(|| SourceError::InventoryNotFound(spec.name.clone()))?;
                let ansible = inventory::locate_ansible(self.ansible_bin_dir.as_deref())?;
                let pattern = spec.pattern.as_deref().unwrap_or("all");
                inventory::list_hosts(&ansible, &stored.content, pattern).await
            }
            NodeSource::File(spec) => {
                let project = self
                    .store
                    .find_project(&spec.project)
                    .await?
                    .ok_or_else(|| SourceError::ProjectNotFound(spec.project.clone()))?;
                let root = troupe_launch::playbooks::project_root(&project, &self.projects_dir);
                file::nodes(root, &spec.path).await
            }
            NodeSource::Command(spec) => {
                command::nodes(spec, self.ansible_bin_dir.as_deref()).await
            }
            NodeSource::Http(spec) => http::nodes(self.client()?, spec).await,
            NodeSource::Puppetdb(spec) => puppetdb::nodes(self.client()?, spec).await,
            NodeSource::Consul(spec) => consul::nodes(self.client()?, spec).await,
            NodeSource::Etcd(spec) => etcd::nodes(self.client()?, spec).await,
        }
    }

    fn client(&self) -> Result<&reqwest::Client, SourceError> {
        self.http
            .as_ref()
            .map_err(|e| SourceError::HttpClient(e.clone()))
    }
}

/// Trims names, drops empty ones and duplicates (first kept), and refuses names with blanks or
/// control characters inside: ansible would read `web1 web2` as something else entirely.
fn clean(raw: Vec<String>) -> Result<Vec<String>, SourceError> {
    let mut seen = HashSet::new();
    let mut nodes = Vec::with_capacity(raw.len());
    for name in raw {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SourceError::BadName {
                name: trimmed.chars().take(200).collect(),
                reason: "it has blanks or control characters",
            });
        }
        if seen.insert(trimmed.to_owned()) {
            nodes.push(trimmed.to_owned());
        }
    }
    Ok(nodes)
}

/// `limit`, then `when_empty` for no node, then `at_least`.
fn apply_policy(
    name: &str,
    set: &NodeSet,
    mut nodes: Vec<String>,
) -> Result<Found, DiscoveryError> {
    let kind = set.source.kind();
    if let Some(limit) = set.limit {
        nodes.truncate(limit);
    }
    if nodes.is_empty() {
        return match set.when_empty {
            WhenEmpty::Fail => Err(DiscoveryError::Empty {
                set: name.to_owned(),
                kind,
            }),
            WhenEmpty::Skip => Ok(Found::Skip),
            WhenEmpty::Continue => Ok(Found::Nodes(nodes)),
        };
    }
    if let Some(needed) = set.at_least
        && nodes.len() < needed
    {
        return Err(DiscoveryError::TooFew {
            set: name.to_owned(),
            kind,
            found: nodes.len(),
            needed,
        });
    }
    Ok(Found::Nodes(nodes))
}

/// The nodes as an inline inventory, every host with `vars` as its host variables.
///
/// The text is JSON, which is YAML to every YAML reader: a node named `yes`, `null` or `1.10`
/// stays a string for ansible's PyYAML (YAML 1.1) as much as for troupe's own reader.
pub fn inventory_of(nodes: &[String], vars: &Map<String, Value>) -> InventoryContent {
    // Written out by hand rather than through a JSON Map, which sorts its keys: ansible plays
    // hosts in inventory order, and that order is the one discovery found.
    let vars = Value::Object(vars.clone()).to_string();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("      {}: {vars}", Value::String(n.clone())))
        .collect();
    InventoryContent {
        format: InventoryFormat::Yaml,
        hosts: format!(
            "{{\n  \"all\": {{\n    \"hosts\": {{\n{}\n    }}\n  }}\n}}\n",
            hosts.join(",\n")
        ),
        vars: None,
    }
}

/// Strings from a JSON list: each item a string, or (with `field`) an object whose `field` is
/// a string. `what` names where the list came from, for errors.
fn names_in(items: &[Value], field: Option<&str>, what: &str) -> Result<Vec<String>, SourceError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match (item, field) {
            (Value::String(s), _) => Ok(s.clone()),
            (Value::Object(o), Some(f)) => match o.get(f) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(SourceError::shape(
                    what,
                    format!("item {i}: `{f}` is not a string"),
                )),
                None => Err(SourceError::shape(what, format!("item {i} has no `{f}`"))),
            },
            (Value::Object(_), None) => Err(SourceError::shape(
                what,
                format!("item {i} is an object; say which of its fields is the name (`field`)"),
            )),
            (other, _) => Err(SourceError::shape(
                what,
                format!("item {i} is {}, not a name", json_kind(other)),
            )),
        })
        .collect()
}

/// "a number", "an object"…, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// At most `n` lines of `text` from its end, blank ones dropped, each cut to 300 characters.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests;
