//! Inventories end to end: update and delete against queued runs, the dynamic-inventory JSON
//! compared with ansible-inventory's own, and troupe as the inventory script of a plain
//! ansible-playbook.

use crate::helpers::*;
use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What `ansible-inventory --list` prints for `hosts` with `vars` as group_vars files next to
/// it: how a run sees the inventory.
fn ansible_inventory_list(hosts: &str, vars: Option<&str>, ext: &str) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(format!("hosts{ext}"));
    std::fs::write(&file, hosts)?;
    if let Some(vars) = vars {
        let groups: serde_json::Map<String, Value> = serde_saphyr::from_str(vars)?;
        std::fs::create_dir_all(dir.path().join("group_vars"))?;
        for (group, v) in groups {
            std::fs::write(
                dir.path().join("group_vars").join(format!("{group}.yml")),
                serde_json::to_string(&v)?,
            )?;
        }
    }
    let elsewhere = tempfile::tempdir()?;
    let out = Command::new("ansible-inventory")
        .arg("--list")
        .arg("-i")
        .arg(&file)
        .current_dir(elsewhere.path())
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .output()
        .context("running ansible-inventory (is the venv on PATH?)")?;
    if !out.status.success() {
        bail!(
            "ansible-inventory failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn create_inventory(
    server: &Server,
    name: &str,
    format: &str,
    hosts: &str,
    vars: Option<&str>,
) -> anyhow::Result<Value> {
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": name, "format": format, "hosts": hosts, "vars": vars}),
        )
        .await
}

const INI: &str = "\
# a comment
solo ansible_host=127.0.0.1 port=8080 flag=True
[web]
web[01:03].example.com http_port=80
db1:2222 role='primary db'
[web:vars]
color=blue
shared=web
nested={'a': [1, 2], 'b': None}
[db]
db1
db2 weight=1.5
[prod:children]
web
db
[prod:vars]
shared=prod
env=production
[all:vars]
shared=all
ansible_connection=local
";

const INI_VARS: &str =
    "all:\n  shared: file-all\n  only_all: 1\ndb:\n  shared: file-db\n  list: [1, two]\n";

const YAML: &str = "\
all:
  hosts:
    lonely:
      x: 1
  vars:
    shared: all
    ansible_connection: local
  children:
    edge:
      hosts:
        edge[a:c]:
          tier: edge
        gw:2200:
      vars:
        shared: edge
      children:
        inner:
          hosts:
            edgeb:
              deep: true
    core:
      hosts:
        core1:
        edgea:
          both: yes
      vars:
        shared: core
        ansible_group_priority: 5
other:
  hosts:
    core1:
";

const YAML_VARS: &str = "inner:\n  from_file: inner\nedge:\n  shared: file-edge\n";

