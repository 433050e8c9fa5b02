//! The timer source: a cron expression read in a time zone; every tick is an event with the
//! configured routing key and payload.
//!
//! Each tick's delivery id is its scheduled time, so replicas sharing a store record (and
//! run) a tick once. Ticks missed while troupe was down are not made up.

use crate::config::TimerConfig;
use crate::routing::{KeyPattern, PatternError};
use crate::sink::{Inbound, PayloadFormat};
use crate::sources::{Source, SourceContext};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::CronParser;

/// What is wrong with a timer source's configuration.
#[derive(Debug, thiserror::Error)]
pub enum TimerConfigError {
    /// The cron expression does not parse.
    #[error("cron {cron:?}: {source}")]
    Cron {
        /// The expression.
        cron: String,
        /// Why croner rejects it.
        #[source]
        source: croner::errors::CronError,
    },
    /// The time zone is not in the IANA database.
    #[error("timezone {0:?} is not an IANA time zone")]
    Timezone(String),
    /// The routing key its events get is not a valid key.
    #[error("routing_key: {0}")]
    RoutingKey(#[source] PatternError),
    /// The payload cannot be written as JSON.
    #[error("{0}")]
    Payload(#[source] serde_json::Error),
}

fn parse(cfg: &TimerConfig) -> Result<(Cron, Tz), TimerConfigError> {
    let cron = CronParser::new()
        .parse(&cfg.cron)
        .map_err(|source| TimerConfigError::Cron {
            cron: cfg.cron.clone(),
            source,
        })?;
    let tz: Tz = cfg
        .timezone
        .parse()
        .map_err(|_| TimerConfigError::Timezone(cfg.timezone.clone()))?;
    KeyPattern::parse(&cfg.routing_key).map_err(TimerConfigError::RoutingKey)?;
    Ok((cron, tz))
}

/// Checks the expression, the time zone and the routing key.
pub fn validate(cfg: &TimerConfig) -> Result<(), TimerConfigError> {
    parse(cfg).map(|_| ())
}

/// Fires on a schedule.
pub struct TimerSource {
    cfg: TimerConfig,
    cron: Cron,
    tz: Tz,
    payload: Bytes,
}

impl TimerSource {
    /// A timer for `cfg`.
    pub fn new(cfg: TimerConfig) -> Result<Self, TimerConfigError> {
        let (cron, tz) = parse(&cfg)?;
        let payload =
            Bytes::from(serde_json::to_vec(&cfg.payload).map_err(TimerConfigError::Payload)?);
        Ok(Self {
            cfg,
            cron,
            tz,
            payload,
        })
    }

    /// The first tick after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[async_trait::async_trait]
impl Source for TimerSource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        ctx.status.connected();
        let mut after = Utc::now();
        loop {
            let Some(tick) = self.next_after(after) else {
                ctx.status
                    .disconnected("the cron expression has no next time");
                return;
            };
            let wait = (tick - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let at = tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let event = Inbound {
                source: ctx.name.clone(),
                routing_key: self.cfg.routing_key.clone(),
                payload: self.payload.clone(),
                format: PayloadFormat::Json,
                delivery_id: Some(format!("tick:{at}")),
                redelivered: false,
                headers: [("scheduled_at".to_owned(), at)].into_iter().collect(),
            };
            if ctx
                .sink
                .deliver_until_stored(event, &ctx.stop)
                .await
                .is_none()
            {
                return;
            }
            ctx.status.delivered();
            // Ticks that passed while the event waited for the store are not made up.
            after = tick.max(Utc::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(cron: &str, tz: &str) -> TimerSource {
        TimerSource::new(TimerConfig {
            cron: cron.to_owned(),
            timezone: tz.to_owned(),
            routing_key: "nightly".to_owned(),
            payload: serde_json::json!({"full": true}),
        })
        .expect("valid")
    }

    #[test]
    fn ticks_in_the_time_zone() {
        let t = timer("0 2 * * *", "Europe/Paris");
        let after: DateTime<Utc> = "2026-11-22T00:00:00Z".parse().expect("time");
        // 02:00 in Paris in November (UTC+1) is 01:00 UTC.
        assert_eq!(
            t.next_after(after),
            Some("2026-11-22T01:00:00Z".parse().expect("time"))
        );
        let t = timer("*/10 * * * * *", "UTC");
        let after: DateTime<Utc> = "2026-11-22T00:00:01Z".parse().expect("time");
        assert_eq!(
            t.next_after(after),
            Some("2026-11-22T00:00:10Z".parse().expect("time"))
        );
    }

    #[test]
    fn bad_config_is_named() {
        let mut c = TimerConfig {
            cron: "61 * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            routing_key: "k".to_owned(),
            payload: serde_json::json!({}),
        };
        assert!(validate(&c).is_err_and(|e| e.to_string().contains("cron")));
        c.cron = "* * * * *".to_owned();
        c.timezone = "Mars/Olympus".to_owned();
        assert!(validate(&c).is_err_and(|e| e.to_string().contains("Mars/Olympus")));
    }
}
