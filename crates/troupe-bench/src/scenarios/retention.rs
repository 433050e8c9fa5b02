//! 11: the database's size after 10,000 runs, and after a retention pass that keeps 1,000;
//! how long the pass takes. On SQLite and PostgreSQL.

use super::{SYNTHETIC_PLAYBOOK, write_files};
use crate::ctx::Ctx;
use crate::report::Metric;
use crate::run_api;
use crate::server::{Server, ServerOpts};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use troupe_wire::runs::{PruneReport, PruneRuns, RunList};

/// Events each synthetic run writes.
const EVENTS_PER_RUN: u64 = 20;
/// Runs each project keeps.
const KEEP: u32 = 1000;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let runs: usize = if ctx.quick { 2_000 } else { 10_000 };
    let project = ctx.dir("retention-project")?;
    write_files(&project, &[("bench.yml", SYNTHETIC_PLAYBOOK)])?;
    let producer = crate::producer::write_wrapper(ctx.tmp.path(), &ctx.exe)?;
    let opts = ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: ctx.dir("retention-sqlite")?,
        database_url: None,
        max_concurrent_runs: 32,
        ansible_playbook: Some(producer),
    };

    // SQLite: the files after a clean shutdown (WAL checkpointed into the database).
    let title = "11 retention (sqlite)";
    let server = start(&opts)?;
    let pid = server.project(&project).await?;
    let made = make_runs(&server, pid, runs).await?;
    server.stop()?;
    let full = sqlite_size(&opts.data_dir)?;
    let server = start(&opts)?;
    let (report, secs) = prune(&server).await?;
    server.stop()?;
    let pruned = sqlite_size(&opts.data_dir)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    ctx.push(
        Metric::value(title, &format!("MiB after {runs} runs"), mib(full.file)).note(format!(
            "{} events stored; troupe.db after a clean shutdown (WAL checkpointed); {:.1} MiB of pages in use",
            made.events,
            mib(full.in_use)
        )),
    );
    ctx.push(
        Metric::value(
            title,
            &format!("MiB after keeping {KEEP}"),
            mib(pruned.file),
        )
        .note(
            "the file keeps its size: freed pages go to SQLite's free list, reused before it grows",
        ),
    );
    ctx.push(
        Metric::value(
            title,
            &format!("MiB in use after keeping {KEEP}"),
            mib(pruned.in_use),
        )
        .note(format!(
            "(page_count - freelist_count) × page_size, from the file's header; {} free pages",
            pruned.free_pages
        )),
    );
    push_pass(ctx, title, &report, secs);
    ctx.details.insert(
        "retention_sqlite".into(),
        json!({"runs": runs, "events": made.events, "bytes_full": full.file,
               "in_use_full": full.in_use, "bytes_pruned": pruned.file,
               "in_use_pruned": pruned.in_use, "pruned_runs": report.runs,
               "pruned_events": report.events, "prune_s": secs}),
    );

    // PostgreSQL.
    let title = "11 retention (postgres)";
    let db = format!("troupe_bench_retention_{}", std::process::id());
    if let Err(e) = psql(&ctx.pg, "postgres", &format!("CREATE DATABASE {db}")) {
        ctx.push(Metric::skipped(
            title,
            &format!("PostgreSQL at {} unavailable: {e:#}", ctx.pg),
        ));
        return Ok(());
    }
    let result = async {
        let server = start(&ServerOpts {
            database_url: Some(format!("{}/{db}", ctx.pg)),
            data_dir: ctx.dir("retention-pg")?,
            ..opts.clone()
        })?;
        let pid = server.project(&project).await?;
        make_runs(&server, pid, runs).await?;
        let full = pg_sizes(&ctx.pg, &db)?;
        let (report, secs) = prune(&server).await?;
        let pruned = pg_sizes(&ctx.pg, &db)?;
        // What a plain VACUUM (autovacuum's work, done now) leaves: space reusable, not returned.
        psql(&ctx.pg, &db, "VACUUM")?;
        let vacuumed = pg_sizes(&ctx.pg, &db)?;
        server.stop()?;
        anyhow::Ok((full, report, secs, pruned, vacuumed))
    }
    .await;
    let _ = psql(
        &ctx.pg,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db}"),
    );
    let (full, report, secs, pruned, vacuumed) = result?;
    ctx.push(
        Metric::value(title, &format!("MiB after {runs} runs"), mib(full.database)).note(format!(
            "pg_database_size; runs + events + run_output {:.1} MiB (pg_total_relation_size)",
            mib(full.tables)
        )),
    );
    ctx.push(
        Metric::value(title, &format!("MiB after keeping {KEEP}"), mib(pruned.database)).note(
            format!(
                "pg_database_size right after the pass; after VACUUM {:.1} MiB (space reused, not returned)",
                mib(vacuumed.database)
            ),
        ),
    );
    push_pass(ctx, title, &report, secs);
    ctx.details.insert(
        "retention_postgres".into(),
        json!({"runs": runs, "db_full": full.database, "tables_full": full.tables,
               "db_pruned": pruned.database, "db_vacuumed": vacuumed.database,
               "pruned_runs": report.runs, "pruned_events": report.events, "prune_s": secs}),
    );
    Ok(())
}

