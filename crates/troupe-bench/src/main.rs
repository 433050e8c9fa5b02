//! troupe-bench: measures troupe (the release binary, over HTTP) against bare `ansible-playbook`
//! and `ansible-runner`, and against the targets of the benchmark issue. Prints a table and
//! writes `BENCHMARKS.md` and `benchmarks.json`. Numbers are reported, never asserted.

mod ctx;
mod loadgen;
mod producer;
mod report;
mod run_api;
mod scenarios;
mod server;
mod stats;
mod table;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "troupe-bench",
    about = "Benchmarks troupe against bare ansible-playbook and ansible-runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// CI-sized smoke run: few repetitions, small sizes (under ~2 minutes).
    #[arg(long, global = true)]
    quick: bool,
    /// The troupe binary to measure (default: build and use <workspace>/target/release/troupe).
    #[arg(long, global = true, env = "TROUPE_BENCH_TROUPE")]
    troupe: Option<PathBuf>,
    /// Where BENCHMARKS.md and benchmarks.json go (default: the repository root for a full
    /// `all`, target/troupe-bench/ otherwise, so partial or quick runs never replace the results).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// PostgreSQL server for the ingest scenario; a fresh database is created and dropped.
    #[arg(
        long,
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg: String,
    /// Repetitions of each scenario (default 3, 1 with --quick); scenario 1 repeats the
    /// 50-host comparison at least 6 times and the 1-host one 30 times.
    #[arg(long, global = true)]
    reps: Option<usize>,
    /// troupe's launchers scenario 13 measures, each on a server of its own, named to it as
    /// `TROUPE_LAUNCHER` (`exec`, `warm`).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "exec,warm"
    )]
    launchers: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario.
    All(Common),
    /// 1: wall time vs bare ansible-playbook and ansible-runner.
    Overhead(Common),
    /// 2: POST -> exec latency and runs accepted per second.
    Launch(Common),
    /// 3: events/s and bytes per event on SQLite and PostgreSQL.
    Ingest(Common),
    /// 4: 100 WebSocket subscribers: delivered fraction and latency.
    Fanout(Common),
    /// 5: requests/s and p99 of the runs API under load.
    Api(Common),
    /// 6: RSS idle and with 50 runs in flight.
    Footprint(Common),
    /// 7: a 200-host playbook as 1, 2 and 4 slices.
    Slices(Common),
    /// 8: webhook events recorded per second, and delivery latency.
    Events(Common),
    /// 9: a 10-step flow of shell steps (troupe's overhead per step), and 100 executions at
    /// once.
    Flows(Common),
    /// 10: remote workers: a split run on 1 vs 2 workers pinned to a core each, events/s from
    /// a remote worker, claim latency of an idle worker.
    Scaleout(Common),
    /// 11: the database's size after 10,000 runs and after a retention pass keeping 1,000.
    Retention(Common),
    /// 12: the web UI in headless Chromium on a 5,000-event run: first paint, last event shown.
    Ui(Common),
    /// 13: webhook events turned into finished 1-task runs per second, troupe's launchers
    /// against ansible-rulebook.
    Eventdriven(Common),
    /// (internal) The synthetic ansible-playbook troupe runs in scenarios 3, 4 and 6.
    #[command(hide = true)]
    Produce {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) The HTTP load generator of scenario 5.
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        path: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup_s: f64,
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (which, common) = match cli.command {
        Cmd::Produce { args } => return producer::produce(&args),
        Cmd::Loadgen {
            addr,
            path,
            token,
            connections,
            warmup_s,
            duration_s,
        } => {
            return loadgen::run(
                &addr,
                &path,
                &token,
                connections,
                Duration::from_secs_f64(warmup_s),
                Duration::from_secs_f64(duration_s),
            );
        }
        Cmd::All(c) => (None, c),
        Cmd::Overhead(c) => (Some(scenarios::Scenario::Overhead), c),
        Cmd::Launch(c) => (Some(scenarios::Scenario::Launch), c),
        Cmd::Ingest(c) => (Some(scenarios::Scenario::Ingest), c),
        Cmd::Fanout(c) => (Some(scenarios::Scenario::Fanout), c),
        Cmd::Api(c) => (Some(scenarios::Scenario::Api), c),
        Cmd::Footprint(c) => (Some(scenarios::Scenario::Footprint), c),
        Cmd::Slices(c) => (Some(scenarios::Scenario::Slices), c),
        Cmd::Events(c) => (Some(scenarios::Scenario::Events), c),
        Cmd::Flows(c) => (Some(scenarios::Scenario::Flows), c),
        Cmd::Scaleout(c) => (Some(scenarios::Scenario::Scaleout), c),
        Cmd::Retention(c) => (Some(scenarios::Scenario::Retention), c),
        Cmd::Ui(c) => (Some(scenarios::Scenario::Ui), c),
        Cmd::Eventdriven(c) => (Some(scenarios::Scenario::EventDriven), c),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(ctx::run(
        which,
        ctx::Options {
            quick: common.quick,
            troupe: common.troupe,
            out: common.out,
            pg: common.pg,
            reps: common.reps,
            launchers: common.launchers,
        },
    ))
}
