//! Running a source on exactly one replica: the one holding its lease in the store.
//!
//! Every replica sharing a store supervises every active source the rules configure, but only
//! the one that acquires the source's lease (`SourceLeaseStore`) runs it. The holder renews the lease
//! every third of its length and stops the source as soon as a renewal fails or finds the lease
//! taken; the others try to acquire it as often, so when the holder dies its source runs again
//! elsewhere at most one lease length (plus a third) later. A replica that stops a source
//! (shutdown, new rules) releases its lease so another can take it over at once. With SQLite
//! (one process) the same path simply always wins.

use crate::config::SourceConfig;
use crate::sources::{self, SourceContext};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use troupe_store::Store;

/// Who this replica is and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This replica's holder name: its node id and an incarnation (new on every start), so a
    /// restarted replica does not mistake its dead self's leases for its own.
    pub holder: String,
    /// This replica's node id (the holder name's first part): leases held under it by another
    /// incarnation belong to this node's dead self and are given up at start.
    pub node: String,
    /// How long a lease lasts unless renewed; a dead holder's sources are taken over after it.
    pub ttl: Duration,
}

impl LeaseConfig {
    /// A holder name for a process of node `node_id`: the node id and a fresh incarnation.
    pub fn new(node_id: &str, ttl: Duration) -> LeaseConfig {
        let incarnation = uuid::Uuid::new_v4().simple().to_string();
        LeaseConfig {
            holder: format!("{node_id}/{}", &incarnation[..12]),
            node: node_id.to_owned(),
            ttl,
        }
    }

    fn chrono_ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(15))
    }

    /// How often the holder renews and the others try to take over.
    pub fn beat(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::new("local", Duration::from_secs(15))
    }
}

/// Gives up the leases an earlier incarnation of this node held (it crashed or was killed
/// before releasing them), so its sources start again here at once rather than after expiry.
pub(crate) async fn release_dead_self(store: &dyn Store, lease: &LeaseConfig) {
    let prefix = format!("{}/", lease.node);
    let leases = match store.list_source_leases().await {
        Ok(leases) => leases,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the source leases");
            return;
        }
    };
    for old in leases {
        if old.holder.starts_with(&prefix)
            && old.holder != lease.holder
            && let Err(e) = store.release_source_lease(&old.name, &old.holder).await
        {
            tracing::warn!(source = %old.name, error = %e, "could not release an earlier incarnation's lease");
        }
    }
}

/// Whether a lease was kept until told to stop, or lost.
enum Held {
    Stopped,
    Lost,
}

/// Supervises the source `cfg` named `ctx.name`: runs it while this replica holds its lease,
/// until `ctx.stop`.
pub(crate) async fn lead(
    store: Arc<dyn Store>,
    lease: LeaseConfig,
    cfg: SourceConfig,
    ctx: SourceContext,
) {
    let name = ctx.name.clone();
    let beat = lease.beat();
    while !ctx.stop.is_cancelled() {
        let now = Utc::now();
        let acquired = tokio::time::timeout(
            beat,
            store.acquire_source_lease(&name, &lease.holder, now, now + lease.chrono_ttl()),
        )
        .await;
        match acquired {
            Ok(Ok(true)) => {
                tracing::info!(source = %name, holder = %lease.holder, "source lease acquired: running the source here");
                match hold(&store, &lease, &cfg, &ctx).await {
                    Held::Stopped => {
                        if let Err(e) = store.release_source_lease(&name, &lease.holder).await {
                            tracing::warn!(source = %name, error = %e, "could not release the source's lease");
                        }
                        return;
                    }
                    Held::Lost => {
                        tracing::warn!(source = %name, "source lease lost: source stopped here");
                        continue;
                    }
                }
            }
            Ok(Ok(false)) => {
                let holder = match store.list_source_leases().await {
                    Ok(leases) => leases
                        .into_iter()
                        .find(|l| l.name == name)
                        .map(|l| l.holder),
                    Err(_) => None,
                };
                ctx.status.standby(holder);
            }
            Ok(Err(e)) => ctx
                .status
                .lease_failed(format!("could not take the source's lease: {e}")),
            Err(_) => ctx.status.lease_failed(
                "could not take the source's lease: the store did not answer in time",
            ),
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(beat) => {}
        }
    }
}

/// Runs the source while renewing its lease.
async fn hold(
    store: &Arc<dyn Store>,
    lease: &LeaseConfig,
    cfg: &SourceConfig,
    ctx: &SourceContext,
) -> Held {
    let source = match sources::build(cfg) {
        Ok(Some(source)) => source,
        Ok(None) => return Held::Stopped,
        Err(e) => {
            tracing::error!(source = %ctx.name, error = %e, "event source not started");
            ctx.status.disconnected(&e);
            ctx.stop.cancelled().await;
            return Held::Stopped;
        }
    };
    ctx.status.leading(&lease.holder);
    let run_stop = ctx.stop.child_token();
    let mut task = tokio::spawn(source.run(SourceContext {
        stop: run_stop.clone(),
        ..ctx.clone()
    }));
    let beat = lease.beat();
    let held = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break Held::Stopped,
            _ = tokio::time::sleep(beat) => {}
        }
        let until = Utc::now() + lease.chrono_ttl();
        // A renewal that does not answer within a beat counts as failed: by the time it
        // would, another replica may be entitled to the source.
        match tokio::time::timeout(
            beat,
            store.renew_source_lease(&ctx.name, &lease.holder, until),
        )
        .await
        {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                ctx.status
                    .lease_failed("another replica took the source's lease over");
                break Held::Lost;
            }
            Ok(Err(e)) => {
                ctx.status
                    .lease_failed(format!("could not renew the source's lease: {e}"));
                break Held::Lost;
            }
            Err(_) => {
                ctx.status.lease_failed(
                    "could not renew the source's lease: the store did not answer in time",
                );
                break Held::Lost;
            }
        }
    };
    run_stop.cancel();
    if (&mut task).await.is_err() {
        tracing::error!(source = %ctx.name, "event source task failed");
    }
    held
}
