//! The HTTP client every HTTP kind shares, and `http`: a GET returning JSON, a JSON pointer
//! picking the list.
//!
//! URLs in errors lose their credentials and their query string (either may hold a token).

use super::{SourceError, json_kind, names_in};
use crate::doc::HttpNodes;
use indexmap::IndexMap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};
use serde_json::Value;
use std::time::Duration;
use troupe_core::url::redact_credentials;

/// The longest one request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// How much of a failed answer's body an error shows.
const BODY_EXCERPT_CHARS: usize = 300;

/// The shared client, with a timeout on every request; `https` is verified against the
/// system's CAs and those of `ca_file`.
pub(super) fn client(ca_file: Option<&std::path::Path>) -> Result<Client, String> {
    troupe_http::builder(ca_file)
        .map_err(|e| e.to_string())?
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| error_chain(&e))
}

/// `url` as errors show it: no user, password, query or fragment.
pub(super) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// A URL as written in a flow, without credentials or query, for errors about it.
fn shown_raw(raw: &str) -> String {
    let no_query = raw.split(['?', '#']).next().unwrap_or_default();
    redact_credentials(no_query)
}

/// Parses a base URL.
pub(super) fn parse_url(raw: &str) -> Result<Url, SourceError> {
    let url = Url::parse(raw).map_err(|e| SourceError::BadUrl {
        url: shown_raw(raw),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SourceError::BadUrl {
            url: shown(&url),
            reason: "only http and https are supported".into(),
        });
    }
    Ok(url)
}

/// `base` with `segments` appended to its path (each percent-encoded as needed).
pub(super) fn join(base: &Url, segments: &[&str]) -> Result<Url, SourceError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| SourceError::BadUrl {
            url: shown(base),
            reason: "cannot have a path".into(),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Request headers from the flow; values are marked sensitive and never shown.
pub(super) fn headers(given: &IndexMap<String, String>) -> Result<HeaderMap, SourceError> {
    let mut map = HeaderMap::new();
    for (name, value) in given {
        let key = HeaderName::from_bytes(name.as_bytes()).map_err(|_| SourceError::BadHeader {
            name: name.clone(),
            reason: "not a header name",
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| SourceError::BadHeader {
            name: name.clone(),
            reason: "its value has characters a header cannot carry",
        })?;
        value.set_sensitive(true);
        map.append(key, value);
    }
    Ok(map)
}

/// Sends a request and reads its JSON answer; a status other than 2xx, an answer too large or
/// not JSON is an error naming the URL.
pub(super) async fn json(
    client: &Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<&Value>,
) -> Result<Value, SourceError> {
    let name = shown(&url);
    let mut req = client
        .request(method, url)
        .headers(headers)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = body {
        req = req.json(body);
    }
    let mut resp = req.send().await.map_err(|e| SourceError::Request {
        url: name.clone(),
        reason: error_chain(&e),
    })?;
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| SourceError::Request {
        url: name.clone(),
        reason: error_chain(&e),
    })? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(SourceError::shape(
                &name,
                format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let excerpt: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(BODY_EXCERPT_CHARS)
            .collect();
        return Err(SourceError::Status {
            url: name,
            status: status.as_u16(),
            body: redact_credentials(&excerpt),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| SourceError::shape(&name, format!("the answer is not JSON: {e}")))
}

/// An error and its causes, without the URL, credentials in any cause redacted.
fn error_chain(e: &reqwest::Error) -> String {
    redact_credentials(&troupe_http::describe(e))
}

/// `http`: GET the URL, pick the list with the pointer, read names from it.
pub(super) async fn nodes(client: &Client, spec: &HttpNodes) -> Result<Vec<String>, SourceError> {
    let url = parse_url(&spec.url)?;
    let name = shown(&url);
    let answer = json(client, Method::GET, url, headers(&spec.headers)?, None).await?;
    let list = match spec.pointer.as_deref() {
        None | Some("") => &answer,
        Some(p) => answer.pointer(p).ok_or_else(|| {
            SourceError::shape(&name, format!("the answer has nothing at pointer {p:?}"))
        })?,
    };
    let Value::Array(items) = list else {
        return Err(SourceError::shape(
            &name,
            format!(
                "expected a list{}, got {}",
                spec.pointer
                    .as_deref()
                    .map(|p| format!(" at pointer {p:?}"))
                    .unwrap_or_default(),
                json_kind(list)
            ),
        ));
    };
    names_in(items, spec.field.as_deref(), &name)
}
