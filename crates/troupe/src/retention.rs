//! Run retention in the background: every `retention_interval_s`, the replica holding the
//! retention lease (the one event records are pruned under) prunes the finished runs past
//! `run_retention` or beyond `keep_runs_per_project`, in batches (see
//! [`troupe_store::retention`]).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use troupe_store::{RunRetention, Store};

/// What the loop prunes, and how.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Finished runs older than this go; `None`: no age limit.
    pub max_age: Option<Duration>,
    /// Each project keeps its newest this many runs; `None`: no count limit.
    pub keep_per_project: Option<u32>,
    /// Time between passes.
    pub interval: Duration,
    /// Runs per batch.
    pub batch: u32,
}

impl RetentionConfig {
    /// The policy of a pass starting at `now`.
    fn policy(&self, now: chrono::DateTime<chrono::Utc>) -> RunRetention {
        RunRetention {
            finished_before: self.max_age.map(|age| {
                chrono::Duration::from_std(age)
                    .ok()
                    .and_then(|age| now.checked_sub_signed(age))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
            }),
            keep_per_project: self.keep_per_project,
        }
    }
}

/// Prunes runs until `stop`, a pass every `cfg.interval` while this replica (`holder`) holds
/// the retention lease. Does nothing when neither limit is set.
pub async fn run(
    store: Arc<dyn Store>,
    holder: String,
    cfg: RetentionConfig,
    stop: CancellationToken,
) {
    if cfg.max_age.is_none() && cfg.keep_per_project.is_none() {
        tracing::info!("run retention is off: runs are kept forever");
        return;
    }
    let period = chrono::Duration::from_std(cfg.interval).unwrap_or(chrono::Duration::hours(1));
    loop {
        let now = chrono::Utc::now();
        match store
            .acquire_source_lease(
                troupe_events::service::RETENTION_LEASE,
                &holder,
                now,
                now + period,
            )
            .await
        {
            Ok(true) => pass(store.as_ref(), &cfg, now).await,
            Ok(false) => tracing::debug!("another replica holds the retention lease"),
            Err(e) => tracing::warn!(error = %e, "could not take the retention lease"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
}

async fn pass(store: &dyn Store, cfg: &RetentionConfig, now: chrono::DateTime<chrono::Utc>) {
    let started = std::time::Instant::now();
    let policy = cfg.policy(now);
    match troupe_store::retention::prune(
        store,
        &policy,
        cfg.batch,
        troupe_store::retention::BATCH_PAUSE,
    )
    .await
    {
        Ok(pruned) => tracing::info!(
            runs = pruned.runs,
            events = pruned.events,
            output_chunks = pruned.output_chunks,
            ms = started.elapsed().as_millis(),
            "run retention pass"
        ),
        Err(e) => tracing::warn!(error = %e, "run retention pass failed; the next one goes on"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_reaches_back_by_the_age() {
        let now = chrono::Utc::now();
        let cfg = RetentionConfig {
            max_age: Some(Duration::from_secs(3600)),
            keep_per_project: Some(5),
            interval: Duration::from_secs(60),
            batch: 10,
        };
        let policy = cfg.policy(now);
        assert_eq!(
            policy.finished_before,
            Some(now - chrono::Duration::hours(1))
        );
        assert_eq!(policy.keep_per_project, Some(5));
        let forever = RetentionConfig {
            max_age: Some(Duration::MAX),
            ..cfg
        };
        assert_eq!(
            forever.policy(now).finished_before,
            Some(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        );
    }
}
