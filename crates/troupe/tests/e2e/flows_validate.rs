//! `troupe flow validate FILE`: the real binary, no server. A good flow is explained in
//! sentences (exit 0); a bad one names the field at fault on stderr (exit 2); a file that
//! cannot be read is exit 1.

use crate::helpers::troupe_bin;
use std::process::Output;

fn validate(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<Output> {
    let file = dir.join(name);
    std::fs::write(&file, text)?;
    Ok(std::process::Command::new(troupe_bin())
        .args(["flow", "validate"])
        .arg(&file)
        .output()?)
}

#[test]
fn a_good_flow_is_explained() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = validate(
        dir.path(),
        "good.yml",
        r#"
name: web-upgrade
inputs:
  cluster: {type: string, required: true, validate: shellsafe}
  hook: {type: string, secret: true, default: "https://hooks.example/very-secret"}
nodes:
  web: {static: [web1, web2], at_least: 1}
steps:
  - id: upgrade
    playbook: {project: web, playbook: upgrade.yml, nodes: web}
    retry: {attempts: 3, delay: 10s, backoff: 2}
  - id: check
    http: {url: "http://127.0.0.1:8080/health"}
    retry: {attempts: 10, delay: 30s, until: "result.status == 200"}
on_failure:
  - slack: {webhook: "{{ inputs.hook }}", text: "{{ failure.step }} failed"}
"#,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for want in [
        "valid",
        "Input cluster: a string, required",
        "Node set web: the list web1, web2",
        "Step 1 upgrade: runs playbook upgrade.yml of project web against node set web, up to 3 tries, 10s apart, doubling.",
        "up to 10 tries, 30s apart, until result.status == 200",
        "On failure, step 1: posts to Slack",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    assert!(!stdout.contains("very-secret"), "{stdout}");
    Ok(())
}

#[test]
fn each_bad_flow_names_the_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        (
            "name: f\ninputs:\n  count: {type: integer, default: many}\nsteps:\n  - log: a\n",
            "inputs.count.default",
        ),
        (
            "name: f\nsteps:\n  - log: a\n  - id: wait\n    sleep: 1\n    retry: {attempts: 0}\n",
            "steps[1].retry.attempts",
        ),
        (
            "name: f\nsteps:\n  - playbook: {project: p, playbook: x.yml, nodes: web}\n",
            "steps[0].playbook.nodes",
        ),
        (
            "name: f\nsteps:\n  - log: a\n    when: \"inputs.x ==\"\n",
            "steps[0].when",
        ),
        ("name: 'no spaces'\nsteps: []\n", "name"),
        // Unknown keys are caught while reading, with their line.
        ("name: f\nsteps:\n  - log: a\n    retries: 3\n", "line 4"),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let out = validate(dir.path(), &format!("bad{i}.yml"), text)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{out:?}");
        assert!(stderr.contains(field), "want {field:?} in\n{stderr}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    Ok(())
}

#[test]
fn an_unreadable_file_is_exit_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(troupe_bin())
        .args(["flow", "validate"])
        .arg(dir.path().join("missing.yml"))
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yml"));
    Ok(())
}
