//! Bearer-token authentication.
//!
//! Tokens are 256 random bits, so a fast hash (SHA-256) is as safe to store as a slow one and
//! keeps every request cheap; only hashes are kept, in the store and in memory, and they are
//! compared in constant time.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use troupe_core::worker::TokenRole;
use troupe_store::{Store, StoreResult};

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

/// The hashes of the tokens that may call the API, and of the short-lived stream tokens.
#[derive(Default)]
pub struct TokenSet {
    hashes: RwLock<Vec<([u8; 32], TokenRole)>>,
    stream: Mutex<HashMap<[u8; 32], Instant>>,
}

impl TokenSet {
    /// Loads every stored token hash.
    pub async fn load(store: &dyn Store) -> StoreResult<Self> {
        let set = TokenSet::default();
        for t in store.list_tokens().await? {
            set.insert_hex(&t.hash, t.role);
        }
        Ok(set)
    }

    /// Adds a hash (hex) with its role to the set; malformed hashes are ignored.
    pub fn insert_hex(&self, hash: &str, role: TokenRole) {
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(hash, &mut raw).is_ok()
            && let Ok(mut hashes) = self.hashes.write()
        {
            hashes.push((raw, role));
        }
    }

    /// Issues a stream token valid for [`STREAM_TOKEN_TTL`]. Stream tokens are only accepted
    /// in the `access_token` query parameter of stream routes, for clients that cannot set
    /// headers; they live in this process's memory only.
    pub fn issue_stream_token(&self) -> String {
        let token = generate_token();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Ok(mut stream) = self.stream.lock() {
            stream.retain(|_, expiry| *expiry > now);
            stream.insert(digest, now + STREAM_TOKEN_TTL);
        }
        token
    }

    /// True when `token` is a stream token that has not expired.
    pub fn verify_stream_token(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Ok(stream) = self.stream.lock() else {
            return false;
        };
        let now = Instant::now();
        stream
            .iter()
            .fold(subtle::Choice::from(0), |acc, (h, expiry)| {
                acc | (h.ct_eq(&digest) & subtle::Choice::from(u8::from(*expiry > now)))
            })
            .into()
    }

    /// True when `token` is one of ours with the admin role.
    pub fn verify(&self, token: &str) -> bool {
        self.role_of(token) == Some(TokenRole::Admin)
    }

    /// The role of `token` when it is one of ours. Every stored hash is compared, in constant
    /// time.
    pub fn role_of(&self, token: &str) -> Option<TokenRole> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Ok(hashes) = self.hashes.read() else {
            return None;
        };
        let mut found = None;
        for (h, role) in hashes.iter() {
            if bool::from(h.ct_eq(&digest)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Rejects requests without a valid `Authorization: Bearer <token>` with 401.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(req.headers());
    if presented.is_none() && is_stream_route(req.uri().path()) {
        let token = axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
            .ok()
            .and_then(|q| q.0.get("access_token").cloned());
        if let Some(token) = token {
            return if state.tokens.verify_stream_token(&token) {
                Ok(next.run(req).await)
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "invalid or expired stream token",
                ))
            };
        }
    }
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send Authorization: Bearer <token>",
        ));
    };
    let worker_route = req.uri().path().starts_with(WORKER_ROUTES);
    match state.tokens.role_of(presented) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid token",
        )),
        Some(TokenRole::Admin) if !worker_route => Ok(next.run(req).await),
        Some(TokenRole::Worker) if worker_route => Ok(next.run(req).await),
        Some(TokenRole::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the worker protocol needs a worker token (POST /api/v1/tokens with role \"worker\")",
        )),
        Some(TokenRole::Worker) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a worker token may only claim runs and report on them (/api/v1/worker/...)",
        )),
    }
}

/// Where the worker protocol lives: only worker tokens are taken there, and only there.
pub(crate) const WORKER_ROUTES: &str = "/api/v1/worker/";

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

/// Routes that accept a stream token in the query (EventSource and WebSocket cannot set headers).
fn is_stream_route(path: &str) -> bool {
    path.ends_with("/events/ws")
        || path.ends_with("/events/sse")
        || path == "/api/v1/stream/ws"
        || path == "/api/v1/stream/sse"
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
        let s = set.issue_stream_token();
        assert!(set.verify_stream_token(&s));
        assert!(!set.verify(&s), "a stream token is not an API token");
        assert!(!set.verify_stream_token(&generate_token()));
        if let Ok(mut stream) = set.stream.lock() {
            for expiry in stream.values_mut() {
                *expiry = Instant::now();
            }
        }
        assert!(!set.verify_stream_token(&s));
        assert!(is_stream_route("/api/v1/runs/3/events/sse"));
        assert!(!is_stream_route("/api/v1/runs/3/events"));
    }
}
