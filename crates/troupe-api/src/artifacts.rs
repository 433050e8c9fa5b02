//! A finished run as ansible-runner's artifact directory, downloaded as one `.tar.gz`.
//!
//! Tools written for ansible-runner read `artifacts/<ident>/`: `job_events/<counter>-<uuid>.json`
//! (one event per file), `stdout`, `stderr`, `rc`, `status` and `command`. [`archive`] builds that
//! layout from what the store holds, under a top directory `troupe-run-<id>/`.
//!
//! The archive is streamed: an async task reads the store (events a page at a time) and hands
//! what it read to a blocking thread that serializes, tars and gzips it into a bounded channel
//! the response body drains. Memory stays at about one page of events plus a few compressed
//! chunks, however long the run was, and no compression happens on the runtime's threads.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use std::io::{self, Write};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use troupe_core::Event;
use troupe_core::inventory::InventoryFormat;
use troupe_core::run::Run;
use troupe_store::{Store, StoreError, Stream};

/// Events read from the store at a time.
const EVENT_PAGE: i64 = 1000;
/// Compressed bytes gathered before they are handed to the response body.
const CHUNK_BYTES: usize = 64 * 1024;
/// Compressed chunks waiting for a slow client before the archive builder waits too.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Pieces read from the store waiting for the archive builder before the reader waits too.
const PIECES_IN_FLIGHT: usize = 2;

