//! Loading a flow document: the YAML read into [`FlowDoc`] (unknown keys and malformed
//! values are errors with a line and column), then the checks the types cannot make, every
//! one naming the field it is about (`steps[2].retry.until`, `inputs.count.default`), all
//! reported at once.

use crate::doc::{
    Action, FlowDoc, InputSpec, InputType, NodeSet, NodeSource, Notify, PlaybookStep, Step,
    Validator,
};
use crate::expr::{check_expression, check_template, environment, strings_in};
use crate::inputs::{has_type, refusal, type_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// The longest a flow's name may be.
pub const MAX_NAME_LEN: usize = 100;

/// What is wrong with a flow document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    /// It is not YAML, or not a flow document's shape (serde-saphyr's message, with the line
    /// and column).
    #[error("{0}")]
    Yaml(String),
    /// It reads, but breaks these rules.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl FlowError {
    /// The problems as a JSON list of `{field, message}`, for an API's 422 answer. A YAML
    /// error is one problem with an empty field.
    pub fn problems_json(&self) -> Value {
        match self {
            FlowError::Yaml(message) => problems_json(&[Problem::new("", message.trim_end())]),
            FlowError::Invalid(problems) => problems_json(problems),
        }
    }
}

/// Problems as a JSON list of `{field, message}`.
pub fn problems_json(problems: &[Problem]) -> Value {
    serde_json::to_value(problems).unwrap_or(Value::Null)
}

/// One thing wrong with a flow document, or with the inputs an execution was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where: a path into the document (`steps[2].retry.until`, `nodes.web.limit`,
    /// `inputs.count`).
    pub field: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Problems, one a line.
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads and checks a flow document. An HTTP step's method comes back in capitals.
pub fn load(text: &str) -> Result<FlowDoc, FlowError> {
    let mut doc: FlowDoc =
        serde_saphyr::from_str(text).map_err(|e| FlowError::Yaml(e.to_string()))?;
    let mut problems = check(&doc);
    if !problems.is_empty() {
        add_lines(text, &mut problems);
        return Err(FlowError::Invalid(problems));
    }
    for step in doc.all_steps_mut() {
        if let Action::Http(h) = &mut step.action {
            h.method = h.method.to_ascii_uppercase();
        }
    }
    Ok(doc)
}

/// Ends each problem's message with the line its field is on, as ` [line 12]` (or inside
/// the brackets a step's id put there: ` [step "up", line 12]`).
fn add_lines(text: &str, problems: &mut [Problem]) {
    let Ok(tree) = serde_saphyr::from_str::<Spanned<Tree>>(text) else {
        return;
    };
    for p in problems {
        let Some(line) = line_of(&tree, &p.field) else {
            continue;
        };
        if p.message.ends_with(']') {
            p.message.pop();
            p.message.push_str(&format!(", line {line}]"));
        } else {
            p.message.push_str(&format!(" [line {line}]"));
        }
    }
}

