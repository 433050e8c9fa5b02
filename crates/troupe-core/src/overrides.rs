//! How a launch's options combine with a template's defaults: the one definition every way of
//! launching uses (a template launched through the API, an event rule's options over its
//! template, a rule or a flow step without a template over the plain defaults).
//!
//! - `extra_vars` are merged key by key over the defaults' (a given key wins);
//! - every other option given replaces the default as a whole (`null` clears an optional one);
//! - options not given keep the default.
//!
//! What counts as "given" depends on where the options come from: a launch body gives exactly
//! the keys it has ([`Overrides::from_map`]); a rule's `options`, written as a whole set of run
//! options, gives those that differ from the defaults ([`Overrides::given_in`]).

use crate::ValidationError;
use crate::run::RunOptions;
use crate::text::json_kind;
use serde_json::{Map, Value};

/// Run options given over some defaults, by option name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(Map<String, Value>);

/// The names of every run option, in the order [`RunOptions`] declares them.
pub fn option_names() -> Vec<String> {
    match serde_json::to_value(RunOptions {
        // Every optional field set, so none is skipped when serialized.
        limit: Some(String::new()),
        tags: vec![String::new()],
        skip_tags: vec![String::new()],
        forks: Some(1),
        timeout_s: Some(1),
        start_at_task: Some(String::new()),
        slices: Some(1),
        slice_size: Some(1),
        credentials: vec![String::new()],
        connection: Some(String::new()),
        remote_user: Some(String::new()),
        become_: true,
        become_method: Some(String::new()),
        become_user: Some(String::new()),
        ssh_common_args: Some(String::new()),
        ssh_extra_args: Some(String::new()),
        worker_labels: vec![String::new()],
        launcher: Some(crate::run::LauncherKind::Exec),
        ..RunOptions::default()
    }) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

impl Overrides {
    /// No overrides: the defaults as they are.
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// The options a launch body gives, key by key; every key must name a run option.
    pub fn from_map(map: Map<String, Value>) -> Result<Overrides, ValidationError> {
        let names = option_names();
        if let Some(key) = map.keys().find(|k| !names.contains(k)) {
            return Err(ValidationError::new(
                "invalid_body",
                key.clone(),
                format!("{key:?} is not a run option (one of: {})", names.join(", ")),
            ));
        }
        Ok(Overrides(map))
    }

    /// The options a complete set gives over the plain defaults: those that differ from them
    /// (extra vars when there are any).
    pub fn given_in(options: &RunOptions) -> Overrides {
        let (Ok(Value::Object(given)), Ok(Value::Object(defaults))) = (
            serde_json::to_value(options),
            serde_json::to_value(RunOptions::default()),
        ) else {
            return Overrides::default();
        };
        Overrides(
            given
                .into_iter()
                .filter(|(k, v)| match k.as_str() {
                    "extra_vars" => v.as_object().is_some_and(|m| !m.is_empty()),
                    _ => defaults.get(k) != Some(v),
                })
                .collect(),
        )
    }

    /// Adds extra vars, merged over those already given (a key given here wins).
    pub fn add_extra_vars(&mut self, vars: Map<String, Value>) {
        if vars.is_empty() {
            return;
        }
        match self.0.get_mut("extra_vars") {
            Some(Value::Object(existing)) => existing.extend(vars),
            _ => {
                self.0.insert("extra_vars".to_owned(), Value::Object(vars));
            }
        }
    }

    /// The names of the options given.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether nothing is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `defaults` with these overrides applied (see the module's documentation), validated.
    pub fn apply(&self, defaults: &RunOptions) -> Result<RunOptions, ValidationError> {
        let mut extra_vars = defaults.extra_vars.clone();
        match self.0.get("extra_vars") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                extra_vars.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())))
            }
            Some(other) => {
                return Err(ValidationError::new(
                    "invalid_extra_vars",
                    "extra_vars",
                    format!("extra_vars must be a JSON object, got {}", json_kind(other)),
                ));
            }
        }
        let mut options = match serde_json::to_value(defaults) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        options.remove("extra_vars");
        for (k, v) in &self.0 {
            if k != "extra_vars" {
                options.insert(k.clone(), v.clone());
            }
        }
        let mut options: RunOptions = serde_json::from_value(Value::Object(options))
            .map_err(|e| ValidationError::new("invalid_body", "overrides", e.to_string()))?;
        options.extra_vars = extra_vars;
        options.validate()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn defaults() -> RunOptions {
        RunOptions {
            extra_vars: map(json!({"a": 1, "b": 2})),
            limit: Some("web".into()),
            check: true,
            forks: Some(5),
            ..RunOptions::default()
        }
    }

    #[test]
    fn every_option_has_a_name() {
        let names = option_names();
        for name in [
            "extra_vars",
            "limit",
            "tags",
            "check",
            "slices",
            "slice_size",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    #[test]
    fn a_body_overrides_exactly_what_it_gives() {
        let cases: &[(Value, Value)] = &[
            // Nothing given: the defaults.
            (
                json!({}),
                json!({"extra_vars": {"a": 1, "b": 2}, "limit": "web", "check": true, "forks": 5}),
            ),
            // extra_vars merged key by key; others replaced; false is given too.
            (
                json!({"extra_vars": {"b": 3, "c": 4}, "check": false, "tags": ["x"]}),
                json!({"extra_vars": {"a": 1, "b": 3, "c": 4}, "limit": "web", "check": false, "forks": 5, "tags": ["x"]}),
            ),
            // null clears an optional default.
            (
                json!({"limit": null}),
                json!({"extra_vars": {"a": 1, "b": 2}, "check": true, "forks": 5}),
            ),
        ];
        for (body, want) in cases {
            let got = Overrides::from_map(map(body.clone()))
                .and_then(|o| o.apply(&defaults()))
                .map(|o| serde_json::to_value(o).unwrap_or_default());
            let want: RunOptions = serde_json::from_value(want.clone()).unwrap_or_default();
            assert_eq!(
                got,
                Ok(serde_json::to_value(want).unwrap_or_default()),
                "{body}"
            );
        }
    }

    #[test]
    fn rule_options_give_what_differs_from_the_plain_defaults() {
        let rule = RunOptions {
            extra_vars: map(json!({"c": 3})),
            tags: vec!["t".into()],
            verbosity: 2,
            ..RunOptions::default()
        };
        let given = Overrides::given_in(&rule);
        let mut keys: Vec<&str> = given.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["extra_vars", "tags", "verbosity"]);
        let applied = given.apply(&defaults()).unwrap_or_default();
        assert_eq!(applied.extra_vars, map(json!({"a": 1, "b": 2, "c": 3})));
        assert_eq!(applied.limit.as_deref(), Some("web"), "not given: kept");
        assert!(applied.check, "false is the plain default, so not given");
        assert_eq!((applied.verbosity, applied.tags), (2, vec!["t".to_owned()]));
        assert!(Overrides::given_in(&RunOptions::default()).is_empty());
    }

    #[test]
    fn bad_overrides_name_the_field() {
        let cases: &[(Value, &str, &str)] = &[
            (json!({"nope": 1}), "invalid_body", "nope"),
            (
                json!({"extra_vars": [1]}),
                "invalid_extra_vars",
                "extra_vars",
            ),
            (json!({"forks": "many"}), "invalid_body", "overrides"),
            (json!({"forks": 0}), "invalid_field", "forks"),
        ];
        for (body, code, field) in cases {
            let err = Overrides::from_map(map(body.clone()))
                .and_then(|o| o.apply(&defaults()))
                .err();
            assert_eq!(
                err.as_ref().map(|e| (e.code, e.field.as_str())),
                Some((*code, *field)),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn added_extra_vars_win_over_given_ones() {
        let mut o = Overrides::given_in(&RunOptions {
            extra_vars: map(json!({"a": "rule", "k": 1})),
            ..RunOptions::default()
        });
        o.add_extra_vars(map(json!({"a": "event"})));
        let applied = o.apply(&defaults()).unwrap_or_default();
        assert_eq!(
            applied.extra_vars,
            map(json!({"a": "event", "b": 2, "k": 1}))
        );
    }
}
