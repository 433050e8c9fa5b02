//! A run's life as one OpenTelemetry trace, exported over OTLP/HTTP (protobuf).
//!
//! The parts of a run's life happen in different places (the API that stored it, the worker
//! that claimed and ran it, maybe in another process), so no context is passed between them:
//! a run's trace id and its spans' ids are derived from the run's id and creation time. The
//! root span, `run`, lasts from the run's creation to its end; `request`, `claim`, `spawn`,
//! `first_event` and `end` are its children. Attributes name the run, its playbook, status and
//! rc, never its variables.
//!
//! Spans go through a bounded channel to one exporter task, which posts them in batches.
//! Recording never waits: when the channel is full (the collector is slow or away) the span
//! is dropped and counted in a log line, and runs go on.

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::mpsc;
use troupe_core::run::Run;

/// Spans waiting for the exporter before new ones are dropped.
const QUEUE: usize = 4096;
/// Most spans in one export request.
const MAX_BATCH: usize = 512;
/// How long a span may wait for others to share its request.
const LINGER: Duration = Duration::from_millis(500);
/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The endpoint is not an http(s) URL.
    #[error("otlp_endpoint must be an http:// or https:// URL, such as http://127.0.0.1:4318")]
    Endpoint,
}

/// A part of a run's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The whole run, from its creation to its end: the root span.
    Run,
    /// The API request that created it.
    Request,
    /// Waiting in the queue until a worker claimed it.
    Claim,
    /// From the claim to the exec of ansible-playbook (preparing the run directory, spawning).
    Spawn,
    /// From the exec to the first event the plugin sent.
    FirstEvent,
    /// From the process's exit to the outcome being recorded.
    End,
}

impl Stage {
    /// The span's name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Run => "run",
            Stage::Request => "request",
            Stage::Claim => "claim",
            Stage::Spawn => "spawn",
            Stage::FirstEvent => "first_event",
            Stage::End => "end",
        }
    }
}

/// One span of a run's trace.
#[derive(Debug, Clone)]
pub struct RunSpan {
    run_id: i64,
    created_at: DateTime<Utc>,
    stage: Stage,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

impl RunSpan {
    /// The span `stage` of `run`, from `start` to `end`, with the run's id, project and
    /// playbook as attributes.
    pub fn new(run: &Run, stage: Stage, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            run_id: run.id,
            created_at: run.created_at,
            stage,
            start,
            end,
            attributes: vec![
                int("troupe.run.id", run.id),
                int("troupe.project.id", run.project_id),
                text("troupe.run.playbook", &run.playbook),
            ],
            error: None,
        }
    }

    /// With a text attribute.
    pub fn text(mut self, key: &str, value: &str) -> Self {
        self.attributes.push(text(key, value));
        self
    }

    /// With an integer attribute.
    pub fn int(mut self, key: &str, value: i64) -> Self {
        self.attributes.push(int(key, value));
        self
    }

    /// Marked as failed, with why (the span's status).
    pub fn failed(mut self, message: &str) -> Self {
        self.error = Some(message.to_owned());
        self
    }

    /// The OTLP span.
    fn into_proto(self) -> Span {
        let ids = RunIds::of(self.run_id, self.created_at);
        let parent = match self.stage {
            Stage::Run => Vec::new(),
            _ => ids.span(Stage::Run).to_vec(),
        };
        let kind = match self.stage {
            Stage::Request => span::SpanKind::Server,
            _ => span::SpanKind::Internal,
        };
        let status = match self.error {
            Some(message) => Status {
                message,
                code: status::StatusCode::Error as i32,
            },
            None => Status {
                message: String::new(),
                code: status::StatusCode::Ok as i32,
            },
        };
        Span {
            trace_id: ids.trace.to_vec(),
            span_id: ids.span(self.stage).to_vec(),
            parent_span_id: parent,
            name: self.stage.name().to_owned(),
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(self.start),
            end_time_unix_nano: unix_nanos(self.end.max(self.start)),
            attributes: self.attributes,
            status: Some(status),
            ..Span::default()
        }
    }
}

/// The ids of a run's trace: the same wherever they are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIds {
    /// The trace id.
    pub trace: [u8; 16],
    seed: [u8; 32],
}