#[tokio::test]
async fn ansible_json_is_what_ansible_inventory_prints() -> anyhow::Result<()> {
    let server = serve()?;
    for (name, format, hosts, vars, ext) in [
        ("ini", "ini", INI, Some(INI_VARS), ".ini"),
        ("ini-novars", "ini", INI, None, ".ini"),
        ("yaml", "yaml", YAML, Some(YAML_VARS), ".yml"),
        ("local", "ini", &local_hosts(3)[..], None, ".ini"),
    ] {
        let inv = create_inventory(&server, name, format, hosts, vars).await?;
        let id = inv["id"].as_i64().context("id")?;
        let ours = server
            .get(&format!("/api/v1/inventories/{id}/ansible"))
            .await?;
        let theirs = ansible_inventory_list(hosts, vars, ext)?;
        assert_eq!(
            ours,
            theirs,
            "{name}: troupe\n{}\nansible-inventory\n{}",
            serde_json::to_string_pretty(&ours)?,
            serde_json::to_string_pretty(&theirs)?
        );
        // --host is the host's entry of the list.
        let hostvars = ours["_meta"]["hostvars"].as_object().context("hostvars")?;
        for (host, vars) in hostvars {
            let one = server
                .get(&format!("/api/v1/inventories/{id}/ansible?host={host}"))
                .await?;
            assert_eq!(&one, vars, "{name} {host}");
        }
    }
    let (status, body) = server
        .call(
            Method::GET,
            "/api/v1/inventories/1/ansible?host=ghost",
            None,
        )
        .await?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[tokio::test]
async fn update_bumps_revision_and_queued_runs_keep_their_snapshot() -> anyhow::Result<()> {
    let server = serve_with(ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let proj = project_dir(&[
        (
            "slow.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.wait_for:\n        timeout: 4\n",
        ),
        (
            "show.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"color={{ color }}\"\n",
        ),
    ])?;
    let pid = server.project(proj.path()).await?;
    let hosts = |color: &str| format!("{}color={color}\n", local_hosts(1));
    let inv = create_inventory(&server, "shared", "ini", &hosts("red"), None).await?;
    let inv_id = inv["id"].as_i64().context("id")?;
    assert_eq!(inv["revision"], 1);

    // A slow run holds the only slot; the next one stays queued with the red inventory.
    let slow = server
        .launch(pid, "slow.yml", &local_hosts(1), json!({}))
        .await?;
    server
        .wait_run(slow, Duration::from_secs(60), |s| s == "running")
        .await?;
    let queued = server
        .post(
            "/api/v1/runs",
            &json!({"project": pid, "playbook": "show.yml", "inventory": "shared"}),
        )
        .await?;
    let queued_id = queued["id"].as_i64().context("run id")?;
    assert_eq!(queued["status"], "queued");

    // Update: revision bumped, content replaced, same validation as create.
    let (status, updated) = server
        .call(
            Method::PUT,
            &format!("/api/v1/inventories/{inv_id}"),
            Some(
                &json!({"name": "shared", "format": "ini", "hosts": hosts("green"), "env": "prod"}),
            ),
        )
        .await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["env"], "prod");
    assert!(
        updated["hosts"]
            .as_str()
            .unwrap_or_default()
            .contains("green")
    );
    let (status, bad) = server
        .call(
            Method::PUT,
            &format!("/api/v1/inventories/{inv_id}"),
            Some(&json!({"name": "shared", "format": "ini", "hosts": "[web\nh\n"})),
        )
        .await?;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["error"]["field"], "hosts");
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/v1/inventories/999999",
            Some(&json!({"name": "x", "format": "ini", "hosts": "h\n"})),
        )
        .await?;
    assert_eq!(status, 404);
    assert_eq!(
        server.get(&format!("/api/v1/inventories/{inv_id}")).await?["revision"],
        2,
        "a refused update changes nothing"
    );

    // Delete is refused while the queued run uses it.
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/api/v1/inventories/{inv_id}"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{body}");

    // The queued run ran with what it was queued with.
    let run = server.wait_finished(queued_id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let out = server
        .text(&format!("/api/v1/runs/{queued_id}/stdout"))
        .await?;
    assert!(out.contains("color=red"), "{out}");
    // A run created now sees the update.
    let later = server
        .post(
            "/api/v1/runs",
            &json!({"project": pid, "playbook": "show.yml", "inventory": "shared"}),
        )
        .await?;
    let later_id = later["id"].as_i64().context("run id")?;
    server.wait_finished(later_id).await?;
    let out = server
        .text(&format!("/api/v1/runs/{later_id}/stdout"))
        .await?;
    assert!(out.contains("color=green"), "{out}");

    // Nothing uses it any more: deleted.
    let resp = server
        .http
        .delete(server.url(&format!("/api/v1/inventories/{inv_id}")))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status(), 204);
    let (status, _) = server
        .call(Method::GET, &format!("/api/v1/inventories/{inv_id}"), None)
        .await?;
    assert_eq!(status, 404);
    // Finished runs that used it are still readable.
    let run = server.get(&format!("/api/v1/runs/{queued_id}")).await?;
    assert_eq!(run["status"], "successful");
    Ok(())
}

fn write_wrapper(
    dir: &Path,
    server: &Server,
    inventory: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("troupe-inventory.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nTROUPE_SERVER='{}' TROUPE_TOKEN='{TOKEN}' TROUPE_INVENTORY='{inventory}' exec '{}' inventory \"$@\"\n",
            server.base,
            troupe_bin()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

#[tokio::test]
async fn plain_ansible_playbook_uses_troupe_as_its_inventory() -> anyhow::Result<()> {
    let server = serve()?;
    let hosts = "[web]\nweb1\nweb2 greeting=override\n[db]\ndb1\n[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n";
    create_inventory(
        &server,
        "scripted",
        "ini",
        hosts,
        Some("web:\n  greeting: hello-from-troupe\n"),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let script = write_wrapper(dir.path(), &server, "scripted")?;

    // The CLI itself: --list and --host.
    let out = Command::new(&script).arg("--list").output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(list["web"]["hosts"], json!(["web1", "web2"]));
    let out = Command::new(&script).args(["--host", "web1"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(host["greeting"], "hello-from-troupe");
    // By id too, and a missing inventory is a clear failure.
    let out = Command::new(troupe_bin())
        .args(["inventory", "--list", "--inventory", "nope"])
        .env("TROUPE_SERVER", &server.base)
        .env("TROUPE_TOKEN", TOKEN)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    // A plain ansible-playbook with the script as its inventory sees the group var.
    std::fs::write(
        dir.path().join("play.yml"),
        "- hosts: web\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"{{ inventory_hostname }} says {{ greeting }}\"\n",
    )?;
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(&script)
        .arg("play.yml")
        .current_dir(dir.path())
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .context("running ansible-playbook")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("web1 says hello-from-troupe"), "{stdout}");
    assert!(stdout.contains("web2 says override"), "{stdout}");
    assert!(!stdout.contains("db1"), "{stdout}");
    assert!(stdout.contains("ok=1"), "{stdout}");
    Ok(())
}
