//! Event sources on the real brokers of this machine (RabbitMQ 5672, NATS 4222 with
//! JetStream, Mosquitto 1883, Redis 6379), through the real binary: every source runs the
//! playbook its routing key names with the payload as vars; a burst survives a restart without
//! loss or duplicates; a store outage holds messages unacknowledged until it is over; a Redis
//! stream entry added while troupe is down runs once it is back.

use crate::helpers::*;
use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";

/// Writes the vars a run sees to `<out_dir>/<routing key>-<tag>.json`.
const RECORD: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ troupe_event.routing_key }}-{{ tag | default('x') }}.json"
        content: "{{ {'msg': msg | default(none), 'source': troupe_event.source} | to_json }}"
"#;

fn uniq() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A project whose playbook `<prefix>/deploy/web.yml` is what routing key
/// `<prefix>.deploy.web` names (rkdirectory).
struct Fixture {
    _tmp: tempfile::TempDir,
    project: PathBuf,
    out: PathBuf,
    prefix: String,
}

impl Fixture {
    fn new() -> anyhow::Result<Fixture> {
        let tmp = tempfile::tempdir()?;
        let prefix = format!("e2e{}", uniq());
        let project = tmp.path().join(format!("proj{prefix}"));
        let pb = project.join(&prefix).join("deploy/web.yml");
        std::fs::create_dir_all(pb.parent().context("parent")?)?;
        std::fs::write(pb, RECORD)?;
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out)?;
        Ok(Fixture {
            _tmp: tmp,
            project,
            out,
            prefix,
        })
    }

    fn key(&self) -> String {
        format!("{}.deploy.web", self.prefix)
    }

    fn opts(&self) -> ServerOpts {
        with_project(&self.project)
    }

    /// The rule every test uses: keys under the prefix run the playbook they name.
    fn rule(&self) -> String {
        format!(
            "rules:\n  - name: deploy\n    routing_keys: [\"{}.#\"]\n    action: {{project: {}, playbooks_dir: ., translator: rkdirectory, vars: {{out_dir: \"{}\"}}}}\n",
            self.prefix,
            project_name(&self.project),
            self.out.display()
        )
    }

    async fn seen(&self, tag: &str) -> anyhow::Result<Value> {
        let path = self.out.join(format!("{}-{tag}.json", self.key()));
        let text = wait_file(&path, Duration::from_secs(90)).await?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Waits until every named source reports `connected`.
async fn wait_connected(server: &Server, names: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = server.get("/api/v1/sources").await?;
        if names.iter().all(|n| s[*n]["state"] == "connected") {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "sources not connected: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn amqp_channel() -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

/// Publishes with publisher confirms; `message_id` set when given.
async fn amqp_publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &Value,
    message_id: Option<&str>,
) -> anyhow::Result<()> {
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.to_string().as_bytes(),
        props,
    )
    .await?
    .await?;
    Ok(())
}

async fn mqtt_publish(topic: &str, body: &Value) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(format!("e2e-pub-{}", uniq()), "127.0.0.1", 1883);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let run = async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .publish(topic, QoS::AtLeastOnce, false, body.to_string())
                        .await?;
                }
                Event::Incoming(Packet::PubAck(_)) => return Ok::<(), anyhow::Error>(()),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .context("MQTT publish timed out")??;
    let _ = client.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_source_runs_the_playbook_its_routing_key_names() -> anyhow::Result<()> {
    let f = Fixture::new()?;
    let server = serve_with(f.opts())?;
    let p = &f.prefix;
    server.apply_rules(&format!(
            r##"
sources:
  bus: {{type: amqp, url: "{AMQP_URL}", exchange: "x.{p}", queue: "q.{p}", bindings: ["#"]}}
  nats: {{type: nats, url: "{NATS_URL}", subjects: ["{p}.deploy.*"]}}
  js: {{type: nats, url: "{NATS_URL}", subjects: ["{p}.deploy.>"], jetstream: {{stream: "S{p}", durable: "d{p}"}}}}
  mqtt: {{type: mqtt, url: "mqtt://127.0.0.1:1883", topics: ["{p}/deploy/+"], client_id: "troupe-{p}"}}
{}"##,
            f.rule()
        ),
    )
    .await?;
    wait_connected(&server, &["bus", "nats", "js", "mqtt"]).await?;

    // AMQP: routing key of the message.
    let (_conn, ch) = amqp_channel().await?;
    amqp_publish(
        &ch,
        &format!("x.{p}"),
        &f.key(),
        &json!({"msg": "via amqp", "tag": "amqp"}),
        Some("m1"),
    )
    .await?;
    // Outside the rule's keys (but inside the binding): recorded, unmatched, nothing runs.
    amqp_publish(
        &ch,
        &format!("x.{p}"),
        &format!("{p}x.other"),
        &json!({}),
        None,
    )
    .await?;
    let seen = f.seen("amqp").await?;
    assert_eq!(seen["msg"], "via amqp");
    assert_eq!(seen["source"], "bus");

    // NATS core and JetStream: the subject. Both subscriptions see the same subject: two runs.
    let nats = async_nats::connect(NATS_URL)
        .await
        .context("NATS at 127.0.0.1:4222")?;
    nats.publish(
        f.key(),
        json!({"msg": "via nats", "tag": "nats"}).to_string().into(),
    )
    .await?;
    nats.flush().await?;
    let seen = f.seen("nats").await?;
    assert_eq!(seen["msg"], "via nats");
    let by_source = |src: &'static str| {
        let server = &server;
        async move { server.event_records(&format!("source={src}")).await }
    };
    let js_records = by_source("js").await?;
    wait_until_len(&server, "js", 1).await?;
    let nats_records = by_source("nats").await?;
    assert_eq!(nats_records.len(), 1, "{nats_records:?}");
    assert!(js_records.len() <= 1);
    let js = by_source("js").await?;
    assert_eq!(js[0]["routing_key"], f.key());
    assert_eq!(js[0]["status"], "accepted");
    assert!(
        js[0]["delivery_id"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("S{p}:")),
        "{js:?}"
    );

    // MQTT: the topic, with `/` read as `.`.
    mqtt_publish(
        &format!("{p}/deploy/web"),
        &json!({"msg": "via mqtt", "tag": "mqtt"}),
    )
    .await?;
    let seen = f.seen("mqtt").await?;
    assert_eq!(seen["msg"], "via mqtt");
    assert_eq!(seen["source"], "mqtt");

    wait_until_len(&server, "bus", 2).await?;
    let bus = server.event_records("source=bus").await?;
    let unmatched: Vec<_> = bus.iter().filter(|e| e["status"] == "unmatched").collect();
    assert_eq!(unmatched.len(), 1, "{bus:?}");
    assert_eq!(unmatched[0]["routing_key"], format!("{p}x.other"));
    assert_eq!(unmatched[0]["run_ids"], json!([]));
    Ok(())
}

