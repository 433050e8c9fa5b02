//! A `flow` action's inputs, rendered for an event: each value a Jinja template over what
//! conditions see (the payload's fields, `payload`, `event`), rendered the way flows render
//! theirs: a string that is one `{{ expression }}` and nothing else keeps the expression's type
//! (a list stays a list), any other string with template syntax becomes text, lists and
//! mappings are rendered item by item, other values are taken as written.
//!
//! An input whose whole value is one expression that is undefined for the event is left out,
//! so the flow's default applies (or the flow reports it missing); printing an undefined value
//! inside a longer template is an error.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

/// Why an input could not be rendered for an event. The message names the input and what
/// minijinja found wrong, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inputs.{input}: {message}")]
pub struct InputError {
    /// The input.
    pub input: String,
    /// What is wrong.
    pub message: String,
}

impl InputError {
    fn new(input: &str, e: &minijinja::Error) -> Self {
        // minijinja's Display adds a template name and position that mean nothing here.
        let message = match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        };
        InputError {
            input: input.to_owned(),
            message,
        }
    }
}

/// The environment inputs render in: conditions' (Python-style methods), but printing or
/// iterating over an undefined value is an error rather than an empty string.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env
}

/// Checks that every template in `inputs` compiles; each problem names its input.
pub fn check(env: &Environment<'static>, inputs: &Map<String, Value>) -> Vec<InputError> {
    let mut errors = Vec::new();
    for (name, value) in inputs {
        let mut strings = Vec::new();
        strings_in(value, &mut strings);
        for text in strings {
            let compiled = match sole_expression(text) {
                Some(expr) => env.compile_expression(expr).map(|_| ()),
                None => env.template_from_str(text).map(|_| ()),
            };
            if let Err(e) = compiled {
                errors.push(InputError::new(name, &e));
            }
        }
    }
    errors
}

/// Every input rendered over `ctx`; inputs whose sole expression is undefined are left out.
pub fn render(
    env: &Environment<'static>,
    inputs: &Map<String, Value>,
    ctx: &minijinja::Value,
) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for (name, value) in inputs {
        if let Some(v) = render_value(env, value, ctx).map_err(|e| InputError::new(name, &e))? {
            out.insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// `value` rendered; `None` when it is one expression that is undefined.
fn render_value(
    env: &Environment<'static>,
    value: &Value,
    ctx: &minijinja::Value,
) -> Result<Option<Value>, minijinja::Error> {
    Ok(Some(match value {
        Value::String(s) => match sole_expression(s) {
            Some(expr) => {
                let v = env.compile_expression(expr)?.eval(ctx.clone())?;
                if v.is_undefined() {
                    return Ok(None);
                }
                serde_json::to_value(&v).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
                })?
            }
            None if has_syntax(s) => Value::String(env.render_str(s, ctx.clone())?),
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| Ok(render_value(env, v, ctx)?.unwrap_or(Value::Null)))
                .collect::<Result<_, minijinja::Error>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| match render_value(env, v, ctx) {
                    Ok(Some(v)) => Some(Ok((k.clone(), v))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, minijinja::Error>>()?,
        ),
        other => other.clone(),
    }))
}

fn strings_in<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings_in(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings_in(i, out)),
        _ => {}
    }
}

fn has_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The expression inside `{{ … }}` when that is the whole string.
fn sole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(&v))
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn sole_expressions_keep_their_type_and_templates_become_text() {
        let env = environment();
        let c = ctx(json!({
            "payload": {"hosts": ["w1", "w2"], "count": 3, "ref": "refs/heads/main"},
            "event": {"routing_key": "deploy.web"},
        }));
        let inputs = map(json!({
            "hosts": "{{ payload.hosts }}",
            "count": "{{ payload.count + 1 }}",
            "branch": "{{ payload.ref.split('/')[-1] }}",
            "label": "key={{ event.routing_key }}",
            "fixed": 5,
            "plain": "no template",
            "nested": {"first": "{{ payload.hosts[0] }}", "gone": "{{ payload.nope }}"},
            "list": ["{{ payload.count }}", "x"],
        }));
        assert_eq!(
            render(&env, &inputs, &c),
            Ok(map(json!({
                "hosts": ["w1", "w2"],
                "count": 4,
                "branch": "main",
                "label": "key=deploy.web",
                "fixed": 5,
                "plain": "no template",
                "nested": {"first": "w1"},
                "list": [3, "x"],
            })))
        );
    }

    #[test]
    fn undefined_sole_expressions_are_left_out_and_printed_ones_fail() {
        let env = environment();
        let c = ctx(json!({"payload": {}}));
        assert_eq!(
            render(&env, &map(json!({"version": "{{ payload.version }}"})), &c),
            Ok(Map::new())
        );
        let e = render(&env, &map(json!({"tag": "v{{ payload.version }}"})), &c)
            .expect_err("printing undefined");
        assert_eq!(e.input, "tag");
        assert!(e.to_string().starts_with("inputs.tag: "), "{e}");
        assert!(e.message.contains("undefined"), "{e}");
        let e = render(&env, &map(json!({"x": "{{ payload.a.b }}"})), &c)
            .expect_err("attribute of undefined");
        assert_eq!(e.input, "x");
        // The way around it the docs give: `get` with a default, giving null.
        assert_eq!(
            render(
                &env,
                &map(json!({"x": "{{ payload.get('a', {}).get('b') }}"})),
                &c
            ),
            Ok(map(json!({"x": null})))
        );
    }

    #[test]
    fn check_names_the_input_that_does_not_compile() {
        let env = environment();
        let errors = check(
            &env,
            &map(
                json!({"ok": "{{ payload.a }}", "bad": ["x", "{{ payload. }}"], "worse": "a {% if %}"}),
            ),
        );
        let names: Vec<_> = errors.iter().map(|e| e.input.as_str()).collect();
        assert_eq!(names, ["bad", "worse"]);
    }
}
