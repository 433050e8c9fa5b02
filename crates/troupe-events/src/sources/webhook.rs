//! The webhook source: `POST /api/v1/hooks/{source}[/{routing_key}]`, served by the API.
//!
//! A request is authenticated by an HMAC-SHA256 signature of its exact body (GitHub's
//! `X-Hub-Signature-256: sha256=<hex>`, or the same in `X-Troupe-Signature-256`), or by the
//! source's token (`X-Troupe-Token`, GitLab's `X-Gitlab-Token`, or `Authorization: Bearer`);
//! the API also accepts its
//! own tokens, so `troupe events publish` works against any webhook source.

use crate::config::{FieldSecretError, RoutingKeyFrom, SecretError, WebhookConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Headers that may carry the body's signature, in the order tried.
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-hub-signature-256", "x-troupe-signature-256"];
/// The header that may carry the source's token.
pub const TOKEN_HEADER: &str = "x-troupe-token";
/// GitLab's header for a webhook's secret token, accepted as the source's token too.
pub const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";

/// What is wrong with a webhook source's configuration.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// `routing_key.pointer` does not start with `/`.
    #[error("routing_key.pointer {0:?} is not a JSON pointer (it starts with `/`)")]
    Pointer(String),
    /// `routing_key.header` is not a header name.
    #[error("routing_key.header {0:?} is not a header name")]
    Header(String),
    /// No body would be accepted.
    #[error("max_body_bytes must be more than 0")]
    ZeroBody,
    /// The rate is negative or not a number, or the burst is 0.
    #[error("rate.per_second must be 0 (no limit) or more, and rate.burst at least 1")]
    Rate,
    /// The secret or the token has no value.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
}

/// Why a request may not deliver to a webhook source (the API answers 401 with the message,
/// which never echoes anything secret).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The source's HMAC key cannot be read now.
    #[error("the source's secret is not available")]
    SecretUnavailable(#[source] SecretError),
    /// The source's token cannot be read now.
    #[error("the source's token is not available")]
    TokenUnavailable(#[source] SecretError),
    /// A signature or token was sent, and it is wrong.
    #[error("the signature or token does not match")]
    Mismatch,
    /// The source has neither, so only API tokens are accepted.
    #[error("this source has no secret or token: send an API token")]
    NoCredentials,
    /// Neither a signature nor a token was sent.
    #[error("missing signature (X-Hub-Signature-256: sha256=<hex HMAC of the body>) or token")]
    Missing,
}

/// Why a request has no routing key (the API answers 422 `missing_routing_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingKeyError {
    /// The source reads keys from the path and none was given.
    #[error("no routing key: post to /api/v1/hooks/{{source}}/{{routing_key}}")]
    NoPathKey,
    /// The configured header is missing.
    #[error("no routing key: the {0} header is missing")]
    MissingHeader(String),
    /// The configured JSON pointer finds something other than a string or a number.
    #[error("no routing key: {0} in the body is not a string")]
    NotAString(String),
    /// The configured JSON pointer finds nothing (or the body is not JSON).
    #[error("no routing key: the body has nothing at {0}")]
    NothingAt(String),
    /// The key found is blank.
    #[error("the routing key is empty")]
    Empty,
}

/// Checks what can be checked before a request arrives.
pub fn validate(cfg: &WebhookConfig) -> Result<(), WebhookConfigError> {
    match &cfg.routing_key {
        RoutingKeyFrom::Pointer(p) if !p.is_empty() && !p.starts_with('/') => {
            return Err(WebhookConfigError::Pointer(p.clone()));
        }
        RoutingKeyFrom::Header(h)
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            return Err(WebhookConfigError::Header(h.clone()));
        }
        _ => {}
    }
    if cfg.max_body_bytes == 0 {
        return Err(WebhookConfigError::ZeroBody);
    }
    if let Some(rate) = &cfg.rate
        && (!rate.per_second.is_finite() || rate.per_second < 0.0 || rate.burst == Some(0))
    {
        return Err(WebhookConfigError::Rate);
    }
    for (field, secret) in [("secret", &cfg.secret), ("token", &cfg.token)] {
        // A credential is opened when the rules are put in force, not here.
        if let Some(s) = secret
            && !matches!(s, crate::config::Secret::Credential { .. })
        {
            s.resolve_field(field)?;
        }
    }
    Ok(())
}

