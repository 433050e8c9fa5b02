//! Inventories in Pansible's shape: `hosts` is an Ansible inventory (YAML or INI text) and
//! `vars` a YAML mapping of group name to variables. Both are checked here, with line and
//! column on errors, before anything is stored.

use crate::ValidationError;
use crate::project::validate_name;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

pub mod ansible;

/// How an inventory's `hosts` text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InventoryFormat {
    /// Ansible's YAML inventory (`all: {hosts: ..., children: ...}`).
    Yaml,
    /// Ansible's INI inventory (`[group]` sections, `host key=value`).
    Ini,
}

impl InventoryFormat {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryFormat::Yaml => "yaml",
            InventoryFormat::Ini => "ini",
        }
    }

    /// Guesses the format of inline hosts text: a YAML mapping is YAML, anything else INI.
    pub fn detect(text: &str) -> Self {
        match serde_saphyr::from_str::<Value>(text) {
            Ok(Value::Object(_)) => InventoryFormat::Yaml,
            _ => InventoryFormat::Ini,
        }
    }
}

/// The content of an inventory: what ansible reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InventoryContent {
    /// How `hosts` is written.
    pub format: InventoryFormat,
    /// The inventory text.
    pub hosts: String,
    /// Optional YAML mapping of group name to that group's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<String>,
}

/// What validation learned about an inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventorySummary {
    /// Every host, with range patterns (`web[1:3]`) expanded.
    pub hosts: BTreeSet<String>,
    /// Every group named, `all` and `ungrouped` excluded.
    pub groups: BTreeSet<String>,
    /// Group variables from `vars`, by group.
    pub group_vars: Map<String, Value>,
}

impl InventoryContent {
    /// The inventory ansible's configuration names: troupe writes none and passes no `-i`, so
    /// ansible-playbook reads the project's `ansible.cfg` `inventory` (or ansible's default), as
    /// it does when started without `-i`. Kept as an empty text, which [`validate`] refuses
    /// from anyone else.
    ///
    /// [`validate`]: InventoryContent::validate
    pub fn from_ansible_config() -> Self {
        InventoryContent {
            format: InventoryFormat::Ini,
            hosts: String::new(),
            vars: None,
        }
    }

    /// Whether this is [`InventoryContent::from_ansible_config`].
    pub fn is_from_ansible_config(&self) -> bool {
        self.hosts.trim().is_empty() && self.vars.is_none()
    }

    /// Parses and checks the content; errors name `hosts` or `vars` with line and column. An
    /// empty text is refused: leaving the inventory out is how a run uses the one ansible's
    /// configuration names.
    pub fn validate(&self) -> Result<InventorySummary, ValidationError> {
        if self.is_from_ansible_config() {
            return Err(ValidationError::new(
                "invalid_inventory",
                "hosts",
                "the inventory is empty: give hosts, or leave the inventory out to use the one \
                 ansible's configuration (the project's ansible.cfg) names",
            ));
        }
        if self.hosts.len() > MAX_INVENTORY_BYTES {
            return Err(ValidationError::new(
                "invalid_inventory",
                "hosts",
                format!("inventory is larger than {MAX_INVENTORY_BYTES} bytes"),
            ));
        }
        let mut summary = match self.format {
            InventoryFormat::Yaml => parse_yaml(&self.hosts)?,
            InventoryFormat::Ini => parse_ini(&self.hosts)?,
        };
        if let Some(vars) = &self.vars {
            summary.group_vars = parse_group_vars(vars)?;
        }
        Ok(summary)
    }
}

/// The largest inventory text accepted.
pub const MAX_INVENTORY_BYTES: usize = 4 * 1024 * 1024;

/// A stored inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inventory {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free-form environment label (Pansible's `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Free-form version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The inventory itself.
    #[serde(flatten)]
    pub content: InventoryContent,
    /// Number of hosts, ranges expanded.
    pub host_count: i64,
    /// 1 when created, bumped by every update.
    pub revision: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An inventory to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInventory {
    /// Unique name.
    pub name: String,
    /// Environment label.
    #[serde(default)]
    pub env: Option<String>,
    /// Version label.
    #[serde(default)]
    pub version: Option<String>,
    /// How `hosts` is written.
    pub format: InventoryFormat,
    /// The inventory text.
    pub hosts: String,
    /// YAML mapping of group name to variables.
    #[serde(default)]
    pub vars: Option<String>,
}

