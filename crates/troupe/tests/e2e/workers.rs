//! Remote workers (`troupe worker`): runs executed on another process exactly as the embedded
//! pool executes them, worker tokens that can only claim and report, routing by labels, drain,
//! split runs over several workers, and nothing lost when the server or the worker restarts.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use troupe_testkit::{RemoteWorker, free_port};

const PLAY: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.ping:
    - ansible.builtin.debug:
        msg: "hello from {{ inventory_hostname }}"
    - ansible.builtin.command: echo done
      changed_when: false
"#;

/// A playbook that waits for the file named by the `release` variable between two tasks (a
/// remote worker runs a copy of the project, so the file lives outside it).
const WAITS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "before {{ inventory_hostname }}"
    - ansible.builtin.wait_for:
        path: "{{ release }}"
        timeout: 120
    - ansible.builtin.debug:
        msg: "after {{ inventory_hostname }}"
"#;

/// A worker token issued through the API.
async fn worker_token(server: &Server) -> anyhow::Result<String> {
    let t = server
        .post("/api/v1/tokens", &json!({"name": "w", "role": "worker"}))
        .await?;
    assert_eq!(t["role"], "worker");
    Ok(t["token"].as_str().unwrap_or_default().to_owned())
}

fn start_worker(
    server: &Server,
    token: &str,
    labels: &[&str],
    capacity: usize,
    dir: &Path,
) -> anyhow::Result<RemoteWorker> {
    RemoteWorker::start(
        Path::new(troupe_bin()),
        &format!("http://{}", server.addr),
        token,
        labels,
        capacity,
        dir,
        &[],
    )
}

