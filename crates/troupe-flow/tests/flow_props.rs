//! Property tests of the flow document (`troupe_flow::load`) and its Jinja expressions
//! (`expr`): nothing panics on any text or on documents built from the flow grammar, a flow
//! that loads loads again, to the same document, once printed back, and explaining it works.
//!
//! `PROPTEST_CASES` cases each (64 when unset); `scripts/fuzz` runs them for longer. A failure
//! found here becomes a named regression test at the end of this file, with its input.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use troupe_flow::expr;
use troupe_flow::{explain, load};

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

/// Loads and explains; a flow that loads loads again from its YAML and JSON printing.
fn exercise(text: &str) -> Result<(), TestCaseError> {
    let doc = match load(text) {
        Ok(doc) => doc,
        Err(e) => {
            prop_assert!(
                !e.to_string().trim().is_empty(),
                "an empty error for\n{}",
                text
            );
            return Ok(());
        }
    };
    let _ = explain(&doc);
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again = load(&yaml)
        .map_err(|e| TestCaseError::fail(format!("{e}\nfrom:\n{text}\nprinted:\n{yaml}")))?;
    prop_assert_eq!(&again, &doc, "YAML printing changed the flow:\n{}", yaml);
    let json = serde_json::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again = load(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
    prop_assert_eq!(&again, &doc);
    Ok(())
}

fn put(m: &mut Value, key: &str, value: Option<Value>) {
    if let (Value::Object(m), Some(v)) = (m, value) {
        m.insert(key.to_owned(), v);
    }
}

fn ident() -> impl Strategy<Value = String> {
    prop_oneof![
        49 => "[a-z][a-z0-9_]{0,6}",
        1 => "[ -~]{0,5}",
    ]
}

/// Jinja text over what a flow sees: mostly well-formed expressions (operands joined by
/// operators, filters, tests), sometimes tokens in any order.
fn expression() -> impl Strategy<Value = String> {
    // What every flow() has: inputs tier and n, node set web.
    let operand = prop_oneof![
        Just("inputs.tier".to_owned()),
        Just("inputs.n".to_owned()),
        Just("nodes.web".to_owned()),
        Just("execution.id".to_owned()),
        any::<i32>().prop_map(|n| n.to_string()),
        "'[a-z %{}]{0,5}'",
        Just("[1, 'a']".to_owned()),
        Just("range(9)".to_owned()),
    ];
    let operand = operand.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|o| format!("({o})")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "trim",
                    "join(' ')",
                    "length",
                    "lower",
                    "default(1)",
                    "int",
                    "float",
                    "tojson",
                    "string",
                    "first",
                    "list",
                ])
            )
                .prop_map(|(o, f)| format!("{o} | {f}")),
            (
                inner,
                prop::sample::select(vec!["defined", "undefined", "string", "none"])
            )
                .prop_map(|(o, t)| format!("{o} is {t}")),
        ]
    });
    let well_formed = (
        operand.clone(),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "==", "!=", "and", "or", "in", "not in", "~", "+", "-", "*", "/", "//", "%",
                    "**", "<", ">=",
                ]),
                operand,
            ),
            0..3,
        ),
    )
        .prop_map(|(first, rest)| {
            rest.into_iter()
                .fold(first, |acc, (op, o)| format!("{acc} {op} {o}"))
        });
    let token = prop_oneof![
        "[a-z]{1,5}",
        any::<i32>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "==",
            "and",
            "not",
            "in",
            "is",
            "|",
            "(",
            ")",
            "[",
            "]",
            ".",
            ",",
            "{{",
            "}}",
            "{%",
            "%}",
            "if",
            "else",
            "inputs",
            "**",
            "lower()",
            "items()",
            "split(',')",
        ])
        .prop_map(str::to_owned),
    ];
    let soup = prop::collection::vec(token, 1..8).prop_map(|t| t.join(" "));
    prop_oneof![20 => well_formed, 1 => soup]
}

fn template() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,8}",
        expression().prop_map(|e| format!("{{{{ {e} }}}}")),
        (expression(), "[a-z ]{0,5}").prop_map(|(e, t)| format!("{t}{{{{ {e} }}}}{t}")),
    ]
}

fn duration() -> impl Strategy<Value = Value> {
    prop_oneof![
        20 => (0u64..100_000, prop::sample::select(vec!["s", "m", "h", "ms", "d"]))
            .prop_map(|(n, u)| Value::from(format!("{n}{u}"))),
        10 => any::<u32>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => "[ -~]{0,6}".prop_map(Value::from),
    ]
}