/// A YAML document as nodes with where each is, to find a field's line.
enum Tree {
    Map(Vec<(String, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Leaf,
}

/// The line of the node at `path` (`steps[2].retry.until`) in `root`, or of the deepest node
/// on the way to it.
fn line_of(root: &Spanned<Tree>, path: &str) -> Option<u64> {
    let mut node = root;
    let mut rest = path;
    loop {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let next = match &node.value {
            Tree::Seq(items) if rest.starts_with('[') => rest[1..]
                .split_once(']')
                .and_then(|(i, after)| Some((items.get(i.parse::<usize>().ok()?)?, after))),
            // The longest key the path goes on with: a key may hold a `.`.
            Tree::Map(entries) => entries
                .iter()
                .filter(|(k, _)| {
                    rest.strip_prefix(k.as_str())
                        .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(k, v)| (v, &rest[k.len()..])),
            _ => None,
        };
        match next {
            Some((child, after)) => {
                node = child;
                rest = after;
            }
            None => break,
        }
    }
    let line = node.referenced.line();
    (line > 0).then_some(line)
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

/// A mapping key as text, as the document's types read it (`n` is the key "n", not YAML
/// 1.1's false).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
        }
        d.deserialize_string(KeyVisitor)
    }
}

struct TreeVisitor;

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(KeyText(k)) = map.next_key()? {
            entries.push((k, map.next_value()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

/// Every problem of a document that has the right shape.
pub fn check(doc: &FlowDoc) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
        inputs: doc.inputs.keys().cloned().collect(),
        nodes: doc.nodes.keys().cloned().collect(),
        ids: doc
            .step_lists()
            .iter()
            .flat_map(|(_, steps)| steps.iter().filter_map(|s| s.id.clone()))
            .collect(),
    };
    c.flow_name(doc);
    for (name, spec) in &doc.inputs {
        c.input(name, spec);
    }
    for (name, set) in &doc.nodes {
        c.node_set(name, set);
    }
    let mut ids: HashMap<&str, String> = HashMap::new();
    for (list, steps) in doc.step_lists() {
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{list}[{i}]");
            if let Some(id) = &step.id {
                if let Some(first) = ids.get(id.as_str()) {
                    c.push(
                        format!("{at}.id"),
                        format!("the id {id:?} is also {first}'s; ids are unique in a flow"),
                    );
                } else {
                    ids.insert(id, at.clone());
                }
            }
            c.step(doc, &at, step);
        }
    }
    if let Some(conc) = &doc.concurrency {
        if conc.limit < 1 {
            c.push("concurrency.limit", "must be at least 1");
        }
        if let Some(key) = &conc.key {
            c.template("concurrency.key", key);
        }
    }
    for (i, lock) in doc.locks.iter().enumerate() {
        let at = format!("locks[{i}]");
        if lock.trim().is_empty() {
            c.push(&at, "a lock needs a name");
        }
        c.template(&at, lock);
    }
    if doc.timeout.is_some_and(|t| t.0.is_zero()) {
        c.push("timeout", "must be more than 0");
    }
    for (i, n) in doc.notify.iter().enumerate() {
        c.notify(&format!("notify[{i}]"), n);
    }
    c.problems
}

impl FlowDoc {
    /// The step lists in the order an execution meets them, with their names as written.
    pub fn step_lists(&self) -> [(&'static str, &Vec<Step>); 5] {
        [
            ("pre", &self.pre),
            ("steps", &self.steps),
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
            ("finally", &self.finally),
        ]
    }

    fn all_steps_mut(&mut self) -> impl Iterator<Item = &mut Step> {
        self.pre
            .iter_mut()
            .chain(self.steps.iter_mut())
            .chain(self.on_success.iter_mut())
            .chain(self.on_failure.iter_mut())
            .chain(self.finally.iter_mut())
    }
}

/// "the flow's node sets are a, b" or "the flow has no node sets", for a message about a
/// name that is not among them.
pub(crate) fn flow_has<'a>(what: &str, names: impl IntoIterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    if names.is_empty() {
        format!("the flow has no {what}s")
    } else {
        format!("the flow's {what}s are {}", names.join(", "))
    }
}

/// Whether `s` is an identifier: a letter or `_`, then letters, digits and `_` (so a
/// template can write `inputs.s`, `steps.s`).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The HTTP methods a step may use.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

struct Checker {
    problems: Vec<Problem>,
    /// The flow's input names, node set names and step ids, which templates may name as
    /// `inputs.<name>`, `nodes.<name>` and `steps.<id>`.
    inputs: BTreeSet<String>,
    nodes: BTreeSet<String>,
    ids: BTreeSet<String>,
}

