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
use std::sync::RwLock;
use subtle::ConstantTimeEq;
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

/// The hashes of the tokens that may call the API.
#[derive(Default)]
pub struct TokenSet {
    hashes: RwLock<Vec<[u8; 32]>>,
}

impl TokenSet {
    /// Loads every stored token hash.
    pub async fn load(store: &dyn Store) -> StoreResult<Self> {
        let set = TokenSet::default();
        for t in store.list_tokens().await? {
            set.insert_hex(&t.hash);
        }
        Ok(set)
    }

    /// Adds a hash (hex) to the set; malformed hashes are ignored.
    pub fn insert_hex(&self, hash: &str) {
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(hash, &mut raw).is_ok()
            && let Ok(mut hashes) = self.hashes.write()
        {
            hashes.push(raw);
        }
    }

    /// True when `token` is one of ours. Every stored hash is compared, in constant time.
    pub fn verify(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Ok(hashes) = self.hashes.read() else {
            return false;
        };
        hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, h| acc | h.ct_eq(&digest))
            .into()
    }
}

/// Rejects requests without a valid `Authorization: Bearer <token>` with 401.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send Authorization: Bearer <token>",
        )),
        Some(t) if state.tokens.verify(t) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid token",
        )),
    }
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
        set.insert_hex(&hash_token(&t));
        assert!(set.verify(&t));
        assert!(!set.verify(&generate_token()));
        assert!(!set.verify(""));
        set.insert_hex("not hex");
        assert!(set.verify(&t));
    }
}
