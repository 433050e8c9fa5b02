//! The metric families, named in Prometheus' conventions (`troupe_` prefix, units and `_total`
//! in the names). Counters and gauges are atomics; histograms take a short lock per
//! observation, and are only observed once per run or per store call, never per event.
//! What the store knows better (runs by status) and what the API counts itself (open streams)
//! is read at scrape time and handed to [`Metrics::encode`] as a [`Snapshot`].

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Mutex;
use std::time::Duration;
use troupe_core::RunStatus;

/// The `Content-Type` of [`Metrics::encode`]'s text: Prometheus' text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A store call whose latency is measured: the ones on the hot paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as they appear on the wire
pub enum StoreOp {
    /// Claiming queued runs (`claim_runs`).
    claim,
    /// Writing a batch of a run's events and output (`append_batch`).
    event_batch,
    /// Storing a new run (`create_run`).
    create_run,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabel {
    op: StoreOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What `/metrics` reads at scrape time rather than counting as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Runs in the store, by status (a status left out counts 0).
    pub runs: Vec<(RunStatus, u64)>,
    /// Live streams open on this process (every stream a token's stream limit counts).
    pub stream_subscribers: u64,
}

/// Every metric family troupe records into. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Sets the scrape-time gauges and encodes as one step, so two scrapes never interleave.
    scrape: Mutex<()>,
    runs: Family<StatusLabel, Gauge>,
    runs_queued: Gauge,
    runs_finished: Family<StatusLabel, Counter>,
    queue_wait: Histogram,
    launch: Histogram,
    events_stored: Counter,
    stream_subscribers: Gauge,
    stream_lagged: Counter,
    source_deliveries: Family<SourceLabel, Counter>,
    source_errors: Family<SourceLabel, Counter>,
    store_ops: Family<OpLabel, Histogram>,
    processes: Family<KindLabel, Gauge>,
}

/// Store calls: 0.1 ms to about 6 s.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 13))
}