fn input_spec() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            40 => prop::sample::select(vec!["string", "integer", "number", "boolean", "array", "object"]),
            1 => Just("nonsense"),
        ],
        prop::bool::weighted(0.2),
        prop::option::of(prop_oneof![
            "[a-z]{0,4}".prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(json!([1, "a"])),
        ]),
        prop::option::of(prop::collection::vec("[a-z]{1,3}", 0..3)),
        prop::option::weighted(0.2, prop_oneof![
            9 => Just("[0-9]+".to_owned()),
            1 => Just("(".to_owned()),
            9 => "[a-z.*+?]{0,5}"
        ]),
        any::<bool>(),
        prop::option::of(prop_oneof![30 => Just("shellsafe"), 1 => Just("nope")]),
    )
        .prop_map(
            |(kind, required, default, allowed, pattern, secret, validate)| {
                let mut m = json!({"type": kind, "required": required, "secret": secret});
                put(&mut m, "default", default);
                put(&mut m, "enum", allowed.map(|a| json!(a)));
                put(&mut m, "pattern", pattern.map(Value::from));
                put(&mut m, "validate", validate.map(Value::from));
                m
            },
        )
}

fn node_set() -> impl Strategy<Value = Value> {
    let source = prop_oneof![
        prop::collection::vec("[a-z0-9.-]{1,6}", 0..3).prop_map(|s| json!({"static": s})),
        ("[a-z]{1,5}", prop::option::of("[a-z*:&!]{1,6}")).prop_map(|(n, p)| {
            let mut inv = json!({"name": n});
            put(&mut inv, "pattern", p.map(Value::from));
            json!({"inventory": inv})
        }),
        ("[a-z]{1,5}", template())
            .prop_map(|(p, path)| json!({"file": {"project": p, "path": path}})),
        template().prop_map(|c| json!({"command": {"command": c}})),
        template().prop_map(|u| json!({"http": {"url": u}})),
        (template(), template()).prop_map(|(u, q)| json!({"puppetdb": {"url": u, "query": q}})),
        template().prop_map(|u| json!({"consul": {"url": u, "service": "web"}})),
        template().prop_map(|u| json!({"etcd": {"url": u, "prefix": "/n"}})),
    ];
    let source = prop_oneof![
        40 => source,
        1 => Just(json!({"static": ["a"], "command": {"command": "x"}})),
        1 => Just(json!({})),
    ];
    (
        source,
        prop::option::of(0usize..5),
        prop::option::of(0usize..5),
        prop::option::of(prop_oneof![
            30 => prop::sample::select(vec!["fail", "skip", "continue"]),
            1 => Just("what"),
        ]),
    )
        .prop_map(|(mut m, at_least, limit, when_empty)| {
            put(&mut m, "at_least", at_least.map(Value::from));
            put(&mut m, "limit", limit.map(Value::from));
            put(&mut m, "when_empty", when_empty.map(Value::from));
            m
        })
}

fn action() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        (
            prop::option::weighted(0.95, "[a-z]{1,5}"),
            prop::option::weighted(0.95, "[a-z/]{1,8}\\.yml"),
            prop::option::of(prop_oneof![9 => Just("web".to_owned()), 1 => ident()]),
            prop::collection::btree_map("[a-z]{1,4}", template(), 0..3)
        )
            .prop_map(|(project, playbook, nodes, vars)| {
                let mut m = json!({"extra_vars": vars});
                put(&mut m, "project", project.map(Value::from));
                put(&mut m, "playbook", playbook.map(Value::from));
                put(&mut m, "nodes", nodes.map(Value::from));
                ("playbook".to_owned(), m)
            }),
        template().prop_map(|c| ("shell".to_owned(), json!({"command": c}))),
        (
            prop::sample::select(vec!["get", "POST", "put", "delete", "GET", "BREW"]),
            template(),
            prop::collection::vec(any::<u16>(), 0..2)
        )
            .prop_map(|(method, url, expect)| {
                (
                    "http".to_owned(),
                    json!({"method": method, "url": url, "expect": expect}),
                )
            }),
        (template(), template())
            .prop_map(|(w, t)| ("slack".to_owned(), json!({"webhook": w, "text": t}))),
        (ident(), any::<bool>())
            .prop_map(|(n, p)| ("flow".to_owned(), json!({"name": n, "pass_inputs": p}))),
        duration().prop_map(|d| ("sleep".to_owned(), d)),
        (prop::option::of(template()), prop::option::of(duration())).prop_map(|(msg, t)| {
            let mut m = json!({});
            put(&mut m, "message", msg.map(Value::from));
            put(&mut m, "timeout", t);
            ("approval".to_owned(), m)
        }),
        template().prop_map(|t| ("log".to_owned(), Value::from(t))),
    ]
}

fn step(ids: Vec<String>) -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.4, prop::sample::select(ids)),
        action(),
        prop::option::weighted(0.05, action()),
        prop::option::of(expression()),
        prop::option::of(duration()),
        prop::option::of((
            1u32..12,
            prop::option::of(duration()),
            prop::option::of(prop_oneof![
                4 => Just(json!(1.0)),
                4 => Just(json!(2)),
                4 => (1.0f64..10.0).prop_map(Value::from),
                1 => prop_oneof![
                    Just(json!(0.5)),
                    Just(json!(".nan")),
                    any::<f64>().prop_map(Value::from),
                ],
            ]),
            prop::option::of(expression()),
        )),
        any::<bool>(),
        prop::collection::btree_map("[a-z]{1,4}", template(), 0..2),
    )
        .prop_map(
            |(id, (kind, body), second, when, timeout, retry, coe, publish)| {
                let mut m = json!({});
                put(&mut m, "id", id.map(Value::from));
                put(&mut m, &kind, Some(body));
                if let Some((kind, body)) = second {
                    put(&mut m, &kind, Some(body));
                }
                put(&mut m, "when", when.map(Value::from));
                put(&mut m, "timeout", timeout);
                put(
                    &mut m,
                    "retry",
                    retry.map(|(attempts, delay, backoff, until)| {
                        let mut r = json!({"attempts": attempts});
                        put(&mut r, "delay", delay);
                        put(&mut r, "backoff", backoff);
                        put(&mut r, "until", until.map(Value::from));
                        r
                    }),
                );
                if coe {
                    put(&mut m, "continue_on_error", Some(Value::Bool(true)));
                }
                if !publish.is_empty() {
                    put(&mut m, "publish", Some(json!(publish)));
                }
                m
            },
        )
}

