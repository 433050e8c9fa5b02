//! 5: requests/s and p99 of `GET /api/v1/runs/{id}` and the runs list, from a separate load
//! generator process, pinned apart from troupe and not.

use super::{SYNTHETIC_PLAYBOOK, write_files};
use crate::ctx::{Ctx, on_path};
use crate::loadgen::LoadResult;
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::{Server, ServerOpts, TOKEN};
use anyhow::{Context, bail};
use serde_json::json;
use std::time::Duration;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "5 api";
    let project = ctx.dir("api-project")?;
    write_files(&project, &[("noop.yml", SYNTHETIC_PLAYBOOK)])?;
    let noop = crate::producer::write_noop(ctx.tmp.path())?;
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("api-data")?,
        database_url: None,
        max_concurrent_runs: 16,
        ansible_playbook: Some(noop),
    })?;
    let pid = server.project(&project).await?;
    let mut run = run_api::on_localhost(pid, "noop.yml");
    run.labels.insert("team".into(), "bench".into());
    // Serialized once: the runs started under load are sent as fast as troupe takes them.
    let run_body = run_api::body(&run)?;
    let mut last = 0;
    for _ in 0..200 {
        last = server.launch(&run_body).await?;
    }
    server
        .wait_finished(last, Duration::from_millis(50), Duration::from_secs(120))
        .await?;
    let (warmup, duration) = if ctx.quick { (0.5, 2.0) } else { (1.0, 5.0) };
    let taskset = on_path("taskset");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut modes = vec![Mode {
        name: "shared",
        pin: None,
        busy: false,
    }];
    if taskset.is_some() && cpus >= 2 {
        let rest = if cpus == 2 {
            "1".to_owned()
        } else {
            format!("1-{}", cpus - 1)
        };
        let pin = Some(("0", rest));
        modes.insert(
            0,
            Mode {
                name: "pinned",
                pin: pin.clone(),
                busy: false,
            },
        );
        modes.push(Mode {
            name: "pinned, runs starting",
            pin,
            busy: true,
        });
    } else {
        println!(
            "  no pinning: {}",
            if taskset.is_none() {
                "taskset not found"
            } else {
                "one CPU"
            }
        );
        modes.push(Mode {
            name: "shared, runs starting",
            pin: None,
            busy: true,
        });
    }
    let mut details = Vec::new();
    for (path, what) in [
        (format!("/api/v1/runs/{last}"), "GET /runs/{id}"),
        ("/api/v1/runs?limit=50".to_owned(), "GET /runs?limit=50"),
    ] {
        for Mode {
            name: mode,
            pin,
            busy,
        } in &modes
        {
            let pinning = match pin {
                Some((troupe_cpu, gen_cpus)) => {
                    set_affinity(server.pid(), troupe_cpu)?;
                    format!("troupe on CPU {troupe_cpu}, load generator on CPU {gen_cpus}")
                }
                None => {
                    set_affinity(server.pid(), &format!("0-{}", cpus - 1)).ok();
                    "no pinning: troupe and the load generator share all CPUs".to_owned()
                }
            };
            println!("  {what} ({mode}): {pinning}");
            let mut cmd = match pin {
                Some((_, gen_cpus)) => {
                    let mut c = tokio::process::Command::new("taskset");
                    c.args(["-c", gen_cpus]).arg(&ctx.exe);
                    c
                }
                None => tokio::process::Command::new(&ctx.exe),
            };
            cmd.args([
                "loadgen",
                "--addr",
                &server.addr,
                "--path",
                &path,
                "--token",
                TOKEN,
            ])
            .args(["--connections", "64"])
            .args([
                "--warmup-s",
                &warmup.to_string(),
                "--duration-s",
                &duration.to_string(),
            ]);
            // Busy: runs start all along (each moves the runs generation several times as it
            // is created, claimed, launched and finished), so answers are read from the store
            // again and again instead of being sent as kept.
            let mut started = 0u32;
            let out = if *busy {
                let starting = async {
                    let mut tick = tokio::time::interval(BUSY_EVERY);
                    loop {
                        tick.tick().await;
                        server.launch(&run_body).await?;
                        started += 1;
                    }
                };
                tokio::select! {
                    out = cmd.output() => out,
                    failed = starting => return failed,
                }
            } else {
                cmd.output().await
            }
            .context("running the load generator")?;
            if !out.status.success() {
                bail!(
                    "load generator failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let r: LoadResult =
                serde_json::from_slice(&out.stdout).context("load generator output")?;
            let scen = format!("{title} ({what}, {mode})");
            let mut note = pinning.clone();
            if *busy {
                note.push_str(&format!(
                    "; a run started every {} ms meanwhile ({started} in all)",
                    BUSY_EVERY.as_millis()
                ));
            }
            if r.errors > 0 {
                note.push_str(&format!("; {} errors", r.errors));
            }
            // The target is for the API under the load generator's load; the busy mode also
            // launches runs on troupe's CPU, and is there to show the answers read again.
            let rps = Metric::value(&scen, "req/s", r.rps).note(note);
            ctx.push(if *busy {
                rps
            } else {
                rps.target(Target::AtLeast(20_000.0))
            });
            ctx.push(
                Metric::value(&scen, "p99 ms", r.p99_ms)
                    .note(format!("p50 {:.2} ms, 64 connections", r.p50_ms)),
            );
            details.push(json!({"endpoint": what, "mode": mode, "pinning": pinning, "runs_started": started, "result": r}));
        }
    }
    set_affinity(server.pid(), &format!("0-{}", cpus - 1)).ok();
    ctx.details.insert("api".into(), json!(details));
    server.stop()?;
    Ok(())
}

/// How often a run starts in the busy modes.
const BUSY_EVERY: Duration = Duration::from_millis(10);

/// How the load runs: troupe pinned apart from the load generator or not, and whether runs
/// start meanwhile.
struct Mode {
    name: &'static str,
    /// (troupe's CPU, the load generator's CPUs).
    pin: Option<(&'static str, String)>,
    busy: bool,
}

/// Pins every thread of a process to `cpus` (a taskset list).
fn set_affinity(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("taskset -a -p -c {cpus} {pid} failed");
    }
    Ok(())
}