impl NewInventory {
    /// Checks every field; returns what the inventory holds.
    pub fn validate(&self) -> Result<InventorySummary, ValidationError> {
        validate_name(&self.name, "name")?;
        for (field, v) in [("env", &self.env), ("version", &self.version)] {
            if v.as_ref().is_some_and(|v| v.len() > 100) {
                return Err(ValidationError::new(
                    "invalid_field",
                    field,
                    "must be at most 100 characters",
                ));
            }
        }
        self.content().validate()
    }

    /// The inventory content part.
    pub fn content(&self) -> InventoryContent {
        InventoryContent {
            format: self.format,
            hosts: self.hosts.clone(),
            vars: self.vars.clone(),
        }
    }
}

fn yaml_error(field: &str, e: &serde_saphyr::Error) -> ValidationError {
    let message = match e.location() {
        Some(loc) => format!(
            "invalid YAML at line {}, column {}: {e}",
            loc.line(),
            loc.column()
        ),
        None => format!("invalid YAML: {e}"),
    };
    ValidationError::new("invalid_inventory", field, message)
}

fn structure_error(field: &str, path: &str, what: &str) -> ValidationError {
    ValidationError::new("invalid_inventory", field, format!("{path}: {what}"))
}

fn parse_yaml(text: &str) -> Result<InventorySummary, ValidationError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| yaml_error("hosts", &e))?;
    let Value::Object(groups) = doc else {
        return Err(structure_error(
            "hosts",
            "(top level)",
            "a YAML inventory must be a mapping of group names (usually `all:`)",
        ));
    };
    let mut summary = InventorySummary::default();
    for (name, body) in &groups {
        yaml_group(name, body, name, &mut summary)?;
    }
    Ok(summary)
}

fn yaml_group(
    name: &str,
    body: &Value,
    path: &str,
    out: &mut InventorySummary,
) -> Result<(), ValidationError> {
    check_group_name(name, "hosts", path)?;
    if !matches!(name, "all" | "ungrouped") {
        out.groups.insert(name.to_owned());
    }
    let body = match body {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(structure_error("hosts", path, "a group must be a mapping")),
    };
    for (key, value) in body {
        let sub = format!("{path}.{key}");
        match key.as_str() {
            "hosts" => match value {
                Value::Null => {}
                Value::Object(hosts) => {
                    for (pattern, hv) in hosts {
                        if !matches!(hv, Value::Null | Value::Object(_)) {
                            return Err(structure_error(
                                "hosts",
                                &format!("{sub}.{pattern}"),
                                "host variables must be a mapping",
                            ));
                        }
                        out.hosts
                            .extend(expand_host_pattern(pattern).map_err(|why| {
                                structure_error("hosts", &format!("{sub}.{pattern}"), &why)
                            })?);
                    }
                }
                _ => {
                    return Err(structure_error(
                        "hosts",
                        &sub,
                        "hosts must be a mapping of host name to variables",
                    ));
                }
            },
            "vars" => {
                if !matches!(value, Value::Null | Value::Object(_)) {
                    return Err(structure_error("hosts", &sub, "vars must be a mapping"));
                }
            }
            "children" => match value {
                Value::Null => {}
                Value::Object(children) => {
                    for (child, cbody) in children {
                        yaml_group(child, cbody, &format!("{sub}.{child}"), out)?;
                    }
                }
                _ => {
                    return Err(structure_error(
                        "hosts",
                        &sub,
                        "children must be a mapping of group names",
                    ));
                }
            },
            other => {
                return Err(structure_error(
                    "hosts",
                    &sub,
                    &format!("unknown key {other:?} in a group (expected hosts, vars or children)"),
                ));
            }
        }
    }
    Ok(())
}

fn check_group_name(name: &str, field: &str, path: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(structure_error(
            field,
            path,
            &format!("{name:?} is not a valid group name (letters, digits, '_' and '-')"),
        ))
    }
}