/// Whether the request proves it may deliver to this source: a valid signature or token.
/// `header` looks a header up by lowercase name. The error says what was wrong without
/// echoing anything secret.
pub fn authenticate(
    cfg: &WebhookConfig,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), AuthError> {
    let mut tried = false;
    if let Some(secret) = &cfg.secret {
        let key = secret.resolve().map_err(AuthError::SecretUnavailable)?;
        for name in SIGNATURE_HEADERS {
            if let Some(sig) = header(name) {
                tried = true;
                if signature_matches(key.as_bytes(), body, &sig) {
                    return Ok(());
                }
            }
        }
    }
    if let Some(token) = &cfg.token {
        let want = token.resolve().map_err(AuthError::TokenUnavailable)?;
        let given = header(TOKEN_HEADER)
            .or_else(|| header(GITLAB_TOKEN_HEADER))
            .or_else(|| {
                header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
            });
        if let Some(given) = given {
            tried = true;
            if bool::from(given.trim().as_bytes().ct_eq(want.as_bytes())) {
                return Ok(());
            }
        }
    }
    Err(if tried {
        AuthError::Mismatch
    } else if cfg.secret.is_none() && cfg.token.is_none() {
        AuthError::NoCredentials
    } else {
        AuthError::Missing
    })
}

/// Whether `given` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `key`.
pub fn signature_matches(key: &[u8], body: &[u8], given: &str) -> bool {
    let Some(hex_sig) = given.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=<hex>` over `body`: what a sender puts in `X-Hub-Signature-256`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The routing key of a request: from the path suffix, a header, or a JSON pointer into the
/// body, as configured. A path suffix, when given, always wins. The body is parsed here only
/// for a pointer (the ingest path parses it once more, whole, as the payload).
pub fn routing_key(
    cfg: &WebhookConfig,
    path_key: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<String, RoutingKeyError> {
    if let Some(k) = path_key.filter(|k| !k.is_empty()) {
        return Ok(k.to_owned());
    }
    let key = match &cfg.routing_key {
        RoutingKeyFrom::Path => return Err(RoutingKeyError::NoPathKey),
        RoutingKeyFrom::Header(h) => header(&h.to_ascii_lowercase())
            .ok_or_else(|| RoutingKeyError::MissingHeader(h.clone()))?,
        RoutingKeyFrom::Pointer(p) => match serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .as_ref()
            .and_then(|b| b.pointer(p))
        {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(RoutingKeyError::NotAString(p.clone())),
            None => return Err(RoutingKeyError::NothingAt(p.clone())),
        },
    };
    if key.trim().is_empty() {
        return Err(RoutingKeyError::Empty);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg(secret: Option<&str>, token: Option<&str>) -> WebhookConfig {
        WebhookConfig {
            secret: secret.map(|s| Secret::Literal(s.to_owned())),
            token: token.map(|s| Secret::Literal(s.to_owned())),
            routing_key: RoutingKeyFrom::Path,
            max_body_bytes: 1024,
            rate: None,
        }
    }

    #[test]
    fn github_signature() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!signature_matches(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), sig);
    }

    #[test]
    fn authentication() {
        let c = cfg(Some("k"), Some("tok"));
        let body = b"{}";
        let good = sign(b"k", body);
        assert!(
            authenticate(
                &c,
                |h| (h == "x-hub-signature-256").then(|| good.clone()),
                body
            )
            .is_ok()
        );
        assert!(
            authenticate(
                &c,
                |h| (h == "x-hub-signature-256").then(|| "sha256=00".to_owned()),
                body
            )
            .is_err()
        );
        assert!(
            authenticate(
                &c,
                |h| (h == "x-troupe-token").then(|| "tok".to_owned()),
                body
            )
            .is_ok()
        );
        assert!(
            authenticate(
                &c,
                |h| (h == "authorization").then(|| "Bearer tok".to_owned()),
                body
            )
            .is_ok()
        );
        assert!(
            authenticate(
                &c,
                |h| (h == "x-troupe-token").then(|| "tok2".to_owned()),
                body
            )
            .is_err()
        );
        let e = authenticate(&c, |_| None, body).expect_err("nothing sent");
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(authenticate(&cfg(None, None), |_| None, body).is_err());
    }

    #[test]
    fn routing_keys() {
        let mut c = cfg(None, None);
        assert_eq!(
            routing_key(&c, Some("a.b"), |_| None, b""),
            Ok("a.b".to_owned())
        );
        assert!(routing_key(&c, None, |_| None, b"").is_err());
        c.routing_key = RoutingKeyFrom::Header("X-GitHub-Event".to_owned());
        assert_eq!(
            routing_key(
                &c,
                None,
                |h| (h == "x-github-event").then(|| "push".to_owned()),
                b""
            ),
            Ok("push".to_owned())
        );
        c.routing_key = RoutingKeyFrom::Pointer("/repository/name".to_owned());
        let body = br#"{"repository": {"name": "infra"}}"#;
        assert_eq!(
            routing_key(&c, None, |_| None, body),
            Ok("infra".to_owned())
        );
        assert!(routing_key(&c, None, |_| None, b"{}").is_err());
    }
}
