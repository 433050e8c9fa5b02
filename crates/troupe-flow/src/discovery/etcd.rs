//! `etcd`: the keys under a prefix, through etcd's v3 JSON gateway.

use super::SourceError;
use super::http::{headers, join, json, parse_url, shown};
use crate::doc::EtcdNodes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use indexmap::IndexMap;
use reqwest::{Client, Method};
use serde_json::{Value, json};

/// `POST {url}/v3/kv/range` for every key under the prefix (keys only); a node is a key's rest
/// after the prefix, up to the next `/`.
pub(super) async fn nodes(client: &Client, spec: &EtcdNodes) -> Result<Vec<String>, SourceError> {
    let url = join(&parse_url(&spec.url)?, &["v3", "kv", "range"])?;
    let name = shown(&url);
    let prefix = spec.prefix.as_bytes();
    let body = json!({
        "key": STANDARD.encode(if prefix.is_empty() { b"\0".as_slice() } else { prefix }),
        "range_end": STANDARD.encode(range_end(prefix)),
        "keys_only": true,
    });
    let answer = json(
        client,
        Method::POST,
        url,
        headers(&IndexMap::new())?,
        Some(&body),
    )
    .await?;
    // etcd leaves `kvs` out when nothing matches.
    let kvs = match answer.get("kvs") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(kvs)) => kvs,
        Some(_) => return Err(SourceError::shape(&name, "`kvs` is not a list")),
    };
    let mut names = Vec::with_capacity(kvs.len());
    for (i, kv) in kvs.iter().enumerate() {
        let key = kv
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| SourceError::shape(&name, format!("kvs item {i} has no `key`")))?;
        let key = STANDARD.decode(key).map_err(|e| {
            SourceError::shape(&name, format!("kvs item {i}: key is not base64: {e}"))
        })?;
        // The gateway answers the range asked, but a key outside it is not ours to read.
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let node = rest.split(|b| *b == b'/').next().unwrap_or_default();
        let node = String::from_utf8(node.to_vec())
            .map_err(|_| SourceError::shape(&name, format!("kvs item {i}: key is not UTF-8")))?;
        names.push(node);
    }
    Ok(names)
}

/// The end of the range holding every key starting with `prefix`: the prefix with its last byte
/// below 0xff increased by one (and what follows it dropped); `\0` (every key) when there is no
/// such byte, as etcd's own clients do.
pub(super) fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