impl Checker {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(field, message));
    }

    fn template(&mut self, field: &str, text: &str) {
        match check_template(text) {
            Err(e) => self.push(
                field,
                format!("does not compile as a template: {}", e.message),
            ),
            Ok(()) => {
                if let Ok(t) = environment().template_from_str(text) {
                    self.references(field, t.undeclared_variables(true));
                }
            }
        }
    }

    fn expression(&mut self, field: &str, text: &str) {
        if text.trim().is_empty() {
            self.push(field, "an expression cannot be empty");
        } else if let Err(e) = check_expression(text) {
            self.push(
                field,
                format!("does not compile as an expression: {}", e.message),
            );
        } else if let Ok(x) = environment().compile_expression(text) {
            self.references(field, x.undeclared_variables(true));
        }
    }

    /// Every string in `value` compiles as a template; `field` names where it is.
    fn templates_in(&mut self, field: &str, value: &Value) {
        // The field names the value, the message quotes the string in it that is wrong.
        for s in strings_in(value) {
            if let Err(e) = check_template(s) {
                self.push(
                    field,
                    format!("{:?} does not compile as a template: {}", e.text, e.message),
                );
            } else if let Ok(t) = environment().template_from_str(s) {
                self.references(field, t.undeclared_variables(true));
            }
        }
    }

    /// A template's `inputs.<name>`, `nodes.<name>` and `steps.<id>` name an input, a node
    /// set and a step of the flow: a typo is found now, not when an execution gets there.
    fn references(&mut self, field: &str, names: HashSet<String>) {
        let mut names: Vec<_> = names.into_iter().collect();
        names.sort();
        for name in names {
            let mut parts = name.split('.');
            let (Some(root), Some(key)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (known, what) = match root {
                "inputs" => (&self.inputs, "input"),
                "nodes" => (&self.nodes, "node set"),
                "steps" => (&self.ids, "step id"),
                _ => continue,
            };
            if !known.contains(key) {
                let list = flow_has(what, known);
                let message = format!("{root}.{key}: there is no {what} {key:?}; {list}");
                self.push(field, message);
            }
        }
    }

    fn identifier(&mut self, field: &str, what: &str, name: &str) {
        if !is_identifier(name) {
            self.push(
                field,
                format!(
                    "{what} {name:?} is not an identifier (a letter or _, then letters, digits or _)"
                ),
            );
        }
    }

    fn flow_name(&mut self, doc: &FlowDoc) {
        let name = &doc.name;
        if name.is_empty() {
            self.push("name", "a flow needs a name");
        } else if name.chars().count() > MAX_NAME_LEN {
            self.push("name", format!("is longer than {MAX_NAME_LEN} characters"));
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            self.push(
                "name",
                format!("{name:?} holds {c:?}; a flow's name has letters, digits, -, _ and . only"),
            );
        }
    }

    fn input(&mut self, name: &str, spec: &InputSpec) {
        let at = format!("inputs.{name}");
        self.identifier(&at, "the input name", name);
        let kind = type_name(spec.kind);
        if let Some(d) = &spec.default {
            let field = format!("{at}.default");
            if spec.required {
                self.push(
                    &field,
                    "a required input cannot have a default (drop one of them)",
                );
            }
            if !has_type(spec.kind, d) {
                self.push(&field, format!("must be {kind}, like the input"));
            } else if let Some(why) = refusal(spec, d) {
                self.push(&field, why);
            }
        }
        if let Some(allowed) = &spec.allowed {
            if allowed.is_empty() {
                self.push(format!("{at}.enum"), "lists no value");
            }
            for (i, v) in allowed.iter().enumerate() {
                if !has_type(spec.kind, v) {
                    self.push(
                        format!("{at}.enum[{i}]"),
                        format!("must be {kind}, like the input"),
                    );
                }
            }
        }
        if let Some(p) = &spec.pattern {
            let field = format!("{at}.pattern");
            if spec.kind != InputType::String {
                self.push(
                    &field,
                    format!("only a string input has a pattern, not {kind}"),
                );
            }
            if let Err(e) = regex::Regex::new(p) {
                self.push(&field, format!("does not compile: {e}"));
            }
        }
        if spec.validate == Some(Validator::Shellsafe) && spec.kind != InputType::String {
            self.push(
                format!("{at}.validate"),
                format!("shellsafe checks strings only, not {kind}"),
            );
        }
    }

    fn node_set(&mut self, name: &str, set: &NodeSet) {
        let at = format!("nodes.{name}");
        self.identifier(&at, "the node set name", name);
        if set.limit == Some(0) {
            self.push(format!("{at}.limit"), "must be at least 1");
        }
        if let (Some(least), Some(limit)) = (set.at_least, set.limit)
            && least > limit
        {
            self.push(
                format!("{at}.at_least"),
                format!("{least} is more than the limit of {limit}"),
            );
        }
        match &set.source {
            NodeSource::Static(names) => {
                for (i, n) in names.iter().enumerate() {
                    let field = format!("{at}.static[{i}]");
                    if n.trim().is_empty() {
                        self.push(&field, "a node needs a name");
                    }
                    self.template(&field, n);
                }
            }
            NodeSource::Inventory(inv) => {
                self.template(&format!("{at}.inventory.name"), &inv.name);
                if let Some(p) = &inv.pattern {
                    self.template(&format!("{at}.inventory.pattern"), p);
                }
            }
            NodeSource::File(file) => {
                self.template(&format!("{at}.file.path"), &file.path);
            }
            NodeSource::Command(cmd) => {
                self.template(&format!("{at}.command.command"), &cmd.command);
                for (k, v) in &cmd.env {
                    self.template(&format!("{at}.command.env.{k}"), v);
                }
                if cmd.timeout.is_some_and(|t| t.0.is_zero()) {
                    self.push(format!("{at}.command.timeout"), "must be more than 0");
                }
            }
            NodeSource::Http(http) => {
                self.url(&format!("{at}.http.url"), &http.url);
                for (k, v) in &http.headers {
                    self.template(&format!("{at}.http.headers.{k}"), v);
                }
                if let Some(p) = &http.pointer
                    && !p.is_empty()
                    && !p.starts_with('/')
                {
                    self.push(
                        format!("{at}.http.pointer"),
                        format!("{p:?} is not a JSON pointer (it starts with /)"),
                    );
                }
            }
            NodeSource::Puppetdb(p) => {
                self.url(&format!("{at}.puppetdb.url"), &p.url);
                self.template(&format!("{at}.puppetdb.query"), &p.query);
            }
            NodeSource::Consul(c) => {
                self.url(&format!("{at}.consul.url"), &c.url);
                for (field, v) in [
                    ("service", &c.service),
                    ("tag", &c.tag),
                    ("datacenter", &c.datacenter),
                ] {
                    if let Some(v) = v {
                        self.template(&format!("{at}.consul.{field}"), v);
                    }
                }
            }
            NodeSource::Etcd(e) => {
                self.url(&format!("{at}.etcd.url"), &e.url);
                self.template(&format!("{at}.etcd.prefix"), &e.prefix);
            }
        }
    }

    /// A URL: a template, and when it has no template syntax, an http(s) URL.
    fn url(&mut self, field: &str, url: &str) {
        if url.contains("{{") || url.contains("{%") {
            self.template(field, url);
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.push(field, format!("{url:?} is not an http:// or https:// URL"));
        }
    }

    fn step(&mut self, doc: &FlowDoc, at: &str, step: &Step) {
        let before = self.problems.len();
        self.step_fields(doc, at, step);
        if let Some(id) = &step.id {
            // The index says where the step is, its id which one it is.
            for p in &mut self.problems[before..] {
                p.message.push_str(&format!(" [step {id:?}]"));
            }
        }
    }

    fn step_fields(&mut self, doc: &FlowDoc, at: &str, step: &Step) {
        if let Some(id) = &step.id {
            self.identifier(&format!("{at}.id"), "the step id", id);
        }
        if let Some(when) = &step.when {
            self.expression(&format!("{at}.when"), when);
        }
        if step.timeout.is_some_and(|t| t.0.is_zero()) {
            self.push(format!("{at}.timeout"), "must be more than 0");
        }
        if let Some(retry) = &step.retry {
            if retry.attempts < 1 {
                self.push(
                    format!("{at}.retry.attempts"),
                    "must be at least 1 (the first try counts)",
                );
            }
            if !(retry.backoff >= 1.0 && retry.backoff.is_finite()) {
                self.push(
                    format!("{at}.retry.backoff"),
                    format!(
                        "must be at least 1 (1 keeps the delay fixed), got {}",
                        retry.backoff
                    ),
                );
            }
            if let Some(until) = &retry.until {
                self.expression(&format!("{at}.retry.until"), until);
            }
        }
        for (name, value) in &step.publish {
            let field = format!("{at}.publish.{name}");
            self.identifier(&field, "the published name", name);
            self.template(&field, value);
        }
        let kind = step.action.kind();
        match &step.action {
            Action::Playbook(p) => self.playbook(doc, &format!("{at}.{kind}"), p),
            Action::Shell(s) => {
                self.template(&format!("{at}.shell.command"), &s.command);
                for (k, v) in &s.env {
                    self.template(&format!("{at}.shell.env.{k}"), v);
                }
                if let Some(cwd) = &s.cwd {
                    self.template(&format!("{at}.shell.cwd"), cwd);
                }
            }
            Action::Http(h) => {
                if !METHODS.contains(&h.method.to_ascii_uppercase().as_str()) {
                    self.push(
                        format!("{at}.http.method"),
                        format!(
                            "{:?} is not an HTTP method (one of {})",
                            h.method,
                            METHODS.join(", ")
                        ),
                    );
                }
                self.url(&format!("{at}.http.url"), &h.url);
                for (k, v) in &h.headers {
                    self.template(&format!("{at}.http.headers.{k}"), v);
                }
                if let Some(body) = &h.body {
                    self.templates_in(&format!("{at}.http.body"), body);
                }
                for (i, code) in h.expect.iter().enumerate() {
                    if !(100..=599).contains(code) {
                        self.push(
                            format!("{at}.http.expect[{i}]"),
                            format!("{code} is not an HTTP status (100 to 599)"),
                        );
                    }
                }
            }
            Action::Slack(s) => {
                self.url(&format!("{at}.slack.webhook"), &s.webhook);
                self.template(&format!("{at}.slack.text"), &s.text);
            }
            Action::Flow(f) => {
                let field = format!("{at}.flow.name");
                if f.name == doc.name {
                    self.push(&field, format!("the flow {:?} cannot run itself", doc.name));
                }
                self.template(&field, &f.name);
                for (k, v) in &f.inputs {
                    self.templates_in(&format!("{at}.flow.inputs.{k}"), v);
                }
            }
            Action::Sleep(_) => {}
            Action::Approval(a) => {
                if let Some(m) = &a.message {
                    self.template(&format!("{at}.approval.message"), m);
                }
                if a.timeout.is_some_and(|t| t.0.is_zero()) {
                    self.push(format!("{at}.approval.timeout"), "must be more than 0");
                }
            }
            Action::Log(line) => self.template(&format!("{at}.log"), line),
        }
    }

    fn playbook(&mut self, doc: &FlowDoc, at: &str, p: &PlaybookStep) {
        match (&p.template, &p.project, &p.playbook) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => self.push(
                at,
                "has a template and a project or playbook; give a template, or a project and a playbook",
            ),
            (None, Some(_), None) => self.push(format!("{at}.playbook"), "a project needs a playbook"),
            (None, None, Some(_)) => self.push(format!("{at}.project"), "a playbook needs its project"),
            (None, None, None) => {
                self.push(at, "needs a template, or a project and a playbook")
            }
        }
        for (field, v) in [
            ("template", &p.template),
            ("project", &p.project),
            ("playbook", &p.playbook),
            ("inventory", &p.inventory),
        ] {
            if let Some(v) = v {
                self.template(&format!("{at}.{field}"), v);
            }
        }
        if let Some(nodes) = &p.nodes
            && !doc.nodes.contains_key(nodes)
        {
            let known = flow_has("node set", doc.nodes.keys());
            self.push(
                format!("{at}.nodes"),
                format!("no node set is named {nodes:?}; {known}"),
            );
        }
        for (k, v) in &p.extra_vars {
            self.templates_in(&format!("{at}.extra_vars.{k}"), v);
        }
        let names = troupe_core::overrides::option_names();
        for (k, v) in &p.options {
            let field = format!("{at}.options.{k}");
            if !names.contains(k) {
                self.push(
                    &field,
                    format!("{k:?} is not a run option (one of {})", names.join(", ")),
                );
            }
            self.templates_in(&field, v);
        }
    }

    fn notify(&mut self, at: &str, n: &Notify) {
        if let Err(e) = n.validate(at, true) {
            self.push(&e.field, e.message);
        }
        for (field, url) in [("webhook", &n.webhook), ("slack", &n.slack)] {
            if let Some(url) = url
                && (url.contains("{{") || url.contains("{%"))
            {
                self.template(&format!("{at}.{field}"), url);
            }
        }
        for (name, value) in &n.headers {
            self.template(&format!("{at}.headers.{name}"), value);
        }
        if let Some(text) = &n.text {
            self.template(&format!("{at}.text"), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name: f`, a node set `web`, and `body` after it.
    fn doc(body: &str) -> String {
        format!("name: f\nnodes:\n  web: {{static: [a]}}\n{body}")
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load(text) {
            Err(FlowError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?} for\n{text}"),
        }
    }

    #[test]
    fn a_good_document_loads() {
        let flow = load(&doc(
            r#"inputs:
  cluster: {type: string, required: true, pattern: "[a-z]+", validate: shellsafe}
  count: {type: integer, default: 2, enum: [1, 2, 3]}
  ratio: {type: number, default: 1}
  on: {type: boolean, default: false}
  list: {type: array, default: [a]}
  obj: {type: object, default: {k: 1}}
pre:
  - id: hello
    log: "hi {{ inputs.cluster }}"
steps:
  - id: up
    playbook: {project: p, playbook: up.yml, nodes: web, extra_vars: {v: "{{ inputs.count }}"}, options: {check: true, tags: [a]}}
    retry: {attempts: 3, delay: 1s, backoff: 2, until: "result.status == 'successful'"}
  - id: t
    playbook: {template: deploy, inventory: prod}
  - id: call
    http: {method: post, url: "http://127.0.0.1/x", body: {a: "{{ steps.up.status }}"}, expect: [200, 201]}
    when: "steps.up.status == 'successful'"
    publish: {code: "{{ result.status }}"}
  - flow: {name: other, inputs: {x: "{{ inputs.count }}"}}
on_failure:
  - slack: {webhook: "{{ inputs.cluster }}", text: "{{ failure.step }} failed"}
concurrency: {key: "{{ inputs.cluster }}", limit: 2}
locks: ["lb-{{ inputs.cluster }}"]
notify:
  - {webhook: "http://127.0.0.1/hook"}
"#,
        ))
        .expect("valid");
        assert_eq!(flow.name, "f");
        let Action::Http(h) = &flow.steps[2].action else {
            panic!("an http step")
        };
        assert_eq!(h.method, "POST");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            // name
            ("name: 'bad name'\nsteps: []\n", "name", "' '"),
            (
                &format!("name: {}\nsteps: []\n", "x".repeat(101)),
                "name",
                "longer than 100",
            ),
            ("name: ''\nsteps: []\n", "name", "needs a name"),
            // inputs
            (
                "name: f\ninputs:\n  1st: {type: string}\nsteps: []\n",
                "inputs.1st",
                "identifier",
            ),
            (
                "name: f\ninputs:\n  n: {type: integer, default: '3'}\nsteps: []\n",
                "inputs.n.default",
                "an integer",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, default: 3}\nsteps: []\n",
                "inputs.n.default",
                "a string",
            ),
            (
                "name: f\ninputs:\n  n: {type: boolean, default: 1}\nsteps: []\n",
                "inputs.n.default",
                "boolean",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, enum: [a, 2]}\nsteps: []\n",
                "inputs.n.enum[1]",
                "a string",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, enum: [a], default: b}\nsteps: []\n",
                "inputs.n.default",
                "not one of",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, pattern: '[a-'}\nsteps: []\n",
                "inputs.n.pattern",
                "compile",
            ),
            (
                "name: f\ninputs:\n  n: {type: integer, pattern: '[0-9]+'}\nsteps: []\n",
                "inputs.n.pattern",
                "only a string",
            ),
            (
                "name: f\ninputs:\n  n: {type: array, validate: shellsafe}\nsteps: []\n",
                "inputs.n.validate",
                "strings only",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, required: true, default: x}\nsteps: []\n",
                "inputs.n.default",
                "required",
            ),
            (
                "name: f\ninputs:\n  n: {type: string, validate: shellsafe, default: 'a;b'}\nsteps: []\n",
                "inputs.n.default",
                "shellsafe",
            ),
            // node sets
            (
                "name: f\nnodes:\n  web-1: {static: [a]}\nsteps: []\n",
                "nodes.web-1",
                "identifier",
            ),
            (
                "name: f\nnodes:\n  w: {static: ['{{ a']}\nsteps: []\n",
                "nodes.w.static[0]",
                "template",
            ),
            (
                "name: f\nnodes:\n  w: {static: [a], limit: 0}\nsteps: []\n",
                "nodes.w.limit",
                "at least 1",
            ),
            (
                "name: f\nnodes:\n  w: {static: [a], at_least: 3, limit: 2}\nsteps: []\n",
                "nodes.w.at_least",
                "more than the limit",
            ),
            (
                "name: f\nnodes:\n  w: {http: {url: 'localhost:80'}}\nsteps: []\n",
                "nodes.w.http.url",
                "http://",
            ),
            (
                "name: f\nnodes:\n  w: {http: {url: 'http://x', pointer: 'a/b'}}\nsteps: []\n",
                "nodes.w.http.pointer",
                "JSON pointer",
            ),
            (
                "name: f\nnodes:\n  w: {puppetdb: {url: 'http://x', query: '{% if %}'}}\nsteps: []\n",
                "nodes.w.puppetdb.query",
                "template",
            ),
            // steps
            (
                &doc("steps:\n  - id: 2x\n    log: a\n"),
                "steps[0].id",
                "identifier",
            ),
            (
                &doc("steps:\n  - id: a\n    log: a\nfinally:\n  - id: a\n    log: b\n"),
                "finally[0].id",
                "steps[0]",
            ),
            (
                &doc("pre:\n  - id: a\n    log: a\nsteps:\n  - id: a\n    log: b\n"),
                "steps[0].id",
                "unique",
            ),
            (
                &doc("steps:\n  - playbook: {project: p}\n"),
                "steps[0].playbook.playbook",
                "needs a playbook",
            ),
            (
                &doc("steps:\n  - playbook: {playbook: x.yml}\n"),
                "steps[0].playbook.project",
                "needs its project",
            ),
            (
                &doc("steps:\n  - playbook: {nodes: web}\n"),
                "steps[0].playbook",
                "needs a template",
            ),
            (
                &doc("steps:\n  - playbook: {template: t, project: p, playbook: x.yml}\n"),
                "steps[0].playbook",
                "template and a project",
            ),
            (
                &doc("steps:\n  - playbook: {template: t, nodes: db}\n"),
                "steps[0].playbook.nodes",
                "web",
            ),
            (
                &doc("steps:\n  - playbook: {template: t, options: {verbose: 2}}\n"),
                "steps[0].playbook.options.verbose",
                "not a run option",
            ),
            (
                &doc("steps:\n  - playbook: {template: t, extra_vars: {a: ['{{ x }']}}\n"),
                "steps[0].playbook.extra_vars.a",
                "template",
            ),
            (
                &doc("steps:\n  - id: s\n    log: a\n    retry: {attempts: 0}\n"),
                "steps[0].retry.attempts",
                "[step \"s\", line 7]",
            ),
            (
                &doc("steps:\n  - log: a\n    retry: {attempts: 2, backoff: 0.5}\n"),
                "steps[0].retry.backoff",
                "at least 1",
            ),
            (
                &doc("steps:\n  - log: a\n    retry: {attempts: 2, until: 'result.rc =='}\n"),
                "steps[0].retry.until",
                "expression",
            ),
            (
                &doc("steps:\n  - log: a\n    when: 'a b c'\n"),
                "steps[0].when",
                "expression",
            ),
            (
                &doc("steps:\n  - log: a\n    when: ''\n"),
                "steps[0].when",
                "empty",
            ),
            (
                &doc("steps:\n  - log: a\n    timeout: 0\n"),
                "steps[0].timeout",
                "more than 0",
            ),
            (
                &doc("steps:\n  - shell: {command: 'echo ${#x}'}\n"),
                "steps[0].shell.command",
                "template",
            ),
            (
                &doc("steps:\n  - shell: {command: x, env: {A: '{{'}}\n"),
                "steps[0].shell.env.A",
                "template",
            ),
            (
                &doc("steps:\n  - log: '{{ x'\n"),
                "steps[0].log",
                "template",
            ),
            (
                &doc("steps:\n  - log: a\n    publish: {a-b: x}\n"),
                "steps[0].publish.a-b",
                "identifier",
            ),
            (
                &doc("steps:\n  - log: a\n    publish: {x: '{{ result.'}\n"),
                "steps[0].publish.x",
                "template",
            ),
            (
                &doc("steps:\n  - http: {method: FETCH, url: 'http://x'}\n"),
                "steps[0].http.method",
                "not an HTTP method",
            ),
            (
                &doc("steps:\n  - http: {url: 'http://x', expect: [200, 99]}\n"),
                "steps[0].http.expect[1]",
                "100 to 599",
            ),
            (
                &doc("steps:\n  - http: {url: 'http://x', expect: [600]}\n"),
                "steps[0].http.expect[0]",
                "100 to 599",
            ),
            (
                &doc("steps:\n  - http: {url: 'http://x', headers: {A: '{{ }}'}}\n"),
                "steps[0].http.headers.A",
                "template",
            ),
            (
                &doc("steps:\n  - http: {url: 'http://x', body: {a: [1, '{% for %}']}}\n"),
                "steps[0].http.body",
                "template",
            ),
            (
                &doc("steps:\n  - slack: {webhook: 'http://x', text: '{{ a'}\n"),
                "steps[0].slack.text",
                "template",
            ),
            (
                &doc("steps:\n  - flow: {name: f}\n"),
                "steps[0].flow.name",
                "cannot run itself",
            ),
            (
                &doc("steps:\n  - flow: {name: g, inputs: {a: '{{'}}\n"),
                "steps[0].flow.inputs.a",
                "template",
            ),
            (
                &doc("steps:\n  - approval: {message: '{{ x'}\n"),
                "steps[0].approval.message",
                "template",
            ),
            (
                &doc("steps: []\non_success:\n  - log: a\n    when: '('\n"),
                "on_success[0].when",
                "expression",
            ),
            // names a template uses
            (
                &doc("inputs:\n  count: {type: integer}\nsteps:\n  - log: '{{ inputs.cuont }}'\n"),
                "steps[0].log",
                "no input \"cuont\"; the flow's inputs are count",
            ),
            (
                &doc("steps:\n  - log: a\n    when: \"nodes.db | length > 0\"\n"),
                "steps[0].when",
                "no node set \"db\"; the flow's node sets are web",
            ),
            (
                &doc("steps:\n  - id: a\n    log: x\n  - log: '{{ steps.b.status }}'\n"),
                "steps[1].log",
                "no step id \"b\"",
            ),
            (
                &doc("steps:\n  - http: {url: 'http://x', body: {a: '{{ inputs.x }}'}}\n"),
                "steps[0].http.body",
                "the flow has no inputs",
            ),
            (
                &doc("steps: []\nconcurrency: {key: '{{ inputs.c }}'}\n"),
                "concurrency.key",
                "no input",
            ),
            // the rest
            (
                &doc("steps: []\nconcurrency: {limit: 0}\n"),
                "concurrency.limit",
                "at least 1",
            ),
            (
                &doc("steps: []\nconcurrency: {key: '{{ a'}\n"),
                "concurrency.key",
                "template",
            ),
            (
                &doc("steps: []\nlocks: [a, '{{']\n"),
                "locks[1]",
                "template",
            ),
            (&doc("steps: []\nlocks: ['']\n"), "locks[0]", "needs a name"),
            (
                &doc("steps: []\nnotify:\n  - {on: failure}\n"),
                "notify[0]",
                "webhook or a slack",
            ),
            (&doc("steps: []\ntimeout: 0\n"), "timeout", "more than 0"),
        ];
        for (text, field, word) in cases {
            let got = problems(text);
            assert!(
                got.iter()
                    .any(|p| p.field == *field && p.message.contains(word)),
                "want {field}: …{word}… in {got:?} for\n{text}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let got = problems(&doc(
            "inputs:\n  n: {type: integer, default: x}\nsteps:\n  - log: '{{'\n  - log: a\n    retry: {attempts: 0}\n",
        ));
        let fields: Vec<_> = got.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "inputs.n.default",
                "steps[0].log",
                "steps[1].retry.attempts"
            ]
        );
        let text = FlowError::Invalid(got.clone()).to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("inputs.n.default: "), "{text}");
        let json = FlowError::Invalid(got).problems_json();
        assert_eq!(json[2]["field"], "steps[1].retry.attempts");
        assert!(
            json[2]["message"]
                .as_str()
                .is_some_and(|m| m.contains("at least 1"))
        );
    }

    #[test]
    fn a_yaml_error_names_its_line() {
        let e = load("name: f\nsteps:\n  - log: a\n    retries: 3\n").expect_err("unknown key");
        let FlowError::Yaml(msg) = &e else {
            panic!("a YAML error: {e:?}")
        };
        assert!(msg.contains("line 4") && msg.contains("retries"), "{msg}");
        let json = e.problems_json();
        assert_eq!(json[0]["field"], "");
        assert!(
            json[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("retries"))
        );
    }

    #[test]
    fn problems_name_their_line() {
        let text = "name: f\ninputs:\n  n:\n    type: integer\n    default: x\nsteps:\n  - log: a\n  - id: w\n    sleep: 1\n    retry:\n      attempts: 0\nheaders_test:\n";
        // The last key is unknown: a YAML error, with its line.
        let Err(FlowError::Yaml(e)) = load(text) else {
            panic!("an unknown key")
        };
        assert!(e.contains("line 12"), "{e}");
        let got = problems(text.trim_end_matches("headers_test:\n"));
        let messages: Vec<_> = got
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "inputs.n.default",
                    "must be an integer, like the input [line 5]"
                ),
                (
                    "steps[1].retry.attempts",
                    "must be at least 1 (the first try counts) [step \"w\", line 11]"
                ),
            ]
        );
        // A key with a dot in it is still found.
        let got = problems(&doc(
            "steps:\n  - shell:\n      command: x\n      env:\n        a.b: '{{'\n",
        ));
        assert_eq!(got[0].field, "steps[0].shell.env.a.b");
        assert!(got[0].message.ends_with("[line 8]"), "{got:?}");
    }

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "web_1", "A9"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
