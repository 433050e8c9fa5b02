//! 3: events/s through pipe -> parser -> batcher -> store, on SQLite and PostgreSQL, and bytes
//! stored per event.

use super::{SYNTHETIC_PLAYBOOK, write_files};
use crate::ctx::Ctx;
use crate::report::{Metric, Target};
use crate::run_api;
use crate::server::{Server, ServerOpts, ms_between};
use crate::stats::Summary;
use anyhow::{Context, bail};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let project = ctx.dir("ingest-project")?;
    write_files(&project, &[("bench.yml", SYNTHETIC_PLAYBOOK)])?;
    let producer = crate::producer::write_wrapper(ctx.tmp.path(), &ctx.exe)?;
    let events: u64 = if ctx.quick { 20_000 } else { 200_000 };
    let reps = ctx.reps;

    // SQLite: size after a clean shutdown (WAL checkpointed) before and after the runs.
    let title = "3 ingest (sqlite)";
    let data = ctx.dir("ingest-sqlite")?;
    let opts = ServerOpts {
        troupe: ctx.troupe.clone(),
        data_dir: data.clone(),
        database_url: None,
        max_concurrent_runs: 4,
        ansible_playbook: Some(producer.clone()),
    };
    let server = Server::start(&opts)?;
    let pid = server.project(&project).await?;
    server.stop()?;
    let before = sqlite_bytes(&data)?;
    let server = Server::start(&opts)?;
    let rates = measure(&server, pid, events, reps).await?;
    server.stop()?;
    let after = sqlite_bytes(&data)?;
    report(ctx, title, &rates, events)?;
    let per_event = (after.saturating_sub(before)) as f64 / (events * reps as u64) as f64;
    ctx.push(
        Metric::value(title, "bytes stored/event", per_event).note(format!(
            "SQLite files {before} -> {after} bytes for {} events",
            events * reps as u64
        )),
    );
    ctx.details.insert(
        "ingest_sqlite".into(),
        json!({"events_per_run": events, "events_per_s": rates, "bytes_before": before, "bytes_after": after}),
    );

    // PostgreSQL.
    let title = "3 ingest (postgres)";
    let db = format!("troupe_bench_{}", std::process::id());
    if let Err(e) = psql(&ctx.pg, "postgres", &format!("CREATE DATABASE {db}")) {
        ctx.push(Metric::skipped(
            title,
            &format!("PostgreSQL at {} unavailable: {e:#}", ctx.pg),
        ));
        return Ok(());
    }
    let result = async {
        let server = Server::start(&ServerOpts {
            database_url: Some(format!("{}/{db}", ctx.pg)),
            data_dir: ctx.dir("ingest-pg")?,
            ..opts.clone()
        })?;
        let pid = server.project(&project).await?;
        let before = table_bytes(&ctx.pg, &db)?;
        let rates = measure(&server, pid, events, reps).await?;
        let after = table_bytes(&ctx.pg, &db)?;
        server.stop()?;
        anyhow::Ok((rates, before, after))
    }
    .await;
    let _ = psql(
        &ctx.pg,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db}"),
    );
    let (rates, before, after) = result?;
    report(ctx, title, &rates, events)?;
    let per_event = (after.saturating_sub(before)) as f64 / (events * reps as u64) as f64;
    ctx.push(
        Metric::value(title, "bytes stored/event", per_event)
            .note("pg_total_relation_size('events'), table + indexes + TOAST"),
    );
    ctx.details.insert(
        "ingest_postgres".into(),
        json!({"events_per_run": events, "events_per_s": rates, "bytes_before": before, "bytes_after": after}),
    );
    Ok(())
}

fn report(ctx: &mut Ctx, title: &str, rates: &[f64], events: u64) -> anyhow::Result<()> {
    let s = Summary::of(rates).context("no samples")?;
    ctx.push(
        Metric::summary(title, "events/s", &s)
            .target(Target::AtLeast(50_000.0))
            .note(format!("{events} events per run")),
    );
    Ok(())
}

/// Runs `reps` synthetic runs of `events` events; returns events/s of each.
pub async fn measure(
    server: &Server,
    project: i64,
    events: u64,
    reps: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut rates = Vec::new();
    for _ in 0..reps {
        let mut body = run_api::on_localhost(project, "bench.yml");
        body.extra_vars = Some(json!({"bench_events": events}));
        let id = run_api::launch(server, &body).await?;
        let run = run_api::wait_finished(
            server,
            id,
            Duration::from_millis(50),
            Duration::from_secs(900),
        )
        .await?;
        if u64::try_from(run.event_count) != Ok(events) {
            bail!(
                "run {id} stored {} events of {events} ({}: {})",
                run.event_count,
                run.status,
                run.status_reason.as_deref().unwrap_or("no reason given")
            );
        }
        let (Some((start, _)), Some(end)) = (run_api::launch_time(&run), run.finished_at) else {
            bail!("run {id} has no start/finish time");
        };
        let rate = events as f64 / (ms_between(start, end) / 1000.0);
        println!("    run {id}: {events} events, {rate:.0} events/s");
        rates.push(rate);
    }
    Ok(rates)
}

fn sqlite_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_db = name.ends_with(".db")
            || name.ends_with(".db-wal")
            || name.ends_with(".sqlite")
            || name.ends_with(".sqlite-wal")
            || name.ends_with(".sqlite3")
            || name.ends_with(".sqlite3-wal");
        if is_db {
            total += e.metadata()?.len();
        }
    }
    if total == 0 {
        bail!("no SQLite database found in {}", dir.display());
    }
    Ok(total)
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

fn table_bytes(server: &str, db: &str) -> anyhow::Result<u64> {
    psql(server, db, "SELECT pg_total_relation_size('events')")?
        .parse()
        .context("pg_total_relation_size")
}
