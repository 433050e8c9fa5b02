//! A server's log (its stderr), kept for failure messages.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The lines a process wrote to a pipe, all of them or the last `n`, shared between the thread
/// that reads the pipe and whoever reports a failure.
#[derive(Debug, Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Lines>>,
}

#[derive(Debug, Default)]
struct Lines {
    kept: VecDeque<String>,
    limit: Option<usize>,
}

impl Log {
    /// A log that keeps every line (`None`) or only the last `limit` (a long benchmark needs
    /// only the tail when something goes wrong).
    pub fn new(limit: Option<usize>) -> Log {
        Log {
            lines: Arc::new(Mutex::new(Lines {
                kept: VecDeque::new(),
                limit,
            })),
        }
    }

    /// Reads `pipe` line by line on a thread of its own until it closes.
    pub(crate) fn follow(
        &self,
        pipe: impl Read + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let log = self.clone();
        std::thread::Builder::new()
            .name("troupe-log".into())
            .spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.push(line);
                }
            })
    }

    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            if l.limit.is_some_and(|n| l.kept.len() >= n) {
                l.kept.pop_front();
            }
            l.kept.push_back(line);
        }
    }

    /// What is kept, one line after another.
    pub fn text(&self) -> String {
        self.lines
            .lock()
            .map(|l| {
                let mut text = String::new();
                for line in &l.kept {
                    text.push_str(line);
                    text.push('\n');
                }
                text
            })
            .unwrap_or_default()
    }
}
