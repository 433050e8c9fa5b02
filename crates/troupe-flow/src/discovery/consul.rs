//! `consul`: Consul's catalog, the nodes providing a service or every node.

use super::http::{headers, join, json, parse_url, shown};
use super::{SourceError, names_in};
use crate::doc::ConsulNodes;
use indexmap::IndexMap;
use reqwest::{Client, Method};
use serde_json::Value;

/// `GET {url}/v1/catalog/service/{service}` (with `?tag=` and `?dc=`), a node being each
/// entry's `Node` (or `Address`); without a service, `GET {url}/v1/catalog/nodes`.
pub(super) async fn nodes(client: &Client, spec: &ConsulNodes) -> Result<Vec<String>, SourceError> {
    let base = parse_url(&spec.url)?;
    let mut url = match &spec.service {
        Some(service) => join(&base, &["v1", "catalog", "service", service])?,
        None => join(&base, &["v1", "catalog", "nodes"])?,
    };
    {
        let mut query = url.query_pairs_mut();
        if let (Some(tag), Some(_)) = (&spec.tag, &spec.service) {
            query.append_pair("tag", tag);
        }
        if let Some(dc) = &spec.datacenter {
            query.append_pair("dc", dc);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut given = IndexMap::new();
    if let Some(token) = &spec.token {
        given.insert("X-Consul-Token".to_owned(), token.clone());
    }
    let name = shown(&url);
    let answer = json(client, Method::GET, url, headers(&given)?, None).await?;
    let Value::Array(items) = &answer else {
        return Err(SourceError::shape(
            &name,
            "expected an array of catalog entries",
        ));
    };
    let field = if spec.use_address { "Address" } else { "Node" };
    names_in(items, Some(field), &name)
}
