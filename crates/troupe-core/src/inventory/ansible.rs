//! An inventory as Ansible loads it, and its dynamic-inventory JSON.
//!
//! [`AnsibleInventory::load`] follows what ansible-core's `ini` and `yaml` inventory plugins
//! and its `InventoryData` do: groups and hosts in declaration order, host ranges and `:port`
//! expanded, INI values read as Python literals, top-level groups made children of `all`,
//! hosts in no group put in `ungrouped`. The inventory's `vars` are group variables with the
//! precedence of `group_vars/<group>.yml` files next to the inventory (how runs get them).
//! [`AnsibleInventory::to_list_json`] prints what `ansible-inventory --list` prints.

use super::{InventoryContent, InventoryFormat, expand_host_pattern, split_ini_words};
use crate::ValidationError;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The `_meta.profile` ansible-inventory prints (ansible-core 2.19 and later).
pub const JSON_PROFILE: &str = "inventory_legacy";

/// Variables that are Ansible's own bookkeeping, never printed (ansible's
/// `INTERNAL_STATIC_VARS`).
const INTERNAL_VARS: &[&str] = &[
    "ansible_config_file",
    "ansible_diff_mode",
    "ansible_facts",
    "ansible_forks",
    "ansible_inventory_sources",
    "ansible_limit",
    "ansible_playbook_python",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "inventory_dir",
    "inventory_file",
    "inventory_hostname",
    "inventory_hostname_short",
    "groups",
    "group_names",
    "omit",
    "hostvars",
    "playbook_dir",
    "play_hosts",
    "role_names",
    "ungrouped",
];

#[derive(Debug, Clone, Default)]
struct Group {
    name: String,
    hosts: Vec<usize>,
    children: Vec<usize>,
    parents: Vec<usize>,
    vars: Map<String, Value>,
    file_vars: Map<String, Value>,
    priority: i64,
}

#[derive(Debug, Clone, Default)]
struct Host {
    name: String,
    vars: Map<String, Value>,
    groups: Vec<usize>,
}

/// An inventory loaded the way Ansible loads it.
#[derive(Debug, Clone)]
pub struct AnsibleInventory {
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
}

const ALL: usize = 0;
const UNGROUPED: usize = 1;

