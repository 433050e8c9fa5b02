//! The live bus on PostgreSQL: `NOTIFY troupe_live` to announce, `LISTEN troupe_live` to hear.
//!
//! Announcements are queued and sent by one task, every notice queued meanwhile in one
//! statement (one round trip, and one commit taking PostgreSQL's notify lock, however many
//! runs are streaming). Notices of one transaction are delivered in order, and those of one
//! sender in the order it committed them. The listener runs on a connection of its own; when it
//! drops, the listener connects again (with backoff) and reports
//! [`Heard::Reconnected`](troupe_store::Heard::Reconnected), since what was sent meanwhile is
//! lost.

use crate::PgStore;
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use std::time::Duration;
use tokio::sync::mpsc;
use troupe_store::sql::backend;
use troupe_store::{Heard, LiveBus, MAX_NOTICE_BYTES, StoreResult};

/// The channel live notices travel on.
pub const LIVE_CHANNEL: &str = "troupe_live";
/// Notices sent in one statement at most.
const NOTICES_PER_STATEMENT: usize = 1_000;
/// Attempts at sending one group of notices before they are given up (followers then find
/// the events by their own catch-up reads).
const SEND_ATTEMPTS: u32 = 3;

/// [`LiveBus`] over PostgreSQL LISTEN/NOTIFY.
#[derive(Debug)]
pub struct PgBus {
    pool: PgPool,
    queue: mpsc::UnboundedSender<String>,
}

impl PgStore {
    /// A live bus on this store's database. Starts the task that sends announcements; it ends
    /// when the bus is dropped.
    pub fn live_bus(&self) -> PgBus {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_notices(self.pool.clone(), rx));
        PgBus {
            pool: self.pool.clone(),
            queue,
        }
    }
}

async fn send_notices(pool: PgPool, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut group = Vec::new();
    while let Some(first) = rx.recv().await {
        group.clear();
        group.push(first);
        while group.len() < NOTICES_PER_STATEMENT {
            match rx.try_recv() {
                Ok(n) => group.push(n),
                Err(_) => break,
            }
        }
        for attempt in 1..=SEND_ATTEMPTS {
            let sent = sqlx::query("SELECT pg_notify($1, n) FROM UNNEST($2::text[]) AS n")
                .bind(LIVE_CHANNEL)
                .bind(&group)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, notices = group.len(), "could not send live notices");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(LIVE_CHANNEL).await?;
    Ok(listener)
}

#[async_trait]
impl LiveBus for PgBus {
    fn announce(&self, notice: String) {
        if notice.len() > MAX_NOTICE_BYTES {
            tracing::warn!(bytes = notice.len(), "live notice too long; not sent");
            return;
        }
        let _ = self.queue.send(notice);
    }

    async fn listen(&self) -> StoreResult<mpsc::Receiver<Heard>> {
        let mut listener = connect(&self.pool).await.map_err(backend)?;
        let (tx, rx) = mpsc::channel(4096);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if tx
                            .send(Heard::Notice(n.payload().to_owned()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => tracing::warn!("live notice listener lost its connection"),
                    Err(e) => tracing::warn!(error = %e, "live notice listener failed"),
                }
                // Connect again ourselves (rather than let the listener do it on its next
                // receive) so that the reconnection is reported as soon as it happened.
                let mut wait = Duration::from_millis(50);
                listener = loop {
                    if tx.is_closed() {
                        return;
                    }
                    match connect(&pool).await {
                        Ok(l) => break l,
                        Err(e) => {
                            tracing::warn!(error = %e, "live notice listener cannot reconnect");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(2));
                        }
                    }
                };
                if tx.send(Heard::Reconnected).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
