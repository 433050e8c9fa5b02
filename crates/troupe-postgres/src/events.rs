//! A run's events (and the batch that writes them with its output) on PostgreSQL.

use crate::{
    EVENTS_PER_STATEMENT, MAX_PARAMS, OUTPUT_PARAMS, PgDialect, PgStore, pg_text, share_row,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres};
use troupe_core::Event;
use troupe_store::sql::{backend, event_from, host_failures_from, statements};
use troupe_store::{EventStore, OutputChunk, StoreError, StoreResult};

#[async_trait]
impl EventStore for PgStore {
    async fn list_events(&self, run_id: i64, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let events = sqlx::query(AssertSqlSafe(statements::list_events::<PgDialect>()))
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(event_from::<PgDialect>)
            .collect::<StoreResult<Vec<_>>>()?;
        if events.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(events)
    }

    async fn host_failures(&self, run_id: i64) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(AssertSqlSafe(statements::host_failures::<PgDialect>()))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let failures = host_failures_from::<PgDialect>(&rows)?;
        if rows.is_empty() {
            self.require_run(run_id).await?;
        }
        Ok(failures)
    }

    async fn append_batch(
        &self,
        run_id: i64,
        events: &[Event],
        chunks: &[OutputChunk],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The run is checked once per batch (no foreign key checks each row): the events'
        // statement updates its row, or, for output alone, the row is locked against deletion.
        if !events.is_empty() || chunks.is_empty() {
            insert_events(&mut tx, run_id, events).await?;
        } else {
            share_row(&mut tx, "runs", "run", run_id).await?;
        }
        for part in chunks.chunks(MAX_PARAMS / OUTPUT_PARAMS) {
            statements::insert_output::<Postgres, _>(run_id, part, |text| {
                pg_text(text).into_owned()
            })
            .build()
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
}

/// A batch of events as one array per column, for `UNNEST`.
struct EventColumns {
    counter: Vec<i64>,
    uuid: Vec<String>,
    event: Vec<String>,
    parent_uuid: Vec<Option<String>>,
    host: Vec<Option<String>>,
    task: Vec<Option<String>>,
    created: Vec<DateTime<Utc>>,
    stdout: Vec<String>,
    start_line: Vec<i64>,
    end_line: Vec<i64>,
    event_data: Vec<String>,
}

/// Inserts events (skipping stored counters) and adds what was stored to the run's event count.
/// Call it inside a transaction: a missing run shows as no run updated, after the events were
/// inserted, and only the rollback takes them out again (no foreign key checks each row).
///
/// Columns travel as arrays through UNNEST: one statement text whatever the batch size
/// (prepared once), no parameter limit, and far less parsing than a VALUES list. The insert and
/// the event_count update are one statement.
async fn insert_events(conn: &mut PgConnection, run_id: i64, events: &[Event]) -> StoreResult<()> {
    // An empty batch still runs once, to report a missing run.
    let empty: &[Event] = &[];
    let batches = events
        .chunks(EVENTS_PER_STATEMENT)
        .chain(events.is_empty().then_some(empty));
    for batch in batches {
        let mut cols = EventColumns::with_capacity(batch.len());
        for e in batch {
            cols.push(e)?;
        }
        let updated = sqlx::query(
            "WITH stored AS ( \
               INSERT INTO events (run_id, counter, uuid, event, parent_uuid, host, task, \
                 created, stdout, start_line, end_line, event_data) \
               SELECT $1, t.counter, t.uuid, t.event, t.parent_uuid, t.host, t.task, \
                 t.created, t.stdout, t.start_line, t.end_line, t.event_data::json \
               FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::timestamptz[], $9::text[], $10::bigint[], $11::bigint[], \
                 $12::text[]) AS t(counter, uuid, event, parent_uuid, host, task, created, \
                 stdout, start_line, end_line, event_data) \
               ON CONFLICT (run_id, counter) DO NOTHING RETURNING 1) \
             UPDATE runs SET event_count = event_count + (SELECT count(*) FROM stored) \
             WHERE id = $1 RETURNING id",
        )
        .bind(run_id)
        .bind(cols.counter)
        .bind(cols.uuid)
        .bind(cols.event)
        .bind(cols.parent_uuid)
        .bind(cols.host)
        .bind(cols.task)
        .bind(cols.created)
        .bind(cols.stdout)
        .bind(cols.start_line)
        .bind(cols.end_line)
        .bind(cols.event_data)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if updated.is_none() {
            return Err(StoreError::not_found("run", run_id));
        }
    }
    Ok(())
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            counter: Vec::with_capacity(n),
            uuid: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            parent_uuid: Vec::with_capacity(n),
            host: Vec::with_capacity(n),
            task: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            stdout: Vec::with_capacity(n),
            start_line: Vec::with_capacity(n),
            end_line: Vec::with_capacity(n),
            event_data: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &Event) -> StoreResult<()> {
        let text = |s: &str| pg_text(s).into_owned();
        self.counter.push(e.counter);
        self.uuid.push(text(&e.uuid));
        self.event.push(text(&e.event));
        self.parent_uuid.push(e.parent_uuid.as_deref().map(text));
        self.host.push(e.host().map(text));
        self.task.push(e.task().map(text));
        self.created.push(e.created);
        self.stdout.push(text(&e.stdout));
        self.start_line.push(e.start_line);
        self.end_line.push(e.end_line);
        self.event_data.push(e.event_data.json().to_owned());
        Ok(())
    }
}
