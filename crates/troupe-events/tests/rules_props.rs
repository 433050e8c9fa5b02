//! Property tests of the rules document: `RulesFile::parse` and `Rules::from_yaml` never panic,
//! on any text and on documents built from the rules grammar (sources of every kind, rules
//! with routing keys, Jinja conditions, actions, gates), and a document that compiles compiles
//! again, to the same thing, once printed back as YAML or JSON.
//!
//! `PROPTEST_CASES` cases each (64 when unset); `scripts/fuzz` runs them for longer. A failure
//! found here becomes a named regression test at the end of this file, with its input.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use troupe_events::{Rules, RulesFile};

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

/// Parses, compiles, explains and redacts; a document that compiles must compile again from
/// its own YAML and JSON printing, to an equal document.
fn exercise(text: &str) -> Result<(), TestCaseError> {
    let _ = RulesFile::parse(text).map(|f| f.redacted());
    let Ok(rules) = Rules::from_yaml(text) else {
        return Ok(());
    };
    for rule in rules.rules() {
        let _ = rule.explain();
        let _ = rule.playbook_for("a.b.c");
    }
    let file = rules.file().clone();
    let yaml = serde_saphyr::to_string(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again = Rules::from_yaml(&yaml)
        .map_err(|e| TestCaseError::fail(format!("{e:?}\nfrom:\n{text}\nprinted:\n{yaml}")))?;
    prop_assert_eq!(
        again.file(),
        &file,
        "YAML printing changed the document:\n{}",
        yaml
    );
    let json = serde_json::to_string(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again =
        Rules::from_yaml(&json).map_err(|e| TestCaseError::fail(format!("{e:?}\n{json}")))?;
    prop_assert_eq!(again.file(), &file);
    Ok(())
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        49 => "[a-z][a-z0-9_-]{0,8}",
        1 => "[ -~]{0,6}",
    ]
}

fn secret() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(Value::from),
        "[A-Z_]{1,8}".prop_map(|e| json!({"env": e})),
        "/[a-z/]{1,12}".prop_map(|f| json!({"file": f})),
    ]
}

fn url(scheme: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => ("[a-z]{0,5}", "[a-z]{0,5}", 1u16..65535).prop_map(move |(u, p, port)| {
            let creds = if u.is_empty() { String::new() } else { format!("{u}:{p}@") };
            Value::from(format!("{scheme}://{creds}127.0.0.1:{port}/"))
        }),
        1 => "[ -~]{0,16}".prop_map(Value::from),
        1 => "[A-Z_]{1,8}".prop_map(|e| json!({"env": e})),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => r"[a-z0-9]{1,4}(\.([a-z0-9]{1,4}|\*)){0,3}(\.#)?",
        1 => r"([a-z0-9]{1,4}|\*|#|>|\+)([./]([a-z0-9]{1,4}|\*|#|>|\+)){0,3}",
    ]
}

fn duration() -> impl Strategy<Value = Value> {
    prop_oneof![
        30 => (1u64..100_000, prop::sample::select(vec!["s", "m", "h", "d", "ms", "min"]))
            .prop_map(|(n, u)| Value::from(format!("{n}{u}"))),
        1 => "[ -~]{0,8}".prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
    ]
}