fn start(opts: &ServerOpts) -> anyhow::Result<Server> {
    // Only the pass the harness asks for prunes.
    Server::start_with_env(opts, &[("TROUPE_RUN_RETENTION", "off")])
}

fn push_pass(ctx: &mut Ctx, title: &str, report: &PruneReport, secs: f64) {
    ctx.push(Metric::value(title, "prune pass s", secs).note(format!(
        "POST /api/v1/runs/prune {{\"keep\": {KEEP}}}: {} runs, {} events, {} output chunks, batches of 500",
        report.runs, report.events, report.output_chunks
    )));
    ctx.push(Metric::value(
        title,
        "runs pruned/s",
        report.runs as f64 / secs,
    ));
}

struct Made {
    events: u64,
}

/// Launches `n` synthetic runs (16 POSTs in flight) and waits until none is queued or running.
async fn make_runs(server: &Server, project: i64, n: usize) -> anyhow::Result<Made> {
    let mut body = run_api::on_localhost(project, "bench.yml");
    body.extra_vars = Some(json!({"bench_events": EVENTS_PER_RUN, "bench_hosts": 2}));
    let body = run_api::body(&body)?;
    let t0 = Instant::now();
    let launched: Vec<anyhow::Result<i64>> = futures_util::stream::iter(0..n)
        .map(|_| server.launch(&body))
        .buffer_unordered(16)
        .collect()
        .await;
    for r in launched {
        r?;
    }
    loop {
        let active: RunList = serde_json::from_value(
            server
                .get("/api/v1/runs?status=queued,running&limit=1")
                .await?,
        )?;
        if active.runs.is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("runs still active after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "    {n} runs launched and finished in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(Made {
        events: n as u64 * EVENTS_PER_RUN,
    })
}

/// One on-demand pass keeping [`KEEP`] runs; what it pruned and how long it took.
async fn prune(server: &Server) -> anyhow::Result<(PruneReport, f64)> {
    let body = serde_json::to_value(PruneRuns {
        keep: Some(KEEP),
        ..PruneRuns::default()
    })?;
    let t0 = Instant::now();
    let answer = server.post("/api/v1/runs/prune", &body).await?;
    let secs = t0.elapsed().as_secs_f64();
    let report: PruneReport = serde_json::from_value(answer).context("the prune report")?;
    println!("    pruned {} runs in {secs:.2} s", report.runs);
    Ok((report, secs))
}

/// A SQLite database's size on disk and what of it is in use.
struct SqliteSize {
    /// `troupe.db` plus its WAL, in bytes.
    file: u64,
    /// Pages holding data, in bytes.
    in_use: u64,
    free_pages: u64,
}

/// Reads the sizes from the files and the database header (page size at offset 16, page
/// count at 28, free-list pages at 36, big-endian), valid after a clean shutdown.
fn sqlite_size(dir: &Path) -> anyhow::Result<SqliteSize> {
    let db = dir.join("troupe.db");
    let mut file = std::fs::metadata(&db)?.len();
    if let Ok(wal) = std::fs::metadata(dir.join("troupe.db-wal")) {
        file += wal.len();
    }
    let mut header = [0u8; 100];
    std::io::Read::read_exact(&mut std::fs::File::open(&db)?, &mut header)?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let word = |at: usize| {
        u64::from(u32::from_be_bytes([
            header[at],
            header[at + 1],
            header[at + 2],
            header[at + 3],
        ]))
    };
    let (pages, free_pages) = (word(28), word(36));
    Ok(SqliteSize {
        file,
        in_use: pages.saturating_sub(free_pages) * page_size,
        free_pages,
    })
}

struct PgSizes {
    database: u64,
    tables: u64,
}

fn pg_sizes(server: &str, db: &str) -> anyhow::Result<PgSizes> {
    let out = psql(
        server,
        db,
        "SELECT pg_database_size(current_database()) || ' ' || \
         (pg_total_relation_size('runs') + pg_total_relation_size('events') \
          + pg_total_relation_size('run_output'))",
    )?;
    let (database, tables) = out.split_once(' ').context("two sizes")?;
    Ok(PgSizes {
        database: database.parse()?,
        tables: tables.parse()?,
    })
}

fn psql(server: &str, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(format!("{server}/{db}"))
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
