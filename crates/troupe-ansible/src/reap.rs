//! Cleaning up after a troupe that crashed: processes and directories of runs it left behind.

use crate::procfs;
use crate::rundir::RUN_DIR_PREFIX;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A run directory found by [`reap_orphans`] and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The run's private directory.
    pub dir: PathBuf,
    /// Processes of the run that were still alive and were killed.
    pub killed: Vec<i32>,
    /// Whether the directory was removed.
    pub removed: bool,
}

/// After a crash: kills what is left of every run whose private directory remains under
/// `runs_dir` (`run-*` directories only), then removes those directories.
///
/// Only processes carrying the run's marker in their environment (`TROUPE_RUN_DIR=<dir>`, which
/// every process of a run inherits) are killed, together with their process groups. A process
/// group reused by an unrelated process (after a reboot, say) is therefore never killed.
pub async fn reap_orphans(runs_dir: &Path) -> Vec<Orphan> {
    let runs_dir = runs_dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || run_dirs(&runs_dir))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(%e, "reaping orphaned runs failed");
            Vec::new()
        });
    // All handed to the sweeper at once, so that they share its passes over /proc.
    let sweeps: Vec<_> = found
        .iter()
        .map(|dir| {
            let dir = dir.clone();
            tokio::spawn(async move { procfs::clear_run(&dir, None, Duration::from_secs(5)).await })
        })
        .collect();
    let mut orphans = Vec::new();
    for (dir, sweep) in found.into_iter().zip(sweeps) {
        let procfs::Cleared { killed, removed } = sweep
            .await
            .unwrap_or_else(|e| procfs::Cleared::failed(std::io::Error::other(e)));
        let removed = match removed {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%e, dir = %dir.display(), "cannot remove an orphaned run directory");
                false
            }
        };
        tracing::info!(dir = %dir.display(), killed = killed.len(), "reaped an orphaned run");
        orphans.push(Orphan {
            dir,
            killed,
            removed,
        });
    }
    orphans
}

/// The run directories under `runs_dir`.
fn run_dirs(runs_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            name.to_str().is_some_and(|n| n.starts_with(RUN_DIR_PREFIX))
                && entry.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|entry| entry.path())
        .collect()
}