fn parse_group_vars(text: &str) -> Result<Map<String, Value>, ValidationError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| yaml_error("vars", &e))?;
    let map = match doc {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        _ => {
            return Err(structure_error(
                "vars",
                "(top level)",
                "vars must be a mapping of group name to variables",
            ));
        }
    };
    for (group, vars) in &map {
        check_group_name(group, "vars", group)?;
        if !matches!(vars, Value::Null | Value::Object(_)) {
            return Err(structure_error(
                "vars",
                group,
                "a group's variables must be a mapping",
            ));
        }
    }
    Ok(map)
}

#[derive(Clone, Copy, PartialEq)]
enum IniSection {
    Hosts,
    Vars,
    Children,
}

fn parse_ini(text: &str) -> Result<InventorySummary, ValidationError> {
    let mut summary = InventorySummary::default();
    let mut section = IniSection::Hosts;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim();
        let at = |col: usize, what: String| {
            ValidationError::new(
                "invalid_inventory",
                "hosts",
                format!("invalid INI inventory at line {lineno}, column {col}: {what}"),
            )
        };
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(header) = rest.strip_suffix(']') else {
                return Err(at(
                    indent + line.len(),
                    "section header is missing ']'".into(),
                ));
            };
            let (group, kind) = match header.split_once(':') {
                None => (header, IniSection::Hosts),
                Some((g, "vars")) => (g, IniSection::Vars),
                Some((g, "children")) => (g, IniSection::Children),
                Some((_, other)) => {
                    return Err(at(
                        indent + 2 + header.find(':').unwrap_or(0),
                        format!("unknown section kind {other:?} (expected vars or children)"),
                    ));
                }
            };
            check_group_name(group, "hosts", &format!("line {lineno}"))
                .map_err(|_| at(indent + 2, format!("{group:?} is not a valid group name")))?;
            if !matches!(group, "all" | "ungrouped") {
                summary.groups.insert(group.to_owned());
            }
            section = kind;
            continue;
        }
        match section {
            IniSection::Hosts => {
                let tokens = split_ini_words(line).map_err(|(col, why)| at(indent + col, why))?;
                let Some((pattern, _)) = tokens.first() else {
                    continue;
                };
                summary
                    .hosts
                    .extend(expand_host_pattern(pattern).map_err(|why| at(indent + 1, why))?);
                for (word, col) in &tokens[1..] {
                    if !word.contains('=') {
                        return Err(at(
                            indent + col,
                            format!("expected key=value after the host name, got {word:?}"),
                        ));
                    }
                }
            }
            IniSection::Vars => {
                if !line.contains('=') {
                    return Err(at(indent + 1, format!("expected key=value, got {line:?}")));
                }
            }
            IniSection::Children => {
                check_group_name(line, "hosts", "")
                    .map_err(|_| at(indent + 1, format!("{line:?} is not a valid group name")))?;
                summary.groups.insert(line.to_owned());
            }
        }
    }
    Ok(summary)
}

/// Splits an INI host line into words the way Ansible does (shell-like: quotes group words,
/// `#` starts a comment outside quotes), with each word's 1-based column.
fn split_ini_words(line: &str) -> Result<Vec<(String, usize)>, (usize, String)> {
    let mut words = Vec::new();
    let mut current: Option<(String, usize)> = None;
    let mut quote: Option<(char, usize)> = None;
    for (i, c) in line.char_indices() {
        let col = i + 1;
        match quote {
            Some((q, _)) if c == q => quote = None,
            Some(_) => current
                .get_or_insert_with(|| (String::new(), col))
                .0
                .push(c),
            None if c == '\'' || c == '"' => {
                quote = Some((c, col));
                current.get_or_insert_with(|| (String::new(), col));
            }
            None if c.is_whitespace() => words.extend(current.take()),
            None if c == '#' && current.is_none() => break,
            None => current
                .get_or_insert_with(|| (String::new(), col))
                .0
                .push(c),
        }
    }
    if let Some((q, col)) = quote {
        return Err((col, format!("unclosed {q} quote")));
    }
    words.extend(current);
    Ok(words)
}

/// The most hosts one range pattern may expand to.
const MAX_EXPANSION: usize = 100_000;

