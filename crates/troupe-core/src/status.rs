//! The run status machine. Every status change in troupe goes through [`RunStatus::can_become`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a run is in its life.
///
/// `queued -> running -> successful | failed | canceled | timeout | error`; a queued run may also
/// be canceled before it starts, or end in `error` when it cannot be started at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker; ansible-playbook is (about to be) running.
    Running,
    /// ansible-playbook exited 0.
    Successful,
    /// ansible-playbook reported failed or unreachable hosts, or exited non-zero.
    Failed,
    /// Stopped on request.
    Canceled,
    /// Stopped because it ran longer than its `timeout_s`.
    Timeout,
    /// troupe could not run it, or lost it (the reason is stored with the run).
    Error,
}

impl RunStatus {
    /// All statuses, in life order.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Successful,
        RunStatus::Failed,
        RunStatus::Canceled,
        RunStatus::Timeout,
        RunStatus::Error,
    ];

    /// True once the run can no longer change.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// Whether a run in `self` may move to `next`. The one place transitions are decided.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Canceled | Error)
                | (Running, Successful | Failed | Canceled | Timeout | Error)
        )
    }

    /// The statuses a run may be in for a move to `next` to be legal (for conditional updates).
    pub fn sources_of(next: RunStatus) -> Vec<RunStatus> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_become(next))
            .collect()
    }

    /// The lowercase name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Successful => "successful",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            RunStatus::Timeout => "timeout",
            RunStatus::Error => "error",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of troupe's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run status {0:?} (expected one of queued, running, successful, failed, canceled, timeout, error)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_statuses_are_final() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_finished()) {
            for to in RunStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn queued_cannot_skip_running_to_an_outcome() {
        assert!(!RunStatus::Queued.can_become(RunStatus::Successful));
        assert!(!RunStatus::Queued.can_become(RunStatus::Timeout));
        assert!(RunStatus::Queued.can_become(RunStatus::Running));
        assert!(RunStatus::Running.can_become(RunStatus::Timeout));
    }

    #[test]
    fn names_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn sources_of_canceled() {
        assert_eq!(
            RunStatus::sources_of(RunStatus::Canceled),
            vec![RunStatus::Queued, RunStatus::Running]
        );
    }
}