/// A source of one kind, with its fields and some it does not know.
fn source() -> impl Strategy<Value = Value> {
    let webhook = (
        prop::option::of(secret()),
        prop::option::of(secret()),
        prop_oneof![
            Just(Value::Null),
            Just(Value::from("path")),
            "[A-Za-z-]{1,12}".prop_map(|h| json!({"header": h})),
            "(/[a-z]{1,5}){1,3}".prop_map(|p| json!({"pointer": p})),
        ],
        prop::option::of(0usize..10_000_000),
    )
        .prop_map(|(secret, token, rk, max)| {
            let mut m = json!({"type": "webhook"});
            put(&mut m, "secret", secret);
            put(&mut m, "token", token);
            put(&mut m, "routing_key", Some(rk).filter(|v| !v.is_null()));
            put(&mut m, "max_body_bytes", max.map(Value::from));
            m
        });
    let amqp = (
        url("amqp"),
        prop::option::of("[a-z]{1,6}"),
        "[a-z.]{1,8}",
        prop::collection::vec(topic(), 0..3),
        prop::option::of(0u32..70_000),
    )
        .prop_map(|(url, exchange, queue, bindings, prefetch)| {
            let mut m = json!({"type": "amqp", "url": url, "queue": queue, "bindings": bindings});
            put(&mut m, "exchange", exchange.map(Value::from));
            put(&mut m, "prefetch", prefetch.map(Value::from));
            m
        });
    let nats = (
        url("nats"),
        prop::collection::vec(topic(), 0..3),
        prop::option::of(("[A-Z]{1,5}", "[a-z]{1,5}")),
    )
        .prop_map(|(url, subjects, js)| {
            let mut m = json!({"type": "nats", "url": url, "subjects": subjects});
            put(
                &mut m,
                "jetstream",
                js.map(|(s, d)| json!({"stream": s, "durable": d})),
            );
            m
        });
    let mqtt = (
        url("mqtt"),
        prop::collection::vec(topic(), 0..3),
        prop::option::of(0u8..4),
        prop::option::of(prop_oneof![
            Just(json!("3.1.1")),
            Just(json!(5)),
            Just(json!("4")),
            Just(json!(5.0))
        ]),
        prop::option::of(secret()),
    )
        .prop_map(|(url, topics, qos, protocol, password)| {
            let mut m = json!({"type": "mqtt", "url": url, "topics": topics});
            put(&mut m, "qos", qos.map(Value::from));
            put(&mut m, "protocol", protocol);
            put(&mut m, "password", password);
            m
        });
    let directory = ("[ -~]{0,12}", prop::option::of(any::<u64>())).prop_map(|(p, poll)| {
        let mut m = json!({"type": "directory", "path": p});
        put(&mut m, "poll_ms", poll.map(Value::from));
        m
    });
    let cron_field = r"(\*|[0-9]{1,2}|\*/[0-9]{1,2}|[0-9]{1,2}-[0-9]{1,2}|[A-Z]{3}|L|\?)";
    let timer = (
        prop::collection::vec(cron_field, 1..7),
        prop::option::of(prop::sample::select(vec![
            "UTC",
            "Europe/Paris",
            "Nowhere/City",
            "",
        ])),
        "[a-z.]{0,8}",
    )
        .prop_map(|(fields, tz, rk)| {
            let mut m = json!({"type": "timer", "cron": fields.join(" "), "routing_key": rk});
            put(&mut m, "timezone", tz.map(Value::from));
            m
        });
    let other = "[a-z]{1,8}".prop_map(|t| json!({"type": t}));
    (
        prop_oneof![
            3 => webhook,
            2 => amqp,
            2 => nats,
            2 => mqtt,
            2 => directory,
            2 => timer,
            1 => other
        ],
        prop::option::weighted(0.1, ("[a-z]{1,6}", "[a-z]{0,4}")),
    )
        .prop_map(|(mut m, extra)| {
            if let Some((k, v)) = extra {
                put(&mut m, &k, Some(Value::from(v)));
            }
            m
        })
}

fn put(m: &mut Value, key: &str, value: Option<Value>) {
    if let (Value::Object(m), Some(v)) = (m, value) {
        m.insert(key.to_owned(), v);
    }
}

/// Jinja text over what a rule sees: mostly well-formed expressions (operands joined by
/// operators, filters, tests), sometimes tokens in any order.
fn expression() -> impl Strategy<Value = String> {
    let operand = prop_oneof![
        Just("payload".to_owned()),
        Just("payload.a".to_owned()),
        Just("payload['b'].c".to_owned()),
        Just("routing_key".to_owned()),
        Just("headers['x']".to_owned()),
        any::<i32>().prop_map(|n| n.to_string()),
        "'[a-z %{}]{0,5}'",
        Just("[1, 'a']".to_owned()),
        Just("none".to_owned()),
    ];
    let operand = operand.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|o| format!("({o})")),
            (
                inner.clone(),
                prop::sample::select(vec!["length", "lower", "default(1)", "string", "int"])
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
                    "==", "!=", "and", "or", "in", "not in", "~", "+", "<", ">=",
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
            "==", "and", "not", "in", "is", "|", "(", ")", "[", "]", ".", ",", "{{", "}}", "{%",
            "if", "payload", "range(3)",
        ])
        .prop_map(str::to_owned),
    ];
    let soup = prop::collection::vec(token, 1..8).prop_map(|t| t.join(" "));
    prop_oneof![20 => well_formed, 1 => soup]
}

