//! Several `troupe serve` replicas on one PostgreSQL database: a client on one replica follows
//! live a run another replica executes; each event source runs on exactly one replica and
//! fails over when that replica is killed; an MQTT client id is used by one replica only.

use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Writes the payload's `tag` to `<out_dir>/<routing key>-<tag>.json`.
const RECORD: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out_dir }}/{{ troupe_event.routing_key }}-{{ tag | default('x') }}.json"
        content: "{{ {'tag': tag | default(none), 'source': troupe_event.source} | to_json }}"
"#;

/// Events spread over a few seconds.
const STEADY: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: step
      ansible.builtin.command: "sleep 0.2"
      loop: "{{ range(0, 12) | list }}"
    - name: done
      ansible.builtin.debug:
        msg: done
"#;

const BLOCK: &str =
    "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 300\n";

/// A fresh database; these tests need PostgreSQL (`TROUPE_TEST_DATABASE_URL`, always set in CI).
pub(crate) async fn database() -> anyhow::Result<String> {
    crate::postgres::fresh_database()
        .await?
        .ok_or_else(|| anyhow::anyhow!("replicas need PostgreSQL: set TROUPE_TEST_DATABASE_URL"))
}

/// Options for a replica with its own data dir on the shared database.
pub(crate) fn replica(dir: &Path, url: &str, project: &Path, extra: &[(&str, &str)]) -> ServerOpts {
    ServerOpts {
        data_dir: Some(dir.to_path_buf()),
        database_url: Some(url.to_owned()),
        extra_args: vec!["--project".into(), project.display().to_string()],
        extra_env: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn node_id(server: &Server) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(server.data_dir.join("node-id"))?
        .trim()
        .to_owned())
}

/// Follows a run over WebSocket: (counters in order, the end message).
pub(crate) async fn follow_ws(server: &Server, run: i64) -> anyhow::Result<(Vec<i64>, Value)> {
    let url = format!(
        "{}/api/v1/runs/{run}/events/ws",
        server.base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut counters = Vec::new();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("event") => counters.push(v["event"]["counter"].as_i64().unwrap_or(-1)),
            Some("end") => return Ok((counters, v)),
            other => anyhow::bail!("unexpected message {other:?}: {v}"),
        }
    }
    anyhow::bail!("the stream closed without an end message after {counters:?}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a stream of run status changes on the server at `base`.
async fn open_changes(base: &str) -> anyhow::Result<Ws> {
    let url = format!(
        "{}/api/v1/stream/ws?status_only=true",
        base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// Reads status changes until `run` is reported finished; its statuses, in order.
async fn statuses_until_finished(mut ws: Ws, run: i64) -> anyhow::Result<Vec<String>> {
    let mut statuses = Vec::new();
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        if v["run_id"].as_i64() != Some(run) {
            continue;
        }
        let status = v["status"].as_str().unwrap_or_default().to_owned();
        statuses.push(status.clone());
        if troupe_testkit::is_finished(&status) {
            return Ok(statuses);
        }
    }
    anyhow::bail!("the changes stream closed after {statuses:?}")
}

/// A client on replica A follows live a run replica B executes: every event exactly once, in
/// order, then the end; A's dashboards see B's status changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_replica_follows_a_run_another_executes() -> anyhow::Result<()> {
    let url = database().await?;
    let tmp = tempfile::tempdir()?;
    let proj = named_project(&[("steady.yml", STEADY), ("block.yml", BLOCK)])?;
    // A has one slot, taken by a long run before B exists: whatever A queues, B executes.
    let a = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..replica(&tmp.path().join("a"), &url, proj.path(), &[])
    })?;
    let pid = a.project(proj.path()).await?;
    let blocker = a
        .launch(pid, "block.yml", &local_hosts(1), json!({}))
        .await?;
    wait_until("A runs the blocker", Duration::from_secs(60), || async {
        Ok(a.get(&format!("/api/v1/runs/{blocker}")).await?["status"] == "running")
    })
    .await?;
    let b = serve_with(replica(&tmp.path().join("b"), &url, proj.path(), &[]))?;

    // A dashboard on A, connected before the run exists.
    let dashboard = open_changes(&a.base).await?;
    let run = a
        .launch(pid, "steady.yml", &local_hosts(2), json!({}))
        .await?;
    let changes = tokio::spawn(statuses_until_finished(dashboard, run));
    let (counters, end) = follow_ws(&a, run).await?;
    let stored = a.wait_finished(run).await?;
    assert_eq!(stored["status"], "successful", "{stored}\n{}", b.log());
    let worker = stored["worker_id"].as_str().unwrap_or_default();
    assert!(
        worker.starts_with(&node_id(&b)?),
        "B executed the run: {worker}"
    );
    let total = stored["event_count"].as_i64().unwrap_or(0);
    assert!(total > 20, "{stored}");
    assert_eq!(
        counters,
        (1..=total).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(end["status"], "successful");
    assert_eq!(end["last_counter"], total);
    // Status changes reach A's dashboards only over the bus: nothing polls for them.
    let statuses = tokio::time::timeout(Duration::from_secs(60), changes).await???;
    assert_eq!(
        statuses,
        ["running", "successful"].map(String::from).to_vec(),
        "A's dashboard saw B's status changes"
    );
    a.post(
        &format!("/api/v1/runs/{blocker}/cancel"),
        &json!({"mode": "force"}),
    )
    .await?;
    Ok(())
}

