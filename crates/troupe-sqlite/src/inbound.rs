//! Inbound event records and the rules document on SQLite.

use crate::runs::insert_run;
use crate::{SqliteDialect, SqliteStore, now_us, ts, ts_minus, ts_plus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};
use troupe_core::inbound::{ConcurrencyPolicy, EventRecord, RuleOutcome, RuleResult};
use troupe_core::run::Run;
use troupe_store::sql::Dialect;
use troupe_store::sql::{
    RunOrigin, backend, decided_status, event_record_from, push_event_record_filter, rules_changed,
    rules_doc_from, statements, to_json,
};
use troupe_store::{
    EventRecordFilter, InboundStore, Ingested, NewEventRecord, Page, Proposal, RulesDoc,
    StoreError, StoreResult,
};

#[async_trait]
impl InboundStore for SqliteStore {
    async fn ingest_event(&self, new: &NewEventRecord) -> StoreResult<Ingested> {
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
        let mut outcomes = Vec::with_capacity(new.proposals.len());
        let mut runs = Vec::new();
        for proposal in &new.proposals {
            let (result, run) = propose(&mut tx, proposal, event_id, received).await?;
            outcomes.push(RuleOutcome {
                rule: proposal.rule.clone(),
                result,
            });
            runs.extend(run);
        }
        let status = if new.proposals.is_empty() {
            new.status
        } else {
            decided_status(&outcomes)
        };
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
        Ok(Ingested::Recorded { record, runs })
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

/// Carries out one proposal of event `event_id` (received at `received`, microseconds) on
/// `conn`, inside the ingest transaction: gates, concurrency policy, then the run and its gate
/// marks. Returns what the rule did and the run it started, if any.
async fn propose(
    conn: &mut SqliteConnection,
    proposal: &Proposal,
    event_id: i64,
    received: i64,
) -> StoreResult<(RuleResult, Option<Run>)> {
    let new = match &proposal.run {
        Ok(new) => new,
        Err(error) => {
            return Ok((
                RuleResult::Failed {
                    error: error.clone(),
                },
                None,
            ));
        }
    };
    for gate in &proposal.gates {
        let closed_by: Option<i64> = sqlx::query_scalar(statements::GATE_CLOSED_BY)
            .bind(&proposal.rule)
            .bind(gate.kind.as_str())
            .bind(&gate.key)
            .bind(received)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if let Some(by_event) = closed_by {
            return Ok((
                RuleResult::Gated {
                    gate: gate.kind,
                    key: gate.key.clone(),
                    by_event,
                },
                None,
            ));
        }
    }
    let mut canceled = Vec::new();
    if let Some(c) = &proposal.concurrency {
        let active: Vec<i64> = sqlx::query_scalar(statements::ACTIVE_RUNS_OF_KEY)
            .bind(&c.key)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        match (c.policy, active.first()) {
            (ConcurrencyPolicy::Skip, Some(&active_run)) => {
                return Ok((RuleResult::Skipped { active_run }, None));
            }
            (ConcurrencyPolicy::Cancel, _) => canceled = active,
            _ => {}
        }
    }
    let origin = RunOrigin {
        event_id: Some(event_id),
        concurrency_key: proposal.concurrency.as_ref().map(|c| c.key.as_str()),
    };
    let run = match insert_run(conn, new, origin).await {
        Ok(run) => run,
        // A missing project, inventory or template fails this rule only.
        Err(e @ StoreError::NotFound { .. }) => {
            return Ok((
                RuleResult::Failed {
                    error: e.to_string(),
                },
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    for gate in &proposal.gates {
        sqlx::query(statements::INSERT_GATE)
            .bind(&proposal.rule)
            .bind(gate.kind.as_str())
            .bind(&gate.key)
            .bind(received)
            .bind(ts_plus(received, gate.within))
            .bind(event_id)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok((
        RuleResult::Started {
            run_id: run.id,
            canceled,
        },
        Some(run),
    ))
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