fn rule() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        3 => Just(Value::from("all")),
        9 => topic().prop_map(Value::from),
        18 => prop::collection::vec(topic(), 1..3).prop_map(|v| json!(v)),
        1 => Just(json!([])),
    ];
    let when = prop_oneof![
        Just(Value::Null),
        expression().prop_map(Value::from),
        prop::collection::vec(expression(), 0..3).prop_map(|v| json!(v)),
    ];
    let target = prop_oneof![
        6 => (name(), "[a-z/{} .]{1,16}\\.yml")
            .prop_map(|(p, b)| json!({"project": p, "playbook": b})),
        2 => name().prop_map(|t| json!({"template": t})),
        2 => name().prop_map(|f| json!({"flow": f})),
        2 => (name(), "[a-z{}/ .]{1,10}").prop_map(|(p, d)| json!({"project": p, "playbooks_dir": d})),
        1 => prop_oneof![
            Just(json!({})),
            (name(), name()).prop_map(|(t, f)| json!({"template": t, "flow": f})),
        ],
    ];
    let action = (
        target,
        prop::collection::btree_map(
            "[a-z]{1,5}",
            prop_oneof![
                expression().prop_map(|e| format!("{{{{ {e} }}}}")),
                "[a-z]{0,5}"
            ],
            0..3,
        ),
        prop::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..2),
        prop::option::of(name()),
    )
        .prop_map(|(mut m, vars, labels, inventory)| {
            if m.get("flow").is_none() {
                put(&mut m, "vars", Some(json!(vars)));
                put(&mut m, "inventory", inventory.map(Value::from));
                put(&mut m, "labels", Some(json!(labels)));
            }
            m
        });
    (
        name(),
        prop::option::of(prop::collection::vec(name(), 0..3)),
        keys,
        when,
        action,
        prop::option::of((duration(), prop::collection::vec(expression(), 0..2))),
        prop::option::of((expression(), duration())),
        prop::option::of(prop_oneof![
            30 => prop::sample::select(vec!["queue", "skip", "cancel"]),
            1 => Just("nonsense"),
        ]),
    )
        .prop_map(
            |(name, sources, keys, when, action, throttle, dedupe, concurrency)| {
                let mut m = json!({"name": name, "routing_keys": keys, "action": action});
                put(&mut m, "sources", sources.map(|s| json!(s)));
                put(&mut m, "when", Some(when).filter(|w| !w.is_null()));
                put(
                    &mut m,
                    "throttle",
                    throttle.map(|(d, g)| json!({"once_within": d, "group_by": g})),
                );
                put(
                    &mut m,
                    "dedupe",
                    dedupe.map(|(k, d)| json!({"key": k, "within": d})),
                );
                if m["action"].get("flow").is_none() {
                    put(&mut m, "concurrency", concurrency.map(Value::from));
                }
                m
            },
        )
}

fn document() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(name(), source(), 0..4),
        prop::collection::vec(rule(), 0..3),
        prop::option::of((duration(), any::<u32>(), duration())),
    )
        .prop_map(|(sources, rules, settings)| {
            let mut m = json!({
                "sources": Value::Object(sources.into_iter().collect::<Map<_, _>>()),
                "rules": rules,
            });
            put(
                &mut m,
                "settings",
                settings.map(|(r, k, w)| {
                    json!({"retention": r, "payload_keep_bytes": k, "redelivery_window": w})
                }),
            );
            m
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_parses_or_is_refused(text in any::<String>()) {
        exercise(&text)?;
    }

    #[test]
    fn yaml_like_text_parses_or_is_refused(
        text in r"(sources:|rules:|settings:|- name: r|type: webhook|routing_keys: |when: |action:|\{|\}|\[|\]|&a|\*a|!!str|: |\n  |\n- |'|[a-z#*.]){0,40}",
    ) {
        exercise(&text)?;
    }

    #[test]
    fn documents_compile_or_say_why_and_survive_printing(doc in document(), as_json in any::<bool>()) {
        let text = if as_json {
            serde_json::to_string_pretty(&doc).expect("json")
        } else {
            serde_saphyr::to_string(&doc).expect("yaml")
        };
        exercise(&text)?;
        if let Err(errors) = Rules::from_yaml(&text) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(!e.trim().is_empty(), "an empty error for\n{}", text);
            }
        }
    }
}

// ---- regressions: inputs the properties above found --------------------------------------