/// Waits until `n` live remote workers are registered; their ids.
async fn remote_workers(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = server.get("/api/v1/workers").await?;
        let ids: Vec<String> = list["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["kind"] == "remote" && w["status"] == "active")
            .filter_map(|w| w["id"].as_str().map(str::to_owned))
            .collect();
        if ids.len() >= n {
            return Ok(ids);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} of {n} remote workers registered: {list}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events' counters are 1..=n with no gap and no repeat, and n is the run's event count.
fn assert_counters_exactly_once(run: &Value, events: &[Value]) {
    let counters: Vec<i64> = events
        .iter()
        .filter_map(|e| e["counter"].as_i64())
        .collect();
    let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap_or(0)).collect();
    assert_eq!(counters, expected, "every counter stored once, in order");
    assert_eq!(
        run["event_count"].as_i64(),
        Some(counters.len() as i64),
        "{run}"
    );
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap_or_default(),
                e["event_data"]["host"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_remote_worker_runs_a_playbook_as_the_embedded_pool_does() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", PLAY)])?;
    let server = serve_with(with_project(proj.path()))?;
    let token = worker_token(&server).await?;
    let project = project_name(proj.path());
    let hosts = local_hosts(3);
    // Before any remote worker exists, so the embedded pool runs it (a worker with labels
    // also takes runs that require none).
    let embedded = server
        .create_run(&json!({"project": project, "playbook": "site.yml", "hosts": hosts}))
        .await?;
    server.wait_finished(embedded).await?;
    let wdir = tempfile::tempdir()?;
    let worker = start_worker(&server, &token, &["remote", "eu"], 2, wdir.path())?;
    let ids = remote_workers(&server, 1).await?;
    let remote = server
        .create_run(
            &json!({"project": project, "playbook": "site.yml", "hosts": hosts,
            "worker_labels": ["remote"]}),
        )
        .await?;
    let a = server.wait_finished(embedded).await?;
    let b = server.wait_finished(remote).await?;
    assert_eq!(a["status"], "successful", "{a}");
    assert_eq!(
        b["status"],
        "successful",
        "{b}\n--- worker ---\n{}",
        worker.log()
    );
    assert_eq!(
        b["worker_id"].as_str(),
        Some(ids[0].as_str()),
        "the remote worker ran it"
    );
    assert_ne!(a["worker_id"], b["worker_id"]);
    assert!(b["launched_at"].is_string(), "{b}");
    assert_eq!(a["summary"], b["summary"], "the same per-host results");
    assert_eq!(b["rc"], 0);

    let (ea, eb) = (server.events(embedded).await?, server.events(remote).await?);
    assert_counters_exactly_once(&b, &eb);
    let (mut na, mut nb) = (names(&ea), names(&eb));
    na.sort();
    nb.sort();
    assert_eq!(na, nb, "the same events, host by host");
    let stdout = server
        .text(&format!("/api/v1/runs/{remote}/stdout"))
        .await?;
    assert!(stdout.contains("hello from h1"), "{stdout}");
    assert_eq!(
        parse_recap(&stdout),
        parse_recap(
            &server
                .text(&format!("/api/v1/runs/{embedded}/stdout"))
                .await?
        ),
        "the same PLAY RECAP"
    );
    // The project reached the worker as a bundle, checked by its digest; no run directory
    // (with its credentials) is left behind.
    let bundles: Vec<_> = std::fs::read_dir(wdir.path().join("bundles"))?.collect();
    assert_eq!(bundles.len(), 1);
    let runs_dir = wdir.path().join("runs");
    wait_until(
        "the run directory to be removed",
        Duration::from_secs(10),
        || async {
            // The callback plugin's own directory is shared by every run and stays, and so
            // does the list of warm parents.
            Ok(std::fs::read_dir(&runs_dir)?
                .filter_map(Result::ok)
                .all(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with("plugin-") || name == troupe_ansible::PARENTS_FILE
                }))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn worker_tokens_can_only_claim_and_report() -> anyhow::Result<()> {
    let server = serve()?;
    let token = worker_token(&server).await?;
    let http = troupe_http::client()?;
    let call = |method: reqwest::Method, path: &str, bearer: &str, body: Value| {
        let req = http
            .request(method, server.url(path))
            .bearer_auth(bearer)
            .json(&body);
        async move {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    use reqwest::Method as M;
    let cases: Vec<(M, &str, &str, Value, u16)> = vec![
        (M::GET, "/api/v1/runs", &token, Value::Null, 403),
        (M::POST, "/api/v1/runs", &token, json!({}), 403),
        (M::GET, "/api/v1/workers", &token, Value::Null, 403),
        (M::POST, "/api/v1/tokens", &token, json!({"name": "x"}), 403),
        (M::GET, "/api/v1/credentials", &token, Value::Null, 403),
        (M::PUT, "/api/v1/rules", &token, json!({}), 403),
        (
            M::POST,
            "/api/v1/worker/claim",
            TOKEN,
            json!({"worker_id": "a/b", "max": 1}),
            403,
        ),
        (
            M::POST,
            "/api/v1/worker/claim",
            "trp_nope",
            json!({"worker_id": "a/b", "max": 1}),
            401,
        ),
        (
            M::POST,
            "/api/v1/worker/register",
            &token,
            json!({"node": "a/b", "name": "n", "capacity": 1, "version": "0"}),
            422,
        ),
        (
            M::POST,
            "/api/v1/worker/register",
            &token,
            json!({"node": "n1", "name": "n", "labels": ["no spaces"], "capacity": 1, "version": "0"}),
            422,
        ),
        (
            M::POST,
            "/api/v1/worker/register",
            &token,
            json!({"node": "n1", "name": "n", "capacity": 0, "version": "0"}),
            422,
        ),
        (
            M::POST,
            "/api/v1/worker/claim",
            &token,
            json!({"worker_id": "ghost/1", "max": 1}),
            404,
        ),
        (
            M::GET,
            "/api/v1/worker/runs/1/plan?worker_id=ghost%2F1",
            &token,
            Value::Null,
            404,
        ),
    ];
    for (method, path, bearer, body, want) in cases {
        let (status, answer) = call(method.clone(), path, bearer, body).await?;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"].is_string(),
            "{method} {path}: {answer}"
        );
    }
    // Registered, the worker's token claims; with nothing queued, nothing comes.
    let (status, registered) = call(
        M::POST,
        "/api/v1/worker/register",
        &token,
        json!({"node": "n1", "name": "n", "capacity": 1, "version": "0"}),
    )
    .await?;
    assert_eq!(status, 200, "{registered}");
    let id = registered["worker_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(id.starts_with("n1/"), "{registered}");
    let (status, claimed) = call(
        M::POST,
        "/api/v1/worker/claim",
        &token,
        json!({"worker_id": id, "max": 4, "wait_ms": 100}),
    )
    .await?;
    assert_eq!((status, claimed["runs"].clone()), (200, json!([])));
    Ok(())
}

#[tokio::test]
async fn runs_go_only_to_workers_with_their_labels_and_say_why_they_wait() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", PLAY)])?;
    let server = serve_with(with_project(proj.path()))?;
    let project = project_name(proj.path());
    let token = worker_token(&server).await?;
    let launch = |labels: Value| {
        let body = json!({"project": project, "playbook": "site.yml", "hosts": local_hosts(1),
            "worker_labels": labels});
        let server = &server;
        async move { server.create_run(&body).await }
    };
    let gpu = launch(json!(["gpu"])).await?;
    let placement = server.get(&format!("/api/v1/runs/{gpu}/placement")).await?;
    assert_eq!(placement["status"], "queued");
    assert_eq!(
        placement["reason"], "no live worker has the labels gpu",
        "{placement}"
    );
    assert_eq!(placement["able_workers"], json!([]));

    let wdir = tempfile::tempdir()?;
    let worker = start_worker(&server, &token, &["gpu", "eu"], 1, wdir.path())?;
    let ids = remote_workers(&server, 1).await?;
    let run = server.wait_finished(gpu).await?;
    assert_eq!(run["status"], "successful", "{run}\n{}", worker.log());
    assert_eq!(run["worker_id"].as_str(), Some(ids[0].as_str()));

    // A label the worker lacks: queued, and the answer says so.
    let us = launch(json!(["gpu", "us"])).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let placement = server.get(&format!("/api/v1/runs/{us}/placement")).await?;
    assert_eq!(placement["status"], "queued", "{placement}");
    assert_eq!(placement["reason"], "no live worker has the labels gpu,us");

    // Drained through the CLI: it claims no more, and the list and the placement say so.
    let out = std::process::Command::new(troupe_bin())
        .args(["workers", "drain", &ids[0]])
        .env("TROUPE_SERVER", format!("http://{}", server.addr))
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the worker to see its drain",
        Duration::from_secs(30),
        || async {
            let list = server.get("/api/v1/workers").await?;
            Ok(list["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["id"] == ids[0].as_str() && w["status"] == "draining"))
        },
    )
    .await?;
    let again = launch(json!(["gpu"])).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let placement = server
        .get(&format!("/api/v1/runs/{again}/placement"))
        .await?;
    assert_eq!(
        placement["status"], "queued",
        "a draining worker claims nothing"
    );
    assert_eq!(
        placement["reason"],
        "every live worker with the labels gpu is draining"
    );
    let listed = std::process::Command::new(troupe_bin())
        .args(["workers", "list"])
        .env("TROUPE_SERVER", format!("http://{}", server.addr))
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&ids[0]) && listed.contains("draining"),
        "{listed}"
    );
    assert!(listed.contains("embedded"), "{listed}");
    Ok(())
}

#[tokio::test]
async fn a_split_run_spreads_its_slices_over_workers() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", WAITS)])?;
    let server = serve_with(with_project(proj.path()))?;
    let token = worker_token(&server).await?;
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let _workers = dirs
        .iter()
        .map(|d| start_worker(&server, &token, &["fleet"], 1, d.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    remote_workers(&server, 3).await?;
    let scratch = tempfile::tempdir()?;
    let release = scratch.path().join("release").display().to_string();
    let parent = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(60), "forks": 20, "slices": 3, "worker_labels": ["fleet"],
            "extra_vars": {"release": release}}),
        )
        .await?;
    // All three slices running at once, each on its own worker.
    wait_until(
        "three slices running on three workers",
        Duration::from_secs(90),
        || async {
            let runs = server
                .get(&format!("/api/v1/runs?parent={parent}&limit=10"))
                .await?;
            let holders: BTreeSet<String> = runs["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["status"] == "running")
                .filter_map(|r| r["worker_id"].as_str().map(str::to_owned))
                .collect();
            Ok(holders.len() == 3 && holders.iter().all(|w| !w.is_empty()))
        },
    )
    .await?;
    std::fs::write(&release, "go")?;
    let run = server.wait_finished(parent).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let summary = run["summary"].as_object().cloned().unwrap_or_default();
    assert_eq!(summary.len(), 60, "every host in the parent's summary");
    let events = server.events(parent).await?;
    assert_counters_exactly_once(&run, &events);
    let after = events
        .iter()
        .filter(|e| e["event"] == "runner_on_ok")
        .filter(|e| {
            e["event_data"]["res"]["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("after "))
        })
        .count();
    assert_eq!(
        after, 60,
        "the last task on every host, gathered from three workers"
    );
    Ok(())
}

#[tokio::test]
async fn server_restarts_mid_run_lose_no_event_of_a_remote_worker() -> anyhow::Result<()> {
    // 2 hosts x 1,000 loop items: over 2,000 events, sent while the server restarts five times.
    let play = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "item {{ item }}"
      loop: "{{ range(0, 1000) | list }}"
      loop_control:
        pause: 0.004
"#;
    let proj = named_project(&[("site.yml", play)])?;
    let data = tempfile::tempdir()?;
    let listen = free_port()?;
    let opts = || ServerOpts {
        data_dir: Some(data.path().join("server")),
        listen: Some(listen),
        ..with_project(proj.path())
    };
    let mut server = serve_with(opts())?;
    let token = worker_token(&server).await?;
    let wdir = tempfile::tempdir()?;
    let worker = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    remote_workers(&server, 1).await?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(2), "worker_labels": ["remote"]}),
        )
        .await?;
    for round in 1..=5_i64 {
        wait_until(
            "the run to make progress",
            Duration::from_secs(120),
            || async {
                let run = server.get(&format!("/api/v1/runs/{id}")).await?;
                Ok(run["event_count"].as_i64().unwrap_or(0) >= round * 250
                    || troupe_testkit::is_finished(run["status"].as_str().unwrap_or("")))
            },
        )
        .await?;
        if round % 2 == 0 {
            server.kill9();
        } else {
            server.terminate()?;
        }
        drop(server);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = serve_with(opts())?;
    }
    let run = server.wait_finished(id).await?;
    assert_eq!(
        run["status"],
        "successful",
        "{run}\n--- worker ---\n{}",
        worker.log()
    );
    let events = server.events(id).await?;
    assert_counters_exactly_once(&run, &events);
    let items = events
        .iter()
        .filter(|e| e["event"] == "runner_item_on_ok")
        .count();
    assert_eq!(items, 2000, "every loop item of both hosts, once");
    assert!(events.len() > 2000);
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_mid_run_and_restarted_loses_nothing_it_buffered() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", WAITS)])?;
    let server = serve_with(with_project(proj.path()))?;
    let token = worker_token(&server).await?;
    let wdir = tempfile::tempdir()?;
    let mut worker = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    remote_workers(&server, 1).await?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(3), "worker_labels": ["remote"],
            "extra_vars": {"release": "/nonexistent/release"}}),
        )
        .await?;
    // Every host has done the first task: ansible now waits for the release file.
    wait_until(
        "the first task on every host",
        Duration::from_secs(60),
        || async {
            let events = server.events(id).await?;
            Ok(events
                .iter()
                .filter(|e| e["event"] == "runner_on_ok")
                .count()
                >= 3)
        },
    )
    .await?;
    // The run's processes carry its marker: the task waiting on every host (a forked
    // ansible-playbook has its warm parent's environment in /proc, the tasks it starts the
    // run's own), so the kill below interrupts a run in progress.
    let runs_dir = wdir.path().join("runs");
    wait_until(
        "ansible's processes for the run",
        Duration::from_secs(30),
        || async { Ok(!processes_of_runs_under(&runs_dir).is_empty()) },
    )
    .await?;
    worker.kill9();
    drop(worker);
    let _again = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("worker lost") && r.contains("restarted")),
        "{run}"
    );
    let events = server.events(id).await?;
    assert_counters_exactly_once(&run, &events);
    // The restarted worker killed what its previous start left running.
    let left = processes_of_runs_under(&runs_dir);
    assert!(left.is_empty(), "processes left: {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_its_runs() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", WAITS)])?;
    let server = serve_with(ServerOpts {
        extra_env: vec![("TROUPE_LEASE_S".into(), "3".into())],
        ..with_project(proj.path())
    })?;
    let token = worker_token(&server).await?;
    let wdir = tempfile::tempdir()?;
    let mut worker = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    let ids = remote_workers(&server, 1).await?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(1), "worker_labels": ["remote"],
            "extra_vars": {"release": "/nonexistent/release"}}),
        )
        .await?;
    wait_until("ansible to start", Duration::from_secs(60), || async {
        Ok(server.get(&format!("/api/v1/runs/{id}")).await?["launched_at"].is_string())
    })
    .await?;
    worker.kill9();
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run["status_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("worker lost")),
        "{run}"
    );
    // The worker is lost once its heartbeat is older than the lease: the run's own lease may
    // have run out a little before.
    let status = || async {
        let list = server.get("/api/v1/workers").await?;
        let w = list["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["id"] == ids[0].as_str())
            .cloned()
            .unwrap_or_default();
        anyhow::Ok(w["status"].clone())
    };
    wait_until("the worker to be lost", Duration::from_secs(15), || async {
        Ok(status().await? == "lost")
    })
    .await?;
    // Its ansible-playbook was left behind by the kill; a new start of the worker reaps it.
    let _again = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    let runs_dir = wdir.path().join("runs");
    wait_until(
        "leftover processes to be reaped",
        Duration::from_secs(30),
        || async { Ok(processes_of_runs_under(&runs_dir).is_empty()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_run_whose_worker_died_before_ansible_started_is_queued_again() -> anyhow::Result<()> {
    let proj = named_project(&[("site.yml", PLAY)])?;
    let server = serve_with(ServerOpts {
        extra_env: vec![("TROUPE_LEASE_S".into(), "3".into())],
        ..with_project(proj.path())
    })?;
    let token = worker_token(&server).await?;
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(2), "worker_labels": ["x"]}),
        )
        .await?;
    // A worker that claims the run through the protocol and dies before starting ansible.
    let http = troupe_http::client()?;
    let post = |path: &str, body: Value| {
        let req = http.post(server.url(path)).bearer_auth(&token).json(&body);
        async move {
            anyhow::Ok(
                req.send()
                    .await?
                    .error_for_status()?
                    .json::<Value>()
                    .await?,
            )
        }
    };
    let reg = post(
        "/api/v1/worker/register",
        json!({"node": "doomed", "name": "doomed", "labels": ["x"], "capacity": 1, "version": "0"}),
    )
    .await?;
    let claimed = post(
        "/api/v1/worker/claim",
        json!({"worker_id": reg["worker_id"], "max": 1, "wait_ms": 5000}),
    )
    .await?;
    assert_eq!(claimed["runs"][0]["id"].as_i64(), Some(id), "{claimed}");
    assert_eq!(
        server.get(&format!("/api/v1/runs/{id}")).await?["status"],
        "running"
    );
    // Its lease runs out: the run is queued again, not failed, and the next worker runs it.
    server
        .wait_run(id, Duration::from_secs(60), |s| s == "queued")
        .await?;
    let wdir = tempfile::tempdir()?;
    let worker = start_worker(&server, &token, &["x"], 1, wdir.path())?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}\n{}", worker.log());
    assert_ne!(run["worker_id"], reg["worker_id"]);
    Ok(())
}

