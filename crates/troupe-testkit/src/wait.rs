//! Polling for what the server does in its own time.

use anyhow::bail;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// Checks `check` every 100 ms until it holds; fails after `timeout`, naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a file to appear with something in it; its trimmed content.
pub async fn wait_file(path: &Path, timeout: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_owned());
        }
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
