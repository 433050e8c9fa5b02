//! How a finished process becomes a run status: the one place that decides it.

use troupe_ansible::Exit;
use troupe_core::RunStatus;
use troupe_core::run::CancelMode;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelCause {
    /// Someone asked (API or CLI).
    Requested(CancelMode),
    /// troupe is shutting down and the run did not finish within the grace period.
    Shutdown,
    /// The worker lost its lease: another process may own the run now.
    LeaseLost,
}

/// The status and reason for a run whose process ended with `exit`, given its timeout and what
/// was asked of it.
pub fn decide_status(
    exit: &Exit,
    timeout_s: Option<u64>,
    cause: Option<CancelCause>,
) -> (RunStatus, Option<String>) {
    if exit.timed_out && cause != Some(CancelCause::LeaseLost) {
        return (
            RunStatus::Timeout,
            Some(format!(
                "run exceeded its timeout of {} s and was stopped",
                timeout_s.unwrap_or_default()
            )),
        );
    }
    match cause {
        Some(CancelCause::Shutdown) => (
            RunStatus::Canceled,
            Some("troupe shut down before the run finished".to_owned()),
        ),
        Some(CancelCause::LeaseLost) => (
            RunStatus::Error,
            Some("the worker lost its lease on the run".to_owned()),
        ),
        Some(CancelCause::Requested(CancelMode::Force)) => (
            RunStatus::Canceled,
            Some("canceled by request (force)".to_owned()),
        ),
        // A graceful cancel only counts when ansible actually stopped early; a run that
        // reached its end first keeps its own outcome.
        Some(CancelCause::Requested(CancelMode::Graceful)) if exit.graceful_cancel_done => (
            RunStatus::Canceled,
            Some("canceled by request (graceful: the task in flight finished)".to_owned()),
        ),
        Some(CancelCause::Requested(CancelMode::Graceful)) | None => from_exit(exit),
    }
}

fn from_exit(exit: &Exit) -> (RunStatus, Option<String>) {
    match (exit.rc, exit.signal) {
        (Some(0), _) => (RunStatus::Successful, None),
        (Some(rc), _) => (RunStatus::Failed, Some(describe_rc(rc).to_owned())),
        (None, Some(sig)) => (
            RunStatus::Error,
            Some(format!("ansible-playbook was killed by signal {sig}")),
        ),
        // A warm run whose parent died says so (its ansible-playbook died with the parent).
        (None, None) => (
            RunStatus::Error,
            Some(
                exit.wait_error
                    .clone()
                    .unwrap_or_else(|| "ansible-playbook ended without an exit status".to_owned()),
            ),
        ),
    }
}

/// ansible-playbook's documented exit codes.
fn describe_rc(rc: i32) -> &'static str {
    match rc {
        1 => "ansible-playbook reported an error (rc 1)",
        2 => "one or more hosts failed (rc 2)",
        3 => "one or more hosts were unreachable (rc 3)",
        4 => "one or more hosts were unreachable, or the playbook could not be parsed (rc 4)",
        5 => "ansible-playbook was given bad or incomplete options (rc 5)",
        99 => "ansible-playbook was interrupted (rc 99)",
        250 => "ansible-playbook hit an unexpected error (rc 250)",
        _ => "ansible-playbook exited with a non-zero code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(rc: Option<i32>) -> Exit {
        Exit {
            rc,
            ..Exit::default()
        }
    }

    #[test]
    fn exit_codes_become_statuses() {
        assert_eq!(
            decide_status(&exit(Some(0)), None, None).0,
            RunStatus::Successful
        );
        assert_eq!(
            decide_status(&exit(Some(2)), None, None).0,
            RunStatus::Failed
        );
        let killed = Exit {
            signal: Some(9),
            ..Exit::default()
        };
        let (s, why) = decide_status(&killed, None, None);
        assert_eq!(s, RunStatus::Error);
        assert!(why.is_some_and(|w| w.contains("signal 9")));
    }

    #[test]
    fn a_graceful_cancel_that_came_too_late_keeps_the_outcome() {
        let graceful = Some(CancelCause::Requested(CancelMode::Graceful));
        assert_eq!(
            decide_status(&exit(Some(0)), None, graceful).0,
            RunStatus::Successful
        );
        let done = Exit {
            rc: Some(0),
            graceful_cancel_done: true,
            ..Exit::default()
        };
        assert_eq!(decide_status(&done, None, graceful).0, RunStatus::Canceled);
    }

    #[test]
    fn timeouts_and_forced_stops() {
        let timed = Exit {
            timed_out: true,
            signal: Some(9),
            ..Exit::default()
        };
        let (s, why) = decide_status(&timed, Some(3), None);
        assert_eq!(s, RunStatus::Timeout);
        assert!(why.is_some_and(|w| w.contains("3 s")));
        let force = Some(CancelCause::Requested(CancelMode::Force));
        assert_eq!(
            decide_status(&exit(Some(99)), None, force).0,
            RunStatus::Canceled
        );
        assert_eq!(
            decide_status(&exit(None), None, Some(CancelCause::Shutdown)).0,
            RunStatus::Canceled
        );
    }
}
