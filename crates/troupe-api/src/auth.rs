//! Bearer-token authentication.
//!
//! Tokens are 256 random bits, so a fast hash (SHA-256) is as safe to store as a slow one and
//! keeps every request cheap; only hashes are kept, in the store and in memory, and they are
//! compared in constant time.

use crate::AppState;
use crate::access;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use troupe_core::worker::TokenRole;
use troupe_store::{Store, StoreError, StoreResult, TokenRecord};

/// The prefix of every token troupe issues, so they are easy to spot in leaked text.
pub const TOKEN_PREFIX: &str = "trp_";

/// A new random token.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token: hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long a stream token lasts.
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(300);

/// An unknown token makes the set read the store again (another replica may have issued it),
/// at most this often.
const RELOAD_ON_MISS: Duration = Duration::from_secs(1);
/// The set is read again at least this often while requests come, so a revocation made by
/// another replica takes effect here too.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Who is calling: the token's id, role and project scope. The auth middleware puts it in
/// every authenticated request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id.
    pub token_id: i64,
    /// The token's name.
    pub name: Arc<str>,
    /// What it may do.
    pub role: TokenRole,
    /// The ids of the projects it is limited to; `None` for every project.
    pub projects: Option<Arc<[i64]>>,
}

impl Caller {
    /// Whether the caller may see what belongs to `project_id`.
    pub fn sees(&self, project_id: i64) -> bool {
        self.projects
            .as_ref()
            .is_none_or(|p| p.contains(&project_id))
    }

    /// The project scope as a runs filter takes it.
    pub fn project_filter(&self) -> Option<Vec<i64>> {
        self.projects.as_ref().map(|p| p.to_vec())
    }
}

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// None of ours (or revoked).
    Unknown,
    /// Ours, but past its expiry.
    Expired,
    /// Ours and usable.
    Live(Caller),
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
}

/// The hashes of the tokens that may call the API, and of the short-lived stream tokens.
pub struct TokenSet {
    entries: RwLock<Vec<Entry>>,
    /// Stream tokens: their expiry and the id of the token that issued them (whose streams
    /// they count among).
    stream: Mutex<HashMap<[u8; 32], (Instant, i64)>>,
    last_reload: Mutex<Instant>,
}

impl Default for TokenSet {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            stream: Mutex::default(),
            last_reload: Mutex::new(Instant::now()),
        }
    }
}

impl TokenSet {
    /// Loads every stored token that is not revoked.
    pub async fn load(store: &dyn Store) -> StoreResult<Self> {
        let set = TokenSet::default();
        set.replace(store.list_tokens().await?);
        Ok(set)
    }

    fn replace(&self, records: Vec<TokenRecord>) {
        let entries: Vec<Entry> = records.iter().filter_map(entry_of).collect();
        if let Ok(mut held) = self.entries.write() {
            *held = entries;
        }
    }

    /// Reads the store again when the last read is older than `min_age` (and no other
    /// request is reading it). A failed read keeps what the set holds.
    async fn reload_if_older(&self, store: &dyn Store, min_age: Duration) {
        {
            let Ok(mut last) = self.last_reload.lock() else {
                return;
            };
            if last.elapsed() < min_age {
                return;
            }
            *last = Instant::now();
        }
        match store.list_tokens().await {
            Ok(records) => self.replace(records),
            Err(e) => tracing::warn!(error = %e, "could not reload API tokens"),
        }
    }

    /// Adds a stored token to the set (a revoked one is ignored).
    pub fn insert(&self, record: &TokenRecord) {
        if let Some(entry) = entry_of(record)
            && let Ok(mut entries) = self.entries.write()
        {
            entries.retain(|e| e.hash != entry.hash);
            entries.push(entry);
        }
    }

    /// Adds a hash (hex) with its role to the set, unscoped and never expiring; malformed
    /// hashes are ignored.
    pub fn insert_hex(&self, hash: &str, role: TokenRole) {
        self.insert(&TokenRecord {
            id: 0,
            name: String::new(),
            hash: hash.to_owned(),
            role,
            projects: None,
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
        });
    }

