//! 12: event-driven automation: webhook events, each matched by a rule that runs a 1-task local
//! playbook (the real ansible-playbook), turned into finished runs per second; troupe with each
//! launcher asked for (`--launchers`), and ansible-rulebook running the same playbook per event
//! from a webhook source, on this machine, side by side.

use crate::ctx::Ctx;
use crate::report::Metric;
use crate::server::{Server, ServerOpts};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TITLE: &str = "13 eventdriven";

/// The playbook both run for each event: one task, touching the file the event names.
const PLAYBOOK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.file:\n        path: \"{{ mark }}\"\n        state: touch\n";

const RULES: &str = r#"
sources:
  bench: {type: webhook, rate: {per_second: 0}}
rules:
  - name: touch
    routing_keys: ["touch"]
    action: {project: eventdriven, playbook: touch.yml}
"#;

/// Runs at once in troupe, and POSTs in flight, for both.
const SLOTS: usize = 8;
const IN_FLIGHT: usize = 8;

/// ansible-rulebook's own event source: every POSTed JSON body becomes one event. (The
/// `ansible.eda.webhook` source ships in a Galaxy collection this machine cannot fetch; this is
/// what it does, without its options.)
const WEBHOOK_SOURCE: &str = r#"import asyncio

from aiohttp import web


async def main(queue, args):
    async def handle(request):
        await queue.put({"payload": await request.json()})
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{path:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.get("host", "127.0.0.1"), int(args["port"])).start()
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()
"#;

const INVENTORY: &str = "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let events = if ctx.quick { 8 } else { 40 };
    if ctx.ansible_playbook.is_none() {
        ctx.push(Metric::skipped(TITLE, "ansible-playbook is not on PATH"));
        return Ok(());
    }
    let project = ctx.dir("eventdriven-project")?;
    std::fs::write(project.join("touch.yml"), PLAYBOOK)?;
    for launcher in ctx.launchers.clone() {
        let marks = ctx.dir(&format!("eventdriven-marks-{launcher}"))?;
        let rate = troupe(ctx, &launcher, &project, &marks, events).await?;
        ctx.push(
            Metric::value(TITLE, &format!("troupe ({launcher}) events/s"), rate).note(format!(
                "{events} webhook events -> finished 1-task runs of the real ansible-playbook, \
                 {SLOTS} runs at once, {IN_FLIGHT} POSTs in flight: first POST -> last run \
                 finished"
            )),
        );
    }
    let marks = ctx.dir("eventdriven-marks-rulebook")?;
    match rulebook(ctx, &project, &marks, events).await {
        Ok(rate) => ctx.push(
            Metric::value(TITLE, "ansible-rulebook events/s", rate).note(format!(
                "{events} events from a webhook source, run_playbook per event \
                 (execution_strategy: parallel): first POST -> last event's task done \
                 (its file touched; the playbook's recap follows)"
            )),
        ),
        Err(e) => ctx.push(Metric::skipped(TITLE, &format!("ansible-rulebook: {e:#}"))),
    }
    Ok(())
}

/// troupe with `launcher`: the rule runs the playbook per event; events/s until every run of
/// them finished.
async fn troupe(
    ctx: &Ctx,
    launcher: &str,
    project: &Path,
    marks: &Path,
    events: usize,
) -> anyhow::Result<f64> {
    let opts = ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir(&format!("eventdriven-data-{launcher}"))?,
        database_url: None,
        max_concurrent_runs: SLOTS,
        ansible_playbook: ctx.ansible_playbook.clone(),
    };
    let server = Server::start_with_env(&opts, &[("TROUPE_LAUNCHER", launcher)])?;
    server
        .post(
            "/api/v1/projects",
            &json!({"name": "eventdriven", "source": {"type": "dir", "path": project}}),
        )
        .await?;
    server.put_rules(RULES).await?;
    let t0 = Instant::now();
    let hook = format!("{}/api/v1/hooks/bench/touch", server.base);
    post_events(
        &server.http,
        &hook,
        Some(crate::server::TOKEN),
        marks,
        events,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = server
            .get(&format!(
                "/api/v1/runs?label=troupe/rule=touch&limit={}",
                events + 1
            ))
            .await?;
        let runs = list["runs"].as_array().context("a runs list")?;
        let finished = runs
            .iter()
            .filter(|r| troupe_testkit::is_finished(r["status"].as_str().unwrap_or_default()))
            .count();
        if let Some(bad) = runs.iter().find(|r| {
            let status = r["status"].as_str().unwrap_or_default();
            troupe_testkit::is_finished(status) && status != "successful"
        }) {
            bail!("a run did not succeed: {bad}");
        }
        if finished >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("{finished} of {events} runs finished after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let touched = std::fs::read_dir(marks)?.count();
    if touched != events {
        bail!("{touched} of {events} files touched");
    }
    Ok(events as f64 / secs)
}

/// Where ansible-rulebook is: `TROUPE_BENCH_RULEBOOK`, else the venv scripts/test makes.
fn rulebook_bin() -> Option<PathBuf> {
    std::env::var_os("TROUPE_BENCH_RULEBOOK")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h).join(".cache/troupe-ci/rulebook-venv/bin/ansible-rulebook")
            })
        })
        .filter(|p| p.is_file())
}

