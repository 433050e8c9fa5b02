//! An execution's inputs: what it was given, checked against the flow's `inputs` and with
//! defaults applied, and the secret ones kept apart so they never reach storage, events or
//! logs in clear.
//!
//! Values may come as text (`troupe flow run -i count=3` sends every value as a string), so
//! a string is read as the input's type when it is not a string input: `"3"` as an integer,
//! `"true"` as a boolean, `"[1, 2]"` (JSON) as an array.

use crate::doc::{InputSpec, InputType, Validator};
use crate::load::{Problem, flow_has};
use indexmap::IndexMap;
use serde_json::{Map, Number, Value};
use std::collections::BTreeSet;
use std::fmt;
use troupe_core::redact::{Redactor, secret_texts};

/// What a secret's value is shown as.
pub use troupe_core::redact::REDACTED;

/// The characters a `shellsafe` input may not hold (with newlines and carriage returns).
pub const SHELL_SPECIAL: &str = ";&|<>`$(){}[]*?!~#'\"\\";

/// Every input's value, clear, and which of them are secret.
#[derive(Clone, Default, PartialEq)]
pub struct Inputs {
    values: Map<String, Value>,
    secret: BTreeSet<String>,
}

/// An execution's inputs checked against the flow's: unknown names, missing required ones,
/// values of the wrong type and values an input refuses (`enum`, `pattern`, `shellsafe`) are
/// problems, all reported at once; absent inputs get their default. An input given as
/// `null` counts as not given.
pub fn resolve(
    specs: &IndexMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Inputs, Vec<Problem>> {
    let mut problems = Vec::new();
    for name in given.keys().filter(|n| !specs.contains_key(*n)) {
        let known = flow_has("input", specs.keys());
        problems.push(Problem::new(
            format!("inputs.{name}"),
            format!("no input is named {name:?}; {known}"),
        ));
    }
    let mut values = Map::new();
    for (name, spec) in specs {
        let field = format!("inputs.{name}");
        match given.get(name).filter(|v| !v.is_null()) {
            Some(v) => match coerce(spec.kind, v) {
                Some(v) => match refusal(spec, &v) {
                    Some(why) => problems.push(Problem::new(field, why)),
                    None => {
                        values.insert(name.clone(), v);
                    }
                },
                None => problems.push(Problem::new(field, type_mismatch(spec, v))),
            },
            None => match &spec.default {
                Some(d) => {
                    values.insert(name.clone(), d.clone());
                }
                None if spec.required => {
                    problems.push(Problem::new(field, "is required and was not given"));
                }
                None => {}
            },
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let secret = specs
        .iter()
        .filter(|(_, s)| s.secret)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(Inputs { values, secret })
}

impl Inputs {
    /// Every value in clear, for the engine's scope (`inputs.<name>`).
    pub fn all(&self) -> &Map<String, Value> {
        &self.values
    }

    /// Every value with the secret ones shown as `"********"`, for storage and the API.
    pub fn redacted(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(k, v)| {
                let v = if self.secret.contains(k) {
                    Value::String(REDACTED.to_owned())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// Only the secret values, in clear, to seal before they are stored.
    pub fn secrets(&self) -> Map<String, Value> {
        self.values
            .iter()
            .filter(|(k, _)| self.secret.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The inputs again from their redacted form and their unsealed secrets (what
    /// [`Inputs::redacted`] and [`Inputs::secrets`] gave).
    pub fn with_secrets(redacted: Map<String, Value>, secrets: Map<String, Value>) -> Inputs {
        let secret = secrets.keys().cloned().collect();
        let mut values = redacted;
        values.extend(secrets);
        Inputs { values, secret }
    }

    /// Whether the named input is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.contains(name)
    }

    /// A scrubber that blanks these inputs' secret values out of text.
    pub fn scrubber(&self) -> Scrubber {
        let mut texts = Vec::new();
        for (k, v) in &self.values {
            if self.secret.contains(k) {
                secret_texts(v, &mut texts);
            }
        }
        Scrubber::new(texts)
    }
}

impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("values", &self.redacted())
            .field("secret", &self.secret)
            .finish()
    }
}

/// Replaces every occurrence of a secret's text with `"********"`: the flow engine's name
/// for the runs' [`Redactor`], so a secret input is blanked in the same printed forms.
#[derive(Clone, Default)]
pub struct Scrubber(Redactor);

impl Scrubber {
    /// A scrubber for these texts (those shorter than 4 characters are left alone).
    pub fn new(texts: impl IntoIterator<Item = String>) -> Scrubber {
        Scrubber(Redactor::new(texts))
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `s` holds a secret's text.
    pub fn finds(&self, s: &str) -> bool {
        self.0.finds(s)
    }

    /// `s` with every secret's text replaced by `"********"`.
    pub fn scrub_str(&self, s: &str) -> String {
        self.0.redact_str(s).into_owned()
    }

    /// Scrubs every string in a value (mapping keys too); a number that is a secret's text
    /// becomes `"********"`.
    pub fn scrub(&self, v: &mut Value) {
        self.0.redact_value(v);
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({:?})", self.0)
    }
}

/// Whether `v` has the type `kind` as it is, without reading text.
pub(crate) fn has_type(kind: InputType, v: &Value) -> bool {
    match kind {
        InputType::String => v.is_string(),
        InputType::Integer => whole(v).is_some(),
        InputType::Number => v.is_number(),
        InputType::Boolean => v.is_boolean(),
        InputType::Array => v.is_array(),
        InputType::Object => v.is_object(),
    }
}

/// `v` as a whole number, when it is one (`3` or `3.0`).
fn whole(v: &Value) -> Option<Value> {
    let n = v.as_number()?;
    if n.is_i64() || n.is_u64() {
        return Some(v.clone());
    }
    let f = n.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, which is out of range: compare strictly.
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64)
        .then(|| Value::Number(Number::from(f as i64)))
}

/// `v` read as `kind`: as it is when it has the type, parsed when it is text and the type is
/// not a string; `None` when it cannot be.
pub(crate) fn coerce(kind: InputType, v: &Value) -> Option<Value> {
    if kind == InputType::Integer {
        if let Some(n) = whole(v) {
            return Some(n);
        }
    } else if has_type(kind, v) {
        return Some(v.clone());
    }
    let text = v.as_str()?.trim();
    match kind {
        InputType::String => None,
        InputType::Integer => text
            .parse::<i64>()
            .ok()
            .map(Value::from)
            .or_else(|| text.parse::<u64>().ok().map(Value::from)),
        InputType::Number => text.parse::<i64>().ok().map(Value::from).or_else(|| {
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
        }),
        InputType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        InputType::Array => serde_json::from_str(text).ok().filter(Value::is_array),
        InputType::Object => serde_json::from_str(text).ok().filter(Value::is_object),
    }
}

/// The type's name with its article, for messages.
pub(crate) fn type_name(kind: InputType) -> &'static str {
    match kind {
        InputType::String => "a string",
        InputType::Integer => "an integer",
        InputType::Number => "a number",
        InputType::Boolean => "a boolean (true or false)",
        InputType::Array => "an array",
        InputType::Object => "an object",
    }
}

/// What is said of a value that is not of the input's type (quoting it unless it is secret).
fn type_mismatch(spec: &InputSpec, v: &Value) -> String {
    let kind = troupe_core::text::json_kind(v);
    if spec.secret {
        format!("must be {}, got {kind}", type_name(spec.kind))
    } else {
        format!("must be {}, got {kind}: {}", type_name(spec.kind), quote(v))
    }
}

/// A value, short, for a message.
pub(crate) fn quote(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// Why an input refuses a value of its type (`enum`, `pattern`, `shellsafe`), or `None`.
/// The value itself is quoted only when the input is not secret.
pub(crate) fn refusal(spec: &InputSpec, v: &Value) -> Option<String> {
    let shown = if spec.secret {
        "the value".to_owned()
    } else {
        quote(v)
    };
    if let Some(allowed) = &spec.allowed
        && !allowed.iter().any(|a| same(a, v))
    {
        let list = allowed.iter().map(quote).collect::<Vec<_>>().join(", ");
        return Some(format!("{shown} is not one of the allowed values: {list}"));
    }
    let text = v.as_str()?;
    if let Some(pattern) = &spec.pattern {
        match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => return Some(format!("{shown} does not match the pattern {pattern:?}")),
            Err(_) => return Some(format!("the pattern {pattern:?} does not compile")),
        }
    }
    if spec.validate == Some(Validator::Shellsafe)
        && let Some(c) = text
            .chars()
            .find(|c| SHELL_SPECIAL.contains(*c) || matches!(c, '\n' | '\r'))
    {
        return Some(if spec.secret {
            "the value holds a character a shell treats specially, which shellsafe refuses"
                .to_owned()
        } else {
            format!("{shown} holds {c:?}, which shellsafe refuses")
        });
    }
    None
}

/// Whether two values are equal, numbers by value (`3` equals `3.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs(yaml: &str) -> IndexMap<String, InputSpec> {
        serde_saphyr::from_str(yaml).expect("input specs")
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_type_takes_its_own_values_and_text() {
        let s = specs(
            "s: {type: string}\ni: {type: integer}\nn: {type: number}\nb: {type: boolean}\na: {type: array}\no: {type: object}\n",
        );
        let cases = [
            (
                json!({"s": "x", "i": 3, "n": 1.5, "b": true, "a": [1], "o": {"k": 1}}),
                json!({"s": "x", "i": 3, "n": 1.5, "b": true, "a": [1], "o": {"k": 1}}),
            ),
            (
                json!({"s": "3", "i": "3", "n": "2.5", "b": "TRUE", "a": "[1, \"x\"]", "o": "{\"k\": [1]}"}),
                json!({"s": "3", "i": 3, "n": 2.5, "b": true, "a": [1, "x"], "o": {"k": [1]}}),
            ),
            (
                json!({"i": " -7 ", "n": "4", "b": "false"}),
                json!({"i": -7, "n": 4, "b": false}),
            ),
            (json!({"i": 3.0, "n": 7}), json!({"i": 3, "n": 7})),
        ];
        for (input, want) in cases {
            let got =
                resolve(&s, &given(input.clone())).unwrap_or_else(|p| panic!("{input}: {p:?}"));
            assert_eq!(Value::Object(got.all().clone()), want, "{input}");
        }
    }

    #[test]
    fn values_of_the_wrong_type_are_refused() {
        let s = specs(
            "s: {type: string}\ni: {type: integer}\nn: {type: number}\nb: {type: boolean}\na: {type: array}\no: {type: object}\n",
        );
        for (name, v, word) in [
            ("s", json!(3), "must be a string, got a number"),
            ("i", json!("3.5"), "must be an integer"),
            ("i", json!(2.5), "must be an integer"),
            ("i", json!("three"), "\"three\""),
            ("n", json!("NaN"), "must be a number"),
            ("n", json!(true), "got a boolean"),
            ("b", json!("yes"), "must be a boolean"),
            ("b", json!(1), "must be a boolean"),
            ("a", json!("{\"k\": 1}"), "must be an array"),
            ("a", json!("[1,"), "must be an array"),
            ("o", json!([1]), "must be an object"),
        ] {
            let problems = resolve(&s, &given(json!({ name: v }))).expect_err(name);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].field, format!("inputs.{name}"));
            assert!(
                problems[0].message.contains(word),
                "{name}={v}: {problems:?}"
            );
        }
    }

    #[test]
    fn defaults_apply_and_required_inputs_must_be_given() {
        let s = specs(
            "region: {type: string, default: eu}\ncount: {type: integer, required: true}\nopt: {type: string}\n",
        );
        let got = resolve(&s, &given(json!({"count": 2}))).expect("valid");
        assert_eq!(
            Value::Object(got.all().clone()),
            json!({"region": "eu", "count": 2})
        );
        let got = resolve(&s, &given(json!({"count": 2, "region": null}))).expect("null is absent");
        assert_eq!(got.all()["region"], "eu");
        let problems = resolve(&s, &given(json!({"region": "us"}))).expect_err("missing");
        assert_eq!(problems[0].field, "inputs.count");
        assert!(problems[0].message.contains("required"), "{problems:?}");
    }

    #[test]
    fn unknown_inputs_are_named_and_every_problem_is_reported() {
        let s = specs("count: {type: integer, required: true}\nmode: {type: string}\n");
        let problems = resolve(&s, &given(json!({"cuont": 1, "mode": 3}))).expect_err("problems");
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["inputs.cuont", "inputs.count", "inputs.mode"]);
        assert!(problems[0].message.contains("count, mode"), "{problems:?}");
    }

    #[test]
    fn enum_pattern_and_shellsafe_refuse_values() {
        let s = specs(
            "env: {type: string, enum: [dev, prod]}\nn: {type: integer, enum: [1, 2]}\nver: {type: string, pattern: '[0-9]+\\.[0-9]+'}\nhost: {type: string, validate: shellsafe}\n",
        );
        let ok = resolve(
            &s,
            &given(json!({"env": "prod", "n": "2", "ver": "1.22", "host": "web-1.example"})),
        )
        .expect("valid");
        assert_eq!(ok.all()["n"], 2);
        for (name, v, word) in [
            (
                "env",
                json!("staging"),
                "not one of the allowed values: \"dev\", \"prod\"",
            ),
            ("n", json!(3), "not one of"),
            ("ver", json!("1.22-rc"), "does not match"),
            ("ver", json!("v1.2"), "does not match"),
            ("host", json!("web; rm -rf /"), "';'"),
            ("host", json!("a\nb"), "'\\n'"),
            ("host", json!("$(id)"), "shellsafe"),
        ] {
            let problems = resolve(&s, &given(json!({ name: v }))).expect_err(name);
            assert_eq!(problems[0].field, format!("inputs.{name}"));
            assert!(
                problems[0].message.contains(word),
                "{name}={v}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_problem_never_quotes_a_secret() {
        let s = specs(
            "token: {type: string, secret: true, pattern: 'tok-[a-z]+', validate: shellsafe}\npin: {type: integer, secret: true, enum: [1234]}\n",
        );
        for (name, v) in [
            ("token", json!("hunter2-XYZ")),
            ("token", json!("tok-a;b")),
            ("pin", json!("98765")),
            ("pin", json!("notanumber")),
        ] {
            let problems = resolve(&s, &given(json!({ name: v.clone() }))).expect_err(name);
            let text = format!("{problems:?}");
            let secret = v.as_str().unwrap_or_default();
            assert!(!text.contains(secret), "{text}");
            assert_eq!(problems[0].field, format!("inputs.{name}"));
        }
    }

    #[test]
    fn secrets_are_redacted_kept_apart_and_restored() {
        let s = specs(
            "user: {type: string}\npassword: {type: string, secret: true}\nport: {type: integer, secret: true}\n",
        );
        let inputs = resolve(
            &s,
            &given(json!({"user": "ann", "password": "s3cr3t!", "port": "8443"})),
        )
        .expect("valid");
        assert_eq!(
            Value::Object(inputs.redacted()),
            json!({"user": "ann", "password": "********", "port": "********"})
        );
        assert_eq!(
            Value::Object(inputs.secrets()),
            json!({"password": "s3cr3t!", "port": 8443})
        );
        assert!(!format!("{inputs:?}").contains("s3cr3t!"));
        let back = Inputs::with_secrets(inputs.redacted(), inputs.secrets());
        assert_eq!(back, inputs);
        assert_eq!(back.all()["password"], "s3cr3t!");
        assert!(back.is_secret("port") && !back.is_secret("user"));
    }

    #[test]
    fn the_scrubber_blanks_secret_texts_out() {
        let s = specs(
            "pw: {type: string, secret: true}\npin: {type: integer, secret: true}\nshort: {type: string, secret: true}\nkeys: {type: array, secret: true}\nplain: {type: string}\n",
        );
        let inputs = resolve(
            &s,
            &given(json!({"pw": "hunter22", "pin": 48213, "short": "ab", "keys": ["k-one", "k-one-longer"], "plain": "visible"})),
        )
        .expect("valid");
        let sc = inputs.scrubber();
        assert_eq!(
            sc.scrub_str("login hunter22 pin=48213 ab visible k-one-longer k-one"),
            "login ******** pin=******** ab visible ******** ********"
        );
        let mut v = json!({"out": ["got hunter22"], "hunter22": 1, "n": 48213, "ok": true});
        sc.scrub(&mut v);
        assert_eq!(
            v,
            json!({"out": ["got ********"], "********": 1, "n": "********", "ok": true})
        );
        assert!(!format!("{sc:?}").contains("hunter22"));
        let none = resolve(&s, &given(json!({}))).expect("valid").scrubber();
        assert!(none.is_empty());
        assert_eq!(none.scrub_str("hunter22"), "hunter22");
    }
}
