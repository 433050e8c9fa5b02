//! The broker sources against real brokers on this machine: RabbitMQ (127.0.0.1:5672,
//! guest/guest), NATS with JetStream (127.0.0.1:4222), Mosquitto (127.0.0.1:1883) and Redis
//! (127.0.0.1:6379). Every test uses its own queue / exchange / subject / stream / client id /
//! channel, so tests run in parallel and repeatedly.

#![cfg(all(
    feature = "amqp",
    feature = "nats",
    feature = "mqtt",
    feature = "redis"
))]
#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use troupe_core::inbound::{EventRecord, EventStatus};
use troupe_events::config::{AmqpConfig, MqttConfig, NatsConfig, RedisConfig};
use troupe_events::sources::amqp::{self, AmqpSource};
use troupe_events::sources::mqtt::{self, MqttSource};
use troupe_events::sources::nats::{self, NatsSource};
use troupe_events::sources::redis::{self as redis_source, RedisSource};
use troupe_events::sources::{Source, SourceContext, SourceStatus};
use troupe_events::{Delivered, Inbound, NotStored, Sink};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const MQTT_URL: &str = "mqtt://127.0.0.1:1883";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A sink that records what it stores, and can be told to fail.
#[derive(Default)]
struct RecordingSink {
    stored: Mutex<Vec<Inbound>>,
    /// Every delivery attempt, stored or not.
    attempts: Mutex<Vec<Inbound>>,
    fail_next: AtomicUsize,
    fail_always: AtomicBool,
}

impl RecordingSink {
    fn failing_next(n: usize) -> Arc<RecordingSink> {
        let sink = RecordingSink::default();
        sink.fail_next.store(n, Ordering::SeqCst);
        Arc::new(sink)
    }

    fn failing_always() -> Arc<RecordingSink> {
        let sink = RecordingSink::default();
        sink.fail_always.store(true, Ordering::SeqCst);
        Arc::new(sink)
    }

    fn stored(&self) -> Vec<Inbound> {
        self.stored.lock().unwrap().clone()
    }

    fn attempts(&self) -> Vec<Inbound> {
        self.attempts.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for RecordingSink {
    async fn deliver(&self, event: Inbound) -> Result<Delivered, NotStored> {
        self.attempts.lock().unwrap().push(event.clone());
        if self.fail_always.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(NotStored("test: the store is down".to_owned()));
        }
        let mut stored = self.stored.lock().unwrap();
        stored.push(event.clone());
        Ok(Delivered {
            record: EventRecord {
                id: stored.len() as i64,
                received_at: chrono::Utc::now(),
                source: event.source.clone(),
                routing_key: event.routing_key.clone(),
                delivery_id: event.delivery_id.clone(),
                payload_size: event.payload.len() as i64,
                payload: Some(String::from_utf8_lossy(&event.payload).into_owned()),
                payload_truncated: false,
                status: EventStatus::Accepted,
                reason: None,
                rules: Vec::new(),
                run_ids: Vec::new(),
            },
            duplicate: false,
        })
    }
}

/// A running source.
struct Running {
    stop: CancellationToken,
    status: Arc<SourceStatus>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(source: Box<dyn Source>, name: &str, sink: Arc<RecordingSink>) -> Running {
        let stop = CancellationToken::new();
        let status = Arc::new(SourceStatus::new("starting"));
        let ctx = SourceContext {
            name: name.to_owned(),
            sink,
            stop: stop.clone(),
            status: status.clone(),
        };
        let task = tokio::spawn(source.run(ctx));
        Running { stop, status, task }
    }

    async fn connected(&self) {
        let status = self.status.clone();
        wait_until("the source to connect", move || {
            status.snapshot().state == "connected"
        })
        .await;
    }

    /// Cancels and waits for `run` to return (which it must, promptly).
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after stop")
            .expect("run does not panic");
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn uniq() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}x{}x{}",
        nanos % 1_000_000_000_000,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn keys(events: &[Inbound]) -> Vec<String> {
    events.iter().map(|e| e.routing_key.clone()).collect()
}

fn payload(event: &Inbound) -> serde_json::Value {
    serde_json::from_slice(&event.payload).unwrap()
}

// ---------------------------------------------------------------------------------------
// AMQP
// ---------------------------------------------------------------------------------------

mod rabbit {
    use super::*;
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

    pub async fn channel() -> (Connection, Channel) {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ at 127.0.0.1:5672");
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        (conn, channel)
    }

