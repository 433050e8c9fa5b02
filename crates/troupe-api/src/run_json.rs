//! Runs as JSON, kept by version.
//!
//! The runs list is the hottest read (dashboards and CLIs poll it), and most runs on a page have
//! not changed since the last time it was asked for. The store bumps a run's version on every
//! change to it, so a page is answered from one cheap query (the ids and versions on it) and the
//! JSON already built for those versions; only runs whose version moved are read and serialized
//! again. Keyed by version, an entry can never be stale, whichever process changed the run.

use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use std::collections::HashMap;
use troupe_store::{RunVersion, Store};

/// The serialized runs most recently asked for, up to a byte budget.
pub struct RunJsonCache {
    entries: moka::sync::Cache<RunVersion, Bytes>,
}

impl RunJsonCache {
    /// A cache holding at most about `max_bytes` of JSON.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, json: &Bytes| u32::try_from(json.len()).unwrap_or(u32::MAX))
                .build(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
