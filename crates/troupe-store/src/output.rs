//! A run's stdout and stderr, kept as ordered chunks.

use crate::{EventStore, StoreResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Which of a process's output streams a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output: what ansible's stdout callback printed.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A piece of a run's output, in order within its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub stream: Stream,
    /// Position within the run's output (both streams share one sequence), from 1.
    pub seq: i64,
    /// The text.
    pub text: String,
}

/// A run's output. Written through [`EventStore::append_batch`], with the run's events, so a
/// flush is one commit.
#[async_trait]
pub trait OutputStore: EventStore {
    /// Appends output chunks in one transaction (a chunk whose seq is stored is skipped).
    async fn append_output(&self, run_id: i64, chunks: &[OutputChunk]) -> StoreResult<()> {
        self.append_batch(run_id, &[], chunks).await
    }
    /// A run's whole output on one stream.
    async fn read_output(&self, run_id: i64, stream: Stream) -> StoreResult<String>;
}
