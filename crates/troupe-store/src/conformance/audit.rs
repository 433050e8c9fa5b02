//! Conformance cases: the audit log.

use super::*;
use troupe_core::audit::{AuditFilter, NewAuditEntry};

fn entry(at: DateTime<Utc>, actor: &str, action: &str, target: (&str, &str)) -> NewAuditEntry {
    NewAuditEntry {
        at,
        actor: actor.into(),
        action: action.into(),
        target_kind: Some(target.0.into()),
        target_id: Some(target.1.into()),
        detail: json!({"n": 1}),
        ..Default::default()
    }
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .unwrap_or_default()
}

async fn actions(store: &dyn Store, filter: AuditFilter) -> Vec<String> {
    store
        .list_audit(
            &filter,
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// Entries come back whole, newest first, and every filter narrows the list.
pub async fn audit_round_trip_and_filters(store: &dyn Store) {
    let full = NewAuditEntry {
        at: t(0),
        actor: "token:3".into(),
        token_id: Some(3),
        token_name: Some("ci".into()),
        role: Some("operator".into()),
        action: "run.launch".into(),
        method: Some("POST".into()),
        route: Some("/api/v1/runs".into()),
        target_kind: Some("run".into()),
        target_id: Some("42".into()),
        target_name: Some("site.yml".into()),
        status: Some(201),
        client_addr: Some("127.0.0.1:5555".into()),
        user_agent: Some("curl/8".into()),
        detail: json!({"project": 1}),
    };
    store
        .record_audit(&[
            full.clone(),
            entry(t(10), "rule:deploy", "run.launch", ("run", "43")),
            entry(t(20), "token:3", "run.cancel", ("run", "42")),
            entry(t(30), "anonymous", "credential.create", ("credential", "1")),
        ])
        .await
        .expect("record");
    store.record_audit(&[]).await.expect("an empty batch");
    let all = store
        .list_audit(
            &AuditFilter::default(),
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let first = &all[3];
    assert_eq!(first.at, full.at);
    assert_eq!(
        (
            first.actor.as_str(),
            first.token_id,
            first.token_name.as_deref()
        ),
        ("token:3", Some(3), Some("ci"))
    );
    assert_eq!(first.role.as_deref(), Some("operator"));
    assert_eq!(
        (first.method.as_deref(), first.route.as_deref()),
        (Some("POST"), Some("/api/v1/runs"))
    );
    assert_eq!(
        (
            first.target_kind.as_deref(),
            first.target_id.as_deref(),
            first.target_name.as_deref()
        ),
        (Some("run"), Some("42"), Some("site.yml"))
    );
    assert_eq!(first.status, Some(201));
    assert_eq!(first.client_addr.as_deref(), Some("127.0.0.1:5555"));
    assert_eq!(first.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(first.detail, json!({"project": 1}));
    assert_eq!(all[0].status, None);
    assert_eq!(all[0].method, None);

    let by = |f: fn(&mut AuditFilter)| {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(
        actions(store, by(|f| f.actor = Some("token:3".into()))).await,
        ["run.cancel", "run.launch"]
    );
    assert_eq!(
        actions(store, by(|f| f.actor = Some("ci".into()))).await,
        ["run.launch"],
        "a token's name finds its entries that carry it"
    );
    assert_eq!(
        actions(store, by(|f| f.action = Some("run.launch".into()))).await,
        ["run.launch", "run.launch"]
    );
    assert_eq!(
        actions(store, by(|f| f.action = Some("run.".into()))).await,
        ["run.cancel", "run.launch", "run.launch"]
    );
    assert_eq!(
        actions(store, by(|f| f.action = Some("run_".into()))).await,
        Vec::<String>::new(),
        "a prefix is taken literally"
    );
    assert_eq!(
        actions(store, by(|f| f.target = Some("run:42".into()))).await,
        ["run.cancel", "run.launch"]
    );
    assert_eq!(
        actions(store, by(|f| f.target = Some("credential".into()))).await,
        ["credential.create"]
    );
    assert_eq!(
        actions(
            store,
            by(|f| {
                f.since = Some(t(10));
                f.until = Some(t(30));
            })
        )
        .await,
        ["run.cancel", "run.launch"],
        "since is inclusive, until exclusive"
    );
}

/// Paging walks back by id; pruning deletes what is older than the cut only.
pub async fn audit_paging_and_pruning(store: &dyn Store) {
    let entries: Vec<NewAuditEntry> = (0..5)
        .map(|i| entry(t(i * 10), "system", &format!("a.{i}"), ("run", "1")))
        .collect();
    store.record_audit(&entries).await.expect("record");
    let page = |before| async move {
        store
            .list_audit(&AuditFilter::default(), Page { before, limit: 2 })
            .await
            .expect("list")
    };
    let first = page(None).await;
    assert_eq!(
        first.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["a.4", "a.3"]
    );
    let second = page(first.last().map(|e| e.id)).await;
    assert_eq!(
        second.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["a.2", "a.1"]
    );
    assert_eq!(store.prune_audit(t(25)).await.expect("prune"), 3);
    assert_eq!(actions(store, AuditFilter::default()).await, ["a.4", "a.3"]);
    assert_eq!(store.prune_audit(t(25)).await.expect("prune again"), 0);
}