    /// Forgets a token at once (it was revoked).
    pub fn remove(&self, token_id: i64) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|e| e.caller.token_id != token_id);
        }
    }

    /// Issues a stream token valid for [`STREAM_TOKEN_TTL`]. Stream tokens are only accepted
    /// in the `access_token` query parameter of stream routes, for clients that cannot set
    /// headers; they live in this process's memory only. Streams opened with it count among
    /// `issuer`'s (a token id).
    pub fn issue_stream_token(&self, issuer: i64) -> String {
        let token = generate_token();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Ok(mut stream) = self.stream.lock() {
            stream.retain(|_, (expiry, _)| *expiry > now);
            stream.insert(digest, (now + STREAM_TOKEN_TTL, issuer));
        }
        token
    }

    /// The id of the token that issued `token`, when it is a stream token that has not
    /// expired.
    pub fn verify_stream_token(&self, token: &str) -> Option<i64> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let stream = self.stream.lock().ok()?;
        let now = Instant::now();
        // Every hash is compared, in constant time; the match is picked without branching on
        // which one it was.
        let mut found = subtle::Choice::from(0);
        let mut issuer = 0i64;
        for (h, (expiry, by)) in stream.iter() {
            let hit = h.ct_eq(&digest) & subtle::Choice::from(u8::from(*expiry > now));
            issuer = i64::conditional_select(&issuer, by, hit);
            found |= hit;
        }
        bool::from(found).then_some(issuer)
    }

    /// True when `token` is one of ours, live, with the admin role.
    pub fn verify(&self, token: &str) -> bool {
        self.role_of(token) == Some(TokenRole::Admin)
    }

    /// The role of `token` when it is one of ours and live.
    pub fn role_of(&self, token: &str) -> Option<TokenRole> {
        match self.lookup(token) {
            Lookup::Live(caller) => Some(caller.role),
            _ => None,
        }
    }

    /// What `token` is. Every stored hash is compared, in constant time.
    pub fn lookup(&self, token: &str) -> Lookup {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Ok(entries) = self.entries.read() else {
            return Lookup::Unknown;
        };
        let mut found = None;
        for e in entries.iter() {
            if bool::from(e.hash.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        match found {
            None => Lookup::Unknown,
            Some(e) if e.expires_at.is_some_and(|t| t <= Utc::now()) => Lookup::Expired,
            Some(e) => Lookup::Live(e.caller.clone()),
        }
    }

    /// [`lookup`](Self::lookup), reading the store again first when it is due, and once more
    /// (at most every second) when the token is unknown: another replica may have issued it.
    pub async fn lookup_fresh(&self, store: &dyn Store, token: &str) -> Lookup {
        self.reload_if_older(store, RELOAD_EVERY).await;
        match self.lookup(token) {
            Lookup::Unknown => {
                self.reload_if_older(store, RELOAD_ON_MISS).await;
                self.lookup(token)
            }
            found => found,
        }
    }
}

fn entry_of(record: &TokenRecord) -> Option<Entry> {
    if record.revoked_at.is_some() {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&record.hash, &mut hash).ok()?;
    Some(Entry {
        hash,
        caller: Caller {
            token_id: record.id,
            name: Arc::from(record.name.as_str()),
            role: record.role,
            projects: record.projects.as_deref().map(Arc::from),
        },
        expires_at: record.expires_at,
    })
}

fn unauthorized(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Rejects requests without a valid `Authorization: Bearer <token>` with 401, and those the
/// token's role or project scope does not allow ([`crate::access`]) with 403 (404 for another
/// project's run, template, project or job, so their ids do not leak). The [`Caller`] goes
/// into the request's extensions.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = presented_token(req.headers(), req.uri().path());
    if presented.is_none() && is_stream_route(req.uri().path()) {
        let token = axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.get("access_token").cloned());
        if let Some(token) = token {
            return if let Some(issuer) = state.tokens.verify_stream_token(&token) {
                // Only unscoped tokens issue stream tokens (`access::RULES`), and streams
                // only read. Its streams count among its issuer's.
                req.extensions_mut().insert(Caller {
                    token_id: issuer,
                    name: Arc::from("stream"),
                    role: TokenRole::Viewer,
                    projects: None,
                });
                Ok(next.run(req).await)
            } else {
                Err(unauthorized("invalid or expired stream token"))
            };
        }
    }
    let Some(presented) = presented else {
        return Err(unauthorized(if is_pansible(req.uri().path()) {
            "missing token: send COFFEE_TOKEN: <token> or Authorization: Bearer <token>"
        } else {
            "missing bearer token: send Authorization: Bearer <token>"
        }));
    };
    let caller = authorize(&state, req.method(), req.uri().path(), presented).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Decides whether the token `presented` may call `method path`: 401 when it is not a live
/// token of ours, 403 when the route is not for its role or its project scope, 404 when the
/// path names a run, template, project or job outside its projects.
pub(crate) async fn authorize(
    state: &AppState,
    method: &Method,
    path: &str,
    presented: &str,
) -> Result<Caller, ApiError> {
    let caller = match state.tokens.lookup_fresh(&*state.store, presented).await {
        Lookup::Unknown => return Err(unauthorized("invalid token")),
        Lookup::Expired => return Err(unauthorized("token expired")),
        Lookup::Live(caller) => caller,
    };
    let Some(rule) = access::rule_for(method, path) else {
        // Not a route of the API: only an admin token reaches the 404 (or 405).
        return if caller.role == TokenRole::Admin {
            Ok(caller)
        } else {
            Err(forbidden(format!(
                "a {} token may not call {method} {path}",
                caller.role.as_str()
            )))
        };
    };
    if !rule.need.allows(caller.role) {
        return Err(forbidden(match (caller.role, rule.need) {
            (TokenRole::Worker, _) => {
                "a worker token may only claim runs and report on them (/api/v1/worker/...)"
                    .to_owned()
            }
            (_, access::Need::Worker) => "the worker protocol needs a worker token \
                 (POST /api/v1/tokens with role \"worker\")"
                .to_owned(),
            (role, need) => format!(
                "a {} token may not call {method} {}: it needs a {} token",
                role.as_str(),
                rule.path,
                need.as_str()
            ),
        }));
    }
    if caller.projects.is_some() {
        check_scope(state, &caller, rule, path).await?;
    }
    Ok(caller)
}

/// A project-scoped token on `rule`'s route: refused where the route spans projects, 404
/// where the path names something of another project.
async fn check_scope(
    state: &AppState,
    caller: &Caller,
    rule: &access::Rule,
    path: &str,
) -> Result<(), ApiError> {
    use access::Scope;
    let what = match rule.scope {
        Scope::Global | Scope::Filtered => return Ok(()),
        Scope::Unscoped => {
            return Err(forbidden(format!(
                "a token limited to projects may not call {} {}",
                rule.method, rule.path
            )));
        }
        Scope::Run => "run",
        Scope::Template => "template",
        Scope::Project => "project",
        Scope::Job => "job",
    };
    // A path id that is not a number is the handler's 400 to give.
    let Some(id) = access::first_id(rule, path) else {
        return Ok(());
    };
    let project = match rule.scope {
        Scope::Run => state.store.get_run(id).await.map(|r| Some(r.project_id)),
        Scope::Template => state
            .store
            .get_template(id)
            .await
            .map(|t| Some(t.project_id)),
        Scope::Job => state.store.get_job(id).await.map(|j| j.project_id),
        _ => Ok(Some(id)),
    };
    match project {
        Ok(Some(p)) if caller.sees(p) => Ok(()),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(what, id)),
        Err(e) => Err(e.into()),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Whether `path` is under Pansible's API.
fn is_pansible(path: &str) -> bool {
    path.starts_with("/pansible/")
}

/// The token a request presents: `Authorization: Bearer <token>`, or under Pansible's API
/// the `COFFEE_TOKEN` header Pansible's clients send it in (a troupe token all the same).
pub(crate) fn presented_token<'a>(
    headers: &'a axum::http::HeaderMap,
    path: &str,
) -> Option<&'a str> {
    bearer(headers).or_else(|| {
        if !is_pansible(path) {
            return None;
        }
        headers
            .get(troupe_wire::pansible::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    })
}

/// Routes that accept a stream token in the query (EventSource and WebSocket cannot set headers).
fn is_stream_route(path: &str) -> bool {
    path.ends_with("/events/ws")
        || path.ends_with("/events/sse")
        || path == "/api/v1/stream/ws"
        || path == "/api/v1/stream/sse"
        || path.starts_with("/pansible/api/v1/job/progress/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_matches_only_issued_tokens() {
        let set = TokenSet::default();
        let t = generate_token();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40);
        assert!(!set.verify(&t));
        set.insert_hex(&hash_token(&t), TokenRole::Admin);
        assert!(set.verify(&t));
        assert!(!set.verify(&generate_token()));
        assert!(!set.verify(""));
        set.insert_hex("not hex", TokenRole::Admin);
        let w = generate_token();
        set.insert_hex(&hash_token(&w), TokenRole::Worker);
        assert_eq!(set.role_of(&w), Some(TokenRole::Worker));
        assert!(!set.verify(&w), "a worker token is not an admin token");
        assert_eq!(set.role_of(&t), Some(TokenRole::Admin));
        assert!(set.verify(&t));
    }

    #[test]
    fn stream_tokens_are_separate_and_expire() {
        let set = TokenSet::default();
        let s = set.issue_stream_token(7);
        assert_eq!(set.verify_stream_token(&s), Some(7), "remembers its issuer");
        assert!(!set.verify(&s), "a stream token is not an API token");
        assert_eq!(set.verify_stream_token(&generate_token()), None);
        if let Ok(mut stream) = set.stream.lock() {
            for (expiry, _) in stream.values_mut() {
                *expiry = Instant::now();
            }
        }
        assert_eq!(set.verify_stream_token(&s), None);
        assert!(is_stream_route("/api/v1/runs/3/events/sse"));
        assert!(!is_stream_route("/api/v1/runs/3/events"));
    }
}
