//! Jinja expressions and templates in flows (minijinja, as event rules use), over what an
//! execution knows: `inputs`, `nodes`, `steps.<id>`, `published`, `execution`, and in a
//! retry's `until` or a `publish`, `result`; in `on_failure`, `failure`.
//!
//! Values are rendered the way Ansible renders them: a string that is one `{{ expression }}`
//! and nothing else keeps the expression's type (a list stays a list), any other string with
//! template syntax becomes text.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// What is wrong with an expression or a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {message}")]
pub struct ExprError {
    /// The expression or template.
    pub text: String,
    /// What minijinja says.
    pub message: String,
}

impl ExprError {
    fn new(text: &str, e: minijinja::Error) -> Self {
        // minijinja's Display adds the template name and a position; its kind and detail are
        // what helps.
        let message = match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        };
        ExprError {
            text: text.to_owned(),
            message,
        }
    }
}

/// The one environment flows use: strict about undefined names (a typo fails loudly, not as
/// an empty string), with Python's string and dict methods (`.lower()`, `.items()`).
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        minijinja_contrib::add_to_environment(&mut env);
        env
    })
}

/// The variables an expression sees, built up as an execution goes.
pub type Scope = Map<String, Value>;

fn context(scope: &Scope) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(scope))
}

/// Checks that an expression (`when`, `until`) compiles.
pub fn check_expression(text: &str) -> Result<(), ExprError> {
    environment()
        .compile_expression(text)
        .map(|_| ())
        .map_err(|e| ExprError::new(text, e))
}

/// Checks that a template (any templated string) compiles.
pub fn check_template(text: &str) -> Result<(), ExprError> {
    environment()
        .template_from_str(text)
        .map(|_| ())
        .map_err(|e| ExprError::new(text, e))
}

/// The value of an expression.
pub fn evaluate(text: &str, scope: &Scope) -> Result<Value, ExprError> {
    let expr = environment()
        .compile_expression(text)
        .map_err(|e| ExprError::new(text, e))?;
    let value = expr
        .eval(context(scope))
        .map_err(|e| ExprError::new(text, e))?;
    serde_json::to_value(&value).map_err(|e| ExprError {
        text: text.to_owned(),
        message: e.to_string(),
    })
}

/// Whether an expression is true (Jinja's truthiness: empty strings, lists and `0` are false).
pub fn is_true(text: &str, scope: &Scope) -> Result<bool, ExprError> {
    let expr = environment()
        .compile_expression(text)
        .map_err(|e| ExprError::new(text, e))?;
    expr.eval(context(scope))
        .map(|v| v.is_true())
        .map_err(|e| ExprError::new(text, e))
}

/// A template rendered as text.
pub fn render(text: &str, scope: &Scope) -> Result<String, ExprError> {
    if !has_syntax(text) {
        return Ok(text.to_owned());
    }
    environment()
        .render_str(text, context(scope))
        .map_err(|e| ExprError::new(text, e))
}

/// A value with every string in it rendered; a string that is exactly one `{{ expression }}`
/// becomes the expression's value, keeping its type.
pub fn render_value(value: &Value, scope: &Scope) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) => match sole_expression(s) {
            Some(expr) => evaluate(expr, scope)?,
            None => Value::String(render(s, scope)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, scope)?)))
                .collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

/// Every string in a value, for checking that each compiles.
pub fn strings_in(value: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    fn walk<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(value, &mut out);
    out
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

    fn scope() -> Scope {
        json!({
            "inputs": {"cluster": "alpha", "count": 3},
            "nodes": {"web": ["w1", "w2"]},
            "steps": {"check": {"status": "successful", "result": {"rc": 0}}},
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn templates_render_as_text_and_sole_expressions_keep_their_type() {
        let s = scope();
        assert_eq!(
            render("c-{{ inputs.cluster }}", &s),
            Ok("c-alpha".to_owned())
        );
        assert_eq!(
            render_value(
                &json!({"hosts": "{{ nodes.web }}", "n": "{{ inputs.count + 1 }}", "t": "x{{ inputs.count }}"}),
                &s
            ),
            Ok(json!({"hosts": ["w1", "w2"], "n": 4, "t": "x3"}))
        );
        assert_eq!(render("plain", &s), Ok("plain".to_owned()));
    }

    #[test]
    fn conditions_follow_jinja_truthiness() {
        let s = scope();
        assert_eq!(is_true("steps.check.result.rc == 0", &s), Ok(true));
        assert_eq!(is_true("nodes.web | length > 2", &s), Ok(false));
        assert_eq!(is_true("inputs.cluster.upper() == 'ALPHA'", &s), Ok(true));
    }

    #[test]
    fn undefined_names_and_bad_syntax_are_errors() {
        let s = scope();
        let e = is_true("inputs.clustr == 'a'", &s).expect_err("undefined");
        assert_eq!(e.text, "inputs.clustr == 'a'");
        assert!(check_expression("a ==").is_err());
        assert!(check_template("{{ a").is_err());
        assert!(check_template("{{ a }}").is_ok());
    }
}
