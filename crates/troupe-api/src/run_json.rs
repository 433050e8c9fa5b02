//! Runs as JSON, kept by version.
//!
//! The runs list is the hottest read (dashboards and CLIs poll it), and most runs on a page have
//! not changed since the last time it was asked for. The store bumps a run's version on every
//! change to it, so a page is answered from one cheap query (the ids and versions on it) and the
//! JSON already built for those versions; only runs whose version moved are read and serialized
//! again. Keyed by version, an entry can never be stale, whichever process changed the run.
//!
//! Whole answers are kept too ([`Answers`]: list pages, and single runs by id), under the
//! store's runs generation: while it has not moved, no run was created, changed or deleted,
//! and an answer asked for again is sent as it was, without a query. Each carries an `ETag`,
//! so a poller that sends `If-None-Match` gets a bodiless 304 instead.

use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use troupe_store::{Page, RunFilter, RunVersion, Store};

/// The serialized runs most recently asked for, and the answers made of them, each up to a
/// byte budget.
pub struct RunJsonCache {
    entries: moka::sync::Cache<RunVersion, Bytes>,
    /// Whole list pages, by what they list.
    pub pages: Answers<(RunFilter, Page)>,
    /// Single runs, by id.
    pub by_id: Answers<i64>,
}

impl RunJsonCache {
    /// A cache holding at most about `max_bytes` of runs' JSON, as much of list pages and as
    /// much of single runs' answers.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, json: &Bytes| u32::try_from(json.len()).unwrap_or(u32::MAX))
                .build(),
            pages: Answers::new(max_bytes),
            by_id: Answers::new(max_bytes),
        }
    }

    /// The JSON of each listed run, in the order given. Runs missing from the cache are read in
    /// one query; a run deleted since it was listed is left out, and one changed since is
    /// returned as it is now.
    pub async fn runs(&self, store: &dyn Store, listed: &[RunVersion]) -> ApiResult<Vec<Bytes>> {
        let mut found: Vec<Option<Bytes>> = listed.iter().map(|v| self.entries.get(v)).collect();
        let missing: Vec<i64> = listed
            .iter()
            .zip(&found)
            .filter(|(_, json)| json.is_none())
            .map(|(v, _)| v.id)
            .collect();
        if !missing.is_empty() {
            let position: HashMap<i64, usize> =
                listed.iter().enumerate().map(|(i, v)| (v.id, i)).collect();
            for (version, run) in store.get_runs(&missing).await? {
                let json = serde_json::to_vec(&run)
                    .map_err(|e| ApiError::internal("serializing a run", &e))?;
                let json = Bytes::from(json);
                self.entries.insert(version, json.clone());
                if let Some(&i) = position.get(&version.id) {
                    found[i] = Some(json);
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}

/// A JSON answer as sent: its body and its entity tag.
#[derive(Clone)]
pub struct TaggedJson {
    /// The JSON sent.
    pub body: Bytes,
    /// A strong `ETag`: a digest of the body.
    pub etag: String,
}

impl TaggedJson {
    /// An answer with this body.
    pub fn new(body: Vec<u8>) -> Self {
        let digest = Sha256::digest(&body);
        TaggedJson {
            etag: format!("\"{}\"", hex::encode(&digest[..16])),
            body: Bytes::from(body),
        }
    }

    /// Whether an `If-None-Match` header value names this answer (`*` or one of its tags; weak
    /// tags compare by their opaque part, as RFC 9110 says for `If-None-Match`).
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }

    /// The response: 304 with only the tag when `If-None-Match` names it, the JSON otherwise.
    pub fn respond(self, headers: &HeaderMap) -> Response {
        let if_none_match = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if if_none_match.is_some_and(|tags| self.matches(tags)) {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, self.etag)]).into_response();
        }
        (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::ETAG, self.etag),
            ],
            self.body,
        )
            .into_response()
    }
}

/// Answers, each under the runs generation it was read at.
pub struct Answers<K> {
    answers: moka::future::Cache<(K, u64), TaggedJson>,
}

impl<K: Hash + Eq + Send + Sync + 'static> Answers<K> {
    /// At most about `max_bytes` of answers.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            answers: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, answer: &TaggedJson| {
                    u32::try_from(answer.body.len()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The answer for `key`. Under a generation: the one kept under it, or else read by `read`
    /// once for every request that asks meanwhile (when the generation moves, the requests in
    /// flight all miss together). Without one: read afresh.
    pub async fn get_or_read(
        &self,
        key: K,
        generation: Option<u64>,
        read: impl Future<Output = ApiResult<TaggedJson>>,
    ) -> ApiResult<TaggedJson> {
        match generation {
            Some(g) => self
                .answers
                .try_get_with((key, g), read)
                .await
                .map_err(|e| ApiError::clone(&e)),
            None => read.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_is_kept_only_under_its_generation_and_read_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let answers = Answers::new(1 << 20);
        let reads = AtomicUsize::new(0);
        let read = |body: &'static str| {
            let reads = &reads;
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(TaggedJson::new(body.as_bytes().to_vec()))
            }
        };
        // Two requests missing together: one read.
        let (a, b) = tokio::join!(
            answers.get_or_read("all", Some(7), read("one")),
            answers.get_or_read("all", Some(7), read("two")),
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(a.expect("a").body, b.expect("b").body);
        let kept = answers.get_or_read("all", Some(7), read("three")).await;
        assert_eq!(kept.expect("kept").body.as_ref(), b"one");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "kept, not read again");
        let moved = answers.get_or_read("all", Some(8), read("four")).await;
        assert_eq!(moved.expect("moved").body.as_ref(), b"four");
        let other = answers.get_or_read("other", Some(8), read("five")).await;
        assert_eq!(other.expect("other").body.as_ref(), b"five");
        let fresh = answers.get_or_read("all", None, read("six")).await;
        assert_eq!(fresh.expect("fresh").body.as_ref(), b"six");
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        // Errors reach every request that waited for the read, and are not kept.
        let failing = async { Err::<TaggedJson, _>(ApiError::not_found("run", 9)) };
        let err = answers
            .get_or_read("all", Some(9), failing)
            .await
            .err()
            .expect("an error");
        assert_eq!(err.status, axum::http::StatusCode::NOT_FOUND);
        let after = answers.get_or_read("all", Some(9), read("seven")).await;
        assert_eq!(after.expect("after").body.as_ref(), b"seven");
    }

    #[test]
    fn etags_follow_the_body_and_if_none_match_lists() {
        let a = TaggedJson::new(b"{\"runs\":[1]}".to_vec());
        let b = TaggedJson::new(b"{\"runs\":[2]}".to_vec());
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, TaggedJson::new(a.body.to_vec()).etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert!(a.matches(&a.etag));
        assert!(a.matches(&format!("W/{}", a.etag)));
        assert!(a.matches(&format!("{}, {}", b.etag, a.etag)));
        assert!(a.matches("*"));
        assert!(!a.matches(&b.etag));
        assert!(!a.matches(""));
    }

    #[test]
    fn the_budget_counts_bytes() {
        let cache = RunJsonCache::new(100);
        for id in 0..10 {
            cache
                .entries
                .insert(RunVersion { id, version: 0 }, Bytes::from(vec![b'x'; 40]));
        }
        cache.entries.run_pending_tasks();
        assert!(
            cache.entries.weighted_size() <= 100,
            "{} bytes kept",
            cache.entries.weighted_size()
        );
    }
}
