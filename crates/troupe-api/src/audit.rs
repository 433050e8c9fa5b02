//! The audit layer: every request that is not a read (`GET`, `HEAD`, `OPTIONS`) is recorded
//! in the audit log once it has been answered, refused ones (401, 403) included: who (the
//! token presented), what (the route's pattern, an action word, the target), the status, and
//! from where (the connection's peer address, and the user agent).
//!
//! The layer knows the route's pattern and the ids in the path; a handler that creates
//! something (whose id the path cannot hold) names it with an [`AuditTarget`] in its answer.
//! Nothing of a request's body is recorded. The answer goes out once the writer has tried to
//! store the entry ([`troupe_launch::audit::AuditLog::record`]), so a client that saw an
//! answer finds its entry.

use crate::AppState;
use crate::auth::{Lookup, presented_token};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponseParts, Response, ResponseParts};
use chrono::Utc;
use serde_json::Value;
use std::net::SocketAddr;
use troupe_core::audit::NewAuditEntry;

/// What a request acted on, when its path does not say (a created thing's id), set by the
/// handler in its answer for the audit layer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditTarget {
    kind: &'static str,
    id: String,
    name: Option<String>,
    detail: Option<Value>,
}

impl AuditTarget {
    /// The `kind` (`run`, `project`...) with this id.
    pub fn new(kind: &'static str, id: impl ToString) -> Self {
        AuditTarget {
            kind,
            id: id.to_string(),
            name: None,
            detail: None,
        }
    }

    /// With the target's name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With a little more (ids and names only, never a secret).
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl IntoResponseParts for AuditTarget {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// Routes of the worker protocol that remote workers call all the time (polls, heartbeats,
/// leases, event batches): recorded only when refused.
fn routine(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/worker/heartbeat"
            | "/api/v1/worker/claim"
            | "/api/v1/worker/runs/{id}/lease"
            | "/api/v1/worker/runs/{id}/batches"
            | "/api/v1/worker/runs/{id}/launched"
    )
}

/// Records every request that is not a read (see the module's doc).
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let Some(log) = state.launcher.audit().cloned() else {
        return next.run(req).await;
    };
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let presented = presented_token(req.headers(), req.uri().path()).map(str::to_owned);
    let live = |token: &str| match state.tokens.lookup(token) {
        Lookup::Live(caller) => Some(caller),
        Lookup::Unknown | Lookup::Expired => None,
    };
    // Before the handler (a token revoking itself is gone after it), and after it when the
    // token set did not know the token yet (auth reads the store again for one it does not).
    let known = presented.as_deref().and_then(live);
    let mut response = next.run(req).await;
    let status = response.status();
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    if route.as_deref().is_some_and(routine) && !refused {
        return response;
    }
    let caller = known.or_else(|| presented.as_deref().and_then(live));
    let pattern = route.as_deref().unwrap_or(&path);
    let mut entry = NewAuditEntry {
        at: Utc::now(),
        action: route
            .as_deref()
            .map_or_else(|| "route.unknown".to_owned(), |r| action_of(&method, r)),
        method: Some(method.as_str().to_owned()),
        route: Some(pattern.to_owned()),
        status: Some(i32::from(status.as_u16())),
        client_addr,
        user_agent,
        detail: Value::Object(Default::default()),
        ..NewAuditEntry::default()
    };
    if let Some((kind, id)) = route.as_deref().and_then(|r| target_in_path(r, &path)) {
        entry.target_kind = Some(kind);
        entry.target_id = Some(id);
    }
    if let Some(target) = response.extensions_mut().remove::<AuditTarget>() {
        if let Some(id) = entry.target_id.take() {
            // The path named what was acted on (a run relaunched); the answer, what came of it.
            entry.detail[entry.target_kind.take().unwrap_or_default()] = Value::String(id);
        }
        entry.target_kind = Some(target.kind.to_owned());
        entry.target_id = Some(target.id);
        entry.target_name = target.name;
        if let Some(Value::Object(more)) = target.detail
            && let Value::Object(detail) = &mut entry.detail
        {
            detail.extend(more);
        }
    }
    match caller {
        Some(caller) => {
            entry.actor = format!("token:{}", caller.token_id);
            entry.token_id = Some(caller.token_id);
            entry.token_name = Some(caller.name.to_string());
            entry.role = Some(caller.role.as_str().to_owned());
        }
        None => {
            entry.actor = match (&entry.target_kind, &entry.target_id) {
                // A delivery the source's own signature or token let in.
                (Some(kind), Some(source)) if kind == "source" && status.is_success() => {
                    format!("webhook:{source}")
                }
                _ => "anonymous".to_owned(),
            };
        }
    }
    if !log.record(entry).await {
        tracing::error!(%method, route = pattern, "the audit entry of a request could not be stored yet");
    }
    response
}

