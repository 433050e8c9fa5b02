//! `puppetdb`: a PQL query over PuppetDB's HTTP API; the nodes are the answer's `certname`s.

use super::http::{headers, join, json, parse_url, shown};
use super::{SourceError, names_in};
use crate::doc::PuppetDbNodes;
use indexmap::IndexMap;
use reqwest::{Client, Method};
use serde_json::Value;

/// `GET {url}/pdb/query/v4?query=<PQL>`, an array of objects each with a `certname`.
pub(super) async fn nodes(
    client: &Client,
    spec: &PuppetDbNodes,
) -> Result<Vec<String>, SourceError> {
    let mut url = join(&parse_url(&spec.url)?, &["pdb", "query", "v4"])?;
    url.query_pairs_mut().append_pair("query", &spec.query);
    let name = shown(&url);
    let answer = json(client, Method::GET, url, headers(&IndexMap::new())?, None).await?;
    let Value::Array(items) = &answer else {
        return Err(SourceError::shape(&name, "expected an array of results"));
    };
    names_in(items, Some("certname"), &name)
}