impl AnsibleInventory {
    fn empty() -> Self {
        let mut inv = Self {
            groups: Vec::new(),
            group_index: HashMap::new(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
        };
        inv.add_group("all");
        inv.add_group("ungrouped");
        inv.add_child(ALL, UNGROUPED);
        inv
    }

    /// Loads validated content; errors as [`InventoryContent::validate`] words them.
    pub fn load(content: &InventoryContent) -> Result<Self, ValidationError> {
        let summary = content.validate()?;
        let mut inv = Self::empty();
        match content.format {
            InventoryFormat::Ini => inv.read_ini(&content.hosts)?,
            InventoryFormat::Yaml => inv.read_yaml(&content.hosts)?,
        }
        inv.reconcile();
        for (group, vars) in summary.group_vars {
            if let (Some(&g), Value::Object(vars)) = (inv.group_index.get(&group), vars) {
                inv.groups[g].file_vars = vars;
            }
        }
        Ok(inv)
    }

    fn add_group(&mut self, name: &str) -> usize {
        if let Some(&g) = self.group_index.get(name) {
            return g;
        }
        self.groups.push(Group {
            name: name.to_owned(),
            priority: 1,
            ..Group::default()
        });
        let g = self.groups.len() - 1;
        self.group_index.insert(name.to_owned(), g);
        g
    }

    fn add_host(&mut self, name: &str, group: usize, port: Option<u16>) -> usize {
        let h = match self.host_index.get(name) {
            Some(&h) => h,
            None => {
                let mut host = Host {
                    name: name.to_owned(),
                    ..Host::default()
                };
                // Like ansible's Host(name, port): the port of the first declaration.
                if let Some(p) = port {
                    host.vars.insert("ansible_port".into(), Value::from(p));
                }
                self.hosts.push(host);
                let h = self.hosts.len() - 1;
                self.host_index.insert(name.to_owned(), h);
                h
            }
        };
        if !self.groups[group].hosts.contains(&h) {
            self.groups[group].hosts.push(h);
        }
        if !self.hosts[h].groups.contains(&group) {
            self.hosts[h].groups.push(group);
        }
        h
    }

    fn is_ancestor(&self, maybe: usize, of: usize) -> bool {
        let mut stack = vec![of];
        let mut seen = vec![false; self.groups.len()];
        while let Some(g) = stack.pop() {
            for &p in &self.groups[g].parents {
                if p == maybe {
                    return true;
                }
                if !seen[p] {
                    seen[p] = true;
                    stack.push(p);
                }
            }
        }
        false
    }

    fn add_child(&mut self, parent: usize, child: usize) -> bool {
        if parent == child || self.is_ancestor(child, parent) {
            return false;
        }
        if !self.groups[parent].children.contains(&child) {
            self.groups[parent].children.push(child);
            self.groups[child].parents.push(parent);
        }
        true
    }

    fn set_group_var(&mut self, group: usize, key: String, value: Value) {
        if key == "ansible_group_priority" {
            if let Some(p) = as_int(&value) {
                self.groups[group].priority = p;
            }
        } else {
            self.groups[group].vars.insert(key, value);
        }
    }

    /// ansible's `reconcile_inventory`: parentless groups under `all`, groupless hosts in
    /// `ungrouped`, and `ungrouped` cleared of hosts that have a group.
    fn reconcile(&mut self) {
        for g in 0..self.groups.len() {
            if g != ALL && self.groups[g].parents.is_empty() {
                self.add_child(ALL, g);
            }
        }
        for h in 0..self.hosts.len() {
            let groups = self.hosts[h].groups.clone();
            if groups.contains(&UNGROUPED) {
                if groups.iter().any(|&g| g != ALL && g != UNGROUPED) {
                    self.groups[UNGROUPED].hosts.retain(|&x| x != h);
                    self.hosts[h].groups.retain(|&g| g != UNGROUPED);
                }
            } else if groups.iter().all(|&g| g == ALL) {
                self.groups[UNGROUPED].hosts.push(h);
                self.hosts[h].groups.push(UNGROUPED);
            }
        }
    }

    fn read_ini(&mut self, text: &str) -> Result<(), ValidationError> {
        let mut group = UNGROUPED;
        let mut section = Section::Hosts;
        let mut pending: Vec<(String, usize, Vec<usize>)> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            let at = |what: String| {
                ValidationError::new(
                    "invalid_inventory",
                    "hosts",
                    format!("invalid INI inventory at line {lineno}: {what}"),
                )
            };
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
                let (name, kind) = match header.0.split_once(':') {
                    None => (header.0, Section::Hosts),
                    Some((g, "vars")) => (g, Section::Vars),
                    Some((g, "children")) => (g, Section::Children),
                    Some((_, other)) => return Err(at(format!("unknown section kind {other:?}"))),
                };
                let known = self.group_index.contains_key(name);
                group = self.add_group(name);
                if kind != Section::Vars
                    && let Some(pos) = pending.iter().position(|(n, ..)| n == name)
                {
                    let (_, _, parents) = pending.remove(pos);
                    for p in parents {
                        self.add_child(p, group);
                    }
                } else if kind == Section::Vars && !known {
                    pending.push((name.to_owned(), lineno, Vec::new()));
                }
                section = kind;
                continue;
            }
            match section {
                Section::Hosts => {
                    let words = split_ini_words(line).map_err(|(_, why)| at(why))?;
                    let Some((pattern, _)) = words.first() else {
                        continue;
                    };
                    let (pattern, port) = split_port(pattern);
                    let names = expand_host_pattern(pattern).map_err(at)?;
                    let mut vars = Vec::new();
                    for (word, _) in &words[1..] {
                        let Some((k, v)) = word.split_once('=') else {
                            return Err(at(format!("expected key=value, got {word:?}")));
                        };
                        vars.push((k.to_owned(), python_literal(v)));
                    }
                    for name in names {
                        let h = self.add_host(&name, group, port);
                        for (k, v) in &vars {
                            self.hosts[h].vars.insert(k.clone(), v.clone());
                        }
                    }
                }
                Section::Vars => {
                    let Some((k, v)) = line.split_once('=') else {
                        return Err(at(format!("expected key=value, got {line:?}")));
                    };
                    self.set_group_var(group, k.trim().to_owned(), python_literal(v.trim()));
                }
                Section::Children => {
                    let child = line.split(['#', ' ', '\t']).next().unwrap_or(line);
                    match self.group_index.get(child) {
                        Some(&c) => {
                            if !self.add_child(group, c) {
                                return Err(at(format!(
                                    "adding {child:?} to {:?} would make a loop",
                                    self.groups[group].name
                                )));
                            }
                        }
                        None => match pending.iter_mut().find(|(n, ..)| n == child) {
                            Some((_, _, parents)) => parents.push(group),
                            None => pending.push((child.to_owned(), lineno, vec![group])),
                        },
                    }
                }
            }
        }
        if let Some((name, line, parents)) = pending.into_iter().next() {
            let what = if parents.is_empty() {
                format!("section [{name}:vars] is for a group that is never declared")
            } else {
                format!(
                    "[{}:children] includes undefined group {name:?}",
                    self.groups[parents[0]].name
                )
            };
            return Err(ValidationError::new(
                "invalid_inventory",
                "hosts",
                format!("invalid INI inventory at line {line}: {what}"),
            ));
        }
        Ok(())
    }

    fn read_yaml(&mut self, text: &str) -> Result<(), ValidationError> {
        let doc: Node = serde_saphyr::from_str(text).map_err(|e| {
            ValidationError::new("invalid_inventory", "hosts", format!("invalid YAML: {e}"))
        })?;
        let Node::Map(top) = doc else {
            return Ok(());
        };
        for (name, body) in top {
            self.yaml_group(&name, body);
        }
        Ok(())
    }

    /// ansible's yaml plugin `_parse_group`; validation has already refused what it would.
    fn yaml_group(&mut self, name: &str, body: Node) -> usize {
        let g = self.add_group(name);
        let Node::Map(sections) = body else {
            return g;
        };
        for (key, value) in sections {
            let entries = match value {
                Node::Map(m) => m,
                // A bare string names one host or child.
                Node::Other(Value::String(s)) if key != "vars" => vec![(s, Node::Null)],
                _ => continue,
            };
            match key.as_str() {
                "vars" => {
                    for (k, v) in entries {
                        self.set_group_var(g, k, v.into_value());
                    }
                }
                "children" => {
                    for (child, cbody) in entries {
                        let c = self.yaml_group(&child, cbody);
                        self.add_child(g, c);
                    }
                }
                "hosts" => {
                    for (pattern, vars) in entries {
                        let (pattern, port) = split_port(&pattern);
                        let names = expand_host_pattern(pattern).unwrap_or_default();
                        let vars = match vars.into_value() {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        for name in names {
                            let h = self.add_host(&name, g, port);
                            for (k, v) in &vars {
                                self.hosts[h].vars.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        g
    }

    fn depth(&self, g: usize, memo: &mut HashMap<usize, usize>) -> usize {
        if let Some(&d) = memo.get(&g) {
            return d;
        }
        let d = self.groups[g]
            .parents
            .iter()
            .map(|&p| self.depth(p, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(g, d);
        d
    }

    /// Every variable of a host as a play sees it from the inventory (ansible's variable
    /// precedence: `all`'s inline vars, other groups' inline vars by depth, priority and name,
    /// then the `vars` of `all`, then of the other groups, then the host's own).
    fn merged_host_vars(&self, h: usize) -> Map<String, Value> {
        let mut memo = HashMap::new();
        let mut groups: Vec<usize> = self.ancestry(h).into_iter().filter(|&g| g != ALL).collect();
        groups.sort_by_key(|&g| {
            (
                self.depth(g, &mut memo),
                self.groups[g].priority,
                self.groups[g].name.clone(),
            )
        });
        let mut out = Map::new();
        let layers = std::iter::once(&self.groups[ALL].vars)
            .chain(groups.iter().map(|&g| &self.groups[g].vars))
            .chain(std::iter::once(&self.groups[ALL].file_vars))
            .chain(groups.iter().map(|&g| &self.groups[g].file_vars))
            .chain(std::iter::once(&self.hosts[h].vars));
        for layer in layers {
            for (k, v) in layer {
                out.insert(k.clone(), v.clone());
            }
        }
        for k in INTERNAL_VARS {
            out.remove(*k);
        }
        out
    }

    /// The groups of a host and all their ancestors.
    fn ancestry(&self, h: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let mut stack = self.hosts[h].groups.clone();
        while let Some(g) = stack.pop() {
            if !out.contains(&g) {
                out.push(g);
                stack.extend(self.groups[g].parents.iter().copied());
            }
        }
        out
    }

    /// A host's variables as `ansible-inventory --host` prints them; `None` for an unknown
    /// host.
    pub fn host_vars(&self, name: &str) -> Option<Map<String, Value>> {
        self.host_index.get(name).map(|&h| self.merged_host_vars(h))
    }

    /// Every host name, in declaration order.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// What `ansible-inventory --list` prints: groups with their `hosts` and `children`
    /// (empty keys and empty groups left out), and `_meta.hostvars` with every host's
    /// variables, group variables merged in.
    pub fn to_list_json(&self) -> Value {
        let mut out = Map::new();
        let mut seen = vec![false; self.groups.len()];
        self.format_group(ALL, &mut out, &mut seen);
        let mut hostvars = Map::new();
        for h in self.hosts_under_all() {
            let vars = self.merged_host_vars(h);
            if !vars.is_empty() {
                hostvars.insert(self.hosts[h].name.clone(), Value::Object(vars));
            }
        }
        let mut meta = Map::new();
        meta.insert("hostvars".into(), Value::Object(hostvars));
        meta.insert("profile".into(), Value::from(JSON_PROFILE));
        out.insert("_meta".into(), Value::Object(meta));
        Value::Object(out)
    }

    /// Hosts in the order `ansible-inventory` lists `all`'s hosts.
    fn hosts_under_all(&self) -> Vec<usize> {
        let mut order = Vec::new();
        let mut seen_groups = vec![false; self.groups.len()];
        let mut seen_hosts = vec![false; self.hosts.len()];
        self.collect_hosts(ALL, &mut order, &mut seen_groups, &mut seen_hosts);
        order
    }

    fn collect_hosts(
        &self,
        g: usize,
        order: &mut Vec<usize>,
        seen_groups: &mut [bool],
        seen_hosts: &mut [bool],
    ) {
        if seen_groups[g] {
            return;
        }
        seen_groups[g] = true;
        for &h in &self.groups[g].hosts {
            if !seen_hosts[h] {
                seen_hosts[h] = true;
                order.push(h);
            }
        }
        for &c in &self.groups[g].children {
            self.collect_hosts(c, order, seen_groups, seen_hosts);
        }
    }

    fn format_group(&self, g: usize, out: &mut Map<String, Value>, seen: &mut [bool]) {
        let group = &self.groups[g];
        let mut body = Map::new();
        if g != ALL && !group.hosts.is_empty() {
            let hosts = group
                .hosts
                .iter()
                .map(|&h| Value::from(self.hosts[h].name.clone()));
            body.insert("hosts".into(), Value::Array(hosts.collect()));
        }
        let mut children = Vec::new();
        let mut nested = Map::new();
        for &c in &group.children {
            children.push(Value::from(self.groups[c].name.clone()));
            if !seen[c] {
                self.format_group(c, &mut nested, seen);
                seen[c] = true;
            }
        }
        if !children.is_empty() {
            body.insert("children".into(), Value::Array(children));
        }
        if !body.is_empty() {
            out.insert(group.name.clone(), Value::Object(body));
        }
        out.extend(nested);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Hosts,
    Vars,
    Children,
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `host:port` (not an IPv6 address, not a colon inside a range) splits into both parts.
fn split_port(pattern: &str) -> (&str, Option<u16>) {
    if let Some((host, port)) = pattern.rsplit_once(':')
        && !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
    {
        let mut depth = 0i32;
        let outside_colon = host.chars().any(|c| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ':' && depth == 0
        });
        let in_range = host.matches('[').count() > host.matches(']').count();
        if !outside_colon
            && !in_range
            && let Ok(p) = port.parse::<u16>()
        {
            return (host, Some(p));
        }
    }
    (pattern, None)
}

/// An INI value the way ansible reads it: a Python literal when it is one
/// (`ast.literal_eval`: numbers, `True`/`False`/`None`, quoted strings, lists, tuples, dicts),
/// the text itself otherwise.
pub fn python_literal(text: &str) -> Value {
    let mut p = PyParser {
        s: text.trim_start_matches([' ', '\t']).as_bytes(),
        i: 0,
        depth: 0,
    };
    match p.value() {
        Some(v) => {
            p.ws();
            if p.i == p.s.len() {
                v
            } else {
                Value::from(text)
            }
        }
        None => Value::from(text),
    }
}

/// How deeply lists, tuples and dicts may nest in a literal; deeper is text. (Python's own
/// parser stops at 200; each level here is a call, and an INI line may be 4 MiB of `[`.)
const MAX_LITERAL_DEPTH: usize = 100;

struct PyParser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl PyParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        if self.depth >= MAX_LITERAL_DEPTH {
            return None;
        }
        self.depth += 1;
        let v = self.value_at_depth();
        self.depth -= 1;
        v
    }

    fn value_at_depth(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'\'' | b'"' => self.string().map(Value::from),
            b'[' => {
                self.i += 1;
                self.items(b']').map(Value::Array)
            }
            b'(' => {
                self.i += 1;
                self.ws();
                if self.eat(b')') {
                    return Some(Value::Array(Vec::new()));
                }
                let first = self.value()?;
                if self.eat(b')') {
                    return Some(first); // parenthesised, not a tuple
                }
                if !self.eat(b',') {
                    return None;
                }
                let mut rest = self.items(b')')?;
                rest.insert(0, first);
                Some(Value::Array(rest))
            }
            b'{' => {
                self.i += 1;
                let mut map = Map::new();
                loop {
                    if self.eat(b'}') {
                        return Some(Value::Object(map));
                    }
                    let key = match self.value()? {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                        _ => return None,
                    };
                    if !self.eat(b':') {
                        return None; // a set, or not a literal
                    }
                    let v = self.value()?;
                    map.insert(key, v);
                    if !self.eat(b',') {
                        return if self.eat(b'}') {
                            Some(Value::Object(map))
                        } else {
                            None
                        };
                    }
                }
            }
            _ => self.atom(),
        }
    }

    /// Comma-separated values up to `close` (a trailing comma allowed).
    fn items(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Some(out);
            }
            out.push(self.value()?);
            if !self.eat(b',') {
                return self.eat(close).then_some(out);
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                _ if c == q => return String::from_utf8(out).ok(),
                b'\n' => return None,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'0' => out.push(0),
                        b'\\' | b'\'' | b'"' => out.push(e),
                        b'\n' => {}
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        None
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || matches!(self.s[self.i], b'_' | b'.' | b'+' | b'-'))
        {
            // `+`/`-` only as a sign or in an exponent.
            let c = self.s[self.i];
            if matches!(c, b'+' | b'-')
                && self.i != start
                && !matches!(self.s[self.i - 1], b'e' | b'E')
            {
                break;
            }
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        match word {
            "True" => return Some(Value::Bool(true)),
            "False" => return Some(Value::Bool(false)),
            "None" => return Some(Value::Null),
            _ => {}
        }
        python_number(word)
    }
}

fn python_number(word: &str) -> Option<Value> {
    let (neg, body) = match word.as_bytes().first()? {
        b'-' => (true, &word[1..]),
        b'+' => (false, &word[1..]),
        _ => (false, word),
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return None;
    }
    let clean = body.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .into_iter()
        .find(|(p, _)| lower.starts_with(p));
    if let Some((prefix, radix)) = radix {
        let n = i64::from_str_radix(&lower[prefix.len()..], radix).ok()?;
        return Some(Value::from(if neg { -n } else { n }));
    }
    if clean.bytes().all(|c| c.is_ascii_digit()) {
        // Python 3 refuses leading zeros in decimal integers ("010").
        if clean.len() > 1 && clean.starts_with('0') && clean.bytes().any(|c| c != b'0') {
            return None;
        }
        let n: i64 = clean.parse().ok()?;
        return Some(Value::from(if neg { -n } else { n }));
    }
    let is_float = clean.bytes().any(|c| c.is_ascii_digit())
        && clean
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    if is_float {
        let f: f64 = clean.parse().ok()?;
        return serde_json::Number::from_f64(if neg { -f } else { f }).map(Value::Number);
    }
    None
}

/// A YAML value that keeps the order of mapping keys (groups and hosts are ordered).
enum Node {
    Null,
    Map(Vec<(String, Node)>),
    Other(Value),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Map(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
            Node::Other(v) => v,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Other(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Other(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item.into_value());
        }
        Ok(Node::Other(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<KeyString, Node>()? {
            // A repeated key: the last one wins, as in PyYAML.
            entries.retain(|(existing, _)| *existing != k.0);
            entries.push((k.0, v));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (YAML allows numbers and booleans as keys; Ansible stringifies them).
struct KeyString(String);

impl<'de> serde::Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(KeyString(match v {
            Value::String(s) => s,
            Value::Null => "None".into(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            other => other.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(format: InventoryFormat, hosts: &str, vars: Option<&str>) -> AnsibleInventory {
        AnsibleInventory::load(&InventoryContent {
            format,
            hosts: hosts.into(),
            vars: vars.map(Into::into),
        })
        .expect("valid inventory")
    }

    #[test]
    fn python_literals_like_ast_literal_eval() {
        assert_eq!(python_literal("1"), json!(1));
        assert_eq!(python_literal("-2.5"), json!(-2.5));
        assert_eq!(python_literal("0x10"), json!(16));
        assert_eq!(python_literal("1_000"), json!(1000));
        assert_eq!(python_literal("010"), json!("010"));
        assert_eq!(python_literal("True"), json!(true));
        assert_eq!(python_literal("true"), json!("true"));
        assert_eq!(python_literal("None"), json!(null));
        assert_eq!(python_literal("'a b'"), json!("a b"));
        assert_eq!(python_literal("[1, 'x', (2, 3)]"), json!([1, "x", [2, 3]]));
        assert_eq!(
            python_literal("{'k': [1], 'j': None}"),
            json!({"k": [1], "j": null})
        );
        assert_eq!(
            python_literal("{{ ansible_playbook_python }}"),
            json!("{{ ansible_playbook_python }}")
        );
        assert_eq!(python_literal("1.2.3.4"), json!("1.2.3.4"));
        assert_eq!(python_literal("web"), json!("web"));
        assert_eq!(python_literal("1e3"), json!(1000.0));
        assert_eq!(python_literal("'unclosed"), json!("'unclosed"));
    }

    #[test]
    fn ini_list_matches_ansible_shape() {
        let inv = load(
            InventoryFormat::Ini,
            "solo port=1\n[web]\nweb[1:2] x=1\ndb1:2222\n[db]\ndb1\n[web:vars]\ng='w'\n[prod:children]\nweb\ndb\n[all:vars]\ng=all\nansible_connection=local\n",
            Some("web:\n  from_file: yes-web\nall:\n  g: file-all\n"),
        );
        let out = inv.to_list_json();
        assert_eq!(out["all"], json!({"children": ["ungrouped", "prod"]}));
        assert_eq!(out["ungrouped"], json!({"hosts": ["solo"]}));
        assert_eq!(out["web"], json!({"hosts": ["web1", "web2", "db1"]}));
        assert_eq!(out["prod"], json!({"children": ["web", "db"]}));
        assert_eq!(out["_meta"]["profile"], json!("inventory_legacy"));
        // web's inline g beats all's inline and file g? No: files come after inline vars.
        assert_eq!(
            out["_meta"]["hostvars"]["web1"],
            json!({"x": 1, "g": "file-all", "from_file": "yes-web", "ansible_connection": "local"})
        );
        assert_eq!(out["_meta"]["hostvars"]["db1"]["ansible_port"], json!(2222));
        assert_eq!(out["_meta"]["hostvars"]["solo"]["port"], json!(1));
        assert_eq!(
            inv.host_vars("solo").map(|v| v["g"].clone()),
            Some(json!("file-all"))
        );
        assert!(inv.host_vars("nope").is_none());
    }

    #[test]
    fn ini_undefined_groups_are_refused() {
        let bad = AnsibleInventory::load(&InventoryContent {
            format: InventoryFormat::Ini,
            hosts: "[p:children]\nmissing\n".into(),
            vars: None,
        })
        .expect_err("undefined child");
        assert!(bad.message.contains("missing"), "{}", bad.message);
        // Declared later is fine.
        let inv = load(InventoryFormat::Ini, "[p:children]\nc\n[c]\nh\n", None);
        assert_eq!(inv.to_list_json()["p"], json!({"children": ["c"]}));
    }

    #[test]
    fn yaml_keeps_order_and_expands_ranges() {
        let inv = load(
            InventoryFormat::Yaml,
            "all:\n  hosts:\n    zeta:\n    alpha:\n      a: 1\n  vars:\n    v: all\n  children:\n    web:\n      hosts:\n        w[3:4]:\n      vars:\n        v: web\n    db:\n      hosts: {d1: {v: host}}\nother:\n  hosts:\n    alpha:\n",
            None,
        );
        let out = inv.to_list_json();
        assert_eq!(
            out["all"],
            json!({"children": ["ungrouped", "web", "db", "other"]})
        );
        assert_eq!(out["ungrouped"], json!({"hosts": ["zeta"]}));
        assert_eq!(out["web"], json!({"hosts": ["w3", "w4"]}));
        assert_eq!(out["other"], json!({"hosts": ["alpha"]}));
        assert_eq!(out["_meta"]["hostvars"]["w3"], json!({"v": "web"}));
        assert_eq!(out["_meta"]["hostvars"]["d1"], json!({"v": "host"}));
        assert_eq!(out["_meta"]["hostvars"]["zeta"], json!({"v": "all"}));
        assert_eq!(
            out["_meta"]["hostvars"]["alpha"],
            json!({"v": "all", "a": 1})
        );
    }
}
