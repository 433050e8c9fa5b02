//! 1: the same playbook run by bare ansible-playbook (A), ansible-runner (B), troupe exec'ing
//! ansible-playbook (C) and troupe forking it from a warm parent (D), interleaved, each
//! repetition in the next of eight orders (the four rotations of A B C D, and of D C B A).

use super::{local_hosts, write_files};
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::{Server, ServerOpts, ms_between};
use crate::stats::Summary;
use LauncherKind::{Exec, Warm};
use anyhow::{Context, bail};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use troupe_wire::runs::{CreateRun, LauncherKind, RunStatus};

/// The eight orders of bare (0), ansible-runner (1), troupe exec (2) and troupe warm (3), taken
/// in turn: each comes right after each of the others as often.
const ORDERS: [[usize; 4]; 8] = [
    [0, 1, 2, 3],
    [1, 2, 3, 0],
    [2, 3, 0, 1],
    [3, 0, 1, 2],
    [3, 2, 1, 0],
    [2, 1, 0, 3],
    [1, 0, 3, 2],
    [0, 3, 2, 1],
];

const BIG: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n    - ansible.builtin.set_fact:\n        x: \"{{ inventory_hostname }}\"\n    - ansible.builtin.debug:\n        msg: \"hello {{ x }}\"\n    - ansible.builtin.command: /bin/true\n      changed_when: false\n";
const TRIVIAL: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let title = "1 overhead";
    let Some(ansible) = ctx.ansible_playbook.clone() else {
        ctx.push(Metric::skipped(title, "ansible-playbook is not on PATH"));
        return Ok(());
    };
    let project = ctx.dir("overhead-project")?;
    let big_hosts = if ctx.quick { 10 } else { 50 };
    write_files(
        &project,
        &[
            ("big.yml", BIG),
            ("trivial.yml", TRIVIAL),
            ("big.ini", &local_hosts(big_hosts)),
            ("trivial.ini", &local_hosts(1)),
            ("twenty.ini", &local_hosts(20)),
        ],
    )?;
    let server = Server::start(&ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("overhead-data")?,
        database_url: None,
        max_concurrent_runs: 4,
        ansible_playbook: Some(ansible.clone()),
    })?;
    let pid = server.project(&project).await?;
    let runner = ctx.ansible_runner.clone();

    let cases = [
        (
            "trivial",
            "trivial.yml",
            "trivial.ini",
            1usize,
            // Half a second a run, each ±15 % on this machine: 30 repetitions (five of each
            // order) take a minute and bring the median's own spread near the 2 % it is
            // compared with.
            if ctx.quick { 2 } else { 30 },
        ),
        // The warm launcher's case: what importing ansible costs is a part of each host's
        // share of the run.
        ("twenty", "trivial.yml", "twenty.ini", 20, 8),
        // The ratio is within a few percent of 1, so the long case needs more than the
        // default repetitions to be read through this machine's noise: 6, so that each of the
        // three orders comes twice.
        (
            "big",
            "big.yml",
            "big.ini",
            big_hosts,
            if ctx.quick { ctx.reps } else { ctx.reps.max(6) },
        ),
    ];
    let mut details = serde_json::Map::new();
    // The quick run (the smoke test) keeps to the 1-host and the long case.
    let quick = ctx.quick;
    let cases = cases
        .into_iter()
        .filter(move |(case, ..)| !(quick && *case == "twenty"));
    for (case, playbook, inventory, hosts, reps) in cases {
        let label = match case {
            "big" => format!("{hosts} hosts × 4 tasks"),
            "twenty" => format!("{hosts} hosts × 1 task"),
            _ => "1 host × 1 task".to_owned(),
        };
        println!("  {label}: warm-up, then {reps} × (bare, runner, troupe, troupe warm)");
        let hosts_text = std::fs::read_to_string(project.join(inventory))?;
        // troupe's own timestamps time its runs, so polling faster would not make them more
        // exact; it would only take CPU from the ansible being timed (20 GETs a second over the
        // 50-host run doubled troupe's CPU during it).
        let poll = Duration::from_millis(if hosts > 1 { 500 } else { 50 });
        let mut bare = Vec::new();
        let mut run = Vec::new();
        let mut tr = Vec::new();
        let mut warm = Vec::new();
        for rep in 0..=reps {
            // Interleaved, each repetition in the next of the six orders. In a fixed order, or
            // in rotations of one (A B C, B C A, C A B: troupe after ansible-runner twice in
            // three), whatever one run leaves behind (dirty pages being written back, caches,
            // CPU frequency) falls on the same next one; over the six orders each comes after
            // each of the others equally often. And the disk is synced before every run.
            let (mut a, mut b, mut c, mut d) = (0.0, None, 0.0, 0.0);
            for which in ORDERS[rep % ORDERS.len()] {
                sync_disks();
                match which {
                    0 => a = bare_run(&ansible, &project, playbook, inventory).await?,
                    1 => {
                        if let Some(r) = &runner {
                            b = Some(runner_run(r, ctx, &project, playbook, inventory).await?);
                        }
                    }
                    2 => c = troupe_run(&server, pid, playbook, &hosts_text, poll, Exec).await?,
                    _ => d = troupe_run(&server, pid, playbook, &hosts_text, poll, Warm).await?,
                }
            }
            if rep == 0 {
                continue; // warm-up
            }
            println!(
                "    rep {rep}: bare {a:.0} ms, runner {} ms, troupe {c:.0} ms, warm {d:.0} ms",
                b.map(|b| format!("{b:.0}")).unwrap_or_else(|| "-".into())
            );
            bare.push(a);
            if let Some(b) = b {
                run.push(b);
            }
            tr.push(c);
            warm.push(d);
        }
        let s = |v: &[f64]| Summary::of(v).context("no samples");
        let ratio = |x: &[f64]| -> Vec<f64> { x.iter().zip(&bare).map(|(x, a)| x / a).collect() };
        let scen = format!("{title} ({label})");
        ctx.push(Metric::summary(
            &scen,
            "bare ansible-playbook s",
            &s(&bare)?.scaled(0.001),
        ));
        if !run.is_empty() {
            ctx.push(Metric::summary(
                &scen,
                "ansible-runner s",
                &s(&run)?.scaled(0.001),
            ));
        }
        ctx.push(Metric::summary(&scen, "troupe s", &s(&tr)?.scaled(0.001)));
        ctx.push(Metric::summary(
            &scen,
            "troupe warm s",
            &s(&warm)?.scaled(0.001),
        ));
        if !run.is_empty() {
            ctx.push(Metric::summary(&scen, "runner/bare", &s(&ratio(&run))?));
        } else {
            ctx.push(Metric::skipped(
                &scen,
                "ansible-runner is not on PATH: no runner/bare ratio",
            ));
        }
        ctx.push(
            Metric::summary(&scen, "troupe/bare", &s(&ratio(&tr))?)
                .target(Target::AtMost(1.02))
                .note("median of per-repetition ratios"),
        );
        // Forking from a parent that imported ansible saves the import: at most half the wall
        // time of a bare run for one host and one task.
        let warm_ratio = Metric::summary(&scen, "troupe warm/bare", &s(&ratio(&warm))?)
            .note("median of per-repetition ratios");
        ctx.push(if case == "trivial" {
            warm_ratio.target(Target::AtMost(0.5))
        } else {
            warm_ratio
        });
        details.insert(
            case.to_owned(),
            json!({"hosts": hosts, "bare_ms": bare, "runner_ms": run, "troupe_ms": tr,
                   "troupe_warm_ms": warm}),
        );
    }
    ctx.details.insert("overhead".into(), details.into());
    server.stop()?;
    Ok(())
}