impl RunIds {
    /// The ids of the run `run_id` created at `created_at` (to the second, which every store
    /// keeps exactly: run ids alone repeat across installations).
    pub fn of(run_id: i64, created_at: DateTime<Utc>) -> Self {
        let seed: [u8; 32] = Sha256::new()
            .chain_update(b"troupe run\0")
            .chain_update(run_id.to_be_bytes())
            .chain_update(created_at.timestamp().to_be_bytes())
            .finalize()
            .into();
        let mut trace = [0; 16];
        trace.copy_from_slice(&seed[..16]);
        Self { trace, seed }
    }

    /// The span id of `stage`.
    pub fn span(&self, stage: Stage) -> [u8; 8] {
        let digest = Sha256::new()
            .chain_update(self.seed)
            .chain_update(stage.name())
            .finalize();
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        id
    }
}

fn unix_nanos(at: DateTime<Utc>) -> u64 {
    at.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// Exports spans to an OTLP/HTTP collector.
pub struct Traces {
    tx: mpsc::Sender<Span>,
}

impl Traces {
    /// Starts the exporter task (on the current tokio runtime), posting to `endpoint`'s
    /// `/v1/traces` (the base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it; a URL already
    /// ending in `/v1/traces` is taken as it is). `instance` names this process among replicas.
    pub fn start(
        endpoint: &str,
        client: reqwest::Client,
        instance: &str,
    ) -> Result<Self, TraceError> {
        let url = traces_url(endpoint)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let resource = Resource {
            attributes: vec![
                text("service.name", "troupe"),
                text("service.version", env!("CARGO_PKG_VERSION")),
                text("service.instance.id", instance),
            ],
            ..Resource::default()
        };
        tokio::spawn(export(rx, client, url, resource));
        Ok(Self { tx })
    }

    /// Queues a span for export; dropped when the queue is full.
    pub fn record(&self, span: RunSpan) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(span.into_proto()) {
            tracing::warn!("the OTLP exporter is behind; a span was dropped");
        }
    }
}

fn traces_url(endpoint: &str) -> Result<reqwest::Url, TraceError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let full = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let url = reqwest::Url::parse(&full).map_err(|_| TraceError::Endpoint)?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(TraceError::Endpoint),
    }
}

async fn export(
    mut rx: mpsc::Receiver<Span>,
    client: reqwest::Client,
    url: reqwest::Url,
    resource: Resource,
) {
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut spans = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while spans.len() < MAX_BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => spans.push(span),
                    None => {
                        open = false;
                        break;
                    }
                },
                () = &mut linger => break,
            }
        }
        let body = request(&resource, spans).encode_to_vec();
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .timeout(EXPORT_TIMEOUT)
            .body(body)
            .send()
            .await;
        // The URL is not logged: it may hold credentials.
        match sent {
            Ok(answer) if answer.status().is_success() => {}
            Ok(answer) => {
                tracing::warn!(status = %answer.status(), "the OTLP collector refused spans");
            }
            Err(e) => tracing::warn!(error = %troupe_http::describe(&e),
                "could not export spans to the OTLP collector"),
        }
    }
}

fn request(resource: &Resource, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "troupe".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_spans_share_its_trace_and_hang_from_its_root() {
        let created = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("time");
        let ids = RunIds::of(7, created);
        // The same run read back with its time cut to microseconds has the same ids.
        let cut = DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("time");
        assert_eq!(ids, RunIds::of(7, cut));
        assert_ne!(ids.trace, RunIds::of(8, created).trace);
        let stages = [
            Stage::Run,
            Stage::Request,
            Stage::Claim,
            Stage::Spawn,
            Stage::FirstEvent,
            Stage::End,
        ];
        let mut seen: Vec<[u8; 8]> = stages.iter().map(|s| ids.span(*s)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), stages.len(), "every stage has its own span id");
    }

    #[test]
    fn endpoints_are_bases_or_full_urls() {
        let url = |e: &str| traces_url(e).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:4318").ok().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            url("https://otel.example/base/").ok().as_deref(),
            Some("https://otel.example/base/v1/traces")
        );
        assert_eq!(
            url("http://c:4318/v1/traces").ok().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert!(url("127.0.0.1:4318").is_err());
        assert!(url("ftp://c/").is_err());
    }
}
