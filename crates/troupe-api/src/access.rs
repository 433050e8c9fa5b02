//! Who may call what: one table from (method, path pattern) to the roles that may call the
//! route and what a token limited to some projects may see there. The auth middleware
//! (`auth::require_token`) and the webhook routes decide from it alone; docs/security.md shows
//! it (a test keeps the two the same).

use axum::http::Method;
use troupe_core::worker::TokenRole;

/// Which roles may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading: viewer, operator, admin.
    Viewer,
    /// Acting on what exists (launch, cancel, sync, approve...): operator, admin.
    Operator,
    /// Changing definitions, tokens, credentials, rules: admin only.
    Admin,
    /// The worker protocol: worker tokens only.
    Worker,
    /// Event intake (webhooks): webhook, operator, admin.
    Intake,
}

impl Need {
    /// Whether a token of `role` may call a route that needs this.
    pub fn allows(self, role: TokenRole) -> bool {
        use TokenRole as R;
        match self {
            Need::Viewer => matches!(role, R::Admin | R::Operator | R::Viewer),
            Need::Operator => matches!(role, R::Admin | R::Operator),
            Need::Admin => role == R::Admin,
            Need::Worker => role == R::Worker,
            Need::Intake => matches!(role, R::Admin | R::Operator | R::Webhook),
        }
    }

    /// The word the docs' table uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Viewer => "viewer",
            Need::Operator => "operator",
            Need::Admin => "admin",
            Need::Worker => "worker",
            Need::Intake => "webhook",
        }
    }
}

/// What a token limited to some projects may do on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not tied to a project (inventories, the API document): allowed.
    Global,
    /// The handler keeps to the token's projects (lists filtered, a launch of another
    /// project's playbook refused as if the project did not exist).
    Filtered,
    /// The path's id is a run: 404 unless it belongs to one of the token's projects.
    Run,
    /// The path's id is a template: 404 unless its project is one of the token's.
    Template,
    /// The path's id is a project: 404 unless it is one of the token's.
    Project,
    /// The path's id is a job: 404 unless its project is one of the token's.
    Job,
    /// Spans projects (events, flows, schedules, credentials, tokens, workers...): 403.
    Unscoped,
}

impl Scope {
    /// The words the docs' table uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "allowed",
            Scope::Filtered => "filtered",
            Scope::Run => "its runs",
            Scope::Template => "its templates",
            Scope::Project => "its projects",
            Scope::Job => "its jobs",
            Scope::Unscoped => "refused",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `GET`, `POST`, `PUT`, `DELETE` (HEAD is treated as GET).
    pub method: &'static str,
    /// The path as the OpenAPI document writes it (`{id}` matches one segment).
    pub path: &'static str,
    /// Who may call it.
    pub need: Need,
    /// What a project-scoped token may do there.
    pub scope: Scope,
}

const fn r(method: &'static str, path: &'static str, need: Need, scope: Scope) -> Rule {
    Rule {
        method,
        path,
        need,
        scope,
    }
}

use Need::{Admin, Intake, Operator, Viewer, Worker};
use Scope::{Filtered, Global, Job, Project, Run, Template, Unscoped};