/// Two replicas on one PostgreSQL database and three remote workers, two talking to replica A
/// and one to replica B: each worker takes a run, and a client on either replica follows live,
/// every event once, the run a worker reports through the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgresql_share_remote_workers_and_their_streams() -> anyhow::Result<()> {
    let play = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.wait_for:
        path: "{{ release }}"
        timeout: 120
    - ansible.builtin.debug:
        msg: "item {{ item }}"
      loop: "{{ range(0, 30) | list }}"
"#;
    let url = crate::replicas::database().await?;
    let proj = named_project(&[("site.yml", play)])?;
    let tmp = tempfile::tempdir()?;
    let a = serve_with(crate::replicas::replica(
        &tmp.path().join("a"),
        &url,
        proj.path(),
        &[],
    ))?;
    // Issued before replica B starts: a replica loads the tokens when it starts.
    let token = worker_token(&a).await?;
    let b = serve_with(crate::replicas::replica(
        &tmp.path().join("b"),
        &url,
        proj.path(),
        &[],
    ))?;
    let dirs = [
        tmp.path().join("w1"),
        tmp.path().join("w2"),
        tmp.path().join("w3"),
    ];
    let servers = [&a, &a, &b];
    let workers = dirs
        .iter()
        .zip(servers)
        .map(|(d, s)| start_worker(s, &token, &["pg"], 1, d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Err(e) = remote_workers(&b, 3).await {
        let logs: Vec<String> = workers.iter().map(RemoteWorker::log).collect();
        anyhow::bail!("{e}\n--- workers ---\n{}", logs.join("\n---\n"));
    }
    let release = tmp.path().join("release").display().to_string();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(
            b.create_run(
                &json!({"project": project_name(proj.path()), "playbook": "site.yml",
                "hosts": local_hosts(1), "worker_labels": ["pg"],
                "extra_vars": {"release": release}}),
            )
            .await?,
        );
    }
    // Each worker holds one run: which replica each run's reports go through is known by the
    // node id in its worker's data dir.
    let node_of = |dir: &Path| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(dir.join("node-id"))?
            .trim()
            .to_owned())
    };
    let via_b = node_of(&dirs[2])?;
    let mut holders = Vec::new();
    wait_until("every run claimed", Duration::from_secs(60), || async {
        let mut held = Vec::new();
        for id in &runs {
            let run = a.get(&format!("/api/v1/runs/{id}")).await?;
            if let Some(w) = run["worker_id"].as_str() {
                held.push((*id, w.to_owned()));
            }
        }
        let distinct: BTreeSet<&String> = held.iter().map(|(_, w)| w).collect();
        Ok(held.len() == 3 && distinct.len() == 3)
    })
    .await?;
    for id in &runs {
        let run = a.get(&format!("/api/v1/runs/{id}")).await?;
        holders.push((
            *id,
            run["worker_id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let (on_b, _) = holders
        .iter()
        .find(|(_, w)| w.starts_with(&format!("{via_b}/")))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no run on the worker of replica B: {holders:?}"))?;
    let (on_a, _) = holders
        .iter()
        .find(|(_, w)| !w.starts_with(&format!("{via_b}/")))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no run on a worker of replica A: {holders:?}"))?;
    // Followed on the other replica than the one its worker reports to.
    let follow_a = crate::replicas::follow_ws(&a, on_b);
    let follow_b = crate::replicas::follow_ws(&b, on_a);
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(&release, "go")
    };
    let (seen_a, seen_b, released) = tokio::join!(follow_a, follow_b, release_later);
    released?;
    for ((counters, end), id) in [(seen_a?, on_b), (seen_b?, on_a)] {
        let run = a.wait_finished(id).await?;
        assert_eq!(run["status"], "successful", "{run}");
        let total = run["event_count"].as_i64().unwrap_or(0);
        assert!(total > 30, "{run}");
        assert_eq!(
            counters,
            (1..=total).collect::<Vec<_>>(),
            "run {id}: every event once, in order"
        );
        assert_eq!(end["status"], "successful");
    }
    for id in &runs {
        assert_eq!(a.wait_finished(*id).await?["status"], "successful");
    }
    Ok(())
}

/// A run's credentials reach the remote worker for that run only: the run sees them, and
/// nothing of them is left in the worker's data dir afterwards.
#[tokio::test]
async fn a_remote_run_gets_its_credentials_and_the_worker_keeps_none() -> anyhow::Result<()> {
    let play = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.assert:
        that: lookup('env', 'API_KEY') | hash('sha256') == expected
"#;
    let proj = named_project(&[("site.yml", play)])?;
    let server = serve_with(with_project(proj.path()))?;
    let token = worker_token(&server).await?;
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    server
        .post(
            "/api/v1/credentials",
            &json!({"name": "api-env", "kind": "env", "vars": {"API_KEY": secret}}),
        )
        .await?;
    let wdir = tempfile::tempdir()?;
    let worker = start_worker(&server, &token, &["remote"], 1, wdir.path())?;
    remote_workers(&server, 1).await?;
    use sha2::Digest;
    let expected = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let id = server
        .create_run(
            &json!({"project": project_name(proj.path()), "playbook": "site.yml",
            "hosts": local_hosts(1), "worker_labels": ["remote"], "credentials": ["api-env"],
            "extra_vars": {"expected": expected}}),
        )
        .await?;
    let run = server.wait_finished(id).await?;
    assert_eq!(run["status"], "successful", "{run}\n{}", worker.log());
    worker.stop(Duration::from_secs(30))?;
    let mut found = Vec::new();
    for entry in walk(wdir.path())? {
        if std::fs::read(&entry)?
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
        {
            found.push(entry);
        }
    }
    assert!(
        found.is_empty(),
        "the secret is on the worker's disk: {found:?}"
    );
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}
