//! Inbound event records and the rules document on SQLite.

use crate::claims::claim_created;
use crate::executions::insert_execution;
use crate::runs::insert_run;
use crate::{SqliteDialect, SqliteStore, now_us, ts, ts_minus, ts_plus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};
use std::time::Duration;
use troupe_core::flow::{Execution, NewExecution};
use troupe_core::inbound::EventRecord;
use troupe_core::run::{NewRun, Run};
use troupe_store::sql::Dialect;
use troupe_store::sql::{
    Proposals, Proposed, RunOrigin, backend, event_record_from, propose_all,
    push_event_record_filter, rules_changed, rules_doc_from, statements, to_json,
};
use troupe_store::{
    Admission, Claimant, EventRecordFilter, Gate, InboundStore, Ingested, NewEventRecord, Page,
    RulesDoc, StoreError, StoreResult,
};

#[async_trait]
impl InboundStore for SqliteStore {
    async fn ingest_event(
        &self,
        new: &NewEventRecord,
        admission: Option<Admission<'_>>,
    ) -> StoreResult<Ingested> {
        let received = ts(new.received_at);
        // One writer: nothing else is decided between the checks and the writes.
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        if let Some(earlier) = earlier_delivery(&mut tx, new).await? {
            return Ok(Ingested::Duplicate(earlier));
        }
        let event_id: i64 = sqlx::query_scalar(statements::INSERT_EVENT_RECORD)
            .bind(received)
            .bind(&new.source)
            .bind(&new.routing_key)
            .bind(&new.delivery_id)
            .bind(&new.content_hash)
            .bind(new.payload_size)
            .bind(&new.payload)
            .bind(new.payload_truncated)
            .bind(new.status.as_str())
            .bind(&new.reason)
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
            "UPDATE event_records SET status = ?, rules = ?, run_ids = ? WHERE id = ? \
             RETURNING {}",
            SqliteDialect::EVENT_RECORD_COLS
        )))
        .bind(status.as_str())
        .bind(to_json(&outcomes)?)
        .bind(to_json(&run_ids)?)
        .bind(event_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let record = event_record_from::<SqliteDialect>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(Ingested::Recorded {
            record,
            runs,
            executions,
        })
    }

    async fn get_event_record(&self, id: i64) -> StoreResult<EventRecord> {
        let row = sqlx::query(AssertSqlSafe(
            statements::get_event_record::<SqliteDialect>(),
        ))
        .bind(id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("event", id))?;
        event_record_from::<SqliteDialect>(&row)
    }

    async fn list_event_records(
        &self,
        filter: &EventRecordFilter,
        page: Page,
    ) -> StoreResult<Vec<EventRecord>> {
        if page.limit <= 0 {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {} FROM event_records WHERE 1 = 1",
            SqliteDialect::EVENT_RECORD_COLS
        ));
        push_event_record_filter(&mut q, filter, page, |text| text);
        q.build()
            .fetch_all(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .iter()
            .map(event_record_from::<SqliteDialect>)
            .collect()
    }

    async fn prune_event_records(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut w = self.write().await;
        let mut tx = w.begin().await?;
        let done = sqlx::query(statements::PRUNE_EVENT_RECORDS)
            .bind(ts(before))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(statements::PRUNE_GATES)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn get_rules(&self) -> StoreResult<Option<RulesDoc>> {
        sqlx::query(statements::GET_RULES)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(backend)?
            .as_ref()
            .map(rules_doc_from::<SqliteDialect>)
            .transpose()
    }

    async fn put_rules(&self, text: &str, expected_revision: Option<i64>) -> StoreResult<RulesDoc> {
        let (sql, revision) = statements::put_rules(expected_revision);
        let mut q = sqlx::query(sql).bind(text).bind(now_us());
        if let Some(r) = revision {
            q = q.bind(r);
        }
        let row = q
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return rules_doc_from::<SqliteDialect>(&row);
        }
        let stored: Option<i64> = sqlx::query_scalar(statements::RULES_REVISION)
            .fetch_optional(&mut *self.write().await)
            .await
            .map_err(backend)?;
        Err(rules_changed(stored, expected_revision))
    }
}

/// The ingest transaction, as the shared proposal logic uses it.
struct Ingest<'c>(&'c mut SqliteConnection);

impl Proposals for Ingest<'_> {
    /// Microseconds since the Unix epoch.
    type Time = i64;

    async fn gate_closed_by(
        &mut self,
        rule: &str,
        gate: &Gate,
        received: i64,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(statements::GATE_CLOSED_BY)
            .bind(rule)
            .bind(gate.kind.as_str())
            .bind(&gate.key)
            .bind(received)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn active_runs(&mut self, key: &str) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(statements::ACTIVE_RUNS_OF_KEY)
            .bind(key)
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
        received: i64,
    ) -> StoreResult<()> {
        sqlx::query(statements::INSERT_GATE)
            .bind(rule)
            .bind(gate.kind.as_str())
            .bind(&gate.key)
            .bind(received)
            .bind(ts_plus(received, gate.within))
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
    conn: &mut SqliteConnection,
    new: &NewEventRecord,
) -> StoreResult<Option<EventRecord>> {
    if let Some(delivery_id) = &new.delivery_id {
        let row = sqlx::query(AssertSqlSafe(statements::delivered::<SqliteDialect>()))
            .bind(&new.source)
            .bind(delivery_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from::<SqliteDialect>(&row).map(Some);
        }
    }
    if let Some(window) = new.redelivery_window {
        let row = sqlx::query(AssertSqlSafe(statements::redelivered::<SqliteDialect>()))
            .bind(&new.source)
            .bind(&new.content_hash)
            .bind(ts_minus(ts(new.received_at), window))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(row) = row {
            return event_record_from::<SqliteDialect>(&row).map(Some);
        }
    }
    Ok(None)
}
