//! `troupe loop` on Loopabull 0.0.7's own example configurations (`tests/fixtures/
//! loopabull-0.0.7`, run from that directory as Loopabull runs them): a real AMQP message to
//! the exchange, or a real Redis PUBLISH, runs the example playbook with the payload as
//! Loopabull's looper gives it; the loopers troupe does not run, and names it does not know,
//! are refused before anything starts.

use crate::helpers::*;
use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Where the package's files are, laid out as in the package.
fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loopabull-0.0.7")
}

/// `troupe loop CONFIG` run from the package's directory, with its own data dir.
fn troupe_loop(config: &str, data: &Path) -> Command {
    let mut cmd = Command::new(troupe_bin());
    cmd.current_dir(package())
        .arg("--data-dir")
        .arg(data)
        .args(["loop", config, "--listen", "127.0.0.1:0"])
        .env("TROUPE_LOG", "info,troupe=debug");
    cmd
}

/// Waits until the looper's source (`loopabull`) is consuming.
async fn wait_looper(server: &Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = server.get("/api/v1/sources").await?;
        if s["loopabull"]["state"] == "connected" {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the looper never connected: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run the first event with `routing_key` started, once finished, and the values its
/// `debug: var=...` tasks showed, by variable.
async fn ran(server: &Server, routing_key: &str) -> anyhow::Result<(Value, Vec<Value>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = loop {
        let records = server
            .event_records(&format!("source=loopabull&routing_key={routing_key}"))
            .await?;
        let id = records
            .iter()
            .filter(|r| r["routing_key"] == routing_key)
            .find_map(|r| r["run_ids"][0].as_i64());
        if let Some(id) = id {
            break id;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no run for {routing_key}: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run = server.wait_finished(run_id).await?;
    let shown = server
        .events(run_id)
        .await?
        .into_iter()
        .filter(|e| e["event"] == "runner_on_ok")
        .map(|e| e["event_data"]["res"].clone())
        .collect();
    Ok((run, shown))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fedmsgrabbitmq_example_runs_the_playbook_with_the_body_as_msg() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let cmd = troupe_loop("examples/configs/fedmsg_rabbitmq_example.yml", data.path());
    let mut server = Server::start_command(cmd, data.path().to_owned(), &ServerOpts::default())?;
    wait_looper(&server).await?;
    // As fedmsg-rabbitmq-serializer publishes: JSON, to amq.topic, under the topic.
    let key = "org.fedoraproject.prod.ansible.playbook.start";
    let body = json!({
        "topic": key,
        "body": {"topic": key, "msg_id": "2026-e2e", "msg": {"playbook": "e2e.yml", "n": 7}},
    });
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        "amq.topic".into(),
        key.into(),
        BasicPublishOptions::default(),
        body.to_string().as_bytes(),
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await?
    .await?;
    let (run, shown) = ran(&server, key).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["playbook"], format!("{key}.yml"));
    // `debug: var=msg`: the looper's {"msg": <the JSON body>}.
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["msg"], body, "{shown:?}");
    // The example names /usr/bin/ansible-playbook and an ansible.cfg the package lacks: said,
    // and the run went on as Loopabull's would.
    let log = server.log();
    assert!(
        log.contains("cfg_file_path examples/ansible.cfg does not exist"),
        "{log}"
    );
    assert!(
        !log.contains("guest:guest"),
        "the URL's password is not logged"
    );
    server.terminate()?;
    Ok(())
}

/// PUBLISHes `body` on `channel` of this machine's Redis; how many subscribers got it.
async fn redis_publish(channel: &str, body: &str) -> anyhow::Result<i64> {
    let mut conn = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await
        .context("Redis at 127.0.0.1:6379")?;
    Ok(redis::cmd("PUBLISH")
        .arg(channel)
        .arg(body)
        .query_async(&mut conn)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_rkdirectory_example_runs_the_playbook_with_the_message() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let cmd = troupe_loop("examples/configs/rkdir_example.yml", data.path());
    let mut server = Server::start_command(cmd, data.path().to_owned(), &ServerOpts::default())?;
    wait_looper(&server).await?;
    let key = "org.fedoraproject.dev.logger.hello_world";

    // A YAML mapping is the playbook's variables as it is.
    assert!(redis_publish(key, "who: e2e\nn: 1").await? >= 1);
    let (run, shown) = ran(&server, key).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(
        run["playbook"],
        "org/fedoraproject/dev/logger/hello_world.yml"
    );
    assert_eq!(run["options"]["extra_vars"]["n"], 1, "{run}");
    let who: Vec<_> = shown.iter().map(|r| r["who"].clone()).collect();
    assert!(who.contains(&json!("e2e")), "{shown:?}");

    // Anything else is `msg`, the text as published (a second event on the same key).
    assert!(redis_publish(key, "hello world").await? >= 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let records = server
            .event_records(&format!("source=loopabull&routing_key={key}"))
            .await?;
        let ids: Vec<i64> = records
            .iter()
            .filter_map(|r| r["run_ids"][0].as_i64())
            .collect();
        if ids.len() == 2 {
            break ids.into_iter().max().context("two runs")?;
        }
        anyhow::ensure!(Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run = server.wait_finished(second).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["options"]["extra_vars"]["msg"], "hello world", "{run}");

    // A channel outside routing_keys: recorded, nothing runs.
    assert!(redis_publish("org.fedoraproject.dev.logger.other", "x: 1").await? >= 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = server
            .event_records("source=loopabull&routing_key=org.fedoraproject.dev.logger.other")
            .await?;
        if let Some(r) = records.first() {
            assert_eq!(r["status"], "unmatched", "{r}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate()?;
    Ok(())
}

/// `troupe loop` on `config` (from the package's directory) must fail before serving, saying
/// `expected`.
fn refused(config: &Path, expected: &str) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let out = troupe_loop(config.to_str().context("path")?, data.path()).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{config:?} was accepted: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(expected), "{config:?}: {stderr}");
    Ok(())
}

#[test]
fn fedmsg_and_unknown_plugins_are_refused_with_the_way_out() -> anyhow::Result<()> {
    // The package's fedmsg (ZeroMQ) configurations: refused, naming the AMQP looper.
    for config in [
        "examples/configs/fedmsg_example.yml",
        "systemd/loopabull.yml",
    ] {
        refused(
            Path::new(config),
            "looper \"fedmsg\" (ZeroMQ) is not supported",
        )?;
        refused(Path::new(config), "fedmsgrabbitmq")?;
    }
    let dir = tempfile::tempdir()?;
    for (plugins, expected) in [
        (
            "plugins:\n  looper: {name: kafka}\n",
            "looper \"kafka\" is not supported by troupe loop",
        ),
        (
            "plugins:\n  looper: {name: redis}\n  translator: {name: rkreverse}\n",
            "translator \"rkreverse\" is not supported",
        ),
        ("plugin: zeromq\n", "plugin \"zeromq\" is not supported"),
        (
            "plugins:\n  looper: {name: redis, hots: typo}\n",
            "plugins.looper (redis): unknown field `hots`",
        ),
    ] {
        let config = dir.path().join("loop.yml");
        std::fs::write(
            &config,
            format!(
                "routing_keys: [all]\n{plugins}ansible:\n  playbooks_dir: examples/playbooks\n"
            ),
        )?;
        refused(&config, expected)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_the_ansible_cfg_names_is_the_runs_inventory() -> anyhow::Result<()> {
    // The package's inventory ([engine] localhost, connection local), named by an ansible.cfg
    // relative to it; a playbook for group `engine` runs only if that inventory is used.
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        package().join("examples/inventory.txt"),
        dir.path().join("inventory.txt"),
    )?;
    std::fs::write(
        dir.path().join("ansible.cfg"),
        "[defaults]\n# as ansible reads it: relative to this file\ninventory = inventory.txt\n",
    )?;
    // Read only when ansible reads the inventory where it is (troupe passes no -i).
    std::fs::create_dir(dir.path().join("group_vars"))?;
    std::fs::write(
        dir.path().join("group_vars/engine.yml"),
        "beside_the_inventory: read\n",
    )?;
    // debug runs on the controller: no Python is looked for on the host (the package's
    // inventory names no interpreter).
    let playbooks = named_project(&[(
        "org.example.engine.yml",
        "- hosts: engine\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: \"{{ group_names + [beside_the_inventory] }}\"}\n",
    )])?;
    let config = dir.path().join("loop.yml");
    std::fs::write(
        &config,
        format!(
            "routing_keys: [org.example.engine]\nplugins:\n  translator: {{name: rkname}}\nansible:\n  playbooks_dir: {}\n  cfg_file_path: ansible.cfg\n",
            playbooks.path().display()
        ),
    )?;
    let data = dir.path().join("data");
    let mut server = Server::start_command(
        troupe_loop(config.to_str().context("path")?, &data),
        data.clone(),
        &ServerOpts::default(),
    )?;
    let (s, v) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/hooks/loopabull/org.example.engine",
            Some(&json!({})),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let (run, shown) = ran(&server, "org.example.engine").await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(shown.len(), 1, "the play ran on group engine: {shown:?}");
    assert_eq!(shown[0]["msg"], json!(["engine", "read"]));
    server.terminate()?;
    Ok(())
}