/// Writes dirty pages back before a timed run, so none is left over from the previous one.
fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

async fn timed(mut cmd: tokio::process::Command, what: &str) -> anyhow::Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let t = Instant::now();
    let status = cmd
        .status()
        .await
        .with_context(|| format!("starting {what}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(ms)
}

async fn bare_run(
    ansible: &Path,
    project: &Path,
    playbook: &str,
    inventory: &str,
) -> anyhow::Result<f64> {
    let mut cmd = tokio::process::Command::new(ansible);
    cmd.args(["-i", inventory, playbook]).current_dir(project);
    timed(cmd, "ansible-playbook").await
}

async fn runner_run(
    runner: &Path,
    ctx: &Ctx,
    project: &Path,
    playbook: &str,
    inventory: &str,
) -> anyhow::Result<f64> {
    // A fresh private data dir each time, as a service would use (set up outside the timing).
    let pdd = ctx.dir("runner-pdd")?;
    std::fs::create_dir_all(pdd.join("project"))?;
    std::fs::create_dir_all(pdd.join("inventory"))?;
    std::fs::copy(project.join(playbook), pdd.join("project").join(playbook))?;
    std::fs::copy(project.join(inventory), pdd.join("inventory").join("hosts"))?;
    let mut cmd = tokio::process::Command::new(runner);
    cmd.arg("run").arg(&pdd).args(["-p", playbook]);
    timed(cmd, "ansible-runner").await
}

/// Wall time from troupe's own `created_at` to `finished_at`, so the polling is not counted.
async fn troupe_run(
    server: &Server,
    project: i64,
    playbook: &str,
    hosts: &str,
    poll: Duration,
    launcher: LauncherKind,
) -> anyhow::Result<f64> {
    let mut body = CreateRun::new(project, playbook);
    body.hosts = Some(hosts.to_owned());
    body.launcher = Some(launcher);
    let id = run_api::launch(server, &body).await?;
    let run = run_api::wait_finished(server, id, poll, Duration::from_secs(900)).await?;
    if run.status != RunStatus::Successful {
        bail!(
            "troupe run {id} ended {}: {}",
            run.status,
            run.status_reason.as_deref().unwrap_or("no reason given")
        );
    }
    let Some(f) = run.finished_at else {
        bail!("run {id} has no finished_at: {run:?}");
    };
    Ok(ms_between(run.created_at, f))
}