async fn wait_until_len(server: &Server, source: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = server.event_records(&format!("source={source}")).await?;
        if r.len() >= n {
            return Ok(r);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{source}: {} records, wanted {n}",
            r.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_burst_survives_a_restart_with_nothing_lost_or_doubled() -> anyhow::Result<()> {
    let f = Fixture::new()?;
    let data = f._tmp.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data.clone()),
        ..f.opts()
    };
    let mut server = serve_with(opts())?;
    let p = &f.prefix;
    server.apply_rules(&format!(
            "sources:\n  bus: {{type: amqp, url: \"{AMQP_URL}\", exchange: \"x.{p}\", queue: \"q.{p}\", bindings: [\"#\"]}}\n{}",
            f.rule()
        ),
    )
    .await?;
    wait_connected(&server, &["bus"]).await?;
    let (_conn, ch) = amqp_channel().await?;
    // 1,000 messages; every 100th names the playbook (10 runs), the rest match no rule.
    let publisher = {
        let ch = ch.clone();
        let key = f.key();
        let exchange = format!("x.{p}");
        let noise = format!("{p}x.noise");
        tokio::spawn(async move {
            for i in 0..1000 {
                let k = if i % 100 == 0 {
                    key.as_str()
                } else {
                    noise.as_str()
                };
                amqp_publish(
                    &ch,
                    &exchange,
                    k,
                    &json!({"i": i, "tag": format!("n{i}")}),
                    Some(&format!("m-{i}")),
                )
                .await?;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    // Kill troupe (SIGKILL: no chance to ack or clean up) once part of the burst is recorded.
    let recorded_at_kill = loop {
        let n = server.event_records("source=bus").await?.len();
        if n >= 100 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill9();
    publisher.await??;
    assert!(
        recorded_at_kill < 1000,
        "the restart must come mid-burst ({recorded_at_kill} recorded)"
    );

    // Restarted on the same data dir, it finds its rules, reconnects and drains the queue.
    let server = serve_with(opts())?;
    let all = wait_until_len(&server, "bus", 1000).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = if all.len() == 1000 {
        server.event_records("source=bus").await?
    } else {
        all
    };
    assert_eq!(all.len(), 1000, "every message recorded exactly once");
    let ids: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|e| e["delivery_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1000, "1,000 distinct deliveries");
    let accepted: Vec<_> = all.iter().filter(|e| e["status"] == "accepted").collect();
    assert_eq!(accepted.len(), 10);
    let runs = server
        .get("/api/v1/runs?label=troupe/source=bus&limit=500")
        .await?;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(10), "{runs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_holds_messages_unacknowledged_until_it_is_over() -> anyhow::Result<()> {
    let Ok(admin) = std::env::var("TROUPE_TEST_DATABASE_URL") else {
        eprintln!("TROUPE_TEST_DATABASE_URL is not set: store outage test skipped");
        return Ok(());
    };
    let f = Fixture::new()?;
    let p = &f.prefix;
    // A role and database of its own, so cutting it off leaves other tests alone.
    let role = format!("troupe_{p}");
    psql(&admin, &format!("CREATE ROLE {role} LOGIN"))?;
    psql(&admin, &format!("CREATE DATABASE {role} OWNER {role}"))?;
    let host = admin
        .split_once('@')
        .map(|(_, rest)| rest.split('/').next().unwrap_or("127.0.0.1:5432"))
        .unwrap_or("127.0.0.1:5432");
    let url = format!("postgres://{role}@{host}/{role}");
    let db_url = format!(
        "{}/{role}",
        admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b)
    );
    let server = serve_with(ServerOpts {
        database_url: Some(url),
        ..f.opts()
    })?;
    server.apply_rules(&format!(
            "sources:\n  bus: {{type: amqp, url: \"{AMQP_URL}\", exchange: \"x.{p}\", queue: \"q.{p}\", bindings: [\"#\"]}}\n{}",
            f.rule()
        ),
    )
    .await?;
    wait_connected(&server, &["bus"]).await?;
    let (_conn, ch) = amqp_channel().await?;
    let exchange = format!("x.{p}");
    let noise = format!("{p}x.noise");
    for i in 0..5 {
        amqp_publish(
            &ch,
            &exchange,
            &noise,
            &json!({"i": i}),
            Some(&format!("before-{i}")),
        )
        .await?;
    }
    wait_until_len(&server, "bus", 5).await?;

    // The outage: the role may no longer log in, and its connections are cut.
    psql(&admin, &format!("ALTER ROLE {role} NOLOGIN"))?;
    psql(
        &admin,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"
        ),
    )?;
    for i in 0..20 {
        amqp_publish(
            &ch,
            &exchange,
            &noise,
            &json!({"i": i}),
            Some(&format!("during-{i}")),
        )
        .await?;
    }
    amqp_publish(
        &ch,
        &exchange,
        &f.key(),
        &json!({"msg": "after the outage", "tag": "late"}),
        Some("during-run"),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        psql(&db_url, "SELECT count(*) FROM event_records")?,
        "5",
        "nothing is recorded while the store is down"
    );
    // The API says the store is unavailable, in JSON, with 503.
    let (status, body) = server
        .call(reqwest::Method::GET, "/api/v1/events", None)
        .await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable");

    // Back: the held messages are recorded, once each, and the run happens.
    psql(&admin, &format!("ALTER ROLE {role} LOGIN"))?;
    let all = wait_until_len(&server, "bus", 26).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = if all.len() == 26 {
        server.event_records("source=bus").await?
    } else {
        all
    };
    assert_eq!(all.len(), 26, "{all:?}");
    let seen = f.seen("late").await?;
    assert_eq!(seen["msg"], "after the outage");
    drop(server);
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {role} WITH (FORCE)"),
    );
    let _ = psql(&admin, &format!("DROP ROLE IF EXISTS {role}"));
    Ok(())
}

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

async fn redis_conn() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await
        .context("Redis at 127.0.0.1:6379")
}

/// XADDs an entry naming `key` with `payload` to `stream`.
async fn redis_xadd(stream: &str, key: &str, payload: &Value) -> anyhow::Result<String> {
    Ok(redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("routing_key")
        .arg(key)
        .arg("payload")
        .arg(payload.to_string())
        .query_async(&mut redis_conn().await?)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sources_run_playbooks_and_a_stream_entry_added_while_down_runs_after_restart()
-> anyhow::Result<()> {
    let f = Fixture::new()?;
    let data = f._tmp.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data.clone()),
        ..f.opts()
    };
    let mut server = serve_with(opts())?;
    let p = &f.prefix;
    let stream = format!("s{p}");
    server
        .apply_rules(&format!(
            "sources:\n  rpub: {{type: redis, url: \"{REDIS_URL}\", channels: [\"{p}.*\"]}}\n  rstream: {{type: redis, url: \"{REDIS_URL}\", streams: [\"{stream}\"], group: \"g{p}\"}}\n{}",
            f.rule()
        ))
        .await?;
    wait_connected(&server, &["rpub", "rstream"]).await?;

    // Pub/sub: the channel is the routing key.
    let got: i64 = redis::cmd("PUBLISH")
        .arg(f.key())
        .arg(json!({"msg": "via redis", "tag": "redis"}).to_string())
        .query_async(&mut redis_conn().await?)
        .await?;
    assert_eq!(got, 1, "troupe is subscribed");
    let seen = f.seen("redis").await?;
    assert_eq!(seen["msg"], "via redis");
    assert_eq!(seen["source"], "rpub");

    // A stream: the entry's routing_key and payload fields.
    let id = redis_xadd(
        &stream,
        &f.key(),
        &json!({"msg": "via stream", "tag": "stream"}),
    )
    .await?;
    let seen = f.seen("stream").await?;
    assert_eq!(seen["msg"], "via stream");
    assert_eq!(seen["source"], "rstream");
    let records = server.event_records("source=rstream").await?;
    assert_eq!(records[0]["delivery_id"], format!("{stream}/{id}"));

    // Added while troupe is down: the consumer group kept it, and it runs once troupe is back.
    server.terminate()?;
    redis_xadd(
        &stream,
        &f.key(),
        &json!({"msg": "while down", "tag": "down"}),
    )
    .await?;
    let server = serve_with(opts())?;
    let seen = f.seen("down").await?;
    assert_eq!(seen["msg"], "while down");
    // Stored, so acknowledged: nothing left pending in the group.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(format!("g{p}"))
            .query_async::<redis::Value>(&mut redis_conn().await?)
            .await
            .map(|v| match v {
                redis::Value::Array(parts) => match parts.first() {
                    Some(redis::Value::Int(n)) => json!(n),
                    _ => Value::Null,
                },
                _ => Value::Null,
            })?;
        if pending == json!(0) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "still pending: {pending}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.event_records("source=rstream").await?.len(), 2);
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis_conn().await?)
        .await?;
    Ok(())
}
