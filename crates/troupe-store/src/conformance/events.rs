//! Conformance cases: Events: appending (idempotent, batched with output), reading, host failures.

use super::*;

/// Events keep every field, list in counter order after a cursor, and are counted on the run.
pub async fn events_round_trip_and_paging(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let other = running_run(store, p.id, "w").await;
    let mut evs = events(1..=10);
    evs[0] = Event {
        counter: 1,
        uuid: "0f8c-uuid".into(),
        event: "playbook_on_start".into(),
        parent_uuid: None,
        created: Utc
            .with_ymd_and_hms(2026, 11, 22, 1, 2, 3)
            .single()
            .expect("date")
            + ChronoDuration::microseconds(123_456),
        stdout: String::new(),
        start_line: 0,
        end_line: 0,
        event_data: json!({"playbook": "site.yml", "n": 1.5, "big": 9007199254740993_i64, "u": "ünï \"q\" \\ \n", "arr": [null, true, {}]}).into(),
    };
    store.append_events(run.id, &evs).await.expect("append");
    store
        .append_events(other.id, &events(1..=3))
        .await
        .expect("append other");
    let got = store.list_events(run.id, 0, 100).await.expect("list");
    assert_eq!(got, evs);
    assert_eq!(
        store.list_events(run.id, 4, 3).await.expect("list"),
        evs[4..7].to_vec()
    );
    assert_eq!(
        store.list_events(run.id, 10, 5).await.expect("list"),
        Vec::<Event>::new()
    );
    assert_eq!(
        store.list_events(run.id, 0, 0).await.expect("list"),
        Vec::<Event>::new()
    );
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 10);
    assert_eq!(store.get_run(other.id).await.expect("get").event_count, 3);
    assert_eq!(
        store
            .list_events(other.id, 0, 100)
            .await
            .expect("list")
            .len(),
        3
    );
    // Out-of-order arrival still lists in counter order.
    store
        .append_events(
            other.id,
            &[
                event(6, "runner_on_ok", json!({})),
                event(4, "x", json!(null)),
            ],
        )
        .await
        .expect("append");
    let counters: Vec<i64> = store
        .list_events(other.id, 0, 100)
        .await
        .expect("list")
        .iter()
        .map(|e| e.counter)
        .collect();
    assert_eq!(counters, vec![1, 2, 3, 4, 6]);
    assert_eq!(store.get_run(other.id).await.expect("get").event_count, 5);
    // An empty batch is fine.
    store
        .append_events(run.id, &[])
        .await
        .expect("empty append");
}

/// A retried or overlapping batch never duplicates events nor miscounts them.
pub async fn events_batches_are_idempotent(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let first = events(1..=50);
    store.append_events(run.id, &first).await.expect("append");
    store.append_events(run.id, &first).await.expect("retry");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 50);
    // Overlap, with a changed duplicate: the stored one wins.
    let mut overlap = events(40..=80);
    overlap[0].stdout = "changed".into();
    store
        .append_events(run.id, &overlap)
        .await
        .expect("overlap");
    let got = store.list_events(run.id, 0, 1000).await.expect("list");
    assert_eq!(got.len(), 80);
    assert_eq!(got[39], first[39], "the first stored copy is kept");
    assert!(got.windows(2).all(|w| w[0].counter + 1 == w[1].counter));
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 80);
    // Duplicates inside one batch.
    let dup = vec![
        event(81, "a", json!({})),
        event(81, "b", json!({})),
        event(82, "c", json!({})),
    ];
    store
        .append_events(run.id, &dup)
        .await
        .expect("dups in batch");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 82);
    assert_eq!(
        store.list_events(run.id, 80, 10).await.expect("list").len(),
        2
    );
}

/// One call with more events than one statement can bind is still stored whole.
pub async fn events_large_batch(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let evs = events(1..=7000);
    store.append_events(run.id, &evs).await.expect("append");
    assert_eq!(store.get_run(run.id).await.expect("get").event_count, 7000);
    let tail = store.list_events(run.id, 6990, 100).await.expect("list");
    assert_eq!(tail, evs[6990..].to_vec());
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(run.id, after, 1000).await.expect("list");
        let Some(last) = page.last() else { break };
        after = last.counter;
        all.extend(page);
    }
    assert_eq!(all, evs);
}

