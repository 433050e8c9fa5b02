//! Rules, compiled: which events match, and the keys their gates and concurrency policy use.
//!
//! Conditions are Jinja expressions (minijinja, with Python-style string methods), evaluated
//! over the payload's top-level fields plus `payload` (the whole payload) and `event`
//! (`source`, `routing_key`, `headers`), as Ansible's `when` sees variables. A `flow` action's
//! inputs are templates over the same (see [`crate::inputs`]).

use crate::config::{ActionConfig, RuleConfig, RulesFile, Settings, Translator};
use crate::routing::{KeyError, KeyPattern, playbook_for_key};
use crate::sink::Inbound;
use minijinja::Environment;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use troupe_core::ValidationError;
use troupe_core::inbound::{ConcurrencyPolicy, GateKind};
use troupe_core::overrides::Overrides;
use troupe_core::project::PlaybookRef;

/// A rules document that compiled: every reference, pattern and expression checked.
#[derive(Debug)]
pub struct Rules {
    file: RulesFile,
    rules: Vec<Rule>,
    env: Environment<'static>,
    /// Where a `flow` action's inputs render (stricter about undefined values).
    inputs_env: Environment<'static>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its configuration.
    pub config: RuleConfig,
    sources: Vec<String>,
    patterns: Vec<KeyPattern>,
    /// What it runs.
    pub target: Target,
    /// The run options its action gives over a template's defaults (or the plain ones),
    /// worked out once here rather than for every event.
    overrides: Overrides,
}

/// Which playbook a rule runs, or which flow it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Always this one.
    Playbook(String),
    /// The one the routing key names under a directory.
    Named {
        /// The directory, relative to the project.
        dir: String,
        /// How the key names the file.
        translator: Translator,
    },
    /// A template's.
    Template(String),
    /// An execution of a flow, with inputs from the event.
    Flow {
        /// The flow's name.
        name: String,
        /// Its version; the newest when the event arrives if `None`.
        version: Option<i64>,
    },
}

/// A rule an event matched, with what its gates and policy need.
#[derive(Debug, Clone)]
pub struct Match<'r> {
    /// The rule.
    pub rule: &'r Rule,
    /// Gates to pass (kind, rendered key, window), or why they could not be rendered.
    pub gates: Result<Vec<(GateKind, String, Duration)>, GateError>,
    /// The concurrency key and policy.
    pub concurrency: (String, ConcurrencyPolicy),
}

/// Why a matching rule's gate keys could not be rendered for an event (the event's record
/// keeps the message as the proposal's reason). minijinja's errors are shared, not copied,
/// as a [`Match`] is cloned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GateError {
    /// `dedupe.key` failed to evaluate.
    #[error("dedupe.key: {0}")]
    DedupeKey(#[source] Arc<minijinja::Error>),
    /// `dedupe.key` evaluated to nothing, so there is no id to deduplicate on.
    #[error("dedupe.key ({0}) is undefined for this event, so it cannot be deduplicated")]
    DedupeUndefined(String),
    /// One of `throttle.group_by` failed to evaluate.
    #[error("throttle.group_by[{index}]: {source}")]
    GroupBy {
        /// Which expression of `group_by`.
        index: usize,
        /// Why it failed.
        #[source]
        source: Arc<minijinja::Error>,
    },
}

/// Why a rule's conditions could not be decided for an event.
#[derive(Debug, thiserror::Error)]
enum ConditionError {
    /// The expression does not compile (compilation checked it, so only a changed
    /// environment gets here).
    #[error("when[{index}]: {source}")]
    Compile {
        index: usize,
        #[source]
        source: minijinja::Error,
    },
    /// The expression failed on this event's payload.
    #[error("when[{index}] ({expr}): {source}")]
    Eval {
        index: usize,
        expr: String,
        #[source]
        source: minijinja::Error,
    },
}

