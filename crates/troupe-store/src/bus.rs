//! The live bus: small notices between troupe processes sharing a store.
//!
//! Each process keeps its live subscribers in memory (troupe-worker's `LiveHub`). When several
//! replicas share one PostgreSQL store, what one replica stores must also reach the followers
//! connected to the others: the replica that stored something announces it on the bus (a short
//! text: which run, up to which counter, what changed), and every replica hears it and reads
//! what it needs from the store. The bus carries notices, never the data itself, so a lost
//! notice costs latency, not events: the store stays the truth. PostgreSQL's implementation
//! is LISTEN/NOTIFY (troupe-postgres); [`LocalBus`] connects the processes' hubs of one
//! process (tests, and anything that runs several hubs on one store).

use crate::StoreResult;
use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

/// Longest notice a bus must carry (PostgreSQL's NOTIFY payloads stop at 8000 bytes).
pub const MAX_NOTICE_BYTES: usize = 7_900;

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A notice some process (perhaps this one) announced.
    Notice(String),
    /// The listener's connection was lost and is back: notices sent meanwhile are gone, so
    /// whatever the listener follows must be read again from the store.
    Reconnected,
}

/// Announces notices to every process on the same store, and hears theirs.
#[async_trait]
pub trait LiveBus: Send + Sync + 'static {
    /// Queues `notice` (at most [`MAX_NOTICE_BYTES`]) for every listener, this process's
    /// included. Never waits: announcing sits on paths that must not (after a batch is
    /// stored). Best effort: a notice may be lost, never reordered against this process's
    /// other notices.
    fn announce(&self, notice: String);

    /// Starts listening. The receiver ends only when the bus is gone; connection losses are
    /// reported as [`Heard::Reconnected`] once the listener is back.
    async fn listen(&self) -> StoreResult<mpsc::Receiver<Heard>>;
}

/// A bus inside one process: every listener hears every announcement.
#[derive(Debug)]
pub struct LocalBus {
    tx: broadcast::Sender<String>,
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus {
            tx: broadcast::channel(4096).0,
        }
    }
}

#[async_trait]
impl LiveBus for LocalBus {
    fn announce(&self, notice: String) {
        let _ = self.tx.send(notice);
    }

    async fn listen(&self) -> StoreResult<mpsc::Receiver<Heard>> {
        let mut rx = self.tx.subscribe();
        let (tx, out) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let heard = match rx.recv().await {
                    Ok(notice) => Heard::Notice(notice),
                    // Missed notices: as after a lost connection, read again from the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => Heard::Reconnected,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(heard).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}
