//! A flow in plain sentences, one a line, for `troupe flow validate`: what it takes, where
//! its nodes come from, what each step does and when, and what holds it back. A secret
//! input's default and Slack webhook URLs (credentials themselves) are never shown.

use crate::doc::{
    Action, Behavior, FlowDoc, InputSpec, NodeSet, NodeSource, Retry, Step, Validator, WhenEmpty,
};
use crate::inputs::{quote, type_name};
use std::fmt::Write;

/// The flow in sentences, one a line.
pub fn explain(doc: &FlowDoc) -> String {
    let mut lines = Vec::new();
    let mut head = format!("Flow {}", doc.name);
    if let Some(d) = &doc.description {
        let _ = write!(head, ": {}", d.trim());
    }
    lines.push(sentence(head));
    if doc.inputs.is_empty() {
        lines.push("It takes no inputs.".to_owned());
    }
    for (name, spec) in &doc.inputs {
        lines.push(sentence(format!("Input {name}: {}", input(spec))));
    }
    for (name, set) in &doc.nodes {
        lines.push(sentence(format!("Node set {name}: {}", node_set(set))));
    }
    for (list, steps) in doc.step_lists() {
        let (label, intro) = match list {
            "pre" => ("Pre-step", None),
            "steps" => ("Step", None),
            "on_success" => ("On success, step", None),
            "on_failure" => (
                "On failure, step",
                Some("When a step fails, these run (they see failure.step and failure.error)."),
            ),
            _ => ("Finally, step", Some("Whatever happened, these run last.")),
        };
        if let (Some(intro), false) = (intro, steps.is_empty()) {
            lines.push(intro.to_owned());
        }
        for (i, s) in steps.iter().enumerate() {
            lines.push(sentence(format!(
                "{label} {}{}: {}",
                i + 1,
                who(s),
                step(s)
            )));
        }
    }
    if doc.steps.is_empty() {
        lines.push("It has no steps.".to_owned());
    }
    if let Some(c) = &doc.concurrency {
        let per = match &c.key {
            Some(k) => format!(" per key {k}"),
            None => String::new(),
        };
        let n = if c.limit == 1 {
            "1 execution".to_owned()
        } else {
            format!("{} executions", c.limit)
        };
        let more = match c.behavior {
            Behavior::Queue => "one more waits in line for a place",
            Behavior::Skip => "one more is skipped",
            Behavior::CancelOlder => "one more cancels the oldest running to make room",
        };
        lines.push(sentence(format!("At most {n} at once{per}; {more}")));
    }
    if !doc.locks.is_empty() {
        let (s, locks) = (
            if doc.locks.len() == 1 { "" } else { "s" },
            doc.locks.join(", "),
        );
        lines.push(sentence(format!(
            "It holds the lock{s} {locks} for the whole execution, across replicas"
        )));
    }
    if let Some(t) = doc.timeout {
        lines.push(sentence(format!(
            "It may run for {t} at most; past that the step in flight is stopped gracefully and the execution ends timed out (handlers still run)"
        )));
    }
    for n in &doc.notify {
        let when = match n.on.0.as_slice() {
            [] => "when it ends".to_owned(),
            [w] if w == "always" => "when it ends".to_owned(),
            [w] if w == "success" => "when it succeeds".to_owned(),
            [w] if w == "failure" => "when it fails or times out".to_owned(),
            words => format!("when it ends {}", words.join(" or ")),
        };
        if let Some(w) = &n.webhook {
            // The URL may hold a secret: its scheme and host only.
            let shown = if w.contains("{{") {
                "a templated URL".to_owned()
            } else {
                troupe_core::notify::mask_url(w)
            };
            lines.push(sentence(format!("It posts a summary to {shown} {when}")));
        }
        if n.slack.is_some() {
            lines.push(sentence(format!("It tells Slack {when}")));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `text` ending with a full stop (once).
fn sentence(mut text: String) -> String {
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

fn input(spec: &InputSpec) -> String {
    let mut parts = vec![type_name(spec.kind).to_owned()];
    if spec.required {
        parts.push("required".to_owned());
    }
    if spec.secret {
        parts.push("secret (never shown in history, events or logs)".to_owned());
    }
    match (&spec.default, spec.secret) {
        (Some(_), true) => parts.push("has a default (not shown)".to_owned()),
        (Some(d), false) => parts.push(format!("default {}", quote(d))),
        (None, _) if !spec.required => parts.push("optional".to_owned()),
        (None, _) => {}
    }
    if let Some(allowed) = &spec.allowed {
        let list = allowed.iter().map(quote).collect::<Vec<_>>().join(", ");
        parts.push(format!("one of {list}"));
    }
    if let Some(p) = &spec.pattern {
        parts.push(format!("matching {p:?} whole"));
    }
    if spec.validate == Some(Validator::Shellsafe) {
        parts.push("shellsafe (no character a shell treats specially)".to_owned());
    }
    let mut s = parts.join(", ");
    if let Some(d) = &spec.description {
        let _ = write!(s, " — {}", d.trim());
    }
    s
}

fn node_set(set: &NodeSet) -> String {
    let mut s = match &set.source {
        NodeSource::Static(names) => format!("the list {}", names.join(", ")),
        NodeSource::Inventory(i) => format!(
            "the hosts of inventory {} matching {}",
            i.name,
            i.pattern.as_deref().unwrap_or("all")
        ),
        NodeSource::File(f) => format!("the names in {} of project {}", f.path, f.project),
        NodeSource::Command(c) => {
            let mut s = format!("the names printed by `{}`", c.command);
            if let Some(t) = c.timeout {
                let _ = write!(s, " (within {t})");
            }
            s
        }
        NodeSource::Http(h) => {
            let mut s = format!("the names in the JSON from GET {}", h.url);
            if let Some(p) = &h.pointer {
                let _ = write!(s, " at {p}");
            }
            if let Some(f) = &h.field {
                let _ = write!(s, ", field {f} of each item");
            }
            s
        }
        NodeSource::Puppetdb(p) => {
            format!("the certnames PuppetDB at {} answers to {}", p.url, p.query)
        }
        NodeSource::Consul(c) => {
            let mut s = match &c.service {
                Some(svc) => format!("the nodes of service {svc}"),
                None => "every node".to_owned(),
            };
            if let Some(t) = &c.tag {
                let _ = write!(s, " tagged {t}");
            }
            let _ = write!(s, " in Consul at {}", c.url);
            if let Some(dc) = &c.datacenter {
                let _ = write!(s, ", datacenter {dc}");
            }
            if c.use_address {
                s.push_str(", by address");
            }
            s
        }
        NodeSource::Etcd(e) => format!("the keys under {} in etcd at {}", e.prefix, e.url),
    };
    if let Some(n) = set.at_least {
        let _ = write!(s, "; fewer than {n} is a failure");
    }
    if let Some(n) = set.limit {
        let _ = write!(s, "; the first {n} are kept");
    }
    s.push_str(match set.when_empty {
        WhenEmpty::Fail => "; when none is found, the execution fails",
        WhenEmpty::Skip => "; when none is found, the steps that use it are skipped",
        WhenEmpty::Continue => "; when none is found, it goes on with none",
    });
    if !set.vars.is_empty() {
        let vars = set.vars.keys().cloned().collect::<Vec<_>>().join(", ");
        let _ = write!(s, "; as an inventory, each node gets the vars {vars}");
    }
    s
}

/// ` up` or ` up ("Upgrade the web tier")`: the step's id and name, when it has them.
fn who(s: &Step) -> String {
    match (&s.id, &s.name) {
        (Some(id), Some(name)) => format!(" {id} ({name:?})"),
        (Some(id), None) => format!(" {id}"),
        (None, Some(name)) => format!(" ({name:?})"),
        (None, None) => String::new(),
    }
}

fn step(s: &Step) -> String {
    let mut out = action(&s.action);
    if let Some(w) = &s.when {
        let _ = write!(out, ", only when {w}");
    }
    if let Some(r) = &s.retry {
        let _ = write!(out, ", {}", retry(r));
    }
    if let Some(t) = s.timeout {
        let _ = write!(out, ", each try stopped after {t}");
    }
    if s.continue_on_error {
        out.push_str("; a failure does not fail the flow");
    }
    if !s.publish.is_empty() {
        let names = s.publish.keys().cloned().collect::<Vec<_>>().join(", ");
        let _ = write!(out, "; publishes {names}");
    }
    out
}

fn action(a: &Action) -> String {
    match a {
        Action::Playbook(p) => {
            let mut s = match (&p.template, &p.project, &p.playbook) {
                (Some(t), _, _) => format!("launches template {t}"),
                (None, project, playbook) => format!(
                    "runs playbook {} of project {}",
                    playbook.as_deref().unwrap_or("?"),
                    project.as_deref().unwrap_or("?")
                ),
            };
            match (&p.nodes, &p.inventory) {
                (Some(n), Some(i)) => {
                    let _ = write!(s, " on inventory {i}, limited to node set {n}");
                }
                (Some(n), None) => {
                    let _ = write!(s, " against node set {n}");
                }
                (None, Some(i)) => {
                    let _ = write!(s, " on inventory {i}");
                }
                (None, None) => {}
            }
            if !p.extra_vars.is_empty() {
                let vars = p.extra_vars.keys().cloned().collect::<Vec<_>>().join(", ");
                let _ = write!(s, " with extra vars {vars}");
            }
            if !p.options.is_empty() {
                let opts = p.options.keys().cloned().collect::<Vec<_>>().join(", ");
                let _ = write!(s, " (options {opts})");
            }
            s
        }
        Action::Shell(sh) => {
            let mut s = format!("runs `{}`", sh.command);
            if let Some(cwd) = &sh.cwd {
                let _ = write!(s, " in {cwd}");
            }
            if !sh.env.is_empty() {
                let env = sh.env.keys().cloned().collect::<Vec<_>>().join(", ");
                let _ = write!(s, " with {env} set");
            }
            s
        }
        Action::Http(h) => {
            let expect = if h.expect.is_empty() {
                "a 2xx status".to_owned()
            } else {
                let codes: Vec<_> = h.expect.iter().map(u16::to_string).collect();
                format!("status {}", codes.join(" or "))
            };
            let mut s = format!("sends {} {}", h.method.to_ascii_uppercase(), h.url);
            if h.body.is_some() {
                s.push_str(" with a body");
            }
            let _ = write!(s, " and expects {expect}");
            s
        }
        Action::Slack(sl) => format!("posts to Slack {:?}", sl.text),
        Action::Flow(f) => {
            let mut s = format!("runs flow {}", f.name);
            let mut given = Vec::new();
            if !f.inputs.is_empty() {
                given.push(format!(
                    "the inputs {}",
                    f.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if f.pass_inputs {
                given.push("this execution's inputs".to_owned());
            }
            if !given.is_empty() {
                let _ = write!(s, " with {}", given.join(" and "));
            }
            s
        }
        Action::Sleep(d) => format!("waits {d}"),
        Action::Approval(ap) => {
            let mut s = "waits for approval".to_owned();
            if let Some(m) = &ap.message {
                let _ = write!(s, " ({m:?})");
            }
            match ap.timeout {
                Some(t) => {
                    let _ = write!(s, " for up to {t}");
                }
                None => s.push_str(" for up to 1h"),
            }
            s
        }
        Action::Log(line) => format!("logs {line:?}"),
    }
}

/// `up to 3 tries, 10s apart, doubling, at most 1m apart, until …`.
fn retry(r: &Retry) -> String {
    let mut s = if r.attempts == 1 {
        "1 try".to_owned()
    } else {
        format!("up to {} tries", r.attempts)
    };
    if r.attempts > 1 {
        if r.delay.0.is_zero() {
            s.push_str(", at once");
        } else {
            let _ = write!(s, ", {} apart", r.delay);
        }
        if r.backoff == 2.0 {
            s.push_str(", doubling");
        } else if r.backoff != 1.0 {
            let _ = write!(s, ", each wait {}× the one before", r.backoff);
        }
        if let Some(m) = r.max_delay {
            let _ = write!(s, ", never more than {m} apart");
        }
    }
    if let Some(u) = &r.until {
        let _ = write!(s, ", until {u}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load;

    #[test]
    fn a_flow_reads_as_sentences() {
        let doc = load(
            r#"
name: web-upgrade
description: Upgrade the web tier
inputs:
  cluster: {type: string, required: true, validate: shellsafe, description: which cluster}
  token: {type: string, secret: true, default: "tok-very-secret"}
  count: {type: integer, default: 3, enum: [1, 3]}
nodes:
  web: {static: [w1, w2], at_least: 1, limit: 5}
  db: {consul: {url: "http://127.0.0.1:8500", service: db, tag: primary}, when_empty: skip}
pre:
  - log: "starting {{ inputs.cluster }}"
steps:
  - id: upgrade
    name: Upgrade
    playbook: {project: web, playbook: upgrade.yml, nodes: web, extra_vars: {v: 2}}
    retry: {attempts: 3, delay: 10s, backoff: 2, until: "result.status == 'successful'"}
    timeout: 10m
  - id: check
    http: {url: "http://127.0.0.1/health", expect: [200, 204]}
    when: "inputs.count > 1"
    continue_on_error: true
    publish: {code: "{{ result.status }}"}
  - sleep: 30s
on_failure:
  - slack: {webhook: "https://hooks.slack.example/T0/B0/xyz", text: "{{ failure.step }} failed"}
  - flow: {name: rollback, pass_inputs: true}
finally:
  - approval: {message: "look at it", timeout: 2h}
concurrency: {key: "{{ inputs.cluster }}", limit: 2, behavior: cancel_older}
locks: [lb]
timeout: 1h
notify:
  - {slack: "https://hooks.slack.example/T0/B0/abc", on: failure}
"#,
        )
        .expect("a valid flow");
        let text = explain(&doc);
        for want in [
            "Flow web-upgrade: Upgrade the web tier.",
            "Input cluster: a string, required, shellsafe (no character a shell treats specially) — which cluster.",
            "Input token: a string, secret (never shown in history, events or logs), has a default (not shown).",
            "Input count: an integer, default 3, one of 1, 3.",
            "Node set web: the list w1, w2; fewer than 1 is a failure; the first 5 are kept; when none is found, the execution fails.",
            "Node set db: the nodes of service db tagged primary in Consul at http://127.0.0.1:8500; when none is found, the steps that use it are skipped.",
            "Pre-step 1: logs \"starting {{ inputs.cluster }}\".",
            "Step 1 upgrade (\"Upgrade\"): runs playbook upgrade.yml of project web against node set web with extra vars v, up to 3 tries, 10s apart, doubling, until result.status == 'successful', each try stopped after 10m.",
            "Step 2 check: sends GET http://127.0.0.1/health and expects status 200 or 204, only when inputs.count > 1; a failure does not fail the flow; publishes code.",
            "Step 3: waits 30s.",
            "When a step fails, these run",
            "On failure, step 1: posts to Slack \"{{ failure.step }} failed\".",
            "On failure, step 2: runs flow rollback with this execution's inputs.",
            "Finally, step 1: waits for approval (\"look at it\") for up to 2h.",
            "At most 2 executions at once per key {{ inputs.cluster }}; one more cancels the oldest running to make room.",
            "It holds the lock lb for the whole execution, across replicas.",
            "It may run for 1h at most",
            "It tells Slack when it fails or times out.",
        ] {
            assert!(
                text.lines().any(|l| l.contains(want)),
                "missing {want:?} in\n{text}"
            );
        }
        assert!(!text.contains("tok-very-secret"), "{text}");
        assert!(!text.contains("hooks.slack.example"), "{text}");
        assert!(text.lines().all(|l| l.ends_with('.')), "{text}");
    }

    #[test]
    fn retries_read_in_every_shape() {
        let r = |yaml: &str| retry(&serde_saphyr::from_str::<Retry>(yaml).expect("retry"));
        assert_eq!(r("{attempts: 5, delay: 30s}"), "up to 5 tries, 30s apart");
        assert_eq!(r("{attempts: 2}"), "up to 2 tries, at once");
        assert_eq!(
            r("{attempts: 4, delay: 1s, backoff: 1.5, max_delay: 1m}"),
            "up to 4 tries, 1s apart, each wait 1.5× the one before, never more than 1m apart"
        );
        assert_eq!(r("{attempts: 1, until: 'x'}"), "1 try, until x");
    }
}