/// ansible-rulebook with the same playbook; events/s until every event's task ran.
async fn rulebook(ctx: &Ctx, project: &Path, marks: &Path, events: usize) -> anyhow::Result<f64> {
    let Some(bin) = rulebook_bin() else {
        bail!(
            "not installed: python3 -m venv ~/.cache/troupe-ci/rulebook-venv && \
             ~/.cache/troupe-ci/rulebook-venv/bin/pip install ansible-rulebook (needs Java 17+), \
             or set TROUPE_BENCH_RULEBOOK"
        );
    };
    let dir = ctx.dir("eventdriven-rulebook")?;
    std::fs::create_dir_all(dir.join("sources"))?;
    std::fs::write(dir.join("sources/webhook.py"), WEBHOOK_SOURCE)?;
    std::fs::write(dir.join("inventory.yml"), INVENTORY)?;
    std::fs::copy(project.join("touch.yml"), dir.join("touch.yml"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        dir.join("rulebook.yml"),
        format!(
            "- name: bench\n  hosts: all\n  execution_strategy: parallel\n  sources:\n    - webhook:\n        host: 127.0.0.1\n        port: {port}\n  rules:\n    - name: touch\n      condition: event.payload.mark is defined\n      action:\n        run_playbook:\n          name: touch.yml\n          extra_vars:\n            mark: \"{{{{ event.payload.mark }}}}\"\n"
        ),
    )?;
    // Its venv's ansible-galaxy and ansible-runner must be on PATH.
    let venv_bin = bin.parent().context("ansible-rulebook's directory")?;
    let path = std::env::join_paths(std::iter::once(venv_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let log = std::fs::File::create(dir.join("rulebook.log"))?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["-r", "rulebook.yml", "-i", "inventory.yml", "-S", "sources"])
        .current_dir(&dir)
        .env("PATH", path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let result = drive_rulebook(&mut child, port, marks, events).await;
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait().await;
    result.map_err(|e| {
        let log = std::fs::read_to_string(dir.join("rulebook.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        e.context(format!("its log ends: {:?}", tail))
    })
}

async fn drive_rulebook(
    child: &mut tokio::process::Child,
    port: u16,
    marks: &Path,
    events: usize,
) -> anyhow::Result<f64> {
    let http = troupe_http::client()?;
    let url = format!("http://127.0.0.1:{port}/hook");
    // Started (the JVM, the rule engine, the source) before anything is timed.
    let ready = Instant::now() + Duration::from_secs(180);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = child.try_wait()? {
            bail!("ansible-rulebook exited before listening: {status}");
        }
        if Instant::now() > ready {
            bail!("ansible-rulebook did not listen within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t0 = Instant::now();
    post_events(&http, &url, None, marks, events).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::fs::read_dir(marks)?.count() < events {
        if let Some(status) = child.try_wait()? {
            bail!("ansible-rulebook exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("not every event's task ran within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(events as f64 / t0.elapsed().as_secs_f64())
}

/// POSTs `events` webhook deliveries to `url` (with `token` when given), [`IN_FLIGHT`] at a
/// time, each naming the file its run touches under `marks`; fails unless each is accepted.
async fn post_events(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    marks: &Path,
    events: usize,
) -> anyhow::Result<()> {
    let sent: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..events)
        .map(|i| {
            let body = json!({"mark": marks.join(format!("event-{i}"))});
            async move {
                let mut req = http.post(url).json(&body);
                if let Some(token) = token {
                    req = req.bearer_auth(token);
                }
                let resp = req.send().await?;
                let status = resp.status();
                if !status.is_success() {
                    bail!(
                        "webhook -> {status}: {}",
                        resp.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    sent.into_iter().collect()
}
