//! Split runs: one run's hosts over several ansible-playbook processes, gathered back into one.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const PLAY: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: hello
      ansible.builtin.debug:
        msg: "hi {{ inventory_hostname }}"
    - name: change
      ansible.builtin.command: "true"
    - name: skip some
      ansible.builtin.debug:
        msg: odd
      when: inventory_hostname in ['h2', 'h5', 'h11']
    - name: h7 breaks
      ansible.builtin.fail:
        msg: h7 is broken
      when: inventory_hostname == 'h7'
"#;

#[tokio::test]
async fn a_split_run_gathers_the_same_results_as_an_unsplit_one() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 3,
        ..Default::default()
    })?;
    let proj = project_dir(&[("site.yml", PLAY)])?;
    let pid = server.project(proj.path()).await?;
    let whole = server
        .launch(pid, "site.yml", &local_hosts(12), json!({}))
        .await?;
    let whole = server.wait_finished(whole).await?;
    let split = server
        .launch(pid, "site.yml", &local_hosts(12), json!({"slices": 5}))
        .await?;
    let parent = server.wait_finished(split).await?;

    assert_eq!(parent["status"], whole["status"], "{parent}");
    assert_eq!(parent["status"], "failed");
    assert_eq!(
        parent["summary"], whole["summary"],
        "merged summary equals the unsplit run's"
    );
    assert_eq!(parent["summary"].as_object().map(|m| m.len()), Some(12));

    let children = server.get(&format!("/api/v1/runs?parent={split}")).await?;
    let children = children["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(children.len(), 5);
    let mut sizes = Vec::new();
    let mut all_hosts = BTreeSet::new();
    for c in &children {
        assert_eq!(c["parent_id"], split);
        assert_eq!(c["slice_count"], 5);
        let hosts: Vec<String> = c["summary"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        sizes.push(hosts.len());
        for h in hosts {
            assert!(all_hosts.insert(h), "a host ran in two slices");
        }
    }
    sizes.sort_unstable();
    assert_eq!(sizes, vec![2, 2, 2, 3, 3], "balanced, never empty");
    assert_eq!(all_hosts.len(), 12);

    // The parent's events: one gapless sequence, each event saying its slice, as many as the
    // slices produced together.
    let events = server.events(split).await?;
    let child_total: i64 = children
        .iter()
        .map(|c| c["event_count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(events.len() as i64, child_total);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["counter"].as_i64(), Some(i as i64 + 1));
        let slice = e["event_data"]["troupe_slice"].as_i64().unwrap_or(0);
        assert!((1..=5).contains(&slice), "{e}");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "playbook_on_stats")
            .count(),
        5
    );
    // Per-host view and stdout work on the parent too.
    let hosts = server.get(&format!("/api/v1/runs/{split}/hosts")).await?;
    assert_eq!(hosts["h7"]["failures"][0]["msg"], "h7 is broken");
    let stdout = server.text(&format!("/api/v1/runs/{split}/stdout")).await?;
    assert_eq!(stdout.matches("PLAY RECAP").count(), 5);
    assert!(stdout.contains("=== slice 1/5"));
    Ok(())
}

#[tokio::test]
async fn more_slices_than_hosts_gives_one_slice_per_host_and_cancel_reaches_every_slice()
-> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 4,
        ..Default::default()
    })?;
    let proj = project_dir(&[
        (
            "quick.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n",
        ),
        (
            "slow.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n",
        ),
    ])?;
    let pid = server.project(proj.path()).await?;
    let id = server
        .launch(
            pid,
            "quick.yml",
            &local_hosts(3),
            json!({"slices": 20, "limit": "all"}),
        )
        .await?;
    let parent = server.wait_finished(id).await?;
    assert_eq!(parent["status"], "successful", "{parent}");
    let children = server.get(&format!("/api/v1/runs?parent={id}")).await?;
    assert_eq!(children["runs"].as_array().map(Vec::len), Some(3));
    // slice_size works the same way.
    let id = server
        .launch(pid, "quick.yml", &local_hosts(5), json!({"slice_size": 2}))
        .await?;
    assert_eq!(server.wait_finished(id).await?["status"], "successful");
    assert_eq!(
        server.get(&format!("/api/v1/runs?parent={id}")).await?["runs"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let (code, body) = server
        .call(reqwest::Method::POST, "/api/v1/runs", Some(&json!({"project": pid, "playbook": "quick.yml", "hosts": local_hosts(2), "slices": 2, "slice_size": 1})))
        .await?;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("slices"))
    );

    // Cancelling the parent cancels every slice.
    let id = server
        .launch(pid, "slow.yml", &local_hosts(4), json!({"slices": 2}))
        .await?;
    let start = std::time::Instant::now();
    loop {
        let c = server
            .get(&format!("/api/v1/runs?parent={id}&status=running"))
            .await?;
        if c["runs"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "slices never ran: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            &json!({"mode": "force"}),
        )
        .await?;
    let parent = server.wait_finished(id).await?;
    assert_eq!(parent["status"], "canceled", "{parent}");
    let children = server.get(&format!("/api/v1/runs?parent={id}")).await?;
    for c in children["runs"].as_array().into_iter().flatten() {
        assert_eq!(c["status"], "canceled", "{c}");
    }
    let left = processes_of_runs_under(&server.data_dir.join("runs"));
    assert!(left.is_empty(), "{left:?}");
    let _: Value = parent;
    Ok(())
}