fn flow() -> impl Strategy<Value = Value> {
    let ids: Vec<String> = ["a", "b", "c", "d", "e", "f", "up", "down", "left", "right"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (
        ident(),
        prop::collection::btree_map(ident(), input_spec(), 0..3),
        prop::collection::btree_map(ident(), node_set(), 0..2),
        prop::collection::vec(step(ids.clone()), 0..2),
        prop::collection::vec(step(ids.clone()), 0..4),
        prop::collection::vec(step(ids.clone()), 0..2),
        prop::collection::vec(step(ids), 0..2),
        prop::option::of(duration()),
        prop::collection::vec("[a-z][a-z{}. ]{0,6}", 0..2),
    )
        .prop_map(
            |(name, mut inputs, mut nodes, pre, steps, on_failure, finally, timeout, locks)| {
                inputs.insert(
                    "tier".to_owned(),
                    json!({"type": "string", "default": "alfa"}),
                );
                inputs.insert("n".to_owned(), json!({"type": "integer", "default": 3}));
                nodes.insert("web".to_owned(), json!({"static": ["w1", "w2"]}));
                let mut m = json!({
                    "name": name,
                    "inputs": Value::Object(inputs.into_iter().collect::<Map<_, _>>()),
                    "nodes": Value::Object(nodes.into_iter().collect::<Map<_, _>>()),
                    "steps": steps,
                });
                for (k, v) in [
                    ("pre", pre),
                    ("on_failure", on_failure),
                    ("finally", finally),
                ] {
                    if !v.is_empty() {
                        put(&mut m, k, Some(json!(v)));
                    }
                }
                if !locks.is_empty() {
                    put(&mut m, "locks", Some(json!(locks)));
                }
                put(&mut m, "timeout", timeout);
                m
            },
        )
}

fn scope() -> Map<String, Value> {
    let Value::Object(m) = json!({
        "inputs": {"tier": "alfa", "n": 3, "list": [1, 2]},
        "steps": {"a": {"result": {"rc": 0, "stdout": " ok\n"}, "status": "succeeded"}},
        "result": {"stdout": "GREEN", "rc": 0},
        "nodes": {"web": ["w1", "w2"]},
        "published": {"x": "y"},
        "execution": {"id": 7},
    }) else {
        unreachable!("a literal object")
    };
    m
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_loads_or_is_refused(text in any::<String>()) {
        exercise(&text)?;
    }

    #[test]
    fn yaml_like_text_loads_or_is_refused(
        text in r"(name: f|steps:|inputs:|nodes:|- log: x|- id: a|shell: |retry: |when: |\{|\}|\[|\]|&a|\*a|<<: |!!int|: |\n  |\n- |'|[a-z0-9#*.]){0,40}",
    ) {
        exercise(&text)?;
    }

    #[test]
    fn flows_load_or_say_why_and_survive_printing(doc in flow(), as_json in any::<bool>()) {
        let text = if as_json {
            serde_json::to_string_pretty(&doc).expect("json")
        } else {
            serde_saphyr::to_string(&doc).expect("yaml")
        };
        exercise(&text)?;
    }

    #[test]
    fn expressions_compile_evaluate_or_fail_cleanly(text in expression()) {
        let scope = scope();
        let compiles = expr::check_expression(&text).is_ok();
        let value = expr::evaluate(&text, &scope);
        let truth = expr::is_true(&text, &scope);
        if !compiles {
            prop_assert!(value.is_err() && truth.is_err());
        }
        let _ = expr::check_template(&text);
        let _ = expr::render(&text, &scope);
    }

    #[test]
    fn templates_render_or_fail_cleanly(text in template(), raw in any::<String>()) {
        let scope = scope();
        let _ = expr::render_value(&json!({"a": [text.clone(), raw.clone()], "b": text}), &scope);
        let _ = expr::check_template(&raw);
        let _ = expr::check_expression(&raw);
        let _ = expr::evaluate(&raw, &scope);
    }

    #[test]
    fn text_without_template_syntax_renders_as_itself(text in "[a-z ,.!?]{0,20}") {
        prop_assert_eq!(expr::render(&text, &scope()).ok(), Some(text));
    }
}

// ---- regressions: inputs the properties above found --------------------------------------
