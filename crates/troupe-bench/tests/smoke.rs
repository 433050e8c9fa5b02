//! The harness's quick run, end to end, against the troupe binary of this build: every scenario
//! must run and report its figures. Nothing here looks at how fast anything was: benchmarks are
//! reported, never asserted.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The `troupe` binary built beside this test (`cargo nextest run --workspace` builds it).
fn troupe_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
    let troupe = dir.join("troupe");
    assert!(
        troupe.is_file(),
        "{} is missing: build it first (cargo build -p troupe) or run the whole workspace's tests",
        troupe.display()
    );
    troupe
}

#[test]
fn the_quick_run_reports_every_scenario() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_troupe-bench"))
        .args(["all", "--quick", "--troupe"])
        .arg(troupe_bin())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("troupe-bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "troupe-bench failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );

    let json: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("benchmarks.json")).expect("benchmarks.json written"),
    )
    .expect("benchmarks.json is JSON");
    assert_eq!(json["quick"], Value::Bool(true));
    let metrics = json["metrics"].as_array().expect("metrics");
    let skipped: Vec<&Value> = metrics.iter().filter(|m| m["name"] == "skipped").collect();
    assert!(
        skipped.is_empty(),
        "scenarios skipped or failed: {skipped:?}\n{stdout}"
    );
    // 9 (flows) is left out: its overhead per step may come out below zero.
    for n in (1..=8).chain([10]) {
        let of_scenario: Vec<&Value> = metrics
            .iter()
            .filter(|m| {
                m["scenario"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{n} ")))
            })
            .collect();
        assert!(
            !of_scenario.is_empty(),
            "no figures for scenario {n}\n{stdout}"
        );
        for m in of_scenario {
            let v = m["value"].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v >= 0.0),
                "scenario {n} reported no number: {m}"
            );
        }
    }
    // Correctness, not speed: every subscriber got every event, every webhook was recorded.
    let value = |scenario: &str, name: &str| {
        metrics
            .iter()
            .find(|m| m["scenario"] == scenario && m["name"] == name)
            .and_then(|m| m["value"].as_f64())
            .unwrap_or_else(|| panic!("{scenario} / {name} missing"))
    };
    assert_eq!(value("4 fanout", "delivered %"), 100.0);

    let md = std::fs::read_to_string(out.path().join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    for heading in ["## Machine", "## Results", "## What each scenario measures"] {
        assert!(md.contains(heading), "BENCHMARKS.md lacks {heading}");
    }
    assert!(md.contains("(quick: few repetitions)"), "{md}");
}