/// The most bytes of host names one range pattern may expand to.
const MAX_EXPANSION_BYTES: usize = 64 * 1024 * 1024;

/// Expands Ansible host range patterns: `web[1:3]`, `db[01:10:2].example.com`, `[a:c]x`.
pub fn expand_host_pattern(pattern: &str) -> Result<Vec<String>, String> {
    if pattern.is_empty() {
        return Err("empty host name".into());
    }
    // Built left to right, one range at a time: a pattern of many ranges costs no stack, and
    // the size of what it expands to is known before it is allocated.
    let mut names = vec![String::new()];
    let mut bytes = 0usize;
    let mut rest = pattern;
    loop {
        let (head, items, after) = match rest.find('[') {
            None => (rest, vec![String::new()], ""),
            Some(open) => {
                // An IPv6 address in brackets is not a range.
                let Some(close_rel) = rest[open..].find(']') else {
                    return Err(format!("unbalanced '[' in host pattern {pattern:?}"));
                };
                let close = open + close_rel;
                let items = range_items(&rest[open + 1..close], pattern)?;
                (&rest[..open], items, &rest[close + 1..])
            }
        };
        if head.contains(']') {
            return Err(format!("unbalanced ']' in host pattern {pattern:?}"));
        }
        let count = names.len().saturating_mul(items.len());
        if count > MAX_EXPANSION {
            return Err(format!(
                "{pattern:?} expands to more than {MAX_EXPANSION} hosts"
            ));
        }
        let added: usize = items
            .iter()
            .map(|item| names.len().saturating_mul(head.len() + item.len()))
            .fold(0usize, usize::saturating_add);
        bytes = bytes.saturating_mul(items.len()).saturating_add(added);
        if bytes > MAX_EXPANSION_BYTES {
            return Err(format!(
                "{pattern:?} expands to more than {} MiB of host names",
                MAX_EXPANSION_BYTES / (1024 * 1024)
            ));
        }
        if let [item] = items.as_slice() {
            for name in &mut names {
                name.push_str(head);
                name.push_str(item);
            }
        } else {
            names = names
                .iter()
                .flat_map(|name| items.iter().map(move |item| format!("{name}{head}{item}")))
                .collect();
        }
        if after.is_empty() {
            return Ok(names);
        }
        rest = after;
    }
}

