//! Conformance cases: Creating, reading and listing runs; their links (jobs, relaunches, templates, slices).

use super::*;

/// A new run is queued and keeps its options, labels, tag and inventory exactly.
pub async fn create_run_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let options = RunOptions {
        extra_vars:
            json!({"a": 1, "nested": {"list": [1, "two", null, 3.5], "t": true}, "s": "é\"'"})
                .as_object()
                .expect("object")
                .clone(),
        limit: Some("web:!db".into()),
        tags: vec!["x".into(), "y".into()],
        skip_tags: vec!["z".into()],
        check: true,
        diff: true,
        forks: Some(7),
        verbosity: 3,
        timeout_s: Some(90),
        start_at_task: Some("second task".into()),
        // Options added later (slicing...) round-trip through the same JSON column.
        ..Default::default()
    };
    let mut labels = Labels::new();
    labels.insert("team".into(), "ops".into());
    labels.insert("ticket".into(), "".into());
    let new = NewRun {
        project_id: p.id,
        playbook: PlaybookRef::parse("plays/site.yml").expect("valid"),
        inventory_id: Some(inv.id),
        inventory: inv.content.clone(),
        options: options.clone(),
        labels: labels.clone(),
        tag: Some("nightly".into()),
        origin: Origin::Api,
        notify: Vec::new(),
    };
    let run = store.create_run(&new).await.expect("create run");
    assert_eq!(run.project_id, p.id);
    assert_eq!(run.playbook, "plays/site.yml");
    assert_eq!(run.inventory_id, Some(inv.id));
    assert_eq!(run.options, options);
    assert_eq!(run.labels, labels);
    assert_eq!(run.tag.as_deref(), Some("nightly"));
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.status_reason, None);
    assert_eq!(run.rc, None);
    assert_recent(run.created_at, "created_at");
    assert_eq!(run.started_at, None);
    assert_eq!(run.finished_at, None);
    assert_eq!(run.worker_id, None);
    assert_eq!(run.cancel_requested, None);
    assert!(run.summary.is_empty());
    assert_eq!(run.event_count, 0);
    assert_eq!(store.get_run(run.id).await.expect("get"), run);
    assert_eq!(
        store.get_run_inventory(run.id).await.expect("inventory"),
        inv.content
    );
    assert_eq!(
        store.get_run_launch(run.id).await.expect("launch"),
        (p.clone(), inv.content.clone())
    );

    // An inline inventory (no stored one) is kept too.
    let inline = store.create_run(&new_run(p.id)).await.expect("create run");
    assert_eq!(inline.inventory_id, None);
    assert!(inline.labels.is_empty());
    assert_eq!(inline.options, RunOptions::default());
    assert_eq!(
        store.get_run_inventory(inline.id).await.expect("inventory"),
        inline_inventory()
    );
    assert_not_found(store.get_run(inline.id + 100).await, "run");
    assert_not_found(store.get_run_inventory(inline.id + 100).await, "run");
    // The project as it is when the run starts, not as it was when the run was asked for.
    let synced = ProjectSync {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        synced_at: Some(Utc::now()),
        error: None,
        requirements_error: None,
    };
    let p_now = store.set_project_sync(p.id, &synced).await.expect("sync");
    assert_eq!(
        store.get_run_launch(inline.id).await.expect("launch"),
        (p_now, inline_inventory())
    );
    assert_not_found(store.get_run_launch(inline.id + 100).await, "run");
}

/// A run needs an existing project and (when given) inventory; nothing is stored otherwise.
pub async fn create_run_missing_references(store: &dyn Store) {
    let p = project(store, "p").await;
    assert_not_found(store.create_run(&new_run(p.id + 1)).await, "project");
    let mut new = new_run(p.id);
    new.inventory_id = Some(4242);
    new.labels.insert("k".into(), "v".into());
    assert_not_found(store.create_run(&new).await, "inventory");
    // Without labels too (one statement on SQLite, where the foreign keys do the checking),
    // and for every other reference a run can hold.
    new.labels.clear();
    assert_not_found(store.create_run(&new).await, "inventory");
    let refer = |set: &dyn Fn(&mut NewRun)| {
        let mut new = new_run(p.id);
        set(&mut new);
        new
    };
    let relaunch = refer(&|n| n.origin = relaunch(4243, Origin::Api));
    assert_not_found(store.create_run(&relaunch).await, "run");
    let template = refer(&|n| n.origin = Origin::Template { template_id: 4244 });
    assert_not_found(store.create_run(&template).await, "template");
    let slice = refer(&|n| {
        n.origin = Origin::Slice {
            of: troupe_core::run::SliceOf {
                parent_id: 4245,
                slice: 1,
                count: 2,
            },
            original: Box::new(Origin::Api),
        }
    });
    assert_not_found(store.create_run(&slice).await, "run");
    let all = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert!(all.is_empty(), "no run stored: {all:?}");
}