/// Events and output for a run that does not exist are refused, and nothing is stored.
pub async fn events_for_missing_run(store: &dyn Store) {
    assert_not_found(store.append_events(77, &events(1..=2)).await, "run");
    assert_not_found(
        store
            .append_output(
                77,
                &[OutputChunk {
                    stream: Stream::Stdout,
                    seq: 1,
                    text: "x".into(),
                }],
            )
            .await,
        "run",
    );
    let p = project(store, "p").await;
    let run = store.create_run(&new_run(p.id)).await.expect("create");
    assert!(
        store
            .list_events(run.id, 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .read_output(run.id, Stream::Stdout)
            .await
            .expect("read"),
        ""
    );
}

/// Host failures are unreachable hosts and failures that were not ignored, in counter order.
pub async fn host_failures_filter(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let evs = vec![
        event(1, "playbook_on_start", json!({})),
        event(
            2,
            "runner_on_failed",
            json!({"host": "a", "task": "t1", "ignore_errors": true}),
        ),
        event(3, "runner_on_failed", json!({"host": "b", "task": "t1"})),
        event(4, "runner_on_ok", json!({"host": "c", "task": "t1"})),
        event(
            5,
            "runner_on_unreachable",
            json!({"host": "d", "task": "t1"}),
        ),
        event(
            6,
            "runner_on_failed",
            json!({"host": "e", "task": "t2", "ignore_errors": false}),
        ),
        event(
            7,
            "runner_on_failed",
            json!({"host": "f", "ignore_errors": "yes"}),
        ),
    ];
    store.append_events(run.id, &evs).await.expect("append");
    let failures = store.host_failures(run.id).await.expect("failures");
    let expected: Vec<Event> = evs
        .iter()
        .filter(|e| e.is_host_failure())
        .cloned()
        .collect();
    assert_eq!(failures, expected);
    assert_eq!(
        failures.iter().map(|e| e.counter).collect::<Vec<_>>(),
        vec![3, 5, 6, 7]
    );
    let other = running_run(store, p.id, "w").await;
    assert!(
        store
            .host_failures(other.id)
            .await
            .expect("failures")
            .is_empty()
    );
}

/// Events and output appended together: both stored, and a retried or overlapping batch adds
/// only what is new; a batch for a missing run is refused, whatever it holds.
pub async fn events_and_output_in_one_batch(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let first = [
        chunk(Stream::Stdout, 1, "PLAY [all] ***\n"),
        chunk(Stream::Stderr, 2, "warn\n"),
    ];
    store
        .append_batch(run.id, &events(1..=3), &first)
        .await
        .expect("append");
    store
        .append_batch(run.id, &events(1..=3), &first)
        .await
        .expect("retry");
    store
        .append_batch(
            run.id,
            &events(3..=5),
            &[
                chunk(Stream::Stdout, 2, "DUPLICATE"),
                chunk(Stream::Stdout, 3, "ok: [a]\n"),
            ],
        )
        .await
        .expect("overlap");
    store
        .append_batch(run.id, &events(6..=6), &[])
        .await
        .expect("events only");
    store
        .append_batch(run.id, &[], &[chunk(Stream::Stdout, 4, "done\n")])
        .await
        .expect("output only");
    store.append_batch(run.id, &[], &[]).await.expect("empty");

    let got = store.list_events(run.id, 0, 100).await.expect("list");
    let counters: Vec<i64> = got.iter().map(|e| e.counter).collect();
    assert_eq!(counters, vec![1, 2, 3, 4, 5, 6]);
    let stored = store.get_run(run.id).await.expect("get");
    assert_eq!(stored.event_count, 6, "each event counted once");
    let read = |stream| store.read_output(run.id, stream);
    assert_eq!(
        read(Stream::Stdout).await.expect("stdout"),
        "PLAY [all] ***\nok: [a]\ndone\n"
    );
    assert_eq!(read(Stream::Stderr).await.expect("stderr"), "warn\n");

    let some_output = [chunk(Stream::Stdout, 1, "x")];
    assert_not_found(
        store.append_batch(77, &events(1..=2), &some_output).await,
        "run",
    );
    assert_not_found(store.append_batch(77, &events(1..=2), &[]).await, "run");
    assert_not_found(store.append_batch(77, &[], &some_output).await, "run");
    assert_not_found(store.append_batch(77, &[], &[]).await, "run");
}

/// A NUL character in text does not fail the write (backends that cannot store it replace it).
pub async fn nul_characters_do_not_break_writes(store: &dyn Store) {
    let p = project(store, "p").await;
    let run = running_run(store, p.id, "w").await;
    let mut e = event(
        1,
        "runner_on_ok",
        json!({"host": "a\u{0}b", "res": {"stdout": "x\u{0}y"}}),
    );
    e.stdout = "bin\u{0}ary".into();
    store
        .append_events(run.id, std::slice::from_ref(&e))
        .await
        .expect("append event");
    let got = store.list_events(run.id, 0, 10).await.expect("list");
    assert_eq!(got.len(), 1);
    assert!(matches!(
        got[0].stdout.as_str(),
        "bin\u{0}ary" | "bin\u{FFFD}ary"
    ));
    assert_eq!(
        got[0].event_data.json(),
        e.event_data.json(),
        "event data is kept exactly"
    );
    store
        .append_output(
            run.id,
            &[OutputChunk {
                stream: Stream::Stdout,
                seq: 1,
                text: "a\u{0}b".into(),
            }],
        )
        .await
        .expect("append output");
    let out = store
        .read_output(run.id, Stream::Stdout)
        .await
        .expect("read");
    assert!(matches!(out.as_str(), "a\u{0}b" | "a\u{FFFD}b"), "{out:?}");
}

/// Appends `batches` batches of `batch_size` runner-shaped events to one run and returns the
/// rate in events per second. Not a case: backends call it from an ignored test to measure.
pub async fn event_append_rate(store: &dyn Store, batches: usize, batch_size: usize) -> f64 {
    let p = project(store, &format!("rate-{batch_size}")).await;
    let run = running_run(store, p.id, "w").await;
    let payload = json!({
        "playbook": "site.yml", "play": "all", "task": "ping", "task_action": "ansible.builtin.ping",
        "host": "web-01.example.com", "duration": 0.123,
        "res": {"changed": false, "ping": "pong", "_ansible_no_log": false},
    });
    let mut counter = 0_i64;
    let all: Vec<Vec<Event>> = (0..batches)
        .map(|_| {
            (0..batch_size)
                .map(|_| {
                    counter += 1;
                    let mut e = event(counter, "runner_on_ok", payload.clone());
                    e.stdout = format!("ok: [web-01.example.com] => {counter}\n");
                    e
                })
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    for batch in &all {
        store.append_events(run.id, batch).await.expect("append");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        store.get_run(run.id).await.expect("get").event_count,
        counter
    );
    counter as f64 / secs
}