/// The gzipped tar of finished run `run`'s artifacts, as a stream of compressed chunks. `cwd`
/// is the project directory the run ran in (`null` when the project is gone). An error in the
/// stream cuts the archive short, which is how a client learns of it once headers are sent.
pub(crate) fn archive(
    store: Arc<dyn Store>,
    run: &Run,
    format: InventoryFormat,
    cwd: Value,
) -> ReceiverStream<io::Result<Bytes>> {
    let id = run.id;
    let (piece_tx, piece_rx) = mpsc::channel(PIECES_IN_FLIGHT);
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(read_store(store, id, piece_tx));
    let top = top_dir(id);
    let fixed = FixedFiles {
        command: command_json(run, format, cwd),
        status: run.status.as_str(),
        rc: run.rc,
        mtime: run.finished_at.unwrap_or(run.created_at),
    };
    tokio::task::spawn_blocking(move || {
        let errors = chunk_tx.clone();
        if let Err(e) = build(ChunkWriter::new(chunk_tx), &top, fixed, piece_rx) {
            if matches!(&e, ArchiveError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe) {
                tracing::debug!(run = id, "artifact download abandoned by the client");
            } else {
                tracing::error!(run = id, error = %e, "building the artifact archive failed");
            }
            // Headers are gone already: cutting the body short is how the client learns.
            let _ = errors.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    ReceiverStream::new(chunk_rx)
}

/// The archive's top directory, named after the run.
pub(crate) fn top_dir(id: i64) -> String {
    format!("troupe-run-{id}")
}

/// runner's `command` file: `{"command": argv, "cwd": dir, "env": {}}`. The argv is the one the
/// worker builds (see `troupe_ansible::process`): the environment is troupe's, not the run's,
/// so none is given.
fn command_json(run: &Run, format: InventoryFormat, cwd: Value) -> Vec<u8> {
    let inventory = match format {
        InventoryFormat::Yaml => "inventory/hosts.yml",
        InventoryFormat::Ini => "inventory/hosts.ini",
    };
    let mut argv: Vec<String> = ["ansible-playbook", "-i", inventory]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !run.options.extra_vars.is_empty() {
        argv.extend(["-e".to_owned(), "@extra_vars.json".to_owned()]);
    }
    argv.extend(run.options.to_args());
    argv.push(run.playbook.clone());
    let doc = json!({"command": argv, "cwd": cwd, "env": {}});
    doc.to_string().into_bytes()
}

/// What the store reader hands the archive builder, in archive order.
#[derive(Debug)]
enum Piece {
    /// A whole file at the top of the archive.
    File(&'static str, String),
    /// The next page of events, in counter order.
    Events(Vec<Event>),
    /// Everything has been sent.
    Done,
    /// The store failed; the cause is already logged.
    Failed(String),
}

/// Reads stdout, stderr and every event page of run `id`, in that order.
async fn read_store(store: Arc<dyn Store>, id: i64, tx: mpsc::Sender<Piece>) {
    let piece = match read_all(store.as_ref(), id, &tx).await {
        Ok(()) => Piece::Done,
        Err(ReadError::Store(e)) => {
            tracing::error!(run = id, error = %e, "reading a run for its artifacts failed");
            Piece::Failed(e.to_string())
        }
        Err(ReadError::BuilderGone) => return,
    };
    let _ = tx.send(piece).await;
}

enum ReadError {
    Store(StoreError),
    BuilderGone,
}

async fn read_all(store: &dyn Store, id: i64, tx: &mpsc::Sender<Piece>) -> Result<(), ReadError> {
    let send = |piece| async move { tx.send(piece).await.map_err(|_| ReadError::BuilderGone) };
    for stream in [Stream::Stdout, Stream::Stderr] {
        let text = store
            .read_output(id, stream)
            .await
            .map_err(ReadError::Store)?;
        send(Piece::File(stream.as_str(), text)).await?;
    }
    let mut after = 0;
    loop {
        let page = store
            .list_events(id, after, EVENT_PAGE)
            .await
            .map_err(ReadError::Store)?;
        let last_page = (page.len() as i64) < EVENT_PAGE;
        if let Some(last) = page.last() {
            after = last.counter;
        }
        if !page.is_empty() {
            send(Piece::Events(page)).await?;
        }
        if last_page {
            return Ok(());
        }
    }
}

/// What can stop an archive half-way.
#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    /// Writing failed, or the client went away (`BrokenPipe`).
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
    /// An event could not be encoded.
    #[error("encoding event {counter}: {source}")]
    Json {
        counter: i64,
        #[source]
        source: serde_json::Error,
    },
    /// The store failed while the archive was being sent.
    #[error("reading the run from the store: {0}")]
    Store(String),
    /// The store reader stopped without saying it was done.
    #[error("the store reader stopped before the end of the run")]
    ReaderStopped,
}

/// The files known before anything is read from the store.
struct FixedFiles {
    command: Vec<u8>,
    status: &'static str,
    rc: Option<i32>,
    mtime: DateTime<Utc>,
}

/// Builds the whole archive into `out` from the fixed files and what the reader sends.
fn build<W: Write>(
    out: W,
    top: &str,
    fixed: FixedFiles,
    mut pieces: mpsc::Receiver<Piece>,
) -> Result<W, ArchiveError> {
    let mut ar = Archive::new(out, top);
    let mtime = fixed.mtime;
    ar.dir("", mtime)?;
    ar.file("command", &fixed.command, mtime)?;
    ar.file("status", fixed.status.as_bytes(), mtime)?;
    if let Some(rc) = fixed.rc {
        ar.file("rc", rc.to_string().as_bytes(), mtime)?;
    }
    ar.dir("job_events", mtime)?;
    loop {
        match pieces.blocking_recv() {
            Some(Piece::File(name, text)) => ar.file(name, text.as_bytes(), mtime)?,
            Some(Piece::Events(events)) => {
                for e in &events {
                    ar.event(e)?;
                }
            }
            Some(Piece::Done) => return ar.finish(),
            Some(Piece::Failed(cause)) => return Err(ArchiveError::Store(cause)),
            None => return Err(ArchiveError::ReaderStopped),
        }
    }
}

/// A gzipped tar whose entries all live under one top directory.
struct Archive<W: Write> {
    tar: tar::Builder<GzEncoder<W>>,
    top: String,
}

impl<W: Write> Archive<W> {
    fn new(out: W, top: &str) -> Self {
        Self {
            tar: tar::Builder::new(GzEncoder::new(out, Compression::default())),
            top: top.to_owned(),
        }
    }

    fn path(&self, rel: &str) -> String {
        if rel.is_empty() {
            format!("{}/", self.top)
        } else {
            format!("{}/{rel}", self.top)
        }
    }

    fn dir(&mut self, rel: &str, mtime: DateTime<Utc>) -> io::Result<()> {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        let path = if rel.is_empty() {
            self.path(rel)
        } else {
            self.path(&format!("{rel}/"))
        };
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn file(&mut self, rel: &str, data: &[u8], mtime: DateTime<Utc>) -> io::Result<()> {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64, mtime);
        let path = self.path(rel);
        self.tar.append_data(&mut h, path, data)
    }

    /// `job_events/<counter>-<uuid>.json`: the stored event, as runner writes it (no newline).
    fn event(&mut self, e: &Event) -> Result<(), ArchiveError> {
        let data = serde_json::to_vec(e).map_err(|source| ArchiveError::Json {
            counter: e.counter,
            source,
        })?;
        let name = format!("job_events/{}-{}.json", e.counter, file_safe(&e.uuid));
        Ok(self.file(&name, &data, e.created)?)
    }

    fn finish(self) -> Result<W, ArchiveError> {
        Ok(self.tar.into_inner()?.finish()?)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: DateTime<Utc>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(u64::try_from(mtime.timestamp()).unwrap_or(0));
    h
}

/// The uuid comes from the callback plugin, so from the run's own process: keep it to the
/// characters a uuid has, so no event can name a file outside `job_events/`.
fn file_safe(uuid: &str) -> String {
    let safe: String = uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if safe.is_empty() {
        "event".to_owned()
    } else {
        safe
    }
}

/// Hands compressed bytes to the response body in chunks, waiting while the client is slow.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // The tail of the gzip stream; a client already gone does not need it.
        let _ = self.send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::collections::BTreeMap;
    use std::io::Read;

    fn event(counter: i64, uuid: &str) -> Event {
        Event {
            counter,
            uuid: uuid.into(),
            event: "runner_on_ok".into(),
            parent_uuid: Some("p".into()),
            created: Utc::now(),
            stdout: "ok: [h1]".into(),
            start_line: counter,
            end_line: counter + 1,
            event_data: json!({"host": "h1", "task": "t"}).into(),
        }
    }

    fn unpack(gz: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(GzDecoder::new(gz));
        let mut files = BTreeMap::new();
        for entry in ar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            files.insert(path, data);
        }
        files
    }

    #[test]
    fn builds_runner_layout() {
        let (tx, rx) = mpsc::channel(8);
        let evs = vec![event(1, "a-1"), event(2, "../../etc/passwd")];
        for p in [
            Piece::File("stdout", "out\n".into()),
            Piece::File("stderr", String::new()),
            Piece::Events(evs.clone()),
            Piece::Done,
        ] {
            tx.try_send(p).expect("room");
        }
        let fixed = FixedFiles {
            command: b"{}".to_vec(),
            status: "failed",
            rc: Some(2),
            mtime: Utc::now(),
        };
        let gz = build(Vec::new(), "troupe-run-7", fixed, rx).expect("archive");
        let files = unpack(&gz);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "troupe-run-7/",
                "troupe-run-7/command",
                "troupe-run-7/job_events/",
                "troupe-run-7/job_events/1-a-1.json",
                "troupe-run-7/job_events/2-______etc_passwd.json",
                "troupe-run-7/rc",
                "troupe-run-7/status",
                "troupe-run-7/stderr",
                "troupe-run-7/stdout",
            ]
        );
        assert_eq!(files["troupe-run-7/rc"], b"2");
        assert_eq!(files["troupe-run-7/status"], b"failed");
        assert_eq!(files["troupe-run-7/stdout"], b"out\n");
        let back: Event =
            serde_json::from_slice(&files["troupe-run-7/job_events/1-a-1.json"]).expect("json");
        assert_eq!(back, evs[0]);
    }

    #[test]
    fn a_store_failure_is_an_error_not_a_short_archive() {
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Piece::Failed("disk on fire".into()))
            .expect("room");
        let fixed = FixedFiles {
            command: Vec::new(),
            status: "successful",
            rc: None,
            mtime: Utc::now(),
        };
        assert!(matches!(
            build(Vec::new(), "t", fixed, rx),
            Err(ArchiveError::Store(_))
        ));
        let (tx, rx) = mpsc::channel::<Piece>(1);
        drop(tx);
        let fixed = FixedFiles {
            command: Vec::new(),
            status: "successful",
            rc: None,
            mtime: Utc::now(),
        };
        assert!(matches!(
            build(Vec::new(), "t", fixed, rx),
            Err(ArchiveError::ReaderStopped)
        ));
    }

    #[test]
    fn command_never_holds_extra_vars() {
        let run: Run = serde_json::from_value(json!({
            "id": 1, "project_id": 1, "playbook": "site.yml",
            "options": {"extra_vars": {"password": "hunter2"}, "limit": "h1", "verbosity": 1},
            "labels": {}, "status": "successful", "created_at": "2026-11-22T00:00:00Z",
            "summary": {}, "event_count": 0
        }))
        .expect("run");
        let doc: Value =
            serde_json::from_slice(&command_json(&run, InventoryFormat::Ini, json!("/srv/p")))
                .expect("json");
        assert_eq!(
            doc["command"],
            json!([
                "ansible-playbook",
                "-i",
                "inventory/hosts.ini",
                "-e",
                "@extra_vars.json",
                "--limit",
                "h1",
                "-v",
                "site.yml"
            ])
        );
        assert_eq!(doc["cwd"], "/srv/p");
        assert_eq!(doc["env"], json!({}));
        assert!(!doc.to_string().contains("hunter2"));

        // Without extra vars the worker passes no `-e` file, and neither does the record.
        let mut plain = run.clone();
        plain.options.extra_vars.clear();
        let doc: Value =
            serde_json::from_slice(&command_json(&plain, InventoryFormat::Ini, json!("/srv/p")))
                .expect("json");
        assert_eq!(doc["command"][3], "--limit", "{doc}");
    }
}