/// The action word of `method route`: `<thing>.<verb>` (`run.launch`, `project.create`,
/// `credential.delete`, `token.revoke`, `run.cancel`...).
pub fn action_of(method: &Method, route: &str) -> String {
    let rest = route.strip_prefix("/api/v1/").unwrap_or(route);
    let words: Vec<&str> = rest
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .collect();
    let Some(first) = words.first() else {
        return "route.unknown".to_owned();
    };
    let special = match (method.as_str(), rest) {
        ("POST", "runs") => Some("run.launch"),
        ("DELETE", "tokens/{id}") => Some("token.revoke"),
        ("PUT", "rules") => Some("rules.update"),
        ("POST", "flows/{name}/executions") => Some("flow.start"),
        ("POST", "executions/{id}/approvals/{step}") => Some("execution.approve"),
        ("POST", "jobs/{id}/actions") => Some("job.action"),
        ("POST", "jobs/{id}/units/{unit}/actions") => Some("job.unit_action"),
        ("PUT", "jobs/{id}/units/{unit}") => Some("job.unit_set"),
        _ if *first == "hooks" => Some("event.publish"),
        _ => None,
    };
    if let Some(action) = special {
        return action.to_owned();
    }
    let thing = singular(first).replace('-', "_");
    match &words[1..] {
        // The worker protocol: `worker.register`, `worker.finish`...
        [.., verb] if *first == "worker" => format!("worker.{verb}"),
        [.., verb] => format!("{thing}.{verb}"),
        [] => {
            let verb = match method.as_str() {
                "POST" => "create",
                "PUT" | "PATCH" => "update",
                "DELETE" => "delete",
                other => return format!("{thing}.{}", other.to_ascii_lowercase()),
            };
            format!("{thing}.{verb}")
        }
    }
}

/// `runs` -> `run`, `inventories` -> `inventory`.
fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else {
        word.strip_suffix('s').unwrap_or(word).to_owned()
    }
}

/// The thing the path names: the first parameter of the route, of the kind the segment before
/// it says (`/api/v1/runs/{id}/cancel` on `/api/v1/runs/7/cancel`: `("run", "7")`; a
/// webhook's `{source}`: `("source", name)`).
fn target_in_path(route: &str, path: &str) -> Option<(String, String)> {
    let mut before = None;
    for (pattern, actual) in route.split('/').zip(path.split('/')) {
        if pattern.starts_with('{') {
            let kind = if pattern == "{source}" {
                "source".to_owned()
            } else {
                singular(before?)
            };
            return Some((kind, actual.to_owned()));
        }
        before = Some(pattern);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_of_routes() {
        let cases = [
            ("POST", "/api/v1/runs", "run.launch"),
            ("POST", "/api/v1/runs/{id}/cancel", "run.cancel"),
            ("POST", "/api/v1/runs/{id}/relaunch", "run.relaunch"),
            ("POST", "/api/v1/projects", "project.create"),
            ("POST", "/api/v1/projects/{id}/sync", "project.sync"),
            ("POST", "/api/v1/inventories", "inventory.create"),
            ("PUT", "/api/v1/inventories/{id}", "inventory.update"),
            ("DELETE", "/api/v1/inventories/{id}", "inventory.delete"),
            ("POST", "/api/v1/templates/{id}/launch", "template.launch"),
            ("POST", "/api/v1/credentials", "credential.create"),
            ("DELETE", "/api/v1/credentials/{id}", "credential.delete"),
            ("POST", "/api/v1/tokens", "token.create"),
            ("DELETE", "/api/v1/tokens/{id}", "token.revoke"),
            ("POST", "/api/v1/stream-tokens", "stream_token.create"),
            ("PUT", "/api/v1/rules", "rules.update"),
            ("POST", "/api/v1/hooks/{source}", "event.publish"),
            (
                "POST",
                "/api/v1/hooks/{source}/{routing_key}",
                "event.publish",
            ),
            ("POST", "/api/v1/flows/{name}/executions", "flow.start"),
            ("POST", "/api/v1/executions/{id}/cancel", "execution.cancel"),
            ("POST", "/api/v1/workers/{id}/drain", "worker.drain"),
            ("POST", "/api/v1/worker/register", "worker.register"),
            ("POST", "/api/v1/worker/runs/{id}/finish", "worker.finish"),
            ("DELETE", "/api/v1/schedules/{id}", "schedule.delete"),
            ("PUT", "/api/v1/jobs/{id}/units/{unit}", "job.unit_set"),
        ];
        for (method, route, action) in cases {
            let method: Method = method.parse().unwrap_or_default();
            assert_eq!(action_of(&method, route), action, "{method} {route}");
        }
    }

    #[test]
    fn targets_in_paths() {
        let t = |r, p| target_in_path(r, p);
        assert_eq!(
            t("/api/v1/runs/{id}/cancel", "/api/v1/runs/7/cancel"),
            Some(("run".into(), "7".into()))
        );
        assert_eq!(
            t(
                "/api/v1/hooks/{source}/{routing_key}",
                "/api/v1/hooks/gh/x.y"
            ),
            Some(("source".into(), "gh".into()))
        );
        assert_eq!(
            t("/api/v1/inventories/{id}", "/api/v1/inventories/3"),
            Some(("inventory".into(), "3".into()))
        );
        assert_eq!(t("/api/v1/runs", "/api/v1/runs"), None);
    }
}