/// What one `[start:end]` or `[start:end:step]` range of `pattern` stands for.
fn range_items(inner: &str, pattern: &str) -> Result<Vec<String>, String> {
    let fields: Vec<&str> = inner.split(':').collect();
    let (start, end, step) = match fields.as_slice() {
        [s, e] => (*s, *e, 1usize),
        [s, e, st] => (
            *s,
            *e,
            st.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid step {st:?} in host pattern {pattern:?}"))?,
        ),
        _ => {
            return Err(format!(
                "invalid range [{inner}] in host pattern {pattern:?}"
            ));
        }
    };
    if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return Err(format!("range start is after its end in {pattern:?}"));
        }
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        Ok((a..=b)
            .step_by(step)
            .take(MAX_EXPANSION + 1)
            .map(|n| format!("{n:0width$}"))
            .collect())
    } else if start.len() == 1 && end.len() == 1 {
        let (a, b) = (start.as_bytes()[0], end.as_bytes()[0]);
        if !(a.is_ascii_alphabetic() && b.is_ascii_alphabetic()) || a > b {
            return Err(format!("invalid alphabetic range [{inner}] in {pattern:?}"));
        }
        Ok((a..=b)
            .step_by(step)
            .map(|c| (c as char).to_string())
            .collect())
    } else {
        Err(format!(
            "invalid range [{inner}] in host pattern {pattern:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_inventory_is_refused_and_means_ansibles_own() {
        for hosts in ["", "  \n"] {
            let content = InventoryContent {
                format: InventoryFormat::Yaml,
                hosts: hosts.into(),
                vars: None,
            };
            assert!(content.is_from_ansible_config());
            let err = content.validate().expect_err("empty");
            assert_eq!(err.field, "hosts");
        }
        assert!(InventoryContent::from_ansible_config().is_from_ansible_config());
        let with_vars = InventoryContent {
            vars: Some("web: {port: 80}\n".into()),
            ..InventoryContent::from_ansible_config()
        };
        assert!(!with_vars.is_from_ansible_config());
        assert!(ini("localhost\n").is_ok());
    }

    fn yaml(hosts: &str) -> Result<InventorySummary, ValidationError> {
        InventoryContent {
            format: InventoryFormat::Yaml,
            hosts: hosts.into(),
            vars: None,
        }
        .validate()
    }

    fn ini(hosts: &str) -> Result<InventorySummary, ValidationError> {
        InventoryContent {
            format: InventoryFormat::Ini,
            hosts: hosts.into(),
            vars: None,
        }
        .validate()
    }

    #[test]
    fn pansible_example_counts_hosts() {
        let s = yaml(
            "all:\n  hosts:\n    localhost:\n  children:\n    webservers:\n      hosts:\n        foo.example[3:5].com:\n    dbservers:\n      hosts:\n        one.example.com:\n        two.example.com:\n",
        )
        .expect("valid");
        assert_eq!(s.hosts.len(), 6);
        assert!(s.hosts.contains("foo.example4.com"));
        assert_eq!(
            s.groups.iter().cloned().collect::<Vec<_>>(),
            vec!["dbservers".to_string(), "webservers".to_string()]
        );
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let err = yaml("all:\n  hosts:\n    a: [\n").expect_err("bad yaml");
        assert_eq!(err.field, "hosts");
        assert!(err.message.contains("line"), "{}", err.message);
        let err = yaml("all:\n  hostz:\n    a:\n").expect_err("unknown key");
        assert!(err.message.contains("all.hostz"), "{}", err.message);
        let err = yaml("- a\n- b\n").expect_err("not a mapping");
        assert!(err.message.contains("mapping"));
    }

    #[test]
    fn ini_inventory() {
        let s = ini("# c\nlocalhost ansible_connection=local\n[web]\nweb[01:03] x=1\n[web:vars]\nport=80\n[all:children]\nweb\n")
            .expect("valid");
        assert_eq!(s.hosts.len(), 4);
        assert!(s.hosts.contains("web02"));
        let err = ini("[web\nhost\n").expect_err("bad header");
        assert!(err.message.contains("line 1"), "{}", err.message);
        let err = ini("[web]\nhost novalue\n").expect_err("bad var");
        assert!(err.message.contains("line 2, column 6"), "{}", err.message);
        let s =
            ini("gone ansible_host=127.0.0.1 ansible_ssh_common_args='-o ConnectTimeout=3' # c\n")
                .expect("quoted values with spaces");
        assert!(s.hosts.contains("gone"));
        let err = ini("h x='unclosed\n").expect_err("unclosed quote");
        assert!(err.message.contains("column 5"), "{}", err.message);
        let err = ini("[web:bogus]\n").expect_err("bad kind");
        assert!(err.message.contains("bogus"));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            expand_host_pattern("h[a:c]").expect("alpha"),
            vec!["ha", "hb", "hc"]
        );
        assert_eq!(
            expand_host_pattern("n[0:4:2]x[1:2]").expect("two ranges"),
            vec!["n0x1", "n0x2", "n2x1", "n2x2", "n4x1", "n4x2"]
        );
        assert!(expand_host_pattern("h[3:1]").is_err());
        assert!(expand_host_pattern("h[1:2").is_err());
        assert!(expand_host_pattern("h[0:9999999]").is_err());
    }

    #[test]
    fn group_vars_must_be_mappings() {
        let c = InventoryContent {
            format: InventoryFormat::Ini,
            hosts: "a\n".into(),
            vars: Some("all:\n  k: v\nweb: 3\n".into()),
        };
        assert_eq!(c.validate().expect_err("scalar vars").field, "vars");
    }

    #[test]
    fn detects_format() {
        assert_eq!(
            InventoryFormat::detect("all:\n  hosts:\n    a:\n"),
            InventoryFormat::Yaml
        );
        assert_eq!(
            InventoryFormat::detect("a ansible_connection=local\n"),
            InventoryFormat::Ini
        );
        assert_eq!(InventoryFormat::detect("[web]\na\n"), InventoryFormat::Ini);
    }
}