/// Every route of the API. A route missing here is admin-only (a unit test checks that every
/// route of the OpenAPI document is listed).
pub const RULES: &[Rule] = &[
    r("GET", "/api/v1/openapi.json", Viewer, Global),
    // Counts across every project, and the names of event sources.
    r("GET", "/metrics", Viewer, Unscoped),
    // The audit log: who did what, from where.
    r("GET", "/api/v1/audit", Admin, Unscoped),
    // Projects: definitions are the admin's; syncing is an operator's.
    r("GET", "/api/v1/projects", Viewer, Filtered),
    r("POST", "/api/v1/projects", Admin, Unscoped),
    r("GET", "/api/v1/projects/{id}", Viewer, Project),
    r("GET", "/api/v1/projects/{id}/playbooks", Viewer, Project),
    r("POST", "/api/v1/projects/{id}/sync", Operator, Project),
    // Inventories: not tied to a project.
    r("GET", "/api/v1/inventories", Viewer, Global),
    r("POST", "/api/v1/inventories", Admin, Unscoped),
    r("GET", "/api/v1/inventories/{id}", Viewer, Global),
    r("PUT", "/api/v1/inventories/{id}", Admin, Unscoped),
    r("DELETE", "/api/v1/inventories/{id}", Admin, Unscoped),
    r("GET", "/api/v1/inventories/{id}/ansible", Viewer, Global),
    // Runs.
    r("GET", "/api/v1/runs", Viewer, Filtered),
    r("POST", "/api/v1/runs", Operator, Filtered),
    // Retention on demand: across every project.
    r("POST", "/api/v1/runs/prune", Admin, Unscoped),
    r("GET", "/api/v1/runs/{id}", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/artifacts", Viewer, Run),
    r("POST", "/api/v1/runs/{id}/cancel", Operator, Run),
    r("GET", "/api/v1/runs/{id}/events", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/events/sse", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/events/ws", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/hosts", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/notifications", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/placement", Viewer, Run),
    r("POST", "/api/v1/runs/{id}/relaunch", Operator, Run),
    r("GET", "/api/v1/runs/{id}/stderr", Viewer, Run),
    r("GET", "/api/v1/runs/{id}/stdout", Viewer, Run),
    // Templates: defining is the admin's, launching an operator's.
    r("GET", "/api/v1/templates", Viewer, Filtered),
    r("POST", "/api/v1/templates", Admin, Unscoped),
    r("GET", "/api/v1/templates/{id}", Viewer, Template),
    r("POST", "/api/v1/templates/{id}/launch", Operator, Template),
    // Jobs: created and acted on as runs are (RedRunner playbooks make them).
    r("GET", "/api/v1/jobs", Viewer, Unscoped),
    r("POST", "/api/v1/jobs", Operator, Unscoped),
    r("GET", "/api/v1/jobs/{id}", Viewer, Job),
    r("POST", "/api/v1/jobs/{id}/actions", Operator, Job),
    r("GET", "/api/v1/jobs/{id}/inventory", Viewer, Job),
    r("PUT", "/api/v1/jobs/{id}/units/{unit}", Operator, Job),
    r(
        "POST",
        "/api/v1/jobs/{id}/units/{unit}/actions",
        Operator,
        Job,
    ),
    // Events in: rules are the admin's; webhooks take intake tokens.
    r("GET", "/api/v1/events", Viewer, Unscoped),
    r("GET", "/api/v1/events/{id}", Viewer, Unscoped),
    r("GET", "/api/v1/rules", Viewer, Unscoped),
    r("PUT", "/api/v1/rules", Admin, Unscoped),
    r("GET", "/api/v1/sources", Viewer, Unscoped),
    r("POST", "/api/v1/hooks/{source}", Intake, Unscoped),
    r(
        "POST",
        "/api/v1/hooks/{source}/{routing_key}",
        Intake,
        Unscoped,
    ),
    // Flows: defining is the admin's; running, resuming, approving an operator's.
    r("GET", "/api/v1/flows", Viewer, Unscoped),
    r("POST", "/api/v1/flows", Admin, Unscoped),
    r("GET", "/api/v1/flows/{name}", Viewer, Unscoped),
    r(
        "POST",
        "/api/v1/flows/{name}/executions",
        Operator,
        Unscoped,
    ),
    r("GET", "/api/v1/flows/{name}/versions", Viewer, Unscoped),
    r("GET", "/api/v1/executions", Viewer, Unscoped),
    r("GET", "/api/v1/executions/{id}", Viewer, Unscoped),
    r(
        "POST",
        "/api/v1/executions/{id}/approvals/{step}",
        Operator,
        Unscoped,
    ),
    r("POST", "/api/v1/executions/{id}/cancel", Operator, Unscoped),
    r(
        "GET",
        "/api/v1/executions/{id}/notifications",
        Viewer,
        Unscoped,
    ),
    r("POST", "/api/v1/executions/{id}/resume", Operator, Unscoped),
    r("GET", "/api/v1/schedules", Viewer, Unscoped),
    r("POST", "/api/v1/schedules", Admin, Unscoped),
    r("GET", "/api/v1/schedules/{id}", Viewer, Unscoped),
    r("DELETE", "/api/v1/schedules/{id}", Admin, Unscoped),
    // Secrets and access.
    r("GET", "/api/v1/credentials", Viewer, Unscoped),
    r("POST", "/api/v1/credentials", Admin, Unscoped),
    r("GET", "/api/v1/credentials/{id}", Viewer, Unscoped),
    r("DELETE", "/api/v1/credentials/{id}", Admin, Unscoped),
    r("GET", "/api/v1/tokens", Admin, Unscoped),
    r("POST", "/api/v1/tokens", Admin, Unscoped),
    r("DELETE", "/api/v1/tokens/{id}", Admin, Unscoped),
    // A stream token is not limited to projects, so a scoped token may not issue one.
    r("POST", "/api/v1/stream-tokens", Viewer, Unscoped),
    r("GET", "/api/v1/stream/sse", Viewer, Unscoped),
    r("GET", "/api/v1/stream/ws", Viewer, Unscoped),
    // Workers: seeing them is reading; draining is the admin's; the protocol is the workers'.
    r("GET", "/api/v1/workers", Viewer, Unscoped),
    r("POST", "/api/v1/workers/{id}/drain", Admin, Unscoped),
    r("POST", "/api/v1/worker/register", Worker, Unscoped),
    r("POST", "/api/v1/worker/heartbeat", Worker, Unscoped),
    r("POST", "/api/v1/worker/goodbye", Worker, Unscoped),
    r("POST", "/api/v1/worker/claim", Worker, Unscoped),
    r("GET", "/api/v1/worker/runs/{id}/plan", Worker, Unscoped),
    r("GET", "/api/v1/worker/runs/{id}/bundle", Worker, Unscoped),
    r(
        "POST",
        "/api/v1/worker/runs/{id}/launched",
        Worker,
        Unscoped,
    ),
    r("POST", "/api/v1/worker/runs/{id}/lease", Worker, Unscoped),
    r("POST", "/api/v1/worker/runs/{id}/batches", Worker, Unscoped),
    r("POST", "/api/v1/worker/runs/{id}/finish", Worker, Unscoped),
    // Pansible's API (docs/pansible.md), as troupe's own resources underneath: inventories
    // and playbooks (git projects) are defined by the admin, apps span projects, jobs are
    // runs (handlers keep to a scoped token's projects).
    r("POST", "/pansible/api/v1/inventory", Admin, Unscoped),
    r("GET", "/pansible/api/v1/inventory/{id}", Viewer, Global),
    r("POST", "/pansible/api/v1/playbook", Admin, Unscoped),
    r("GET", "/pansible/api/v1/playbook/{id}", Viewer, Project),
    r("POST", "/pansible/api/v1/app", Admin, Unscoped),
    r("GET", "/pansible/api/v1/app/{id}", Viewer, Unscoped),
    r("POST", "/pansible/api/v1/app/playbook", Admin, Unscoped),
    r("POST", "/pansible/api/v1/app/inventory", Admin, Unscoped),
    r("POST", "/pansible/api/v1/job", Operator, Filtered),
    r("GET", "/pansible/api/v1/job/{uuid}", Viewer, Filtered),
    r(
        "GET",
        "/pansible/api/v1/job/result/{uuid}",
        Viewer,
        Filtered,
    ),
    r(
        "GET",
        "/pansible/api/v1/job/progress/{uuid}",
        Viewer,
        Filtered,
    ),
];

/// The rule of a request: the matching row with the most literal segments, so a literal
/// segment wins over a `{param}` one.
pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut best: Option<(&'static Rule, usize)> = None;
    for rule in RULES.iter().filter(|r| r.method == method) {
        if let Some(literal) = matches(rule.path, path)
            && best.is_none_or(|(_, n)| literal > n)
        {
            best = Some((rule, literal));
        }
    }
    best.map(|(rule, _)| rule)
}

/// How many literal segments of `pattern` matched `path`; `None` when it does not match.
fn matches(pattern: &str, path: &str) -> Option<usize> {
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    let mut literal = 0;
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(literal),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
            }
            (Some(p), Some(g)) if p == g => literal += 1,
            _ => return None,
        }
    }
}

