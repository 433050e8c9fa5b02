//! What every scenario shares: the binaries, the sizes, the collected results.

use crate::report::{Machine, Metric, Report};
use crate::scenarios::{self, Scenario};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Options from the command line.
pub struct Options {
    pub quick: bool,
    pub troupe: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub pg: String,
    pub reps: Option<usize>,
    pub launchers: Vec<String>,
}

/// The shared state of one harness run.
pub struct Ctx {
    /// Few repetitions and small sizes.
    pub quick: bool,
    /// The troupe binary.
    pub troupe: PathBuf,
    /// This executable (the producer and the load generator are subcommands of it).
    pub exe: PathBuf,
    /// `ansible-playbook` on PATH.
    pub ansible_playbook: Option<PathBuf>,
    /// `ansible-runner` on PATH.
    pub ansible_runner: Option<PathBuf>,
    /// PostgreSQL server URL without a database.
    pub pg: String,
    /// Repetitions of each scenario (scenario 1 does more).
    pub reps: usize,
    /// troupe's launchers scenario 13 compares.
    pub launchers: Vec<String>,
    /// Scratch space, removed at the end.
    pub tmp: tempfile::TempDir,
    /// Table rows.
    pub metrics: Vec<Metric>,
    /// Raw data per scenario.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Ctx {
    /// Adds a row and prints it at once, so a long run shows progress.
    pub fn push(&mut self, m: Metric) {
        println!(
            "    {} / {}: {}{}",
            m.scenario,
            m.name,
            m.value
                .map(crate::stats::fmt_num)
                .unwrap_or_else(|| "-".into()),
            m.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
        self.metrics.push(m);
    }

    /// A fresh directory under the scratch space.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.tmp.path().join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The troupe binary: the one given, or `cargo build --release -p troupe` and its output (the
/// last built binary is used, with a warning, when the build fails, e.g. while someone else's
/// edit is half done).
fn find_troupe(given: Option<PathBuf>, root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--troupe {}: no such file", p.display());
        }
        return Ok(p);
    }
    let bin = target_dir(root).join("release").join("troupe");
    println!("building troupe: cargo build --release -p troupe");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "-p", "troupe"])
        .current_dir(root)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if bin.is_file() {
            println!(
                "WARNING: the build failed; measuring the last built {}",
                bin.display()
            );
        } else {
            bail!(
                "cargo build --release -p troupe failed and {} does not exist",
                bin.display()
            );
        }
    }
    Ok(bin)
}

/// The first executable `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Runs the chosen scenarios (all when `None`) and writes the report.
pub async fn run(which: Option<Scenario>, opts: Options) -> anyhow::Result<()> {
    let root = workspace_root();
    let troupe = find_troupe(opts.troupe, &root)?;
    let exe = std::env::current_exe().context("locating troupe-bench itself")?;
    let ansible_playbook = on_path("ansible-playbook");
    let ansible_runner = on_path("ansible-runner");
    const HINT: &str =
        "put the CI venv on PATH: export PATH=\"$HOME/.cache/troupe-ci/venv/bin:$PATH\"";
    match &ansible_playbook {
        Some(p) => println!("ansible-playbook: {}", p.display()),
        None => println!(
            "MISSING: ansible-playbook is not on PATH; scenarios 1, 7 and 10's split are skipped ({HINT})"
        ),
    }
    match &ansible_runner {
        Some(p) => println!("ansible-runner:   {}", p.display()),
        None => {
            println!("MISSING: ansible-runner is not on PATH; scenario 1 runs without it ({HINT})")
        }
    }
    let machine = Machine::detect(&troupe, &root);
    println!(
        "machine: {} CPUs, {} MiB, {}, kernel {}, load {}",
        machine.nproc,
        machine.memory_mib,
        machine.cpu_model,
        machine.kernel,
        machine.loadavg_at_start
    );
    let mut ctx = Ctx {
        quick: opts.quick,
        troupe,
        exe,
        ansible_playbook,
        ansible_runner,
        pg: opts.pg,
        reps: opts.reps.unwrap_or(if opts.quick { 1 } else { 3 }).max(1),
        launchers: opts.launchers,
        tmp: tempfile::Builder::new().prefix("troupe-bench").tempdir()?,
        metrics: Vec::new(),
        details: serde_json::Map::new(),
    };
    let started = Instant::now();
    for s in Scenario::ALL {
        if which.is_some_and(|w| w != s) {
            continue;
        }
        println!("\n== {} ==", s.title());
        let t = Instant::now();
        if let Err(e) = scenarios::run(s, &mut ctx).await {
            println!("    FAILED: {e:#}");
            ctx.push(Metric::skipped(s.title(), &format!("failed: {e:#}")));
        }
        println!("    ({:.0} s)", t.elapsed().as_secs_f64());
    }
    println!("\ntotal: {:.0} s\n", started.elapsed().as_secs_f64());
    println!("{}", crate::report::text_table(&ctx.metrics));

    let out = opts.out.unwrap_or_else(|| {
        if which.is_none() && !opts.quick {
            root.clone()
        } else {
            target_dir(&root).join("troupe-bench")
        }
    });
    let command = std::iter::once("troupe-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let report = Report {
        machine,
        command: format!(
            "cargo run --release -p troupe-bench -- {}",
            command.trim_start_matches("troupe-bench ")
        ),
        quick: ctx.quick,
        metrics: ctx.metrics.clone(),
        details: ctx.details.clone(),
    };
    let notes = std::fs::read_to_string(root.join("crates/troupe-bench/PROFILING.md")).ok();
    report.write(&out, notes.as_deref())?;
    println!(
        "wrote {} and {}",
        out.join("BENCHMARKS.md").display(),
        out.join("benchmarks.json").display()
    );
    Ok(())
}