/// Why a rule's action names nothing to run.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    #[error(
        "give exactly one of playbook, playbooks_dir (run the playbook the routing key \
         names), template or flow"
    )]
    NotExactlyOne,
    #[error("a project is needed (by name) unless a template is launched or a flow started")]
    NoProject,
    #[error("{0} does not apply to a flow (a flow's steps say what they run); leave it out")]
    NotForFlow(&'static str),
    #[error("flow needs a flow's name")]
    EmptyFlow,
    #[error("inputs are a flow's; without flow use vars")]
    InputsWithoutFlow,
    #[error("version is a flow's; give it with flow")]
    VersionWithoutFlow,
    #[error("version must be 1 or more, got {0}")]
    BadVersion(i64),
    #[error("give inventory (by name) or ansible_inventory: true (the ansible.cfg's), not both")]
    TwoInventories,
    #[error(transparent)]
    Playbook(#[from] ValidationError),
    #[error("playbooks_dir {dir:?} must be a relative path inside the project")]
    PlaybooksDir {
        dir: String,
        #[source]
        source: ValidationError,
    },
}

/// Why an event matched no rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch(pub String);

impl Rules {
    /// Compiles a parsed document; every problem is listed, each naming where it is
    /// (`rules[2].when[0]: ...`).
    pub fn compile(file: RulesFile) -> Result<Rules, Vec<String>> {
        let env = environment();
        let mut errors = Vec::new();
        for (name, source) in &file.sources {
            if let Err(e) = troupe_core::project::validate_name(name, "source") {
                errors.push(format!("sources.{name}: {e}"));
            }
            if let Err(e) = crate::sources::validate(source) {
                errors.push(format!("sources.{name}: {e}"));
            }
        }
        let mut rules = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, cfg) in file.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            match compile_rule(&env, &file, cfg, &at) {
                Ok(rule) => rules.push(rule),
                Err(mut e) => errors.append(&mut e),
            }
            if !names.insert(cfg.name.as_str()) {
                errors.push(format!("{at}: the rule name {:?} is used twice", cfg.name));
            }
        }
        if errors.is_empty() {
            Ok(Rules {
                file,
                rules,
                env,
                inputs_env: crate::inputs::environment(),
            })
        } else {
            Err(errors)
        }
    }

    /// Parses and compiles YAML text.
    pub fn from_yaml(text: &str) -> Result<Rules, Vec<String>> {
        let file = RulesFile::parse(text).map_err(|e| vec![e.to_string()])?;
        Rules::compile(file)
    }

    /// The document compiled.
    pub fn file(&self) -> &RulesFile {
        &self.file
    }

    /// Retention and limits.
    pub fn settings(&self) -> &Settings {
        &self.file.settings
    }

    /// The compiled rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a source of this name is configured.
    pub fn has_source(&self, name: &str) -> bool {
        self.file.sources.contains_key(name)
    }

    /// The rules `event` matches (source, routing key and every condition), with their gate
    /// and concurrency keys; or why none did.
    pub fn evaluate<'r>(
        &'r self,
        event: &Inbound,
        payload: &Value,
    ) -> Result<Vec<Match<'r>>, NoMatch> {
        let ctx = context(event, payload);
        let mut matches = Vec::new();
        let mut why = Vec::new();
        for rule in &self.rules {
            if !rule.sources.is_empty() && !rule.sources.contains(&event.source) {
                continue;
            }
            if !rule.patterns.iter().any(|p| p.matches(&event.routing_key)) {
                continue;
            }
            match self.conditions_hold(rule, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    why.push(format!("rule {:?}: conditions are false", rule.config.name));
                    continue;
                }
                Err(e) => {
                    why.push(format!("rule {:?}: {e}", rule.config.name));
                    continue;
                }
            }
            matches.push(Match {
                rule,
                gates: self.gates(rule, event, &ctx),
                concurrency: (
                    format!("{}\u{1f}{}", rule.config.name, event.routing_key),
                    rule.config.concurrency,
                ),
            });
        }
        if matches.is_empty() {
            if why.is_empty() {
                why.push(format!(
                    "no rule matches source {:?} and routing key {:?}",
                    event.source, event.routing_key
                ));
            }
            return Err(NoMatch(why.join("; ")));
        }
        Ok(matches)
    }

    fn conditions_hold(&self, rule: &Rule, ctx: &minijinja::Value) -> Result<bool, ConditionError> {
        for (index, expr) in rule.config.when.to_vec().into_iter().enumerate() {
            let compiled = self
                .env
                .compile_expression(&expr)
                .map_err(|source| ConditionError::Compile { index, source })?;
            let value = compiled
                .eval(ctx.clone())
                .map_err(|source| ConditionError::Eval {
                    index,
                    expr: expr.clone(),
                    source,
                })?;
            if !value.is_true() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn gates(
        &self,
        rule: &Rule,
        event: &Inbound,
        ctx: &minijinja::Value,
    ) -> Result<Vec<(GateKind, String, Duration)>, GateError> {
        let mut gates = Vec::new();
        if let Some(d) = &rule.config.dedupe {
            let id = self
                .render(&d.key, ctx)
                .map_err(|e| GateError::DedupeKey(Arc::new(e)))?;
            if id.is_undefined() || id.is_none() {
                return Err(GateError::DedupeUndefined(d.key.clone()));
            }
            gates.push((GateKind::Dedupe, id.to_string(), d.within));
        }
        if let Some(t) = &rule.config.throttle {
            let mut group = vec![Value::String(event.routing_key.clone())];
            for (index, expr) in t.group_by.iter().enumerate() {
                let v = self.render(expr, ctx).map_err(|e| GateError::GroupBy {
                    index,
                    source: Arc::new(e),
                })?;
                group.push(serde_json::to_value(&v).unwrap_or(Value::Null));
            }
            gates.push((
                GateKind::Throttle,
                Value::Array(group).to_string(),
                t.once_within,
            ));
        }
        Ok(gates)
    }

    /// A `flow` rule's inputs rendered for `event` (empty for other rules).
    pub fn flow_inputs(
        &self,
        rule: &Rule,
        event: &Inbound,
        payload: &Value,
    ) -> Result<Map<String, Value>, crate::inputs::InputError> {
        crate::inputs::render(
            &self.inputs_env,
            &rule.config.action.inputs,
            &context(event, payload),
        )
    }

    fn render(
        &self,
        expr: &str,
        ctx: &minijinja::Value,
    ) -> Result<minijinja::Value, minijinja::Error> {
        self.env
            .compile_expression(expr)
            .and_then(|c| c.eval(ctx.clone()))
    }
}

impl Rule {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its action.
    pub fn action(&self) -> &ActionConfig {
        &self.config.action
    }

    /// The run options its action gives (see [`troupe_core::overrides`]).
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// The playbook it runs for `routing_key` (relative to the project); `None` for
    /// templates (the template names it).
    pub fn playbook_for(&self, routing_key: &str) -> Result<Option<String>, KeyError> {
        match &self.target {
            Target::Playbook(p) => Ok(Some(p.clone())),
            Target::Named { dir, translator } => {
                playbook_for_key(dir, routing_key, *translator).map(Some)
            }
            Target::Template(_) | Target::Flow { .. } => Ok(None),
        }
    }

    /// A one-line explanation, for `troupe rules check`.
    pub fn explain(&self) -> String {
        let sources = if self.sources.is_empty() {
            "any source".to_owned()
        } else {
            format!("source {}", self.sources.join(" or "))
        };
        let keys = self
            .config
            .routing_keys
            .to_vec()
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut s = format!(
            "{}: events from {sources} with routing key {keys}",
            self.name()
        );
        let when = self.config.when.to_vec();
        if !when.is_empty() {
            s.push_str(&format!(" where {}", when.join(" and ")));
        }
        let project = self.action().project.as_deref().unwrap_or("?");
        let mut is_flow = false;
        match &self.target {
            Target::Playbook(p) => s.push_str(&format!(" run {project}:{p}")),
            Target::Named { dir, translator } => s.push_str(&format!(
                " run the playbook the key names under {project}:{dir} ({})",
                match translator {
                    Translator::Rkname => "rkname: <key>.yml",
                    Translator::Rkdirectory => "rkdirectory: dots become directories",
                }
            )),
            Target::Template(t) => s.push_str(&format!(" launch template {t}")),
            Target::Flow { name, version } => {
                is_flow = true;
                s.push_str(&format!(" start flow {name}"));
                match version {
                    Some(v) => s.push_str(&format!(" (version {v})")),
                    None => s.push_str(" (its newest version)"),
                }
                let inputs = &self.action().inputs;
                if inputs.is_empty() {
                    s.push_str(" with no inputs given (defaults apply)");
                } else {
                    let given = inputs
                        .iter()
                        .map(|(k, v)| match v {
                            Value::String(t) => format!("{k} = {t}"),
                            other => format!("{k} = {other}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    s.push_str(&format!(" with inputs {given}"));
                }
            }
        }
        if !is_flow {
            match &self.action().vars_key {
                Some(k) => s.push_str(&format!(", payload in extra var {k}")),
                None => s.push_str(", payload as extra vars"),
            }
        }
        if let Some(t) = &self.config.throttle {
            s.push_str(&format!(
                "; at most once per {} per {}",
                humantime::format_duration(t.once_within),
                if t.group_by.is_empty() {
                    "routing key".to_owned()
                } else {
                    format!("routing key and {}", t.group_by.join(", "))
                }
            ));
        }
        if let Some(d) = &self.config.dedupe {
            s.push_str(&format!(
                "; one run per {} within {}",
                d.key,
                humantime::format_duration(d.within)
            ));
        }
        if is_flow {
            s.push_str("; the flow's own concurrency applies");
        } else {
            s.push_str(&format!(
                "; while a run for the same key is active: {}",
                self.config.concurrency.as_str()
            ));
        }
        s
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env
}

/// What conditions see: the payload's top-level fields, `payload` and `event`.
fn context(event: &Inbound, payload: &Value) -> minijinja::Value {
    let mut ctx = match payload {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    ctx.insert("payload".to_owned(), payload.clone());
    ctx.insert(
        "event".to_owned(),
        serde_json::json!({
            "source": event.source,
            "routing_key": event.routing_key,
            "headers": event.headers,
        }),
    );
    minijinja::Value::from(minijinja::value::Serde(Value::Object(ctx)))
}

fn compile_rule(
    env: &Environment<'static>,
    file: &RulesFile,
    cfg: &RuleConfig,
    at: &str,
) -> Result<Rule, Vec<String>> {
    let mut errors = Vec::new();
    if let Err(e) = troupe_core::project::validate_name(&cfg.name, "name") {
        errors.push(format!("{at}.name: {e}"));
    }
    let sources = cfg.sources.to_vec();
    for s in &sources {
        if !file.sources.contains_key(s) {
            errors.push(format!("{at}.sources: no source named {s:?} is configured"));
        }
    }
    let mut patterns = Vec::new();
    let keys = cfg.routing_keys.to_vec();
    if keys.is_empty() {
        errors.push(format!(
            "{at}.routing_keys: give at least one key, pattern, or `all`"
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        match KeyPattern::parse(k) {
            Ok(p) => patterns.push(p),
            Err(e) => errors.push(format!("{at}.routing_keys[{i}]: {e}")),
        }
    }
    let mut exprs: Vec<(String, String)> = cfg
        .when
        .to_vec()
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w, format!("when[{i}]")))
        .collect();
    if let Some(t) = &cfg.throttle {
        for (i, g) in t.group_by.iter().enumerate() {
            exprs.push((g.clone(), format!("throttle.group_by[{i}]")));
        }
        if t.once_within.is_zero() {
            errors.push(format!("{at}.throttle.once_within: must be longer than 0"));
        }
    }
    if let Some(d) = &cfg.dedupe {
        exprs.push((d.key.clone(), "dedupe.key".to_owned()));
        if d.within.is_zero() {
            errors.push(format!("{at}.dedupe.within: must be longer than 0"));
        }
    }
    for (expr, field) in exprs {
        if let Err(e) = env.compile_expression(&expr) {
            errors.push(format!("{at}.{field}: {e}"));
        }
    }
    let target = match target(&cfg.action) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!("{at}.action: {e}"));
            None
        }
    };
    for e in crate::inputs::check(&crate::inputs::environment(), &cfg.action.inputs) {
        errors.push(format!("{at}.action.{e}"));
    }
    if matches!(target, Some(Target::Flow { .. })) && cfg.concurrency != ConcurrencyPolicy::Queue {
        errors.push(format!(
            "{at}.concurrency: {} applies to runs; a flow's own `concurrency` (in the flow \
             document) decides for its executions",
            cfg.concurrency.as_str()
        ));
    }
    if let Some(k) = &cfg.action.vars_key
        && (k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit()))
    {
        errors.push(format!(
            "{at}.action.vars_key: {k:?} is not a valid variable name"
        ));
    }
    if let Some(o) = &cfg.action.options {
        if let Err(e) = o.validate() {
            errors.push(format!("{at}.action.options: {e}"));
        }
        if !o.extra_vars.is_empty() {
            errors.push(format!(
                "{at}.action.options.extra_vars: use action.vars for static extra vars"
            ));
        }
    }
    for (i, n) in cfg.action.notify.iter().enumerate() {
        if let Err(e) = n.validate(&format!("{at}.action.notify[{i}]"), false) {
            errors.push(e.to_string());
        }
    }
    match target {
        Some(target) if errors.is_empty() => Ok(Rule {
            overrides: Overrides::given_in(&cfg.action.options.clone().unwrap_or_default()),
            config: cfg.clone(),
            sources,
            patterns,
            target,
        }),
        _ => Err(errors),
    }
}

fn target(a: &ActionConfig) -> Result<Target, TargetError> {
    let given = [
        a.playbook.is_some(),
        a.playbooks_dir.is_some(),
        a.template.is_some(),
        a.flow.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(TargetError::NotExactlyOne);
    }
    if let Some(name) = &a.flow {
        return flow_target(a, name);
    }
    if a.ansible_inventory && a.inventory.is_some() {
        return Err(TargetError::TwoInventories);
    }
    if !a.inputs.is_empty() {
        return Err(TargetError::InputsWithoutFlow);
    }
    if a.version.is_some() {
        return Err(TargetError::VersionWithoutFlow);
    }
    if a.template.is_none() && a.project.is_none() {
        return Err(TargetError::NoProject);
    }
    if let Some(p) = &a.playbook {
        PlaybookRef::parse(p)?;
        return Ok(Target::Playbook(p.clone()));
    }
    if let Some(dir) = &a.playbooks_dir {
        // The directory must itself be a safe relative path: check it as a playbook would be.
        if dir != "." && !dir.is_empty() {
            PlaybookRef::parse(&format!("{}/x.yml", dir.trim_end_matches('/'))).map_err(
                |source| TargetError::PlaybooksDir {
                    dir: dir.clone(),
                    source,
                },
            )?;
        }
        return Ok(Target::Named {
            dir: dir.clone(),
            translator: a.translator,
        });
    }
    Ok(Target::Template(a.template.clone().unwrap_or_default()))
}

/// A `flow` action: the run fields say nothing to it, so giving one is a mistake to report.
fn flow_target(a: &ActionConfig, name: &str) -> Result<Target, TargetError> {
    let run_fields = [
        ("project", a.project.is_some()),
        ("inventory", a.inventory.is_some()),
        ("ansible_inventory", a.ansible_inventory),
        ("vars", !a.vars.is_empty()),
        ("vars_key", a.vars_key.is_some()),
        ("options", a.options.is_some()),
        ("labels", !a.labels.is_empty()),
        ("translator", a.translator != Translator::default()),
    ];
    if let Some((field, _)) = run_fields.iter().find(|(_, given)| *given) {
        return Err(TargetError::NotForFlow(field));
    }
    if name.trim().is_empty() {
        return Err(TargetError::EmptyFlow);
    }
    if let Some(v) = a.version
        && v < 1
    {
        return Err(TargetError::BadVersion(v));
    }
    Ok(Target::Flow {
        name: name.to_owned(),
        version: a.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Rules {
        Rules::from_yaml(yaml).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn ev(source: &str, key: &str) -> Inbound {
        Inbound::json(source, key, "{}")
    }

    const DOC: &str = r#"
sources:
  hook: {type: webhook}
  other: {type: webhook}
rules:
  - name: deploy
    sources: hook
    routing_keys: ["deploy.*"]
    when: ["branch == 'main'", "payload.ref.startswith('refs/heads/')"]
    action: {project: p, playbooks_dir: playbooks}
    throttle: {once_within: 5m, group_by: [payload.host]}
    dedupe: {key: payload.id, within: 1h}
    concurrency: skip
  - name: everything
    routing_keys: all
    action: {project: p, playbook: log.yml}
"#;

    #[test]
    fn matches_by_source_key_and_conditions() {
        let r = rules(DOC);
        let payload = serde_json::json!({"branch": "main", "ref": "refs/heads/main", "host": "web1", "id": 7});
        let m = r
            .evaluate(&ev("hook", "deploy.web"), &payload)
            .expect("matches");
        let names: Vec<_> = m.iter().map(|m| m.rule.name()).collect();
        assert_eq!(names, ["deploy", "everything"]);
        let gates = m[0].gates.clone().expect("gates render");
        assert_eq!(gates[0].0, GateKind::Dedupe);
        assert_eq!(gates[0].1, "7");
        assert_eq!(gates[1].0, GateKind::Throttle);
        assert_eq!(gates[1].1, r#"["deploy.web","web1"]"#);
        assert_eq!(m[0].concurrency.1, ConcurrencyPolicy::Skip);
        assert_eq!(
            m[0].rule.playbook_for("deploy.web"),
            Ok(Some("playbooks/deploy.web.yml".to_owned()))
        );

        // Other source: only the catch-all rule.
        let m = r
            .evaluate(&ev("other", "deploy.web"), &payload)
            .expect("matches");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rule.name(), "everything");

        // Condition false: only the catch-all.
        let payload = serde_json::json!({"branch": "dev", "ref": "refs/heads/dev"});
        let m = r
            .evaluate(&ev("hook", "deploy.web"), &payload)
            .expect("matches");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn unmatched_says_why() {
        let r = rules(
            "rules:\n  - name: a\n    routing_keys: [x.y]\n    when: \"n > 3\"\n    action: {project: p, playbook: a.yml}\n",
        );
        let e = r
            .evaluate(&ev("s", "x.z"), &serde_json::json!({}))
            .expect_err("no match");
        assert!(e.0.contains("\"x.z\""), "{e:?}");
        let e = r
            .evaluate(&ev("s", "x.y"), &serde_json::json!({"n": 1}))
            .expect_err("condition false");
        assert!(e.0.contains("conditions are false"), "{e:?}");
    }

    #[test]
    fn dedupe_needs_a_defined_id() {
        let r = rules(DOC);
        let payload = serde_json::json!({"branch": "main", "ref": "refs/heads/x"});
        let m = r
            .evaluate(&ev("hook", "deploy.db"), &payload)
            .expect("matches");
        let e = m[0].gates.clone().expect_err("no id");
        assert!(e.to_string().contains("payload.id"), "{e}");
    }

    #[test]
    fn compile_errors_name_the_place() {
        let e = Rules::from_yaml(
            r#"
rules:
  - name: a
    sources: [nope]
    routing_keys: ["a..b"]
    when: "payload.x =="
    action: {playbook: a.yml, template: t}
  - name: a
    routing_keys: x
    action: {project: p, playbooks_dir: ../up}
"#,
        )
        .expect_err("errors");
        let all = e.join("\n");
        for want in [
            "rules[0].sources",
            "rules[0].routing_keys[0]",
            "rules[0].when[0]",
            "rules[0].action: give exactly one",
            "rules[1]: the rule name \"a\" is used twice",
            "rules[1].action: playbooks_dir",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn flow_actions_compile_and_explain_themselves() {
        let r = rules(
            r#"
rules:
  - name: upgrade
    routing_keys: ["upgrade.*"]
    action:
      flow: web-upgrade
      version: 3
      inputs: {cluster: "{{ payload.cluster }}", batch: 2}
    dedupe: {key: payload.id, within: 1h}
  - name: plain
    routing_keys: all
    action: {flow: cleanup}
"#,
        );
        assert_eq!(
            r.rules()[0].target,
            Target::Flow {
                name: "web-upgrade".into(),
                version: Some(3)
            }
        );
        assert_eq!(r.rules()[0].playbook_for("upgrade.x"), Ok(None));
        let explained = r.rules()[0].explain();
        assert!(
            explained.contains(
                "start flow web-upgrade (version 3) with inputs batch = 2, cluster = {{ payload.cluster }}"
            ),
            "{explained}"
        );
        assert!(!explained.contains("extra vars"), "{explained}");
        assert!(
            explained.ends_with("; the flow's own concurrency applies"),
            "{explained}"
        );
        let explained = r.rules()[1].explain();
        assert!(
            explained.contains("start flow cleanup (its newest version) with no inputs given"),
            "{explained}"
        );
    }

    #[test]
    fn flow_action_mistakes_name_the_place() {
        let e = Rules::from_yaml(
            r#"
rules:
  - name: two
    routing_keys: x
    action: {flow: f, template: t}
  - name: project
    routing_keys: x
    action: {flow: f, project: p}
  - name: vars
    routing_keys: x
    action: {flow: f, vars: {a: 1}}
  - name: inputs
    routing_keys: x
    action: {project: p, playbook: a.yml, inputs: {a: "{{ x }}"}}
  - name: version
    routing_keys: x
    action: {template: t, version: 2}
  - name: bad-version
    routing_keys: x
    action: {flow: f, version: 0}
  - name: template
    routing_keys: x
    action: {flow: f, inputs: {a: "{{ payload. }}", b: "{% if %}"}}
  - name: policy
    routing_keys: x
    action: {flow: f}
    concurrency: skip
"#,
        )
        .expect_err("errors");
        let all = e.join("\n");
        for want in [
            "rules[0].action: give exactly one of playbook, playbooks_dir (run the playbook the routing key names), template or flow",
            "rules[1].action: project does not apply to a flow",
            "rules[2].action: vars does not apply to a flow",
            "rules[3].action: inputs are a flow's",
            "rules[4].action: version is a flow's",
            "rules[5].action: version must be 1 or more, got 0",
            "rules[6].action.inputs.a: syntax error",
            "rules[6].action.inputs.b: syntax error",
            "rules[7].concurrency: skip applies to runs",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}
