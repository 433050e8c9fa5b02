//! Property tests of the inventory parsers: `InventoryContent::validate` (YAML and INI),
//! `expand_host_pattern`, `AnsibleInventory::load` and `python_literal`.
//!
//! Each property runs `PROPTEST_CASES` cases (64 when unset, so `cargo nextest` stays quick);
//! `scripts/fuzz` runs them for longer. A failure found here becomes a named regression test
//! at the end of this file, with its input.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use troupe_core::inventory::ansible::{AnsibleInventory, python_literal};
use troupe_core::inventory::{InventoryContent, InventoryFormat, expand_host_pattern};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn content(format: InventoryFormat, hosts: &str, vars: Option<&str>) -> InventoryContent {
    InventoryContent {
        format,
        hosts: hosts.to_owned(),
        vars: vars.map(str::to_owned),
    }
}

/// Validates, loads and prints an inventory: none of it may panic; what validation accepts
/// loads with the same hosts (when the text names no `host:port`).
fn exercise(c: &InventoryContent) {
    let summary = c.validate();
    let loaded = AnsibleInventory::load(c);
    if let Ok(inv) = &loaded {
        let _ = inv.to_list_json();
        for h in inv.host_names() {
            assert!(inv.host_vars(&h).is_some(), "{h} has no vars");
        }
    }
    if summary.is_err() {
        assert!(loaded.is_err(), "load accepted what validate refused");
    }
}

// ---- host patterns ------------------------------------------------------------------------

/// One range of a host pattern and the items it stands for.
#[derive(Debug, Clone)]
struct Range {
    text: String,
    count: usize,
}

fn numeric_range() -> impl Strategy<Value = Range> {
    (0u64..40, 0u64..15, 1usize..4, any::<bool>(), any::<bool>()).prop_map(
        |(start, len, step, pad, explicit_step)| {
            let end = start + len;
            let start_text = if pad {
                format!("{start:03}")
            } else {
                start.to_string()
            };
            let (text, step) = if explicit_step || step != 1 {
                (format!("[{start_text}:{end}:{step}]"), step)
            } else {
                (format!("[{start_text}:{end}]"), 1)
            };
            Range {
                text,
                count: (len as usize) / step + 1,
            }
        },
    )
}

fn alpha_range() -> impl Strategy<Value = Range> {
    (0u8..26, 0u8..26, 1usize..4).prop_map(|(a, len, step)| {
        let a = b'a' + a;
        let b = (a + len).min(b'z');
        Range {
            text: format!("[{}:{}:{step}]", a as char, b as char),
            count: usize::from(b - a) / step + 1,
        }
    })
}

/// A pattern with up to three ranges, each followed by a separator without digits (so no two
/// expansions can spell the same name), and how many hosts it names.
fn host_pattern() -> impl Strategy<Value = (String, usize)> {
    (
        "[a-z][a-z0-9-]{0,5}",
        prop::collection::vec(
            (prop_oneof![numeric_range(), alpha_range()], "[a-z.-]{1,3}"),
            0..=3,
        ),
    )
        .prop_map(|(head, parts)| {
            let mut text = head;
            let mut count = 1;
            for (range, sep) in parts {
                text.push_str(&range.text);
                text.push_str(&sep);
                count *= range.count;
            }
            (text, count)
        })
}

// ---- YAML inventories ----------------------------------------------------------------------

fn group_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z][a-z0-9_]{0,5}",
        1 => Just("all".to_owned()),
        1 => Just("ungrouped".to_owned()),
    ]
}

fn bad_group_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-lead".to_owned()),
        Just("has space".to_owned()),
        Just("dot.ted".to_owned()),
        "[^a-zA-Z0-9_-]{1,3}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ]
}