/// Each replica's view of a source: (state, holder).
async fn source_view(server: &Server, name: &str) -> anyhow::Result<(String, Option<String>)> {
    let s = server.get("/api/v1/sources").await?;
    Ok((
        s[name]["state"].as_str().unwrap_or_default().to_owned(),
        s[name]["holder"].as_str().map(str::to_owned),
    ))
}

/// Waits until exactly one of `servers` runs the source `name` (connected, holding its lease,
/// the others on standby naming it) and returns its index.
async fn one_runs(servers: &[&Server], name: &str) -> anyhow::Result<usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for s in servers {
            views.push(source_view(s, name).await?);
        }
        let running: Vec<usize> = (0..views.len())
            .filter(|i| views[*i].0 == "connected")
            .collect();
        if let [leader] = running[..] {
            let holder = views[leader].1.clone().unwrap_or_default();
            let settled = holder.starts_with(&node_id(servers[leader])?)
                && views
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != leader)
                    .all(|(_, (state, h))| state == "standby" && h.as_deref() == Some(&holder));
            if settled {
                return Ok(leader);
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not exactly one replica runs {name}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn directory_rules(drop: &Path, project: &str, out: &Path) -> String {
    format!(
        r#"
sources:
  inbox: {{type: directory, path: "{drop}", poll_ms: 100}}
rules:
  - name: dropped
    sources: inbox
    routing_keys: ["deploy.*"]
    action: {{project: {project}, playbook: record.yml, vars: {{out_dir: "{out}"}}}}
"#,
        drop = drop.display(),
        out = out.display()
    )
}

/// A directory source runs on one replica; kill -9 it and the other takes the source over
/// within the lease and handles the file dropped meanwhile, and the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_runs_on_one_replica_and_fails_over_when_it_dies() -> anyhow::Result<()> {
    let url = database().await?;
    let tmp = tempfile::tempdir()?;
    let proj = named_project(&[("record.yml", RECORD)])?;
    let out = tmp.path().join("out");
    let drop = tmp.path().join("drop");
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&drop)?;
    let lease = [("TROUPE_SOURCE_LEASE_S", "3")];
    let a = serve_with(replica(&tmp.path().join("a"), &url, proj.path(), &lease))?;
    let b = serve_with(replica(&tmp.path().join("b"), &url, proj.path(), &lease))?;
    a.apply_rules(&directory_rules(&drop, &project_name(proj.path()), &out))
        .await?;
    let mut servers = [Some(a), Some(b)];
    let both: Vec<&Server> = servers.iter().flatten().collect();
    let leader = one_runs(&both, "inbox").await?;

    std::fs::write(drop.join("deploy.web.json"), r#"{"tag": "one"}"#)?;
    let first: Value = serde_json::from_str(
        &wait_file(&out.join("deploy.web-one.json"), Duration::from_secs(60)).await?,
    )?;
    assert_eq!(first["source"], "inbox");

    // kill -9 the leader; a file dropped now waits in the directory for the other replica.
    let mut dead = servers[leader]
        .take()
        .ok_or_else(|| anyhow::anyhow!("leader"))?;
    dead.kill9();
    std::fs::write(drop.join("deploy.db.json"), r#"{"tag": "two"}"#)?;
    let survivor = servers[1 - leader]
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("survivor"))?;
    let second = match wait_file(&out.join("deploy.db-two.json"), Duration::from_secs(60)).await {
        Ok(text) => serde_json::from_str::<Value>(&text)?,
        Err(e) => anyhow::bail!("{e}\n{}", survivor.log()),
    };
    assert_eq!(second["source"], "inbox");
    let (state, holder) = source_view(survivor, "inbox").await?;
    assert_eq!(state, "connected");
    assert!(holder.unwrap_or_default().starts_with(&node_id(survivor)?));

    std::fs::write(drop.join("deploy.app.json"), r#"{"tag": "three"}"#)?;
    wait_file(&out.join("deploy.app-three.json"), Duration::from_secs(60)).await?;
    // Every file was handled once, by one replica at a time.
    let records = survivor.event_records("source=inbox").await?;
    let mut keys: Vec<&str> = records
        .iter()
        .map(|r| r["routing_key"].as_str().unwrap_or_default())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["deploy.app", "deploy.db", "deploy.web"],
        "{records:?}"
    );
    assert!(
        records.iter().all(|r| r["status"] == "accepted"),
        "{records:?}"
    );
    Ok(())
}

