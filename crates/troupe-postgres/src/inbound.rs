//! Inbound event records and the rules document on PostgreSQL.

use crate::claims::claim_created;
use crate::executions::insert_execution;
use crate::runs::insert_run;
use crate::{PgDialect, PgStore, micros, minus, now, pg_text, plus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};
use std::time::Duration;
use troupe_core::flow::{Execution, NewExecution};
use troupe_core::inbound::EventRecord;
use troupe_core::run::{NewRun, Run};
use troupe_store::sql::{
    Dialect, Proposals, Proposed, RunOrigin, backend, event_record_from, propose_all,
    push_event_record_filter, rules_changed, rules_doc_from, statements, to_json,
};
use troupe_store::{
    Admission, Claimant, EventRecordFilter, Gate, InboundStore, Ingested, NewEventRecord, Page,
    RulesDoc, StoreError, StoreResult,
};

#[async_trait]
impl InboundStore for PgStore {
    async fn ingest_event(
        &self,
        new: &NewEventRecord,
        admission: Option<Admission<'_>>,
    ) -> StoreResult<Ingested> {
        let received = micros(new.received_at);
        let text = |s: &Option<String>| s.as_deref().map(|s| pg_text(s).into_owned());
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Concurrent ingests of the same delivery, or sharing a gate or concurrency key, wait
        // here for each other; after the locks every check sees what they committed.
        lock_all(&mut tx, &ingest_locks(new)).await?;
        if let Some(earlier) = earlier_delivery(&mut tx, new).await? {
            return Ok(Ingested::Duplicate(earlier));
        }
        let event_id: i64 = sqlx::query_scalar(statements::INSERT_EVENT_RECORD)
            .bind(received)
            .bind(pg_text(&new.source).as_ref())
            .bind(pg_text(&new.routing_key).as_ref())
            .bind(text(&new.delivery_id))
            .bind(pg_text(&new.content_hash).as_ref())
            .bind(new.payload_size)
            .bind(text(&new.payload))
            .bind(new.payload_truncated)
            .bind(new.status.as_str())
            .bind(text(&new.reason))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let Proposed {
            outcomes,
            runs,
            executions,
            status,
        } = propose_all(&mut Ingest(&mut tx), new, event_id, received, admission).await?;
        let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE event_records SET status = $1, rules = $2::json, run_ids = $3 \
             WHERE id = $4 RETURNING {}",
            PgDialect::EVENT_RECORD_COLS
        )))
        .bind(status.as_str())
        .bind(to_json(&outcomes)?)
        .bind(&run_ids)
        .bind(event_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let record = event_record_from::<PgDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(Ingested::Recorded {
            record,
            runs,
            executions,
        })
    }

    async fn get_event_record(&self, id: i64) -> StoreResult<EventRecord> {
        let row = sqlx::query(AssertSqlSafe(statements::get_event_record::<PgDialect>()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::not_found("event", id))?;
        event_record_from::<PgDialect>(&row)
    }

    async fn list_event_records(
        &self,
        filter: &EventRecordFilter,
        page: Page,
    ) -> StoreResult<Vec<EventRecord>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM event_records WHERE TRUE",
            PgDialect::EVENT_RECORD_COLS
        ));
        push_event_record_filter(&mut q, filter, page, |text| pg_text(text).into_owned());
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(event_record_from::<PgDialect>)
            .collect()
    }

    async fn prune_event_records(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(statements::PRUNE_EVENT_RECORDS)
            .bind(micros(before))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(statements::PRUNE_GATES)
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn get_rules(&self) -> StoreResult<Option<RulesDoc>> {
        sqlx::query(statements::GET_RULES)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(rules_doc_from::<PgDialect>)
            .transpose()
    }

    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc> {
        let (sql, revision) = statements::put_rules(expected_revision);
        let mut q = sqlx::query(sql)
            .bind(pg_text(text).into_owned())
            .bind(now());
        if let Some(r) = revision {
            q = q.bind(r);
        }
        if let Some(row) = q.fetch_optional(&self.pool).await.map_err(backend)? {
            return rules_doc_from::<PgDialect>(&row);
        }
        let stored: Option<i64> = sqlx::query_scalar(statements::RULES_REVISION)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Err(rules_changed(stored, expected_revision))
    }
}

