//! troupe's own telemetry, handed (as one `Arc<Telemetry>`) to the parts that record into it:
//! the worker pool, the launcher, the event ingest and the API.
//!
//! - [`Metrics`]: the Prometheus metric families (`troupe_*`), recorded with atomic
//!   increments, and encoded in Prometheus' text format for `GET /metrics`.
//! - [`Traces`]: a run's life (request, claim, spawn, first event, end) as one trace, exported
//!   over OTLP/HTTP (protobuf) when an endpoint is configured; nothing at all otherwise.
//!
//! Nothing here knows the binary's or the pool's types: callers pass plain values (durations,
//! statuses, a run).

pub mod metrics;
pub mod traces;

pub use metrics::{Metrics, ProcessGuard, Snapshot, StoreOp};
pub use traces::{RunSpan, Stage, TraceError, Traces};

/// Everything troupe records about itself.
pub struct Telemetry {
    /// The metric families.
    pub metrics: Metrics,
    /// The trace exporter, when an OTLP endpoint is configured.
    pub traces: Option<Traces>,
}

impl Telemetry {
    /// Metrics, and no traces.
    pub fn new() -> Self {
        Self {
            metrics: Metrics::new(),
            traces: None,
        }
    }

    /// The same, exporting traces through `traces`.
    pub fn with_traces(mut self, traces: Traces) -> Self {
        self.traces = Some(traces);
        self
    }

    /// Records a span of a run's trace, when traces are exported (a no-op otherwise).
    pub fn span(&self, span: RunSpan) {
        if let Some(traces) = &self.traces {
            traces.record(span);
        }
    }

    /// Whether spans are exported: callers skip gathering what only a span would need.
    pub fn tracing(&self) -> bool {
        self.traces.is_some()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.traces.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