/// The first `{param}` segment of a request's path under `rule`, as an id.
pub fn first_id(rule: &Rule, path: &str) -> Option<i64> {
    rule.path
        .split('/')
        .zip(path.split('/'))
        .find(|(p, _)| p.starts_with('{'))
        .and_then(|(_, got)| got.parse().ok())
}

/// The table as docs/security.md shows it.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| method | path | roles | project-scoped token |\n|---|---|---|---|\n");
    for rule in RULES {
        let roles: Vec<&str> = TokenRole::ALL
            .into_iter()
            .filter(|role| rule.need.allows(*role))
            .map(TokenRole::as_str)
            .collect();
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            rule.method,
            rule.path,
            roles.join(", "),
            rule.scope.as_str()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_and_params_match_one_segment() {
        let get = |p: &str| rule_for(&Method::GET, p).map(|r| r.path);
        assert_eq!(get("/api/v1/runs/5"), Some("/api/v1/runs/{id}"));
        assert_eq!(
            get("/api/v1/runs/5/events/sse"),
            Some("/api/v1/runs/{id}/events/sse")
        );
        assert_eq!(get("/api/v1/runs"), Some("/api/v1/runs"));
        assert_eq!(get("/api/v1/runs/"), None);
        assert_eq!(get("/api/v1/runs/5/nope"), None);
        assert_eq!(get("/api/v1/stream/sse"), Some("/api/v1/stream/sse"));
        assert_eq!(
            rule_for(&Method::HEAD, "/api/v1/runs/5").map(|r| r.path),
            Some("/api/v1/runs/{id}")
        );
        assert_eq!(rule_for(&Method::DELETE, "/api/v1/runs/5"), None);
        let rule = rule_for(&Method::POST, "/api/v1/jobs/12/units/web/actions").expect("rule");
        assert_eq!(
            first_id(rule, "/api/v1/jobs/12/units/web/actions"),
            Some(12)
        );
        assert_eq!(rule.need, Need::Operator);
    }

    #[test]
    fn every_route_of_the_api_is_in_the_table_once() {
        let doc = crate::openapi();
        let mut listed = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_none() {
                    continue;
                }
                listed += 1;
                let rows = RULES
                    .iter()
                    .filter(|r| r.method == method && r.path == path)
                    .count();
                assert_eq!(rows, 1, "{method} {path} must be in access::RULES once");
            }
        }
        // Plus the API document itself, which is not in it.
        assert_eq!(
            listed + 1,
            RULES.len(),
            "a rule names a route that does not exist"
        );
    }

    #[test]
    fn roles_allow_what_their_docs_say() {
        use TokenRole as R;
        assert!(Need::Admin.allows(R::Admin) && !Need::Admin.allows(R::Operator));
        assert!(Need::Operator.allows(R::Operator) && !Need::Operator.allows(R::Viewer));
        assert!(Need::Viewer.allows(R::Viewer) && !Need::Viewer.allows(R::Worker));
        assert!(!Need::Viewer.allows(R::Webhook));
        assert!(Need::Worker.allows(R::Worker) && !Need::Worker.allows(R::Admin));
        assert!(Need::Intake.allows(R::Webhook) && !Need::Intake.allows(R::Viewer));
    }

    #[test]
    fn the_docs_show_this_table() {
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/security.md"
        ))
        .expect("docs/security.md");
        let table = markdown_table();
        assert!(
            docs.contains(&table),
            "docs/security.md must contain the table as access::markdown_table() renders it:\n{table}"
        );
    }
}
