//! Which hosts an inventory holds after a `--limit`, as ansible itself sees them.

use crate::process::child_env;
use crate::rundir;
use crate::spawner::spawn_child;
use crate::{Ansible, AnsibleError};
use serde_json::{Map, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use troupe_core::inventory::InventoryContent;

/// Longest `ansible-inventory` may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// The hosts `inventory` holds after `limit`, in inventory order, by running
/// `ansible-inventory --list` (so patterns, groups, exclusions and dynamic features behave
/// exactly as in ansible-playbook). `project_dir` is the working directory (its ansible.cfg
/// applies).
pub async fn list_hosts(
    ansible: &Ansible,
    project_dir: &Path,
    inventory: &InventoryContent,
    limit: Option<&str>,
    runs_dir: &Path,
) -> Result<Vec<String>, AnsibleError> {
    let dir = rundir::prepare(
        runs_dir,
        "hosts",
        inventory,
        &Map::new(),
        &[],
        &Default::default(),
    )?;
    let program = ansible
        .bin_dir()
        .map(|d| d.join("ansible-inventory"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "ansible-inventory".into());
    let mut cmd = tokio::process::Command::new(program);
    if let Some(inventory) = &dir.inventory {
        cmd.arg("-i").arg(inventory);
    }
    cmd.arg("--list");
    if let Some(l) = limit {
        cmd.arg("--limit").arg(l);
    }
    cmd.current_dir(project_dir)
        .env_clear()
        .envs(child_env(ansible.bin_dir()))
        .env("ANSIBLE_LOCAL_TEMP", &dir.tmp)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(LIST_TIMEOUT, async {
        spawn_child(cmd).await?.wait_with_output().await
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir.root);
    let out = match out {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(AnsibleError::io("running ansible-inventory", e)),
        Err(_) => {
            return Err(AnsibleError::Inventory(
                "ansible-inventory did not answer in time".into(),
            ));
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(AnsibleError::Inventory(format!(
            "ansible-inventory failed: {}",
            err.trim()
        )));
    }
    let doc: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| AnsibleError::Inventory(format!("ansible-inventory printed no JSON: {e}")))?;
    Ok(hosts_of(&doc))
}

/// Hosts reachable from group `all` of an `ansible-inventory --list` document, first
/// appearance first.
pub fn hosts_of(doc: &Value) -> Vec<String> {
    let mut hosts = Vec::new();
    let mut seen_hosts = std::collections::HashSet::new();
    let mut seen_groups = std::collections::HashSet::new();
    let mut stack = vec!["all".to_owned()];
    // Depth first, children in order, so hosts come out in inventory order.
    while let Some(group) = stack.pop() {
        if !seen_groups.insert(group.clone()) {
            continue;
        }
        let g = &doc[group.as_str()];
        for h in g["hosts"].as_array().into_iter().flatten() {
            if let Some(h) = h.as_str()
                && seen_hosts.insert(h.to_owned())
            {
                hosts.push(h.to_owned());
            }
        }
        let children: Vec<String> = g["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        stack.extend(children.into_iter().rev());
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_in_inventory_order_without_duplicates() {
        let doc = json!({
            "all": {"children": ["ungrouped", "web", "db"]},
            "ungrouped": {"hosts": ["solo"]},
            "web": {"hosts": ["w2", "w3"], "children": ["edge"]},
            "edge": {"hosts": ["e1", "w3"]},
            "db": {"hosts": ["w2", "d1"]}
        });
        assert_eq!(hosts_of(&doc), vec!["solo", "w2", "w3", "e1", "d1"]);
        assert!(hosts_of(&json!({})).is_empty());
    }
}