/// An MQTT source with a fixed client id is connected from one replica only: the other stands
/// by instead of taking the client id over (the broker would drop one for the other, again and
/// again), and a message is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_client_id_is_used_by_one_replica_only() -> anyhow::Result<()> {
    let url = database().await?;
    let tmp = tempfile::tempdir()?;
    let proj = named_project(&[("record.yml", RECORD)])?;
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out)?;
    let p = format!("rep{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let a = serve_with(replica(&tmp.path().join("a"), &url, proj.path(), &[]))?;
    let b = serve_with(replica(&tmp.path().join("b"), &url, proj.path(), &[]))?;
    a.apply_rules(&format!(
        r#"
sources:
  mqtt: {{type: mqtt, url: "mqtt://127.0.0.1:1883", topics: ["{p}/deploy/+"], client_id: "troupe-{p}"}}
rules:
  - name: deploy
    routing_keys: ["{p}.deploy.*"]
    action: {{project: {project}, playbook: record.yml, vars: {{out_dir: "{out}"}}}}
"#,
        project = project_name(proj.path()),
        out = out.display()
    ))
    .await?;
    let leader = one_runs(&[&a, &b], "mqtt").await?;
    // Had both connected with the one client id, the broker would keep dropping one for the
    // other: the leader stays connected and the other on standby.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let views = [
            source_view(&a, "mqtt").await?,
            source_view(&b, "mqtt").await?,
        ];
        assert_eq!(views[leader].0, "connected", "{views:?}");
        assert_eq!(views[1 - leader].0, "standby", "{views:?}");
    }
    mqtt_publish(&format!("{p}/deploy/web"), &json!({"tag": "m"})).await?;
    let seen: Value = serde_json::from_str(
        &wait_file(
            &out.join(format!("{p}.deploy.web-m.json")),
            Duration::from_secs(60),
        )
        .await?,
    )?;
    assert_eq!(seen["source"], "mqtt");
    let records = a.event_records("source=mqtt").await?;
    assert_eq!(records.len(), 1, "{records:?}");
    let delivered = [&a, &b].map(|s| s.api().clone());
    let mut counts = Vec::new();
    for api in delivered {
        let s = api.get("/api/v1/sources").await?;
        counts.push(s["mqtt"]["delivered"].as_u64().unwrap_or(0));
    }
    counts.sort_unstable();
    assert_eq!(counts, [0, 1], "one replica delivered the message");
    Ok(())
}

async fn mqtt_publish(topic: &str, body: &Value) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let id = format!(
        "e2e-rep-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let mut options = MqttOptions::new(id, "127.0.0.1", 1883);
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
    tokio::time::timeout(Duration::from_secs(20), run).await??;
    let _ = client.disconnect().await;
    Ok(())
}