/// The advisory locks an ingest takes, as text (hashed to lock keys by [`lock_all`]): one per
/// thing two concurrent ingests must not both decide on at once (the delivery, the content
/// within a redelivery window, each gate, each concurrency key). Parts of variable length are
/// prefixed with their length, so different parts never make the same text.
fn ingest_locks(new: &NewEventRecord) -> Vec<String> {
    let source = format!("{}:{}", new.source.len(), new.source);
    let mut locks = Vec::new();
    if let Some(delivery_id) = &new.delivery_id {
        locks.push(format!("troupe:delivery:{source}:{delivery_id}"));
    }
    if new.redelivery_window.is_some() {
        locks.push(format!("troupe:content:{source}:{}", new.content_hash));
    }
    for p in new.proposals.iter().filter(|p| p.start.is_ok()) {
        for g in &p.gates {
            locks.push(format!(
                "troupe:gate:{}:{}:{}:{}",
                p.rule.len(),
                p.rule,
                g.kind.as_str(),
                g.key
            ));
        }
        if let Some(c) = &p.concurrency {
            locks.push(format!("troupe:concurrency:{}", c.key));
        }
    }
    locks
        .into_iter()
        .map(|l| pg_text(&l).into_owned())
        .collect()
}

/// Takes a transaction-scoped advisory lock per text in `locks`, in the order of their keys:
/// every transaction locking in one order, none waits on another in a cycle.
pub(crate) async fn lock_all(conn: &mut PgConnection, locks: &[String]) -> StoreResult<()> {
    if locks.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT hashtextextended(l, 0) AS k FROM UNNEST($1::text[]) AS l ORDER BY k",
    )
    .bind(locks)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// The ingest transaction, under its locks, as the shared proposal logic uses it.
struct Ingest<'c>(&'c mut PgConnection);

impl Proposals for Ingest<'_> {
    type Time = DateTime<Utc>;

    async fn gate_closed_by(
        &mut self,
        rule: &str,
        gate: &Gate,
        received: DateTime<Utc>,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(statements::GATE_CLOSED_BY)
            .bind(pg_text(rule).as_ref())
            .bind(gate.kind.as_str())
            .bind(pg_text(&gate.key).as_ref())
            .bind(received)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn active_runs(&mut self, key: &str) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(statements::ACTIVE_RUNS_OF_KEY)
            .bind(pg_text(key).as_ref())
            .fetch_all(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn insert_run(&mut self, new: &NewRun, origin: RunOrigin<'_>) -> StoreResult<Run> {
        insert_run(self.0, new, origin).await
    }

    async fn claim_created(
        &mut self,
        run_id: i64,
        claimant: &Claimant<'_>,
        lease: Duration,
    ) -> StoreResult<Option<Run>> {
        claim_created(self.0, run_id, claimant, lease).await
    }

    async fn insert_execution(&mut self, new: &NewExecution) -> StoreResult<Execution> {
        insert_execution(self.0, new).await
    }

    async fn close_gate(
        &mut self,
        rule: &str,
        gate: &Gate,
        event_id: i64,
        received: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(statements::INSERT_GATE)
            .bind(pg_text(rule).as_ref())
            .bind(gate.kind.as_str())
            .bind(pg_text(&gate.key).as_ref())
            .bind(received)
            .bind(plus(received, gate.within))
            .bind(event_id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// The recorded event this one repeats, if any: the same delivery of the same source, or
/// (with a redelivery window) the latest event of the same source and content received
/// within the window.
async fn earlier_delivery(
    conn: &mut PgConnection,
    new: &NewEventRecord,
) -> StoreResult<Option<EventRecord>> {
    let source = pg_text(&new.source);
    if let Some(delivery_id) = &new.delivery_id {
        let row = sqlx::query(AssertSqlSafe(statements::delivered::<PgDialect>()))
            .bind(source.as_ref())
            .bind(pg_text(delivery_id).as_ref())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from::<PgDialect>(&row).map(Some);
        }
    }
    if let Some(window) = new.redelivery_window {
        let row = sqlx::query(AssertSqlSafe(statements::redelivered::<PgDialect>()))
            .bind(source.as_ref())
            .bind(pg_text(&new.content_hash).as_ref())
            .bind(minus(micros(new.received_at), window))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from::<PgDialect>(&row).map(Some);
        }
    }
    Ok(None)
}
