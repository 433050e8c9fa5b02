//! Conformance cases: Flow documents and their versions.

use super::*;
use troupe_core::flow::FlowVersion;

fn versions(list: &[FlowVersion]) -> Vec<(&str, i64)> {
    list.iter().map(|f| (f.name.as_str(), f.version)).collect()
}

/// A changed document is a new version; the newest document stored again adds none; versions
/// are read newest, by number, or all (newest first); every flow's newest are listed by name.
pub async fn flow_versions_round_trip(store: &dyn Store) {
    assert!(store.list_flows().await.expect("list").is_empty());
    assert!(
        store
            .flow_versions("deploy")
            .await
            .expect("versions")
            .is_empty()
    );
    assert_not_found(store.get_flow("deploy", None).await, "flow");

    let doc1 = "name: deploy\nsteps: []\n";
    let doc2 = "name: deploy\nsteps: [] \n";
    let v1 = store.put_flow("deploy", doc1).await.expect("put");
    assert_eq!((v1.name.as_str(), v1.version), ("deploy", 1));
    assert_eq!(v1.document, doc1);
    assert_recent(v1.created_at, "created_at");
    let again = store.put_flow("deploy", doc1).await.expect("put again");
    assert_eq!(again, v1, "the same document is the same version");
    assert_eq!(
        store.flow_versions("deploy").await.expect("versions"),
        std::slice::from_ref(&v1)
    );

    // One trailing space is a change.
    let v2 = store.put_flow("deploy", doc2).await.expect("put changed");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.document, doc2);
    // Only the newest is compared: going back to an older document is a new version.
    let v3 = store.put_flow("deploy", doc1).await.expect("put older");
    assert_eq!(v3.version, 3);
    assert_eq!(v3.document, doc1);

    // Names sort apart from creation order.
    let other = store.put_flow("audit", "name: audit\n").await.expect("put");
    assert_eq!(other.version, 1, "versions count per name");

    assert_eq!(store.get_flow("deploy", None).await.expect("newest"), v3);
    assert_eq!(store.get_flow("deploy", Some(1)).await.expect("v1"), v1);
    assert_eq!(store.get_flow("deploy", Some(2)).await.expect("v2"), v2);
    assert_not_found(store.get_flow("deploy", Some(4)).await, "flow");
    assert_not_found(store.get_flow("deploy", Some(0)).await, "flow");
    assert_not_found(store.get_flow("nope", Some(1)).await, "flow");

    assert_eq!(
        store.flow_versions("deploy").await.expect("versions"),
        [v3.clone(), v2, v1],
        "newest first"
    );
    assert_eq!(
        store.list_flows().await.expect("list"),
        [other, v3],
        "the newest of each, by name"
    );
}

/// Racing puts of one flow never store a version twice: the same document racing is one
/// version, different documents racing are consecutive versions.
pub async fn concurrent_flow_puts(store: &dyn Store) {
    let same = race(8, |_| store.put_flow("same", "name: same\n")).await;
    for put in &same {
        let put = put.as_ref().expect("put");
        assert_eq!((put.version, put.document.as_str()), (1, "name: same\n"));
    }
    assert_eq!(
        versions(&store.flow_versions("same").await.expect("versions")),
        [("same", 1)]
    );

    let docs: Vec<String> = (0..8).map(|i| format!("name: many\n# {i}\n")).collect();
    let many = race(8, |i| store.put_flow("many", &docs[i])).await;
    let mut numbers: Vec<i64> = many
        .iter()
        .map(|p| p.as_ref().expect("put").version)
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>(), "one version each");
    let stored = store.flow_versions("many").await.expect("versions");
    for (put, doc) in many.iter().zip(&docs) {
        let put = put.as_ref().expect("put");
        assert_eq!(&put.document, doc);
        assert!(stored.contains(put), "{put:?} is stored as returned");
    }
}
