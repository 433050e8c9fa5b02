//! Writing the audit log: one background writer that stores entries in batches.
//!
//! Whoever records hands an entry to the writer and may wait until it has been stored
//! ([`AuditLog::record`], what the API's layer does before it answers) or not
//! ([`AuditLog::record_later`], for paths that cannot wait). Entries that arrive while a batch
//! is being written go in the next batch, one statement each, so the log costs a busy server
//! one write per batch rather than one per request.
//!
//! A failed write is logged and retried with backoff; the entries wait in memory meanwhile
//! (at most [`MAX_HELD`]; beyond that the oldest are dropped, and that is logged too). The
//! change an entry records is never undone because its entry could not be written: see
//! docs/security.md ("Audit log").

use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use troupe_core::audit::NewAuditEntry;
use troupe_core::run::Run;
use troupe_store::Store;

/// Entries stored in one statement at most.
const MAX_BATCH: usize = 256;
/// Entries kept in memory while the store fails, at most.
pub const MAX_HELD: usize = 10_000;
/// Entries queued for the writer before recorders wait.
const QUEUE: usize = 4096;
/// How often entries past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

struct Pending {
    entry: NewAuditEntry,
    stored: Option<oneshot::Sender<bool>>,
}

/// The audit log's writer. Cheap to share: wrap in `Arc`.
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer (on the current Tokio runtime) storing into `store`, and, with a
    /// `retention`, pruning entries older than that every hour.
    pub fn start(store: Arc<dyn Store>, retention: Option<Duration>) -> Arc<AuditLog> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(Arc::clone(&store), rx));
        if let Some(retention) = retention {
            tokio::spawn(prune_loop(store, retention));
        }
        Arc::new(AuditLog { tx })
    }

    /// Records `entry` and waits until the writer has tried to store it: true when it was
    /// stored (when it was not, the writer keeps it and tries again).
    pub async fn record(&self, entry: NewAuditEntry) -> bool {
        let (stored, done) = oneshot::channel();
        let pending = Pending {
            entry: entry.bounded(),
            stored: Some(stored),
        };
        if self.tx.send(pending).await.is_err() {
            tracing::error!("the audit log writer has stopped; an entry was not recorded");
            return false;
        }
        done.await.unwrap_or(false)
    }

    /// Records `entry` without waiting.
    pub fn record_later(&self, entry: NewAuditEntry) {
        let pending = Pending {
            entry: entry.bounded(),
            stored: None,
        };
        match self.tx.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(pending)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(pending).await.is_err() {
                        tracing::error!(
                            "the audit log writer has stopped; an entry was not recorded"
                        );
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the audit log writer has stopped; an entry was not recorded");
            }
        }
    }
}

/// The entry of a run `actor` started (not through the API, whose layer records its own
/// requests).
pub fn run_launched(run: &Run, actor: &str) -> NewAuditEntry {
    let mut detail = serde_json::json!({"project": run.project_id});
    if let Some(template) = run.template_id {
        detail["template"] = template.into();
    }
    if let Some(event) = run.event_id {
        detail["event"] = event.into();
    }
    NewAuditEntry {
        at: Utc::now(),
        actor: actor.to_owned(),
        action: "run.launch".to_owned(),
        target_kind: Some("run".to_owned()),
        target_id: Some(run.id.to_string()),
        target_name: Some(run.playbook.clone()),
        detail,
        ..NewAuditEntry::default()
    }
}

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    let mut entries: Vec<NewAuditEntry> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut open = true;
    loop {
        if entries.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(p) => take(p, &mut entries, &mut waiting),
                None => return,
            }
        }
        while open && entries.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => take(p, &mut entries, &mut waiting),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let n = entries.len().min(MAX_BATCH);
        match store.record_audit(&entries[..n]).await {
            Ok(()) => {
                entries.drain(..n);
                backoff = Duration::from_millis(100);
                for w in waiting.drain(..) {
                    let _ = w.send(true);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = entries.len(),
                    "could not write the audit log; retrying");
                for w in waiting.drain(..) {
                    let _ = w.send(false);
                }
                if entries.len() > MAX_HELD {
                    let dropped = entries.len() - MAX_HELD;
                    entries.drain(..dropped);
                    tracing::error!(
                        dropped,
                        "audit log entries dropped: the store keeps failing"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn take(p: Pending, entries: &mut Vec<NewAuditEntry>, waiting: &mut Vec<oneshot::Sender<bool>>) {
    entries.push(p.entry);
    waiting.extend(p.stored);
}

async fn prune_loop(store: Arc<dyn Store>, retention: Duration) {
    loop {
        let cut = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d));
        if let Some(cut) = cut {
            match store.prune_audit(cut).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "pruned audit log entries past retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune the audit log"),
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}
