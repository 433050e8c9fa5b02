//! The directory source: JSON or YAML files dropped into a directory.
//!
//! The routing key is the file name without its extension, up to an optional `@`
//! (`deploy.web@2026-11-22T10:00.json` has routing key `deploy.web`, so several files for one
//! key can wait side by side). Hidden files and other extensions are left alone, so writers
//! can write `.name.tmp` and rename it into place. Once an event is recorded its file moves to
//! `done/` (or `failed/` when the payload was rejected or no run could be built), renamed
//! `<event id>-<name>`. A file recorded before a crash but not yet moved is recognised by its
//! name, modification time and digest and not run twice; the same file dropped again later is
//! a new event.

use crate::config::DirectoryConfig;
use crate::sink::{Inbound, PayloadFormat};
use crate::sources::{Source, SourceContext};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe_core::inbound::EventStatus;

/// What is wrong with a directory source's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryConfigError {
    /// No directory is named.
    #[error("path must not be empty")]
    EmptyPath,
    /// The directory would be polled without pause.
    #[error("poll_ms must be more than 0")]
    ZeroPoll,
}

/// Why a scan of the directory stopped early (the source reports it and tries again).
#[derive(Debug, thiserror::Error)]
enum ScanError {
    /// `done/` or `failed/` cannot be made.
    #[error("cannot create {}/{sub}: {source}", .dir.display())]
    Create {
        dir: PathBuf,
        sub: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The directory cannot be listed.
    #[error("cannot list {}: {source}", .dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks the configuration.
pub fn validate(cfg: &DirectoryConfig) -> Result<(), DirectoryConfigError> {
    if cfg.path.trim().is_empty() {
        return Err(DirectoryConfigError::EmptyPath);
    }
    if cfg.poll_ms == 0 {
        return Err(DirectoryConfigError::ZeroPoll);
    }
    Ok(())
}

/// Watches a directory.
pub struct DirectorySource {
    cfg: DirectoryConfig,
}

impl DirectorySource {
    /// A source over `cfg.path`.
    pub fn new(cfg: DirectoryConfig) -> Self {
        Self { cfg }
    }
}

/// The routing key and format a file name gives, or `None` for files to leave alone.
pub fn parse_name(name: &str) -> Option<(String, PayloadFormat)> {
    if name.starts_with('.') {
        return None;
    }
    let (stem, ext) = name.rsplit_once('.')?;
    let format = match ext {
        "json" => PayloadFormat::Json,
        "yml" | "yaml" => PayloadFormat::Yaml,
        _ => return None,
    };
    let key = stem.split_once('@').map_or(stem, |(k, _)| k);
    (!key.is_empty()).then(|| (key.to_owned(), format))
}

#[async_trait::async_trait]
impl Source for DirectorySource {
    async fn run(self: Box<Self>, ctx: SourceContext) {
        let dir = PathBuf::from(&self.cfg.path);
        let poll = Duration::from_millis(self.cfg.poll_ms);
        let mut backoff = crate::sink::Backoff::default();
        loop {
            match scan(&dir, &ctx).await {
                Ok(()) => {
                    backoff.reset();
                    ctx.status.connected();
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(e) => {
                    ctx.status.disconnected(&e);
                    tracing::warn!(source = %ctx.name, error = %e, "cannot read the directory");
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay().max(poll)) => {}
                    }
                }
            }
            if ctx.stop.is_cancelled() {
                return;
            }
        }
    }
}

/// Delivers every waiting file, oldest first. Stops early (leaving files in place) when the
/// source is told to stop.
async fn scan(dir: &Path, ctx: &SourceContext) -> Result<(), ScanError> {
    for sub in ["done", "failed"] {
        tokio::fs::create_dir_all(dir.join(sub))
            .await
            .map_err(|source| ScanError::Create {
                dir: dir.to_owned(),
                sub,
                source,
            })?;
    }
    let list = |source| ScanError::List {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(list)?;
    while let Some(entry) = entries.next_entry().await.map_err(list)? {
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((key, format)) = parse_name(&name) {
            let modified = meta.modified().ok();
            files.push((modified, name, key, format));
        }
    }
    files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (modified, name, key, format) in files {
        if ctx.stop.is_cancelled() {
            return Ok(());
        }
        let path = dir.join(&name);
        let content = match tokio::fs::read(&path).await {
            Ok(c) => c,
            // Taken away meanwhile (another replica, or the user): nothing to do.
            Err(_) => continue,
        };
        let digest = hex::encode(Sha256::digest(&content));
        let event = Inbound {
            source: ctx.name.clone(),
            routing_key: key,
            payload: Bytes::from(content),
            format,
            delivery_id: Some(format!(
                "{name}:{}:{}",
                modified
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos()),
                &digest[..16]
            )),
            redelivered: false,
            headers: [("file".to_owned(), name.clone())].into_iter().collect(),
        };
        let Some(done) = ctx.sink.deliver_until_stored(event, &ctx.stop).await else {
            return Ok(());
        };
        ctx.status.delivered();
        let sub = match done.record.status {
            EventStatus::Rejected | EventStatus::Failed => "failed",
            _ => "done",
        };
        let to = dir.join(sub).join(format!("{}-{name}", done.record.id));
        if let Err(e) = tokio::fs::rename(&path, &to).await {
            tracing::warn!(file = %path.display(), error = %e, "could not move a processed file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_name("deploy.web.json"),
            Some(("deploy.web".to_owned(), PayloadFormat::Json))
        );
        assert_eq!(
            parse_name("deploy.web@2026-11-22.yml"),
            Some(("deploy.web".to_owned(), PayloadFormat::Yaml))
        );
        assert_eq!(parse_name(".deploy.json.tmp"), None);
        assert_eq!(parse_name(".deploy.json"), None);
        assert_eq!(parse_name("deploy.txt"), None);
        assert_eq!(parse_name("@x.json"), None);
        assert_eq!(parse_name("noext"), None);
    }
}
