//! Event-driven runs: sources that receive events (webhooks, AMQP, NATS, MQTT, dropped files,
//! timers), rules that match them by routing key and payload, and the ingest path that
//! records every event and the runs (or flow executions) it starts in one transaction before
//! a source acknowledges it.
//!
//! A source hands each event to a [`Sink`] and acknowledges it only once the sink reports it
//! stored; when the store is down the sink keeps the event (retrying with backoff) and the
//! source keeps it unacknowledged, so the broker redelivers it if troupe stops meanwhile.

pub mod config;
pub mod ingest;
pub mod inputs;
pub mod leader;
pub mod loopabull;
pub mod routing;
pub mod rules;
pub mod service;
pub mod sink;
pub mod sources;

pub use config::{RulesFile, SourceConfig};
pub use ingest::Ingestor;
pub use leader::LeaseConfig;
pub use rules::Rules;
pub use service::{ApplyError, EventService};
pub use sink::{Backoff, Delivered, Inbound, NotStored, PayloadFormat, Sink};