impl Metrics {
    /// The families, all registered, every value zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("troupe");
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "runs",
            "Runs in the store by status, read at scrape time (the whole store: every replica reports the same)",
            runs.clone(),
        );
        let runs_queued = Gauge::default();
        registry.register(
            "runs_queued",
            "Runs waiting for a worker (the queue's depth)",
            runs_queued.clone(),
        );
        let runs_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs this process's workers finished, by status",
            runs_finished.clone(),
        );
        // 10 ms to about 17 minutes.
        let queue_wait = Histogram::new(exponential_buckets(0.01, 2.5, 12));
        registry.register_with_unit(
            "run_queue_wait",
            "Time from a run's creation to its claim by this process's workers",
            Unit::Seconds,
            queue_wait.clone(),
        );
        // 25 ms to about 14 minutes.
        let launch = Histogram::new(exponential_buckets(0.025, 2.0, 16));
        registry.register_with_unit(
            "run_launch",
            "Time from a run's creation to the exec of its ansible-playbook",
            Unit::Seconds,
            launch.clone(),
        );
        let events_stored = Counter::default();
        registry.register(
            "events_stored",
            "Run events this process's workers stored",
            events_stored.clone(),
        );
        let stream_subscribers = Gauge::default();
        registry.register(
            "stream_subscribers",
            "Live streams (WebSocket and SSE) open on this process",
            stream_subscribers.clone(),
        );
        let stream_lagged = Counter::default();
        registry.register(
            "stream_lagged_disconnects",
            "Live streams closed because the client did not keep up (sent `lagged` with a cursor)",
            stream_lagged.clone(),
        );
        let source_deliveries = Family::<SourceLabel, Counter>::default();
        registry.register(
            "source_deliveries",
            "Events an event source delivered and the store recorded",
            source_deliveries.clone(),
        );
        let source_errors = Family::<SourceLabel, Counter>::default();
        registry.register(
            "source_errors",
            "Events of an event source that could not be stored, or were recorded as rejected",
            source_errors.clone(),
        );
        let store_ops =
            Family::<OpLabel, Histogram>::new_with_constructor(store_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "store_operation",
            "Latency of the store calls on the hot paths",
            Unit::Seconds,
            store_ops.clone(),
        );
        let processes = Family::<KindLabel, Gauge>::default();
        registry.register(
            "processes",
            "Child processes alive, by kind",
            processes.clone(),
        );
        registry.register(
            "build",
            "troupe's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Families show up once they have a member: these are known from the start.
        for status in RunStatus::ALL {
            let label = StatusLabel {
                status: status.as_str(),
            };
            runs.get_or_create_owned(&label);
            if status.is_finished() {
                runs_finished.get_or_create_owned(&label);
            }
        }
        processes.get_or_create_owned(&ANSIBLE);
        for op in [StoreOp::claim, StoreOp::event_batch, StoreOp::create_run] {
            store_ops.get_or_create_owned(&OpLabel { op });
        }
        Self {
            registry,
            scrape: Mutex::new(()),
            runs,
            runs_queued,
            runs_finished,
            queue_wait,
            launch,
            events_stored,
            stream_subscribers,
            stream_lagged,
            source_deliveries,
            source_errors,
            store_ops,
            processes,
        }
    }

    /// A run was claimed `waited` after it was created.
    pub fn run_claimed(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// A run's ansible-playbook was exec'd `since_created` after the run was created.
    pub fn run_launched(&self, since_created: Duration) {
        self.launch.observe(since_created.as_secs_f64());
    }

    /// A run this process executed ended with `status`.
    pub fn run_finished(&self, status: RunStatus) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .inc();
    }

    /// `n` events were stored.
    pub fn events_stored(&self, n: usize) {
        self.events_stored.inc_by(n as u64);
    }

    /// A live stream was cut off because its client did not keep up.
    pub fn stream_lagged(&self) {
        self.stream_lagged.inc();
    }

    /// The event source `source` delivered an event the store recorded.
    pub fn source_delivered(&self, source: &str) {
        self.source_deliveries
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// An event of `source` could not be stored, or was recorded as rejected.
    pub fn source_failed(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// The store call `op` took `took`.
    pub fn store_op(&self, op: StoreOp, took: Duration) {
        self.store_ops
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }

    /// Counts an ansible-playbook process as alive until the guard is dropped.
    pub fn ansible_process(&self) -> ProcessGuard {
        let gauge = self.processes.get_or_create_owned(&ANSIBLE);
        gauge.inc();
        ProcessGuard(gauge)
    }

    /// The metrics in Prometheus' text format ([`CONTENT_TYPE`]), with the scrape-time values
    /// of `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
        let _one_scrape = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for status in RunStatus::ALL {
            let count = snapshot
                .runs
                .iter()
                .filter(|(s, _)| *s == status)
                .map(|(_, n)| *n)
                .sum::<u64>();
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.runs
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(count);
            if status == RunStatus::Queued {
                self.runs_queued.set(count);
            }
        }
        self.stream_subscribers
            .set(i64::try_from(snapshot.stream_subscribers).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const ANSIBLE: KindLabel = KindLabel { kind: "ansible" };

/// One process counted in `troupe_processes` while it lives.
#[derive(Debug)]
pub struct ProcessGuard(Gauge);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    }

    fn value(scrape: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{metric} {label:?} missing"));
        match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric} is {other:?}"),
        }
    }

    #[test]
    fn what_is_recorded_is_what_is_scraped() {
        let m = Metrics::new();
        m.events_stored(3);
        m.events_stored(4);
        m.source_delivered("hooks");
        m.source_delivered("hooks");
        m.source_failed("amqp");
        m.stream_lagged();
        m.run_finished(RunStatus::Failed);
        m.run_launched(Duration::from_millis(300));
        m.store_op(StoreOp::claim, Duration::from_micros(400));
        let alive = m.ansible_process();
        let gone = m.ansible_process();
        drop(gone);
        let text = m
            .encode(&Snapshot {
                runs: vec![(RunStatus::Queued, 2), (RunStatus::Successful, 5)],
                stream_subscribers: 1,
            })
            .expect("encodes");
        let s = parse(&text);
        assert_eq!(value(&s, "troupe_events_stored_total", None), 7.0);
        assert_eq!(
            value(
                &s,
                "troupe_source_deliveries_total",
                Some(("source", "hooks"))
            ),
            2.0
        );
        assert_eq!(
            value(&s, "troupe_source_errors_total", Some(("source", "amqp"))),
            1.0
        );
        assert_eq!(
            value(&s, "troupe_stream_lagged_disconnects_total", None),
            1.0
        );
        assert_eq!(value(&s, "troupe_stream_subscribers", None), 1.0);
        assert_eq!(
            value(&s, "troupe_runs_finished_total", Some(("status", "failed"))),
            1.0
        );
        assert_eq!(value(&s, "troupe_runs", Some(("status", "queued"))), 2.0);
        assert_eq!(
            value(&s, "troupe_runs", Some(("status", "successful"))),
            5.0
        );
        assert_eq!(value(&s, "troupe_runs", Some(("status", "canceled"))), 0.0);
        assert_eq!(value(&s, "troupe_runs_queued", None), 2.0);
        assert_eq!(
            value(&s, "troupe_processes", Some(("kind", "ansible"))),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "troupe_build_info",
                Some(("version", env!("CARGO_PKG_VERSION")))
            ),
            1.0
        );
        let launch = s
            .samples
            .iter()
            .find(|x| x.metric == "troupe_run_launch_seconds")
            .expect("launch histogram");
        let prometheus_parse::Value::Histogram(buckets) = &launch.value else {
            panic!("not a histogram: {:?}", launch.value);
        };
        let le = |bound: f64| {
            buckets
                .iter()
                .find(|b| (b.less_than - bound).abs() < 1e-9)
                .map(|b| b.count)
        };
        assert_eq!(le(0.2), Some(0.0), "300 ms is above 0.2 s");
        assert_eq!(le(0.4), Some(1.0), "and below 0.4 s");
        drop(alive);
        let s = parse(&m.encode(&Snapshot::default()).expect("encodes"));
        assert_eq!(
            value(&s, "troupe_processes", Some(("kind", "ansible"))),
            0.0
        );
        assert_eq!(value(&s, "troupe_runs_queued", None), 0.0);
    }
}
