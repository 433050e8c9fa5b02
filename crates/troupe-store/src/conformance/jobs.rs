//! Conformance cases: Jobs and their units.

use super::*;

fn unit_names(job: &Job) -> Vec<&str> {
    job.units.iter().map(|u| u.name.as_str()).collect()
}

/// A job keeps its tag, project and units in the order given, with no source yet.
pub async fn jobs_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job(
            "release",
            &["zeta", "alpha", "mid-1", "b.2"],
            Some(p.id),
        ))
        .await
        .expect("create job");
    assert_eq!(job.tag, "release");
    assert_eq!(job.project_id, Some(p.id));
    assert_eq!(unit_names(&job), ["zeta", "alpha", "mid-1", "b.2"]);
    assert!(job.units.iter().all(|u| u.source.is_none()));
    assert_recent(job.created_at, "created_at");
    assert_eq!(store.get_job(job.id).await.expect("get"), job);

    let bare = store
        .create_job(&new_job("release", &["only"], None))
        .await
        .expect("no project");
    assert!(bare.id > job.id);
    assert_eq!(bare.project_id, None);
    assert_eq!(store.get_job(bare.id).await.expect("get"), bare);

    assert_not_found(store.get_job(bare.id + 100).await, "job");
    assert_not_found(
        store
            .create_job(&new_job("x", &["a"], Some(p.id + 100)))
            .await,
        "project",
    );
    // Callers validate; the store still refuses a unit listed twice, storing nothing.
    assert!(matches!(
        store.create_job(&new_job("dup", &["a", "a"], None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.latest_job("dup").await.expect("latest"), None);
    assert_eq!(store.latest_job("x").await.expect("latest"), None);
}

/// `latest_job` is the highest id with the tag; `list_jobs` pages newest first by tag.
pub async fn latest_job_and_list_jobs(store: &dyn Store) {
    assert_eq!(store.latest_job("a").await.expect("latest"), None);
    let mut made = Vec::new();
    for i in 0..11 {
        let tag = if i % 3 == 0 { "a" } else { "b" };
        let units = [format!("u{i}"), format!("v{i}")];
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        made.push(
            store
                .create_job(&new_job(tag, &units, None))
                .await
                .expect("create"),
        );
    }
    let latest_a = store.latest_job("a").await.expect("latest").expect("some");
    assert_eq!(latest_a, made[9]);
    let latest_b = store.latest_job("b").await.expect("latest").expect("some");
    assert_eq!(latest_b, made[10]);
    assert_eq!(store.latest_job("c").await.expect("latest"), None);

    for (tag, expected) in [
        (None, made.iter().rev().cloned().collect::<Vec<_>>()),
        (
            Some("a"),
            made.iter()
                .filter(|j| j.tag == "a")
                .rev()
                .cloned()
                .collect(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_jobs(tag, Page { before, limit: 3 })
                .await
                .expect("page");
            assert!(page.len() <= 3);
            if let Some(b) = before {
                assert!(page.iter().all(|j| j.id < b), "below the cursor");
            }
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            seen.extend(page);
        }
        assert_eq!(
            seen, expected,
            "every job once, newest first, with its units"
        );
    }
    let zero = store
        .list_jobs(
            None,
            Page {
                before: None,
                limit: 0,
            },
        )
        .await
        .expect("list");
    assert!(zero.is_empty(), "limit 0 lists nothing");
    let none = store
        .list_jobs(
            Some("c"),
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(none.is_empty());
}

/// `set_unit_source` sets one unit's source (a project or a data dir), which `get_job` shows.
pub async fn set_unit_source_rules(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job("t", &["web", "db", "cache"], None))
        .await
        .expect("job");
    let web = store
        .set_unit_source(job.id, "web", &UnitSource::Project(p.id))
        .await
        .expect("set");
    assert_eq!(
        web,
        Unit {
            name: "web".into(),
            source: Some(UnitSource::Project(p.id)),
        }
    );
    let dir = UnitSource::DataDir("/var/lib/redrunner/db".into());
    store
        .set_unit_source(job.id, "db", &dir)
        .await
        .expect("set");
    let got = store.get_job(job.id).await.expect("get");
    assert_eq!(unit_names(&got), ["web", "db", "cache"], "order kept");
    assert_eq!(got.units[0].source, Some(UnitSource::Project(p.id)));
    assert_eq!(got.units[1].source, Some(dir.clone()));
    assert_eq!(got.units[2].source, None);
    // Setting again replaces.
    store
        .set_unit_source(job.id, "web", &dir)
        .await
        .expect("replace");
    assert_eq!(
        store.get_job(job.id).await.expect("get").units[0].source,
        Some(dir.clone())
    );

    assert_not_found(
        store.set_unit_source(job.id + 100, "web", &dir).await,
        "job",
    );
    assert_not_found(store.set_unit_source(job.id, "nope", &dir).await, "unit");
    assert_not_found(
        store
            .set_unit_source(job.id, "cache", &UnitSource::Project(p.id + 100))
            .await,
        "project",
    );
    assert_eq!(
        store.get_job(job.id).await.expect("get").units[2].source,
        None,
        "a refused source is not stored"
    );
}