fn vars() -> impl Strategy<Value = Value> {
    let leaf = scalar();
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A YAML group body: `hosts`, `vars`, `children` (some absent, some null), nested.
fn group_body(depth: u32) -> BoxedStrategy<Value> {
    let hosts = prop::collection::vec(
        (host_pattern(), prop_oneof![Just(Value::Null), vars()]),
        0..4,
    )
    .prop_map(|hs| {
        Value::Object(
            hs.into_iter()
                .map(|((pattern, _), v)| (pattern, v))
                .collect(),
        )
    });
    let children = if depth == 0 {
        Just(Value::Null).boxed()
    } else {
        prop::collection::vec((group_name(), group_body(depth - 1)), 0..3)
            .prop_map(|cs| Value::Object(cs.into_iter().collect()))
            .boxed()
    };
    (
        prop::option::of(hosts),
        prop::option::of(vars()),
        prop::option::of(children),
        any::<bool>(),
    )
        .prop_map(|(hosts, vars, children, empty)| {
            if empty {
                return Value::Null;
            }
            let mut m = Map::new();
            for (k, v) in [("hosts", hosts), ("vars", vars), ("children", children)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

/// Every host a YAML inventory document names, ranges expanded.
fn yaml_hosts(groups: &Map<String, Value>, out: &mut BTreeSet<String>) {
    for body in groups.values() {
        let Value::Object(body) = body else { continue };
        if let Some(Value::Object(hosts)) = body.get("hosts") {
            for pattern in hosts.keys() {
                out.extend(expand_host_pattern(pattern).expect("generated patterns expand"));
            }
        }
        if let Some(Value::Object(children)) = body.get("children") {
            yaml_hosts(children, out);
        }
    }
}

/// A YAML inventory, as JSON (which is YAML) or as block YAML.
fn yaml_inventory() -> impl Strategy<Value = (Map<String, Value>, String)> {
    (
        prop::collection::vec((group_name(), group_body(2)), 0..4),
        any::<bool>(),
    )
        .prop_map(|(groups, as_json)| {
            let doc: Map<String, Value> = groups.into_iter().collect();
            let text = if as_json {
                serde_json::to_string(&doc).expect("json")
            } else {
                serde_saphyr::to_string(&doc).expect("yaml")
            };
            (doc, text)
        })
}

// ---- INI inventories -----------------------------------------------------------------------

fn python_value() -> impl Strategy<Value = (String, Value)> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| (n.to_string(), Value::from(n))),
        any::<bool>().prop_map(|b| (if b { "True" } else { "False" }.to_owned(), Value::from(b))),
        Just(("None".to_owned(), Value::Null)),
        (-1e12f64..1e12).prop_map(|f| (format!("{f:?}"), Value::from(f))),
        "[ -~]{0,10}".prop_map(|s| (python_str(&s), Value::from(s))),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                let (texts, values): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                (format!("[{}]", texts.join(", ")), Value::Array(values))
            }),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|items| {
                let (texts, values): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                (format!("({},)", texts.join(", ")), Value::Array(values))
            }),
            prop::collection::btree_map("[a-z ]{0,6}", inner, 0..4).prop_map(|m| {
                let text = m
                    .iter()
                    .map(|(k, (t, _))| format!("{}: {t}", python_str(k)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let map = m.into_iter().map(|(k, (_, v))| (k, v)).collect();
                (format!("{{{text}}}"), Value::Object(map))
            }),
        ]
    })
}

