//! troupe-chaos: kills, cuts off and starves a real `troupe serve` while runs and webhook
//! deliveries flow, and checks what troupe promises survives: no run stuck `running`, no
//! process of a run left behind, no acknowledged event lost, a server that starts cleanly.
//! Each phase prints its counts; the table at the end is what docs/reliability.md shows. Exits
//! non-zero when an invariant broke. Not run by CI: it takes minutes and mounts a file system.

mod check;
mod cluster;
mod disk;
mod load;
mod postgres;
mod report;
mod setup;
mod sqlite;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "troupe-chaos",
    about = "Kills, cuts off and starves troupe serve mid-run, then checks nothing was lost"
)]
struct Cli {
    /// The troupe binary to torment.
    #[arg(long, env = "TROUPE_CHAOS_TROUPE")]
    troupe: PathBuf,
    /// Seed of every random choice (delays, bursts); a random one when not given. Printed, so
    /// a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// kill -9 rounds of the SQLite phase.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Phases to run (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    phase: Vec<Phase>,
    /// Directory of PostgreSQL's initdb and pg_ctl (default: the newest
    /// /usr/lib/postgresql/*/bin).
    #[arg(long)]
    pg_bin: Option<PathBuf>,
    /// How long PostgreSQL stays down.
    #[arg(long, default_value_t = 10)]
    outage_s: u64,
    /// How long the disk stays full.
    #[arg(long, default_value_t = 10)]
    full_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Sqlite,
    Postgres,
    Disk,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let troupe = std::fs::canonicalize(&cli.troupe)
        .with_context(|| format!("--troupe {}", cli.troupe.display()))?;
    let seed = cli.seed.unwrap_or_else(rand::random);
    let phases = if cli.phase.is_empty() {
        vec![Phase::Sqlite, Phase::Postgres, Phase::Disk]
    } else {
        cli.phase.clone()
    };
    println!(
        "troupe-chaos --seed {seed} --rounds {} ({})",
        cli.rounds,
        troupe.display()
    );
    // Canonical: the processes of runs are found by the data directory in their environment.
    let tmp = tempfile::Builder::new().prefix("troupe-chaos").tempdir()?;
    let root = std::fs::canonicalize(tmp.path())?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut reports = Vec::new();
    for phase in phases {
        println!("== {phase:?}");
        let report = rt.block_on(async {
            match phase {
                Phase::Sqlite => sqlite::run(&troupe, &root, seed, cli.rounds).await,
                Phase::Postgres => {
                    postgres::run(
                        &troupe,
                        &root,
                        seed,
                        cli.pg_bin.clone(),
                        Duration::from_secs(cli.outage_s),
                    )
                    .await
                }
                Phase::Disk => {
                    disk::run(&troupe, &root, seed, Duration::from_secs(cli.full_s)).await
                }
            }
        });
        match report {
            Ok(r) => reports.push(r),
            Err(e) => {
                let mut r = report::PhaseReport::new(&format!("{phase:?}"));
                r.expect(false, || format!("the phase could not go on: {e:#}"));
                reports.push(r);
            }
        }
    }
    println!("\n{}", report::table(seed, &reports));
    let broken: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    if broken.is_empty() {
        println!("every invariant held");
        Ok(())
    } else {
        for b in &broken {
            println!("BROKEN: {b}");
        }
        anyhow::bail!(
            "{} invariants broke (replay with --seed {seed})",
            broken.len()
        )
    }
}