/// Ids increase with creation, across projects.
pub async fn run_ids_increase(store: &dyn Store) {
    let p1 = project(store, "p1").await;
    let p2 = project(store, "p2").await;
    let mut last = 0;
    for i in 0..10 {
        let run = store
            .create_run(&new_run(if i % 2 == 0 { p1.id } else { p2.id }))
            .await
            .expect("create");
        assert!(run.id > last, "{} after {last}", run.id);
        last = run.id;
    }
}

/// Runs are counted by status; statuses without runs are left out.
pub async fn runs_counted_by_status(store: &dyn Store) {
    assert_eq!(store.count_runs_by_status().await.expect("count"), vec![]);
    let p = project(store, "p").await;
    for _ in 0..3 {
        store.create_run(&new_run(p.id)).await.expect("create");
    }
    let claimed = store
        .claim_run("w/1", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a queued run");
    let mut counts = store.count_runs_by_status().await.expect("count");
    counts.sort_by_key(|(status, _)| status.as_str());
    assert_eq!(
        counts,
        vec![(RunStatus::Queued, 2), (RunStatus::Running, 1)],
        "run {} is running",
        claimed.id
    );
}

/// Listing filters by status (any of), project, tag and label, newest first.
pub async fn list_runs_filters(store: &dyn Store) {
    let p1 = project(store, "p1").await;
    let p2 = project(store, "p2").await;
    let mk = |project_id: i64, tag: Option<&str>, labels: &[(&str, &str)]| {
        let mut n = new_run(project_id);
        n.tag = tag.map(str::to_owned);
        n.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        n
    };
    let r1 = store
        .create_run(&mk(p1.id, Some("a"), &[("team", "ops")]))
        .await
        .expect("r1");
    let r2 = store
        .create_run(&mk(p1.id, Some("b"), &[("team", "dev"), ("x", "1")]))
        .await
        .expect("r2");
    let r3 = store
        .create_run(&mk(p2.id, Some("a"), &[]))
        .await
        .expect("r3");
    let r4 = store
        .create_run(&mk(p2.id, None, &[("team", "ops"), ("x", "2")]))
        .await
        .expect("r4");
    let r5 = store
        .create_run(&mk(p1.id, None, &[("teams", "ops")]))
        .await
        .expect("r5");
    // r1 -> running, r2 -> successful, r3 -> canceled; r4, r5 stay queued.
    let c = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("r1");
    assert_eq!(c.id, r1.id);
    let c = store
        .claim_run("w", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("r2");
    assert_eq!(c.id, r2.id);
    store
        .finish_run(r2.id, "w", &ok_outcome())
        .await
        .expect("finish");
    store
        .request_cancel(r3.id, CancelMode::Graceful)
        .await
        .expect("cancel");

    let all = Page {
        before: None,
        limit: 100,
    };
    let list = |f: RunFilter| async move { ids(&store.list_runs(&f, all).await.expect("list")) };

    assert_eq!(
        list(RunFilter::default()).await,
        vec![r5.id, r4.id, r3.id, r2.id, r1.id]
    );
    let st = |s: &[RunStatus]| RunFilter {
        statuses: s.to_vec(),
        ..Default::default()
    };
    assert_eq!(list(st(&[RunStatus::Queued])).await, vec![r5.id, r4.id]);
    assert_eq!(
        list(st(&[
            RunStatus::Running,
            RunStatus::Successful,
            RunStatus::Canceled
        ]))
        .await,
        vec![r3.id, r2.id, r1.id]
    );
    assert_eq!(list(st(&[RunStatus::Error])).await, Vec::<i64>::new());
    let pf = RunFilter {
        project_id: Some(p2.id),
        ..Default::default()
    };
    assert_eq!(list(pf).await, vec![r4.id, r3.id]);
    // A project-scoped token's view: any of its projects, none when it has none.
    let scoped = |projects: Vec<i64>| RunFilter {
        projects: Some(projects),
        ..Default::default()
    };
    assert_eq!(list(scoped(vec![p2.id])).await, vec![r4.id, r3.id]);
    assert_eq!(
        list(scoped(vec![p1.id, p2.id])).await,
        vec![r5.id, r4.id, r3.id, r2.id, r1.id]
    );
    assert_eq!(list(scoped(vec![])).await, Vec::<i64>::new());
    let both = RunFilter {
        project_id: Some(p1.id),
        projects: Some(vec![p2.id]),
        ..Default::default()
    };
    assert_eq!(list(both).await, Vec::<i64>::new());
    let tf = RunFilter {
        tag: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(list(tf).await, vec![r3.id, r1.id]);
    let lk = RunFilter {
        label: Some(("team".into(), None)),
        ..Default::default()
    };
    assert_eq!(list(lk).await, vec![r4.id, r2.id, r1.id]);
    let lkv = RunFilter {
        label: Some(("team".into(), Some("ops".into()))),
        ..Default::default()
    };
    assert_eq!(list(lkv).await, vec![r4.id, r1.id]);
    let none = RunFilter {
        label: Some(("team".into(), Some("op%".into()))),
        ..Default::default()
    };
    assert_eq!(list(none).await, Vec::<i64>::new());
    let combo = RunFilter {
        statuses: vec![RunStatus::Queued, RunStatus::Running],
        project_id: Some(p2.id),
        label: Some(("x".into(), Some("2".into()))),
        tag: None,
        ..Default::default()
    };
    assert_eq!(list(combo).await, vec![r4.id]);
    let combo2 = RunFilter {
        project_id: Some(p1.id),
        tag: Some("a".into()),
        label: Some(("team".into(), None)),
        ..Default::default()
    };
    assert_eq!(list(combo2).await, vec![r1.id]);
    // Listed runs carry their labels.
    let listed = store
        .list_runs(&RunFilter::default(), all)
        .await
        .expect("list");
    let r2_listed = listed.iter().find(|r| r.id == r2.id).expect("r2 listed");
    assert_eq!(r2_listed.labels.get("x").map(String::as_str), Some("1"));
    assert_eq!(r2_listed.status, RunStatus::Successful);
}

/// `list_run_versions` lists what `list_runs` lists; every kind of change to a run moves its
/// version up; `get_runs` returns the same runs as `get_run`, with their versions.
pub async fn run_versions_follow_every_change(store: &dyn Store) {
    let p = project(store, "p").await;
    let runs = queued_runs(store, p.id, 4).await;
    let version_of = async |id: i64| -> i64 {
        let found = store.get_runs(&[id]).await.expect("get_runs");
        assert_eq!(found.len(), 1, "run {id}");
        assert_eq!(found[0].0.id, id);
        found[0].0.version
    };
    let all = RunFilter::default();
    for page in [
        Page {
            before: None,
            limit: 50,
        },
        Page {
            before: Some(runs[3].id),
            limit: 2,
        },
    ] {
        let listed = store.list_runs(&all, page).await.expect("list");
        let versions = store.list_run_versions(&all, page).await.expect("versions");
        assert_eq!(
            versions.iter().map(|v| v.id).collect::<Vec<_>>(),
            ids(&listed),
            "same runs, same order"
        );
    }
    let tagged = RunFilter {
        tag: Some("nothing-has-it".into()),
        ..Default::default()
    };
    assert!(
        store
            .list_run_versions(
                &tagged,
                Page {
                    before: None,
                    limit: 10
                }
            )
            .await
            .expect("versions")
            .is_empty(),
        "filters apply"
    );

    // Each change moves the version of the run it touches, and only that one.
    let id = runs[0].id;
    let other = version_of(runs[1].id).await;
    let mut last = version_of(id).await;
    let mut moved = async |what: &str| {
        let now = version_of(id).await;
        assert!(now > last, "{what}: version {now} after {last}");
        last = now;
    };
    let claimed = store
        .claim_runs("w1", Duration::from_secs(60), 1)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), [id]);
    moved("claim").await;
    store
        .mark_launched(id, "w1", Utc::now(), Some("abc"))
        .await
        .expect("launched");
    moved("mark_launched").await;
    store
        .append_events(id, &events(1..=3))
        .await
        .expect("events");
    moved("append_events (event count)").await;
    store
        .request_cancel(id, CancelMode::Graceful)
        .await
        .expect("cancel");
    moved("request_cancel").await;
    store
        .finish_run(id, "w1", &ok_outcome())
        .await
        .expect("finish");
    moved("finish_run").await;
    assert_eq!(
        version_of(runs[1].id).await,
        other,
        "other runs keep theirs"
    );

    let got = store
        .get_runs(&[runs[2].id, id, i64::MAX])
        .await
        .expect("get_runs");
    assert_eq!(got.len(), 2, "an unknown id is left out");
    let (v, found) = got
        .into_iter()
        .find(|(v, _)| v.id == id)
        .expect("the finished run");
    assert_eq!(found, store.get_run(id).await.expect("get"));
    assert_eq!(v, RunVersion { id, version: last });
}

/// The runs generation moves after every committed change to a run, and a list read once it
/// has moved shows the change: the API answers an unchanged list from what it kept while the
/// generation stays put. Not among the common cases: only for backends that keep a runs
/// generation ([`RunStore::runs_generation`](crate::RunStore::runs_generation)); their tests call
/// it.
pub async fn runs_generation_moves_after_every_change(store: &dyn Store) {
    let p = project(store, "p").await;
    let page = Page {
        before: None,
        limit: 10,
    };
    let all = RunFilter::default();
    // The generation a list read now could be kept under, once the store offers one (a
    // backend offers none while a change is being made), after it left `from`.
    let settled = async |from: Option<u64>, what: &str| -> u64 {
        let start = std::time::Instant::now();
        loop {
            match store.runs_generation() {
                Some(now) if Some(now) != from => return now,
                now => assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{what}: the runs generation stayed {now:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let mut generation = settled(None, "a backend keeps a runs generation").await;
    // Once the generation moved past `from`, the list shows `id` at the version it has now.
    let moved = async |from: u64, id: i64, what: &str| -> u64 {
        let now = settled(Some(from), what).await;
        let current = store.get_runs(&[id]).await.expect("get_runs");
        let listed = store.list_run_versions(&all, page).await.expect("list");
        assert!(
            listed.contains(&current[0].0),
            "{what}: listed {listed:?}, the run is at {:?}",
            current[0].0
        );
        now
    };
    let run = store.create_run(&new_run(p.id)).await.expect("create");
    generation = moved(generation, run.id, "create_run").await;
    store
        .claim_runs("w1", Duration::from_secs(60), 1)
        .await
        .expect("claim");
    generation = moved(generation, run.id, "claim").await;
    store
        .mark_launched(run.id, "w1", Utc::now(), None)
        .await
        .expect("launched");
    generation = moved(generation, run.id, "mark_launched").await;
    store
        .append_events(run.id, &events(1..=2))
        .await
        .expect("events");
    generation = moved(generation, run.id, "append_events (event count)").await;
    store
        .request_cancel(run.id, CancelMode::Force)
        .await
        .expect("cancel");
    generation = moved(generation, run.id, "request_cancel").await;
    store
        .finish_run(run.id, "w1", &ok_outcome())
        .await
        .expect("finish");
    moved(generation, run.id, "finish_run").await;
}

/// Pages follow the `before` cursor with no duplicate and no gap, with and without filters.
pub async fn list_runs_pagination(store: &dyn Store) {
    let p = project(store, "p").await;
    let mut created = Vec::new();
    for i in 0..25 {
        let mut n = new_run(p.id);
        if i % 3 == 0 {
            n.tag = Some("third".into());
        }
        created.push(store.create_run(&n).await.expect("create"));
    }
    for (filter, expected) in [
        (
            RunFilter::default(),
            created.iter().map(|r| r.id).rev().collect::<Vec<_>>(),
        ),
        (
            RunFilter {
                tag: Some("third".into()),
                ..Default::default()
            },
            created
                .iter()
                .filter(|r| r.tag.is_some())
                .map(|r| r.id)
                .rev()
                .collect(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_runs(&filter, Page { before, limit: 7 })
                .await
                .expect("page");
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            if let Some(b) = before {
                assert!(
                    page.iter().all(|r| r.id < b),
                    "page starts below the cursor"
                );
            }
            before = page.last().map(|r| r.id);
            seen.extend(ids(&page));
        }
        assert_eq!(seen, expected, "pages cover every run once, newest first");
    }
    let empty = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: Some(created[0].id),
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(empty.is_empty());
    let zero = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 0,
            },
        )
        .await
        .expect("list");
    assert!(zero.is_empty(), "limit 0 lists nothing");
}

/// A run keeps its job and unit, the run it relaunches, its template and its options
/// (`start_at_task` included); a plain run has none of these.
pub async fn run_links_round_trip(store: &dyn Store) {
    let p = project(store, "p").await;
    let inv = store
        .create_inventory(&new_inventory("inv"), 2)
        .await
        .expect("inv");
    let job = store
        .create_job(&new_job("rel", &["web", "db"], Some(p.id)))
        .await
        .expect("job");
    let template = store
        .create_template(&new_template("deploy", p.id, inv.id))
        .await
        .expect("template");
    let plain = store.create_run(&new_run(p.id)).await.expect("plain");
    for (field, missing) in [
        ("launched_at", plain.launched_at.is_none()),
        ("commit", plain.commit.is_none()),
        ("job_id", plain.job_id.is_none()),
        ("unit", plain.unit.is_none()),
        ("relaunch_of", plain.relaunch_of.is_none()),
        ("template_id", plain.template_id.is_none()),
    ] {
        assert!(missing, "a plain run has no {field}");
    }
    let mut new = new_run(p.id);
    new.origin = relaunch(
        plain.id,
        Origin::JobUnit {
            job_id: job.id,
            unit: "db".into(),
        },
    );
    new.options.start_at_task = Some("restart db".into());
    let run = store.create_run(&new).await.expect("linked run");
    assert_eq!(run.job_id, Some(job.id));
    assert_eq!(run.unit.as_deref(), Some("db"));
    assert_eq!(run.relaunch_of, Some(plain.id));
    assert_eq!(run.template_id, None);
    assert_eq!(run.options.start_at_task.as_deref(), Some("restart db"));
    assert_eq!(run.launched_at, None);
    assert_eq!(run.commit, None);
    assert_eq!(store.get_run(run.id).await.expect("get"), run);
    let listed = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.first(), Some(&run), "listing carries the links");
    let mut new = new_run(p.id);
    new.origin = relaunch(
        run.id,
        Origin::Template {
            template_id: template.id,
        },
    );
    let templated = store.create_run(&new).await.expect("templated relaunch");
    assert_eq!(templated.template_id, Some(template.id));
    assert_eq!(templated.relaunch_of, Some(run.id));
    assert_eq!(
        (templated.job_id, templated.unit.as_deref()),
        (None, None),
        "a template run is no job action"
    );
    assert_eq!(Origin::of_run(&templated), new.origin);
}

/// A link to a missing job, unit, run or template is `NotFound`, and nothing is stored.
pub async fn create_run_missing_links(store: &dyn Store) {
    let p = project(store, "p").await;
    let job = store
        .create_job(&new_job("t", &["web"], None))
        .await
        .expect("job");
    let with = |f: fn(&mut NewRun, i64), id: i64| {
        let mut n = new_run(p.id);
        f(&mut n, id);
        n
    };
    assert_not_found(
        store
            .create_run(&with(
                |n, j| {
                    n.origin = Origin::JobUnit {
                        job_id: j + 100,
                        unit: "web".into(),
                    }
                },
                job.id,
            ))
            .await,
        "job",
    );
    assert_not_found(
        store
            .create_run(&with(
                |n, j| {
                    n.origin = Origin::JobUnit {
                        job_id: j,
                        unit: "db".into(),
                    }
                },
                job.id,
            ))
            .await,
        "unit",
    );
    assert_not_found(
        store
            .create_run(&with(|n, r| n.origin = relaunch(r, Origin::Api), 4242))
            .await,
        "run",
    );
    assert_not_found(
        store
            .create_run(&with(
                |n, t| n.origin = Origin::Template { template_id: t },
                4242,
            ))
            .await,
        "template",
    );
    let all = store
        .list_runs(
            &RunFilter::default(),
            Page {
                before: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert!(all.is_empty(), "no run stored: {all:?}");
}

/// Listing filters by job, by unit (of a job) and by the run relaunched.
pub async fn list_runs_by_job_unit_relaunch(store: &dyn Store) {
    let p = project(store, "p").await;
    let j1 = store
        .create_job(&new_job("t", &["web", "db"], None))
        .await
        .expect("job");
    let j2 = store
        .create_job(&new_job("t", &["web"], None))
        .await
        .expect("job");
    let mk = |job_unit: Option<(i64, &str)>, relaunch_of: Option<i64>| {
        let mut n = new_run(p.id);
        let base = match job_unit {
            Some((job_id, unit)) => Origin::JobUnit {
                job_id,
                unit: unit.to_owned(),
            },
            None => Origin::Api,
        };
        n.origin = match relaunch_of {
            Some(of) => relaunch(of, base),
            None => base,
        };
        n
    };
    let r1 = store
        .create_run(&mk(Some((j1.id, "web")), None))
        .await
        .expect("r1");
    let r2 = store
        .create_run(&mk(Some((j1.id, "db")), None))
        .await
        .expect("r2");
    let r3 = store
        .create_run(&mk(Some((j2.id, "web")), None))
        .await
        .expect("r3");
    let r4 = store
        .create_run(&mk(Some((j1.id, "web")), Some(r1.id)))
        .await
        .expect("r4");
    let r5 = store.create_run(&mk(None, Some(r1.id))).await.expect("r5");
    let r6 = store.create_run(&mk(None, Some(r4.id))).await.expect("r6");
    let all = Page {
        before: None,
        limit: 100,
    };
    let list = |f: RunFilter| async move { ids(&store.list_runs(&f, all).await.expect("list")) };
    let job = |j: i64| RunFilter {
        job_id: Some(j),
        ..Default::default()
    };
    assert_eq!(list(job(j1.id)).await, vec![r4.id, r2.id, r1.id]);
    assert_eq!(list(job(j2.id)).await, vec![r3.id]);
    assert_eq!(list(job(j2.id + 100)).await, Vec::<i64>::new());
    let unit = |j: i64, u: &str| RunFilter {
        job_id: Some(j),
        unit: Some(u.into()),
        ..Default::default()
    };
    assert_eq!(list(unit(j1.id, "web")).await, vec![r4.id, r1.id]);
    assert_eq!(list(unit(j1.id, "db")).await, vec![r2.id]);
    assert_eq!(list(unit(j2.id, "db")).await, Vec::<i64>::new());
    let relaunch = |r: i64| RunFilter {
        relaunch_of: Some(r),
        ..Default::default()
    };
    assert_eq!(list(relaunch(r1.id)).await, vec![r5.id, r4.id]);
    assert_eq!(list(relaunch(r4.id)).await, vec![r6.id]);
    assert_eq!(list(relaunch(r6.id)).await, Vec::<i64>::new());
    let combo = RunFilter {
        job_id: Some(j1.id),
        relaunch_of: Some(r1.id),
        statuses: vec![RunStatus::Queued],
        ..Default::default()
    };
    assert_eq!(list(combo).await, vec![r4.id]);
    let paged = store
        .list_runs(
            &job(j1.id),
            Page {
                before: Some(r4.id),
                limit: 1,
            },
        )
        .await
        .expect("page");
    assert_eq!(ids(&paged), vec![r2.id]);
}

/// Slices point at their split run, and can be listed by it.
pub async fn slices_link_to_their_parent(store: &dyn Store) {
    let p = project(store, "p").await;
    let parent = store.create_run(&new_run(p.id)).await.expect("parent");
    assert_eq!(
        (parent.parent_id, parent.slice, parent.slice_count),
        (None, None, None)
    );
    let mut ids = Vec::new();
    for slice in 1..=3 {
        let mut new = new_run(p.id);
        new.origin = Origin::Slice {
            of: troupe_core::run::SliceOf {
                parent_id: parent.id,
                slice,
                count: 3,
            },
            original: Box::new(Origin::Api),
        };
        let child = store.create_run(&new).await.expect("slice");
        assert_eq!(child.parent_id, Some(parent.id));
        assert_eq!(child.slice, Some(slice));
        assert_eq!(child.slice_count, Some(3));
        ids.push(child.id);
    }
    let filter = RunFilter {
        parent_id: Some(parent.id),
        ..Default::default()
    };
    let listed: Vec<i64> = store
        .list_runs(
            &filter,
            Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids, "newest first, only the slices");
    let mut orphan = new_run(p.id);
    orphan.origin = Origin::Slice {
        of: troupe_core::run::SliceOf {
            parent_id: 999_999,
            slice: 1,
            count: 1,
        },
        original: Box::new(Origin::Api),
    };
    assert!(matches!(
        store.create_run(&orphan).await,
        Err(StoreError::NotFound { .. })
    ));
}