    pub async fn publish(
        channel: &Channel,
        exchange: &str,
        key: &str,
        body: serde_json::Value,
        message_id: Option<&str>,
        header: Option<(&str, &str)>,
    ) {
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        if let Some((name, value)) = header {
            let mut table = FieldTable::default();
            table.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value)),
            );
            table.insert("x-number".into(), AMQPValue::LongInt(7));
            props = props.with_headers(table);
        }
        channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// (ready messages, consumers) of a queue, by a passive declare.
    pub async fn queue_counts(channel: &Channel, queue: &str) -> (u32, u32) {
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        (q.message_count(), q.consumer_count())
    }

    pub async fn cleanup(channel: &Channel, queue: &str, exchange: Option<&str>) {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        if let Some(exchange) = exchange {
            let _ = channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

fn amqp_config(queue: &str, exchange: Option<&str>, bindings: &[&str]) -> AmqpConfig {
    let mut cfg = json!({"url": AMQP_URL, "queue": queue, "prefetch": 4});
    if let Some(exchange) = exchange {
        cfg["exchange"] = json!(exchange);
        cfg["bindings"] = json!(bindings);
    }
    let cfg: AmqpConfig = serde_json::from_value(cfg).unwrap();
    amqp::validate(&cfg).expect("valid");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_topic_exchange_delivers_only_matching_keys() {
    let u = uniq();
    let (queue, exchange) = (format!("troupe-test-q-{u}"), format!("troupe-test-ex-{u}"));
    let cfg = amqp_config(&queue, Some(&exchange), &["org.*.deploy", "audit.#"]);
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(AmqpSource::new(cfg)), "bus", sink.clone());
    src.connected().await;

    let (_conn, ch) = rabbit::channel().await;
    let pubs = [
        ("org.web.deploy", Some("m-1"), Some(("X-Trace", "abc"))),
        ("org.web.build", None, None),
        ("org.web.deploy.extra", None, None),
        ("audit.x.y", None, None),
        ("other", Some("m-2"), None),
        ("audit.end", Some("m-3"), None),
    ];
    for (i, (key, id, header)) in pubs.iter().enumerate() {
        rabbit::publish(
            &ch,
            &exchange,
            key,
            json!({"n": i, "key": key}),
            *id,
            *header,
        )
        .await;
    }
    wait_until("3 events", || sink.stored().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = sink.stored();
    assert_eq!(keys(&events), ["org.web.deploy", "audit.x.y", "audit.end"]);
    assert_eq!(
        payload(&events[0]),
        json!({"n": 0, "key": "org.web.deploy"})
    );
    assert_eq!(payload(&events[1]), json!({"n": 3, "key": "audit.x.y"}));
    assert_eq!(events[0].delivery_id.as_deref(), Some("m-1"));
    assert_eq!(events[1].delivery_id, None);
    assert_eq!(events[2].delivery_id.as_deref(), Some("m-3"));
    assert!(events.iter().all(|e| e.source == "bus" && !e.redelivered));
    assert_eq!(
        events[0].headers.get("x-trace").map(String::as_str),
        Some("abc")
    );
    assert_eq!(
        events[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(
        !events[0].headers.contains_key("x-number"),
        "only string headers"
    );
    assert_eq!(src.status.snapshot().delivered, 3);

    src.stop().await;
    assert_eq!(rabbit::queue_counts(&ch, &queue).await, (0, 0));
    rabbit::cleanup(&ch, &queue, Some(&exchange)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_acks_only_after_store_and_redelivers_after_stop() {
    let u = uniq();
    let queue = format!("troupe-test-ack-{u}");
    let cfg = amqp_config(&queue, None, &[]);
    let (_conn, ch) = rabbit::channel().await;

    // 1. The store fails three times, then works: delivered once, then acknowledged.
    let sink = RecordingSink::failing_next(3);
    let src = Running::start(Box::new(AmqpSource::new(cfg.clone())), "q", sink.clone());
    src.connected().await;
    rabbit::publish(&ch, "", &queue, json!({"a": 1}), Some("first"), None).await;
    wait_until("the first event stored", || sink.stored().len() == 1).await;
    assert_eq!(sink.attempts().len(), 4, "3 failures, then stored");
    assert_eq!(sink.stored()[0].delivery_id.as_deref(), Some("first"));
    assert_eq!(sink.stored()[0].routing_key, queue);
    src.stop().await;
    // Acknowledged: nothing came back to the queue when the consumer went away.
    assert_eq!(rabbit::queue_counts(&ch, &queue).await, (0, 0));

    // 2. Stopped while the store is down: not acknowledged, so requeued...
    let failing = RecordingSink::failing_always();
    let src = Running::start(Box::new(AmqpSource::new(cfg.clone())), "q", failing.clone());
    src.connected().await;
    rabbit::publish(&ch, "", &queue, json!({"b": 2}), Some("second"), None).await;
    wait_until("retries", || failing.attempts().len() >= 2).await;
    assert!(!failing.attempts()[0].redelivered);
    src.stop().await;
    assert!(failing.stored().is_empty());
    let counts = rabbit::queue_counts(&ch, &queue).await;
    assert_eq!(counts, (1, 0), "requeued when the source stopped");

    // ...and redelivered to the next instance.
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(AmqpSource::new(cfg)), "q", sink.clone());
    wait_until("the redelivery", || sink.stored().len() == 1).await;
    let event = &sink.stored()[0];
    assert_eq!(event.delivery_id.as_deref(), Some("second"));
    assert!(event.redelivered);
    assert_eq!(payload(event), json!({"b": 2}));
    src.stop().await;
    assert_eq!(rabbit::queue_counts(&ch, &queue).await, (0, 0));
    rabbit::cleanup(&ch, &queue, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_recovers_when_its_queue_is_deleted() {
    let u = uniq();
    let queue = format!("troupe-test-gone-{u}");
    let cfg = amqp_config(&queue, None, &[]);
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(AmqpSource::new(cfg)), "q", sink.clone());
    src.connected().await;
    let (_conn, ch) = rabbit::channel().await;
    rabbit::cleanup(&ch, &queue, None).await;
    // The broker cancels the consumer; the source reconnects and declares the queue again.
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    src.connected().await;
    assert_eq!(
        rabbit::queue_counts(&ch, &queue).await.1,
        1,
        "consuming again"
    );
    rabbit::publish(&ch, "", &queue, json!({"after": true}), None, None).await;
    wait_until("the event", || sink.stored().len() == 1).await;
    assert_eq!(payload(&sink.stored()[0]), json!({"after": true}));
    src.stop().await;
    rabbit::cleanup(&ch, &queue, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_unreachable_broker_reports_disconnected_without_password() {
    let cfg: AmqpConfig = serde_json::from_value(json!({
        "url": "amqp://guest:sup3rs3cret@127.0.0.1:1/%2f", "queue": "never"
    }))
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(AmqpSource::new(cfg)), "down", sink);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let error = src.status.snapshot().last_error.unwrap();
    assert!(!error.contains("sup3rs3cret"), "{error}");
    assert!(error.contains("127.0.0.1:1"), "{error}");
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_queue_options_and_unreadable_tls_files_are_honoured() {
    let u = uniq();
    let queue = format!("troupe-test-private-{u}");
    // Loopabull's fedmsgrabbitmq queue: not durable, exclusive, auto-deleted.
    let mut cfg = amqp_config(&queue, None, &[]);
    cfg.durable = false;
    cfg.exclusive = true;
    cfg.auto_delete = true;
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(AmqpSource::new(cfg.clone())), "p", sink.clone());
    src.connected().await;
    let (_conn, ch) = rabbit::channel().await;
    rabbit::publish(&ch, "", &queue, json!({"p": 1}), None, None).await;
    wait_until("the event", || sink.stored().len() == 1).await;
    src.stop().await;
    // Exclusive and auto-deleted: gone with troupe's connection.
    let (_conn2, ch2) = rabbit::channel().await;
    let gone = ch2
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "the queue outlived troupe's connection");

    // A TLS file that cannot be read: said in the status, naming the field, nothing panics.
    cfg.tls = Some(troupe_events::config::AmqpTls {
        ca_file: Some(format!("/nonexistent/{u}/ca.pem")),
        cert_file: None,
        key_file: None,
    });
    let src = Running::start(Box::new(AmqpSource::new(cfg)), "t", sink);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let error = src.status.snapshot().last_error.unwrap();
    assert!(
        error.contains("tls.ca_file") && error.contains("ca.pem"),
        "{error}"
    );
    src.stop().await;
}

// ---------------------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------------------

async fn nats_client() -> async_nats::Client {
    async_nats::connect(NATS_URL)
        .await
        .expect("NATS at 127.0.0.1:4222")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_wildcard_subject_is_the_routing_key() {
    let u = uniq();
    let cfg: NatsConfig = serde_json::from_value(json!({
        "url": NATS_URL, "subjects": [format!("troupe.{u}.*.deploy"), format!("audit.{u}.>")]
    }))
    .unwrap();
    nats::validate(&cfg).expect("valid");
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(NatsSource::new(cfg)), "nats", sink.clone());
    src.connected().await;

    let client = nats_client().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "id-1");
    headers.insert("X-Trace", "t-9");
    client
        .publish_with_headers(
            format!("troupe.{u}.web.deploy"),
            headers,
            json!({"n": 1}).to_string().into(),
        )
        .await
        .unwrap();
    for subject in [
        format!("troupe.{u}.web.build"),
        format!("troupe.{u}.web.deploy.x"),
        format!("troupe.{u}.api.deploy"),
        format!("audit.{u}.a.b"),
    ] {
        client
            .publish(subject.clone(), json!({"s": subject}).to_string().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    wait_until("3 events", || sink.stored().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events = sink.stored();
    let first = events.remove(0);
    assert_eq!(first.routing_key, format!("troupe.{u}.web.deploy"));
    assert_eq!(first.delivery_id.as_deref(), Some("id-1"));
    assert_eq!(
        first.headers.get("x-trace").map(String::as_str),
        Some("t-9")
    );
    assert_eq!(payload(&first), json!({"n": 1}));
    // Different subscriptions: no order between them.
    let mut rest = keys(&events);
    rest.sort();
    assert_eq!(
        rest,
        [format!("audit.{u}.a.b"), format!("troupe.{u}.api.deploy")]
    );
    assert!(events.iter().all(|e| e.delivery_id.is_none()));
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_is_durable_and_redelivers_with_the_same_id() {
    use async_nats::jetstream;
    let u = uniq();
    let stream = format!("TROUPE_TEST_{u}");
    let durable = format!("troupe-{u}");
    let subjects = vec![format!("troupejs.{u}.>")];
    let cfg: NatsConfig = serde_json::from_value(json!({
        "url": NATS_URL, "subjects": subjects,
        "jetstream": {"stream": stream, "durable": durable}
    }))
    .unwrap();
    nats::validate(&cfg).expect("valid");

    // The stream exists (made as troupe would) and holds messages before the source starts.
    let client = nats_client().await;
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: subjects.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(
        format!("troupejs.{u}.a.b"),
        json!({"n": 1}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "msg-two");
    js.publish_with_headers(
        format!("troupejs.{u}.c"),
        headers,
        json!({"n": 2}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // The store is down: the first message is retried, then the source stops.
    let failing = RecordingSink::failing_always();
    let src = Running::start(
        Box::new(NatsSource::new(cfg.clone())),
        "js",
        failing.clone(),
    );
    wait_until("retries", || failing.attempts().len() >= 2).await;
    let attempt = failing.attempts()[0].clone();
    assert_eq!(attempt.routing_key, format!("troupejs.{u}.a.b"));
    assert_eq!(
        attempt.delivery_id.as_deref(),
        Some(format!("{stream}:1").as_str())
    );
    assert!(!attempt.redelivered);
    src.stop().await;

    // Restarted with a working store: both, in order, the first with the same id.
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(NatsSource::new(cfg)), "js", sink.clone());
    wait_until("2 events", || sink.stored().len() >= 2).await;
    let events = sink.stored();
    assert_eq!(
        keys(&events),
        [format!("troupejs.{u}.a.b"), format!("troupejs.{u}.c")]
    );
    assert_eq!(events[0].delivery_id, attempt.delivery_id);
    assert!(events[0].redelivered);
    assert_eq!(payload(&events[0]), json!({"n": 1}));
    assert_eq!(events[1].delivery_id.as_deref(), Some("msg-two"));
    assert!(!events[1].redelivered);

    // A message published while it runs arrives too; then nothing is left pending.
    js.publish(
        format!("troupejs.{u}.d"),
        json!({"n": 3}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until("3 events", || sink.stored().len() >= 3).await;
    assert_eq!(sink.stored()[2].delivery_id, Some(format!("{stream}:3")));
    let consumer_stream = js.get_stream(&stream).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let info = consumer_stream.consumer_info(&durable).await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "acks pending: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    src.stop().await;
    assert_eq!(sink.stored().len(), 3, "nothing delivered twice");
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_recreates_a_deleted_consumer() {
    use async_nats::jetstream;
    let u = uniq();
    let stream = format!("TROUPE_TEST_{u}");
    let durable = format!("troupe-{u}");
    let cfg: NatsConfig = serde_json::from_value(json!({
        "url": NATS_URL, "subjects": [format!("troupejs.{u}.a"), format!("troupejs.{u}.b")],
        "jetstream": {"stream": stream, "durable": durable}
    }))
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(NatsSource::new(cfg)), "js", sink.clone());
    src.connected().await;
    let js = jetstream::new(nats_client().await);
    js.publish(format!("troupejs.{u}.a"), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until("the first event", || sink.stored().len() == 1).await;

    let s = js.get_stream(&stream).await.unwrap();
    s.delete_consumer(&durable).await.unwrap();
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    src.connected().await;
    js.publish(format!("troupejs.{u}.b"), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // The new consumer starts from the stream's beginning: the first message comes again,
    // with the same id (the store would recognise it), then the new one.
    wait_until("2 more events", || sink.stored().len() == 3).await;
    let ids: Vec<_> = sink
        .stored()
        .iter()
        .map(|e| e.delivery_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            format!("{stream}:1"),
            format!("{stream}:1"),
            format!("{stream}:2")
        ]
    );
    src.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------

/// Publishes at QoS 1 and waits for the broker's acks.
async fn mqtt_publish(messages: &[(String, serde_json::Value)]) {
    mqtt_publish_to(1883, messages).await;
}

async fn mqtt_publish_to(port: u16, messages: &[(String, serde_json::Value)]) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(format!("troupe-test-pub-{}", uniq()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let run = async {
        let mut acked = 0;
        loop {
            match eventloop.poll().await.expect("Mosquitto at 127.0.0.1:1883") {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for (topic, body) in messages {
                        client
                            .publish(topic.clone(), QoS::AtLeastOnce, false, body.to_string())
                            .await
                            .unwrap();
                    }
                }
                Event::Incoming(Packet::PubAck(_)) => {
                    acked += 1;
                    if acked == messages.len() {
                        return;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, run).await.expect("published");
    let _ = client.disconnect().await;
}

/// Drops the broker's session of `client_id`.
async fn mqtt_forget(client_id: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let run = async {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                let _ = client.disconnect().await;
            }
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
}

/// A topic, a JSON body and MQTT 5 user properties.
type Message5 = (String, serde_json::Value, Vec<(String, String)>);

/// Publishes at QoS 1 with MQTT 5, each message with its user properties (and content type
/// `application/json`), and waits for the broker's acks.
async fn mqtt5_publish(messages: &[Message5]) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(format!("troupe-test-pub5-{}", uniq()), "127.0.0.1", 1883);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let run = async {
        let mut acked = 0;
        loop {
            match eventloop.poll().await.expect("Mosquitto at 127.0.0.1:1883") {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for (topic, body, user_properties) in messages {
                        let properties = PublishProperties {
                            content_type: Some("application/json".to_owned()),
                            user_properties: user_properties.clone(),
                            ..PublishProperties::default()
                        };
                        client
                            .publish_with_properties(
                                topic.clone(),
                                QoS::AtLeastOnce,
                                false,
                                body.to_string(),
                                properties,
                            )
                            .await
                            .unwrap();
                    }
                }
                Event::Incoming(Packet::PubAck(_)) => {
                    acked += 1;
                    if acked == messages.len() {
                        return;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, run).await.expect("published");
    let _ = client.disconnect().await;
}

/// An MQTT source's configuration, speaking `protocol` (`null`: the default).
fn mqtt_config(topic: String, client_id: &str, protocol: serde_json::Value) -> MqttConfig {
    let mut cfg = json!({
        "url": MQTT_URL, "topics": [topic], "qos": 1, "client_id": client_id
    });
    if !protocol.is_null() {
        cfg["protocol"] = protocol;
    }
    let cfg: MqttConfig = serde_json::from_value(cfg).unwrap();
    mqtt::validate(&cfg).expect("valid");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_qos1_topic_routing_and_queued_while_stopped() {
    qos1_topic_routing_and_queued_while_stopped(json!(null)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_qos1_topic_routing_and_queued_while_stopped() {
    qos1_topic_routing_and_queued_while_stopped(json!(5)).await;
}

async fn qos1_topic_routing_and_queued_while_stopped(protocol: serde_json::Value) {
    let u = uniq();
    let client_id = format!("troupe-test-{u}");
    let cfg = mqtt_config(format!("troupe/{u}/#"), &client_id, protocol);

    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(MqttSource::new(cfg.clone())), "mq", sink.clone());
    src.connected().await;
    mqtt_publish(&[
        (format!("troupe/{u}/a/b"), json!({"n": 1})),
        (format!("other/{u}/a/b"), json!({"n": 0})),
    ])
    .await;
    wait_until("the event", || !sink.stored().is_empty()).await;
    let first = sink.stored()[0].clone();
    assert_eq!(first.routing_key, format!("troupe.{u}.a.b"));
    assert_eq!(payload(&first), json!({"n": 1}));
    assert_eq!(first.delivery_id, None);
    assert!(!first.redelivered);
    assert!(first.headers.is_empty(), "{:?}", first.headers);
    src.stop().await;

    // Published while troupe is away: the broker keeps them for the session.
    mqtt_publish(&[
        (format!("troupe/{u}/c"), json!({"n": 2})),
        (format!("troupe/{u}/d"), json!({"n": 3})),
    ])
    .await;
    let src = Running::start(Box::new(MqttSource::new(cfg.clone())), "mq", sink.clone());
    wait_until("the queued events", || sink.stored().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = sink.stored();
    assert_eq!(
        keys(&events),
        [
            format!("troupe.{u}.a.b"),
            format!("troupe.{u}.c"),
            format!("troupe.{u}.d")
        ],
        "the first message was acknowledged, so it did not come back"
    );
    assert_eq!(payload(&events[2]), json!({"n": 3}));
    src.stop().await;
    mqtt_forget(&client_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_user_properties_become_headers() {
    let u = uniq();
    let client_id = format!("troupe-test-{u}");
    let cfg = mqtt_config(format!("troupe/{u}/+"), &client_id, json!("5"));
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(MqttSource::new(cfg)), "mq", sink.clone());
    src.connected().await;
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("P{i:02}"), i.to_string()))
        .collect();
    mqtt5_publish(&[
        (
            format!("troupe/{u}/x"),
            json!({"n": 1}),
            vec![("X-Trace".to_owned(), "t-1".to_owned())],
        ),
        (format!("troupe/{u}/y"), json!({"n": 2}), many),
    ])
    .await;
    wait_until("the events", || sink.stored().len() >= 2).await;
    let events = sink.stored();
    assert_eq!(
        keys(&events),
        [format!("troupe.{u}.x"), format!("troupe.{u}.y")]
    );
    assert_eq!(payload(&events[0]), json!({"n": 1}));
    assert_eq!(
        events[0].headers,
        [("content-type", "application/json"), ("x-trace", "t-1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into()
    );
    assert_eq!(events[1].headers.len(), 32, "capped");
    assert_eq!(events[1].headers["p00"], "0");
    src.stop().await;
    mqtt_forget(&client_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_unacknowledged_message_comes_back_after_restart() {
    unacknowledged_message_comes_back_after_restart(json!(null)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_unacknowledged_message_comes_back_after_restart() {
    unacknowledged_message_comes_back_after_restart(json!(5)).await;
}

async fn unacknowledged_message_comes_back_after_restart(protocol: serde_json::Value) {
    let u = uniq();
    let client_id = format!("troupe-test-{u}");
    let cfg = mqtt_config(format!("troupe/{u}/+"), &client_id, protocol);
    let failing = RecordingSink::failing_always();
    let src = Running::start(
        Box::new(MqttSource::new(cfg.clone())),
        "mq",
        failing.clone(),
    );
    src.connected().await;
    mqtt_publish(&[(format!("troupe/{u}/x"), json!({"n": 1}))]).await;
    wait_until("retries", || failing.attempts().len() >= 2).await;
    src.stop().await;

    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(MqttSource::new(cfg)), "mq", sink.clone());
    wait_until("the redelivery", || !sink.stored().is_empty()).await;
    let event = sink.stored()[0].clone();
    assert_eq!(event.routing_key, format!("troupe.{u}.x"));
    assert_eq!(payload(&event), json!({"n": 1}));
    assert!(event.redelivered, "sent again with dup");
    src.stop().await;
    mqtt_forget(&client_id).await;
}

// ---------------------------------------------------------------------------------------
// Reconnects: private brokers (nats-server, mosquitto) that the test stops and starts again
// ---------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker process, killed when dropped.
struct Broker(std::process::Child);

impl Broker {
    fn spawn(program: &str, args: &[&str], port: u16) -> Broker {
        let child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (on this machine's PATH): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{program} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_survives_a_server_restart() {
    let u = uniq();
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        store.path().to_str().unwrap(),
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Broker::spawn("nats-server", &args, port);
    let url = format!("nats://127.0.0.1:{port}");
    let cfg: NatsConfig = serde_json::from_value(json!({
        "url": url, "subjects": [format!("r.{u}.>")],
        "jetstream": {"stream": "RESTART", "durable": "troupe"}
    }))
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(NatsSource::new(cfg)), "js", sink.clone());
    src.connected().await;

    let publish = |n: u64| {
        let (url, subject) = (url.clone(), format!("r.{u}.{n}"));
        async move {
            let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
            js.publish(subject, json!({"n": n}).to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(1).await;
    wait_until("the first event", || sink.stored().len() == 1).await;

    drop(server);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let _server = Broker::spawn("nats-server", &args, port);
    src.connected().await;
    publish(2).await;
    wait_until("the second event", || sink.stored().len() == 2).await;
    let ids: Vec<_> = sink
        .stored()
        .iter()
        .map(|e| e.delivery_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["RESTART:1", "RESTART:2"]);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_resubscribes_after_a_broker_restart() {
    let u = uniq();
    let port = free_port();
    let port_text = port.to_string();
    let args = ["-p", port_text.as_str()];
    let broker = Broker::spawn("mosquitto", &args, port);
    let cfg: MqttConfig = serde_json::from_value(json!({
        "url": format!("mqtt://127.0.0.1:{port}"), "topics": [format!("r/{u}/+")]
    }))
    .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(MqttSource::new(cfg)), "mq", sink.clone());
    src.connected().await;
    mqtt_publish_to(port, &[(format!("r/{u}/one"), json!({"n": 1}))]).await;
    wait_until("the first event", || sink.stored().len() == 1).await;

    // The broker forgets everything (no persistence): the source must subscribe again.
    drop(broker);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let _broker = Broker::spawn("mosquitto", &args, port);
    src.connected().await;
    mqtt_publish_to(port, &[(format!("r/{u}/two"), json!({"n": 2}))]).await;
    wait_until("the second event", || sink.stored().len() == 2).await;
    assert_eq!(
        keys(&sink.stored()),
        [format!("r.{u}.one"), format!("r.{u}.two")]
    );
    src.stop().await;
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

mod rds {
    use super::*;

    pub async fn conn() -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis at 127.0.0.1:6379")
    }

    /// PUBLISHes; how many subscribers got it.
    pub async fn publish(channel: &str, body: &str) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(body)
            .query_async(&mut conn().await)
            .await
            .unwrap()
    }

    /// XADDs `fields` to `stream`; the entry's id.
    pub async fn xadd(stream: &str, fields: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut conn().await).await.unwrap()
    }

    /// How many entries the group has delivered and not had acknowledged.
    pub async fn pending(stream: &str, group: &str) -> i64 {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .query_async(&mut conn().await)
            .await
            .unwrap();
        match summary {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("XPENDING count: {other:?}"),
            },
            other => panic!("XPENDING: {other:?}"),
        }
    }

    pub async fn delete(key: &str) {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn().await)
            .await
            .unwrap();
    }
}

fn redis_config(cfg: serde_json::Value) -> RedisConfig {
    let mut full = json!({"url": REDIS_URL});
    for (k, v) in cfg.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(full).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_pattern_matches_and_the_channel_is_the_routing_key() {
    let u = uniq();
    let cfg = redis_config(json!({"channels": [format!("t{u}.*")], "payload": "loopabull"}));
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(RedisSource::new(cfg)), "r", sink.clone());
    src.connected().await;
    let key = format!("t{u}.deploy.web");
    assert_eq!(rds::publish(&key, "who: you").await, 1, "one subscriber");
    assert_eq!(rds::publish(&format!("other{u}"), "{}").await, 0);
    assert_eq!(rds::publish(&key, "plain words").await, 1);
    wait_until("two events", || sink.stored().len() == 2).await;
    let stored = sink.stored();
    assert_eq!(keys(&stored), [key.clone(), key]);
    assert_eq!(&stored[0].payload[..], b"who: you");
    assert_eq!(stored[0].format, troupe_events::PayloadFormat::Loopabull);
    assert_eq!(stored[0].headers["pattern"], format!("t{u}.*"));
    assert_eq!(stored[0].delivery_id, None);
    assert_eq!(&stored[1].payload[..], b"plain words");
    assert_eq!(src.status.snapshot().delivered, 2);
    src.stop().await;
    // Gone: nobody is subscribed any more (at most once: this one is lost). Redis handles the
    // closed connection on its own time, so it is asked until it has (or 10 s have passed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rds::publish(&format!("t{u}.x"), "{}").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed 10 s after the source stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_acks_after_store_and_reads_pending_and_missed_entries_on_restart() {
    let u = uniq();
    let stream = format!("troupe-test-stream-{u}");
    let cfg = redis_config(json!({"streams": [stream], "group": "g", "consumer": "c1"}));

    // 1. The store fails twice, then works: acknowledged only once stored.
    let sink = RecordingSink::failing_next(2);
    let src = Running::start(Box::new(RedisSource::new(cfg.clone())), "rs", sink.clone());
    src.connected().await;
    let id = rds::xadd(
        &stream,
        &[("routing_key", "a.b"), ("payload", r#"{"n": 1}"#)],
    )
    .await;
    wait_until("the first entry stored", || sink.stored().len() == 1).await;
    assert_eq!(sink.attempts().len(), 3, "2 failures, then stored");
    let first = &sink.stored()[0];
    assert_eq!(first.routing_key, "a.b");
    assert_eq!(payload(first), json!({"n": 1}));
    assert_eq!(first.delivery_id, Some(format!("{stream}/{id}")));
    assert!(!first.redelivered);
    let deadline = Instant::now() + WAIT;
    while rds::pending(&stream, "g").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the entry was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    src.stop().await;

    // 2. The store is down: read, never acknowledged, so still pending when troupe stops.
    let failing = RecordingSink::failing_always();
    let src = Running::start(
        Box::new(RedisSource::new(cfg.clone())),
        "rs",
        failing.clone(),
    );
    src.connected().await;
    let id2 = rds::xadd(&stream, &[("who", "you")]).await;
    wait_until("retries", || failing.attempts().len() >= 2).await;
    assert_eq!(
        rds::pending(&stream, "g").await,
        1,
        "read, not acknowledged"
    );
    src.stop().await;
    assert!(failing.stored().is_empty());

    // 3. Added while troupe is down.
    let id3 = rds::xadd(&stream, &[("payload", r#"{"n": 3}"#)]).await;

    // 4. Restarted: the pending entry first (flagged redelivered), then the missed one.
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(RedisSource::new(cfg)), "rs", sink.clone());
    wait_until("both entries", || sink.stored().len() == 2).await;
    let stored = sink.stored();
    assert_eq!(stored[0].delivery_id, Some(format!("{stream}/{id2}")));
    assert!(stored[0].redelivered);
    assert_eq!(
        stored[0].routing_key, stream,
        "no routing_key field: the stream"
    );
    assert_eq!(payload(&stored[0]), json!({"who": "you"}), "its fields");
    assert_eq!(stored[1].delivery_id, Some(format!("{stream}/{id3}")));
    assert!(!stored[1].redelivered);
    assert_eq!(payload(&stored[1]), json!({"n": 3}));
    let deadline = Instant::now() + WAIT;
    while rds::pending(&stream, "g").await != 0 {
        assert!(Instant::now() < deadline, "entries left pending");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    src.stop().await;
    rds::delete(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_server_reports_disconnected_without_password() {
    let cfg = redis_config(json!({
        "url": "redis://:sup3rs3cret@127.0.0.1:1/0", "channels": ["*"],
        "password": "an0ther-s3cret"
    }));
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(RedisSource::new(cfg)), "down", sink);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let error = src.status.snapshot().last_error.unwrap();
    assert!(!error.contains("sup3rs3cret"), "{error}");
    assert!(!error.contains("an0ther-s3cret"), "{error}");
    assert!(error.contains("127.0.0.1:1"), "{error}");
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscribes_again_after_a_server_restart() {
    let port = free_port();
    let args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = format!("redis://127.0.0.1:{port}/0");
    let cfg = redis_config(json!({"url": url, "channels": ["a.*"]}));
    let broker = Broker::spawn("redis-server", &args, port);
    let sink = Arc::new(RecordingSink::default());
    let src = Running::start(Box::new(RedisSource::new(cfg)), "rr", sink.clone());
    src.connected().await;
    let publish = |body: &'static str| {
        let url = url.clone();
        async move {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            redis::cmd("PUBLISH")
                .arg("a.b")
                .arg(body)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(publish(r#"{"n": 1}"#).await, 1);
    wait_until("the first event", || sink.stored().len() == 1).await;

    drop(broker);
    let status = src.status.clone();
    wait_until("disconnected", move || {
        status.snapshot().state == "disconnected"
    })
    .await;
    let _broker = Broker::spawn("redis-server", &args, port);
    src.connected().await;
    assert_eq!(publish(r#"{"n": 2}"#).await, 1, "subscribed again");
    wait_until("the second event", || sink.stored().len() == 2).await;
    assert_eq!(payload(&sink.stored()[1]), json!({"n": 2}));
    src.stop().await;
}

// ---------------------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------------------

fn rejects<T: serde::de::DeserializeOwned, E: std::fmt::Display>(
    validate: fn(&T) -> Result<(), E>,
    cfg: serde_json::Value,
    field: &str,
) {
    let parsed: T = serde_json::from_value(cfg.clone()).unwrap();
    match validate(&parsed) {
        Ok(()) => panic!("accepted {cfg}"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with(field), "{cfg}: {e:?} should name {field}");
        }
    }
}

#[test]
fn validate_rejects_bad_configs_naming_the_field() {
    let ok = json!({"url": AMQP_URL, "queue": "q"});
    amqp::validate(&serde_json::from_value(ok.clone()).unwrap()).expect("valid");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    rejects(amqp::validate, with("url", json!("http://h/")), "url");
    rejects(amqp::validate, with("url", json!("nats://h")), "url");
    rejects(amqp::validate, with("queue", json!("")), "queue");
    rejects(
        amqp::validate,
        with("queue", json!("x".repeat(256))),
        "queue",
    );
    rejects(amqp::validate, with("prefetch", json!(0)), "prefetch");
    rejects(
        amqp::validate,
        with("exchange_type", json!("fan")),
        "exchange_type",
    );
    rejects(amqp::validate, with("exchange", json!("")), "exchange");
    let mut no_bindings = with("exchange", json!("ev"));
    no_bindings["bindings"] = json!([]);
    rejects(amqp::validate, no_bindings, "bindings");
    // Secrets from env/file are checked when connecting, not here.
    amqp::validate(&serde_json::from_value(with("url", json!({"env": "X"}))).unwrap())
        .expect("env url");

    let ok = json!({"url": NATS_URL, "subjects": ["a.>"]});
    nats::validate(&serde_json::from_value(ok.clone()).unwrap()).expect("valid");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    rejects(nats::validate, with("url", json!("amqp://h")), "url");
    rejects(nats::validate, with("subjects", json!([])), "subjects");
    rejects(
        nats::validate,
        with("subjects", json!(["a..b"])),
        "subjects",
    );
    rejects(
        nats::validate,
        with("subjects", json!(["a.>.b"])),
        "subjects",
    );
    rejects(nats::validate, with("subjects", json!(["a b"])), "subjects");
    rejects(
        nats::validate,
        with("queue_group", json!("")),
        "queue_group",
    );
    rejects(
        nats::validate,
        with("jetstream", json!({"stream": "a.b", "durable": "d"})),
        "jetstream.stream",
    );
    rejects(
        nats::validate,
        with("jetstream", json!({"stream": "S", "durable": ""})),
        "jetstream.durable",
    );

    let mut js_group = with("jetstream", json!({"stream": "S", "durable": "d"}));
    js_group["queue_group"] = json!("g");
    rejects(nats::validate, js_group, "queue_group");

    let ok = json!({"url": MQTT_URL, "topics": ["a/#"]});
    mqtt::validate(&serde_json::from_value(ok.clone()).unwrap()).expect("valid");
    let mut ok5 = ok.clone();
    ok5["protocol"] = json!(5);
    mqtt::validate(&serde_json::from_value(ok5).unwrap()).expect("valid MQTT 5");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    rejects(mqtt::validate, with("url", json!("mqtts://h:8883")), "url");
    rejects(mqtt::validate, with("url", json!("http://h")), "url");
    rejects(
        mqtt::validate,
        with("url", json!("mqtt://h:notaport")),
        "url",
    );
    rejects(mqtt::validate, with("topics", json!([])), "topics");
    rejects(mqtt::validate, with("topics", json!(["a/#/b"])), "topics");
    rejects(mqtt::validate, with("topics", json!(["a/b#"])), "topics");
    rejects(mqtt::validate, with("qos", json!(3)), "qos");
    rejects(mqtt::validate, with("client_id", json!("")), "client_id");
    rejects(mqtt::validate, with("password", json!("p")), "password");
    let tls = mqtt::validate(
        &serde_json::from_value(with("url", json!("mqtts://u:hunter22@h"))).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(tls.contains("TLS") && !tls.contains("hunter22"), "{tls}");

    let ok = json!({"url": REDIS_URL, "channels": ["*"]});
    redis_source::validate(&serde_json::from_value(ok.clone()).unwrap()).expect("valid");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    rejects(
        redis_source::validate,
        with("url", json!("http://h/")),
        "url",
    );
    rejects(
        redis_source::validate,
        with("url", json!("redis://h:port/0")),
        "url",
    );
    rejects(
        redis_source::validate,
        with("channels", json!([])),
        "channels or streams",
    );
    rejects(
        redis_source::validate,
        with("channels", json!([""])),
        "channels",
    );
    rejects(
        redis_source::validate,
        with("streams", json!(["s"])),
        "channels and streams",
    );
    let mut streams = with("streams", json!(["s"]));
    streams["channels"] = json!([]);
    redis_source::validate(&serde_json::from_value(streams.clone()).unwrap()).expect("streams");
    streams["group"] = json!("");
    rejects(redis_source::validate, streams, "group");
    rejects(
        amqp::validate,
        json!({"url": AMQP_URL, "queue": "q", "tls": {"cert_file": "/c.pem"}}),
        "tls",
    );
}
