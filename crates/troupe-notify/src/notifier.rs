//! The notifier: delivers pending notifications once their run or execution has ended.

use crate::payload;
use crate::send::Sender;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify as Wake;
use tokio_util::sync::CancellationToken;
use troupe_core::notify::{Notify, NotifyKind, Subject};
use troupe_core::secret::SecretKey;
use troupe_store::{DueNotification, NotifyOutcome, Store, StoreError};
use troupe_wire::notifications::Ended;

/// How the notifier behaves.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// This replica's name: the owner of the notifications it claims.
    pub owner: String,
    /// How often it looks for due notifications when nobody wakes it.
    pub poll: Duration,
    /// How long a claim lasts: a notification claimed by a replica that died is sent by
    /// another after this.
    pub lease: Duration,
    /// Attempts before a notification is given up (`failed`).
    pub attempts: u32,
    /// The delay before the second attempt; each later one waits twice the one before.
    pub backoff: Duration,
    /// The most notifications claimed at once.
    pub batch: i64,
}

impl NotifierConfig {
    /// Defaults for a replica named `owner`: 5 attempts, 2 s then 4, 8, 16 s apart.
    pub fn new(owner: impl Into<String>) -> Self {
        NotifierConfig {
            owner: owner.into(),
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(120),
            attempts: 5,
            backoff: Duration::from_secs(2),
            batch: 32,
        }
    }
}

/// Delivers the notifications the store holds pending.
pub struct Notifier {
    store: Arc<dyn Store>,
    key: Arc<SecretKey>,
    sender: Sender,
    cfg: NotifierConfig,
    wake: Wake,
}

/// Why one notification could not be delivered this time.
enum Failure {
    /// Worth another attempt (the target did not answer, or answered an error).
    Transient(String),
    /// Another attempt would fail the same way (the target cannot be opened, the text does
    /// not render).
    Permanent(String),
}

impl Notifier {
    /// A notifier opening targets with `key` and posting through `sender`.
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<SecretKey>,
        sender: Sender,
        cfg: NotifierConfig,
    ) -> Arc<Notifier> {
        Arc::new(Notifier {
            store,
            key,
            sender,
            cfg,
            wake: Wake::new(),
        })
    }

    /// Asks it to look for due notifications now (a run or an execution just ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers due notifications until `stop` is canceled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let full = match self.deliver_due().await {
                Ok(n) => n >= self.cfg.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "notifier: could not read pending notifications");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll) => {}
            }
        }
    }

    /// Claims what is due and delivers it; how many were claimed. The loop's one step,
    /// callable on its own.
    pub async fn deliver_due(&self) -> Result<i64, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.cfg.lease).unwrap_or_default();
        let due = self
            .store
            .claim_notifications(&self.cfg.owner, now, until, self.cfg.batch)
            .await?;
        let n = i64::try_from(due.len()).unwrap_or(i64::MAX);
        for d in due {
            let id = d.notification.id;
            let outcome = self.attempt(&d).await;
            match self
                .store
                .record_notification(id, &self.cfg.owner, &outcome)
                .await
            {
                Ok(n) => tracing::debug!(notification = id, state = n.state.as_str(), "notified"),
                // Our claim ran out and another replica took it: its record stands.
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(notification = id, %why, "notification taken over")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// One attempt at one notification, as its outcome.
    async fn attempt(&self, due: &DueNotification) -> NotifyOutcome {
        let n = &due.notification;
        if !n.target.shown.on.matches(&due.status) {
            return NotifyOutcome::Skipped;
        }
        let failure = match self.send(due).await {
            Ok(()) => return NotifyOutcome::Sent,
            Err(f) => f,
        };
        let attempts = u32::try_from(n.attempts).unwrap_or(0) + 1;
        match failure {
            Failure::Transient(error) if attempts < self.cfg.attempts => {
                let delay = self
                    .cfg
                    .backoff
                    .saturating_mul(2u32.saturating_pow(attempts - 1));
                tracing::info!(notification = n.id, attempt = attempts, %error,
                    "notification failed; trying again later");
                NotifyOutcome::Retry {
                    at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error,
                }
            }
            Failure::Transient(error) | Failure::Permanent(error) => {
                tracing::warn!(notification = n.id, attempt = attempts, %error,
                    "notification given up");
                NotifyOutcome::Failed { error }
            }
        }
    }

    async fn send(&self, due: &DueNotification) -> Result<(), Failure> {
        let target: Notify = due
            .notification
            .target
            .open(&self.key)
            .map_err(|e| Failure::Permanent(format!("the target cannot be opened: {e}")))?;
        let ended = self
            .ended(due.notification.subject())
            .await
            .map_err(|e| Failure::Transient(format!("could not read what ended: {e}")))?;
        let Some((kind, url)) = target.target() else {
            return Err(Failure::Permanent("the target has no URL".into()));
        };
        let sent = match kind {
            NotifyKind::Webhook => {
                let body = serde_json::to_value(&ended).unwrap_or_default();
                let headers: Vec<(String, String)> = target
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.sender.post_json(url, &headers, &body).await
            }
            NotifyKind::Slack => {
                let text = match &target.text {
                    Some(t) => payload::render_text(t, &ended).map_err(Failure::Permanent)?,
                    None => payload::default_text(&ended),
                };
                self.sender.slack(url, &text).await
            }
        };
        sent.map(|_| ())
            .map_err(|e| Failure::Transient(e.to_string()))
    }

    /// What a notification tells of its run or execution.
    async fn ended(&self, subject: Subject) -> Result<Ended, StoreError> {
        match subject {
            Subject::Run(id) => {
                let run = self.store.get_run(id).await?;
                let project = self.store.get_project(run.project_id).await?.name;
                let template = match run.template_id {
                    Some(t) => Some(self.store.get_template(t).await?.name),
                    None => None,
                };
                Ok(payload::run_ended(&run, &project, template.as_deref()))
            }
            Subject::Execution(id) => {
                let execution = self.store.get_execution(id).await?;
                let steps = self.store.list_steps(id).await?;
                Ok(payload::execution_ended(&execution, &steps))
            }
        }
    }
}