/// A Python string literal for `s`, in single quotes.
fn python_str(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[derive(Debug, Clone)]
enum IniLine {
    Section(String, &'static str),
    Host(String, Vec<(String, String)>),
    Var(String, String),
    Child(String),
    Comment(String),
}

fn ini_line() -> impl Strategy<Value = IniLine> {
    let word_value = "[a-zA-Z0-9_.]{0,8}";
    prop_oneof![
        2 => (group_name(), prop::sample::select(vec!["", ":vars", ":children"]))
            .prop_map(|(g, k)| IniLine::Section(g, k)),
        4 => (host_pattern(), prop::collection::vec(("[a-z_]{1,6}", word_value), 0..3))
            .prop_map(|((p, _), vs)| IniLine::Host(p, vs)),
        2 => ("[a-z_]{1,6}", python_value()).prop_map(|(k, (t, _))| IniLine::Var(k, t)),
        1 => group_name().prop_map(IniLine::Child),
        1 => "[#;][ -~]{0,10}".prop_map(IniLine::Comment),
    ]
}

fn render_ini(lines: &[IniLine]) -> String {
    let mut out = String::new();
    for line in lines {
        match line {
            IniLine::Section(g, kind) => out.push_str(&format!("[{g}{kind}]")),
            IniLine::Host(p, vars) => {
                out.push_str(p);
                for (k, v) in vars {
                    out.push_str(&format!(" {k}={v}"));
                }
            }
            IniLine::Var(k, v) => out.push_str(&format!("{k}={v}")),
            IniLine::Child(g) => out.push_str(g),
            IniLine::Comment(c) => out.push_str(c),
        }
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn validate_never_panics_on_any_text(text in any::<String>(), vars in prop::option::of(any::<String>())) {
        for format in [InventoryFormat::Yaml, InventoryFormat::Ini] {
            exercise(&content(format, &text, vars.as_deref()));
        }
        let _ = InventoryFormat::detect(&text);
    }

    #[test]
    fn validate_never_panics_on_inventory_like_text(
        text in r"([\[\]:=#;'\x22 \n\t{}a-z0-9,._-]|all|vars|children|hosts){0,80}",
    ) {
        for format in [InventoryFormat::Yaml, InventoryFormat::Ini] {
            exercise(&content(format, &text, None));
        }
    }

    #[test]
    fn host_pattern_expands_to_the_product_of_its_ranges((pattern, count) in host_pattern()) {
        let hosts = expand_host_pattern(&pattern).map_err(TestCaseError::fail)?;
        prop_assert_eq!(hosts.len(), count, "{}", pattern);
        let distinct: BTreeSet<&String> = hosts.iter().collect();
        prop_assert_eq!(distinct.len(), count, "names repeat in {:?}", hosts);
        let head = &pattern[..pattern.find('[').unwrap_or(pattern.len())];
        for h in &hosts {
            prop_assert!(h.starts_with(head));
            prop_assert!(!h.contains(['[', ']', ':']), "{}", h);
        }
    }

    #[test]
    fn host_pattern_never_panics(pattern in r"([a-z0-9:.-]|\[|\]){0,40}") {
        if let Ok(hosts) = expand_host_pattern(&pattern) {
            prop_assert!(!hosts.is_empty());
            prop_assert!(hosts.len() <= 100_000);
            for h in &hosts {
                prop_assert!(!h.contains(['[', ']']), "{} from {}", h, pattern);
            }
        }
    }

    #[test]
    fn yaml_inventories_validate_and_load_with_the_same_hosts((doc, text) in yaml_inventory()) {
        let c = content(InventoryFormat::Yaml, &text, None);
        let summary = c.validate().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut expected = BTreeSet::new();
        yaml_hosts(&doc, &mut expected);
        prop_assert_eq!(&summary.hosts, &expected);
        let inv = AnsibleInventory::load(&c).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let loaded: BTreeSet<String> = inv.host_names().into_iter().collect();
        prop_assert_eq!(&loaded, &expected);
        let list = inv.to_list_json();
        prop_assert!(list.get("_meta").is_some());
        // Text that validated still validates once printed as YAML again.
        let reprinted = serde_saphyr::to_string(&doc).expect("yaml");
        prop_assert_eq!(content(InventoryFormat::Yaml, &reprinted, None).validate().ok(), Some(summary));
    }

    #[test]
    fn yaml_inventories_with_a_bad_group_name_are_refused(
        (doc, _) in yaml_inventory(),
        bad in bad_group_name(),
    ) {
        let mut doc = doc;
        doc.insert(bad.clone(), json!({"hosts": {"h1": null}}));
        let text = serde_json::to_string(&doc).expect("json");
        let err = content(InventoryFormat::Yaml, &text, None).validate();
        prop_assert!(err.is_err(), "{:?} was accepted", bad);
        exercise(&content(InventoryFormat::Yaml, &text, None));
    }

    #[test]
    fn ini_inventories_never_panic_and_load_what_validates(
        lines in prop::collection::vec(ini_line(), 0..20),
        vars in prop::option::of(vars().prop_map(|v| json!({"all": v}))),
    ) {
        let text = render_ini(&lines);
        let vars_text = vars.map(|v| serde_saphyr::to_string(&v).expect("yaml"));
        let c = content(InventoryFormat::Ini, &text, vars_text.as_deref());
        exercise(&c);
        if let (Ok(summary), Ok(inv)) = (c.validate(), AnsibleInventory::load(&c)) {
            let loaded: BTreeSet<String> = inv.host_names().into_iter().collect();
            prop_assert_eq!(loaded, summary.hosts, "{}", text);
        }
    }

    #[test]
    fn python_literal_never_panics(text in any::<String>()) {
        let _ = python_literal(&text);
    }

    #[test]
    fn python_literal_reads_what_python_would_print((text, value) in python_value()) {
        prop_assert_eq!(python_literal(&text), value, "{}", text);
    }

    #[test]
    fn python_literal_keeps_text_that_is_no_literal(text in "[a-z][a-z /]{0,12}") {
        prop_assume!(!matches!(text.as_str(), "True" | "False" | "None"));
        prop_assert_eq!(python_literal(&text), Value::from(text.clone()));
    }
}

// ---- regressions: inputs the properties above found --------------------------------------

/// A value nested deeper than any inventory needs is text, not a stack overflow: an INI line
/// is up to 4 MiB, and each `[` was one more call.
#[test]
fn python_literal_of_a_deeply_nested_list_is_text() {
    let text = "[".repeat(200_000) + &"]".repeat(200_000);
    assert_eq!(python_literal(&text), Value::from(text.clone()));
    let shallow = "[".repeat(50) + &"]".repeat(50);
    assert!(python_literal(&shallow).is_array());
}

/// Every range in a host pattern was one more call for the rest of the pattern.
#[test]
fn a_host_pattern_of_many_ranges_expands_without_overflowing_the_stack() {
    let pattern = format!("h{}", "[a:a]".repeat(200_000));
    let hosts = expand_host_pattern(&pattern).expect("one host");
    assert_eq!(hosts, vec![format!("h{}", "a".repeat(200_000))]);
    let c = content(InventoryFormat::Ini, &format!("{pattern}\n"), None);
    assert_eq!(c.validate().map(|s| s.hosts.len()).ok(), Some(1));
}

/// A few ranges times a long name was gigabytes of host names before any limit was checked.
#[test]
fn a_host_pattern_that_expands_to_gigabytes_is_refused() {
    let pattern = format!("{}{}", "[1:2]".repeat(16), "x".repeat(4 * 1024 * 1024 - 80));
    let err = expand_host_pattern(&pattern).expect_err("too large");
    assert!(err.contains("MiB of host names"), "{err}");
}

/// A `]` before the first range was taken as part of the head of the name.
#[test]
fn a_stray_closing_bracket_before_a_range_is_refused() {
    let err = expand_host_pattern("a]b[1:2]").expect_err("unbalanced");
    assert!(err.contains("unbalanced ']'"), "{err}");
}
