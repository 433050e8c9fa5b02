//! Leader leases: one holder at a time, renewed only by it, taken over once expired.

use super::race;
use crate::Store;
use chrono::{Duration as ChronoDuration, Utc};

/// A free lease is taken; another holder cannot take it until it expires, then can; the old
/// holder's renewal then fails; release lets anyone take it at once.
pub async fn source_leases_round_trip(store: &dyn Store) {
    assert!(store.list_source_leases().await.expect("list").is_empty());
    let now = Utc::now();
    let until = now + ChronoDuration::seconds(30);
    assert!(
        store
            .acquire_source_lease("dir", "a", now, until)
            .await
            .expect("acquire")
    );
    // Acquiring again as the holder renews.
    assert!(
        store
            .acquire_source_lease("dir", "a", now, until + ChronoDuration::seconds(1))
            .await
            .expect("reacquire")
    );
    assert!(
        !store
            .acquire_source_lease("dir", "b", now, until)
            .await
            .expect("held elsewhere")
    );
    let leases = store.list_source_leases().await.expect("list");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].name, "dir");
    assert_eq!(leases[0].holder, "a");
    assert_eq!(
        leases[0].expires_at.timestamp_micros(),
        (until + ChronoDuration::seconds(1)).timestamp_micros()
    );
    assert!(
        store
            .renew_source_lease("dir", "a", until + ChronoDuration::seconds(5))
            .await
            .expect("renew")
    );
    assert!(
        !store
            .renew_source_lease("dir", "b", until)
            .await
            .expect("renew by another")
    );
    // Past its expiry, another holder takes it over and the old one can no longer renew.
    let later = until + ChronoDuration::seconds(5);
    assert!(
        store
            .acquire_source_lease("dir", "b", later, later + ChronoDuration::seconds(30))
            .await
            .expect("take over")
    );
    assert!(
        !store
            .renew_source_lease("dir", "a", later + ChronoDuration::seconds(30))
            .await
            .expect("stale renew")
    );
    // Another holder's release changes nothing; the holder's frees it for anyone.
    store
        .release_source_lease("dir", "a")
        .await
        .expect("release");
    assert_eq!(
        store.list_source_leases().await.expect("list")[0].holder,
        "b"
    );
    store
        .release_source_lease("dir", "b")
        .await
        .expect("release");
    assert!(store.list_source_leases().await.expect("list").is_empty());
    assert!(
        store
            .acquire_source_lease("dir", "c", now, until)
            .await
            .expect("free again")
    );
    // Leases are independent by name.
    assert!(
        store
            .acquire_source_lease("mqtt", "a", now, until)
            .await
            .expect("other name")
    );
}

/// Replicas racing for one free lease: exactly one gets it.
pub async fn racing_source_lease_acquires(store: &dyn Store) {
    let now = Utc::now();
    let until = now + ChronoDuration::seconds(30);
    let won = race(8, |i| async move {
        store
            .acquire_source_lease("contested", &format!("replica-{i}"), now, until)
            .await
            .expect("acquire")
    })
    .await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let leases = store.list_source_leases().await.expect("list");
    let winner = won.iter().position(|w| *w).expect("a winner");
    assert_eq!(leases[0].holder, format!("replica-{winner}"));
}
