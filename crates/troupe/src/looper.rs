//! `troupe loop`: a Loopabull configuration turned into a project and a rules file, then
//! `troupe serve` with them.

use crate::config::Config;
use crate::serve;
use anyhow::Context;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use troupe_events::loopabull::{LOOPER_URL_ENV, LoopConfig};

/// Turns the Loopabull config into a project and a rules file whose runs pass no `-i` (the
/// inventory is the one the `ansible.cfg` names, as under Loopabull), then becomes
/// `troupe serve` with them (exec, so signals reach the server directly), with
/// `ANSIBLE_CONFIG` set to the config's `cfg_file_path` and the looper's URL in
/// [`LOOPER_URL_ENV`].
pub async fn run(cfg: &Config, config: Option<&Path>, file: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    let lb = LoopConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let playbooks = std::fs::canonicalize(loop_path(base, &lb.ansible.playbooks_dir))
        .with_context(|| {
            format!(
                "playbooks_dir {} not found",
                lb.ansible.playbooks_dir.display()
            )
        })?;
    let project = playbooks
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_owned());
    let mut rules = lb.rules(&project).map_err(|e| anyhow::anyhow!("{e}"))?;
    let looper_url = lb.looper_url().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ansible_cfg = lb.ansible.cfg_file_path.as_ref().map(|c| {
        let path = loop_path(base, c);
        std::fs::canonicalize(&path).map_err(|_| {
            // As under Loopabull, ansible then reads its usual places instead.
            eprintln!(
                "troupe loop: cfg_file_path {} does not exist; ansible will use its default configuration",
                c.display()
            );
            std::path::absolute(&path).unwrap_or(path)
        })
    });
    // When the ansible.cfg (ANSIBLE_CONFIG below) names an inventory, runs pass no -i, as
    // Loopabull's `ansible-playbook <key>.yml -e @payload`: ansible reads that inventory itself
    // (directories, scripts and group_vars beside it included). Otherwise troupe's local one.
    let names_inventory = match &ansible_cfg {
        Some(Ok(path)) => std::fs::read_to_string(path)
            .ok()
            .and_then(|text| ini_value(&text, "defaults", &["inventory", "hostfile"]))
            .is_some_and(|v| !v.is_empty()),
        _ => false,
    };
    for rule in &mut rules.rules {
        rule.action.ansible_inventory = names_inventory;
    }
    troupe_events::Rules::compile(rules.clone())
        .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.join("; ")))?;
    serve::ensure_data_dir(&cfg.data_dir)?;
    let rules_file = cfg.data_dir.join("loopabull-rules.json");
    serve::write_secret(&rules_file, &serde_json::to_string_pretty(&rules)?)?;
    let exe = std::env::current_exe().context("cannot find the troupe executable")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("--data-dir")
        .arg(&cfg.data_dir)
        .arg("serve")
        .arg("--listen")
        .arg(cfg.listen.to_string())
        .arg("--project")
        .arg(&playbooks)
        .arg("--rules")
        .arg(&rules_file);
    if let Some(url) = &cfg.database_url {
        cmd.arg("--database-url").arg(url);
    }
    match &lb.ansible.playbook_cmd {
        Some(pb) if pb.components().count() == 1 || pb.is_file() => {
            cmd.arg("--ansible-playbook").arg(pb);
        }
        // Loopabull's examples name /usr/bin/ansible-playbook, which a venv install lacks.
        Some(pb) => eprintln!(
            "troupe loop: playbook_cmd {} does not exist; using the ansible-playbook troupe finds",
            pb.display()
        ),
        None => {}
    }
    cmd.env_remove(LOOPER_URL_ENV);
    if let Some(url) = looper_url {
        cmd.env(LOOPER_URL_ENV, url);
    }
    if let Some(path) = ansible_cfg {
        cmd.env("ANSIBLE_CONFIG", path.unwrap_or_else(|missing| missing));
    }
    eprintln!(
        "troupe loop: playbooks in {} (project {project:?}), {}, routing keys {}",
        playbooks.display(),
        lb.describe(),
        lb.routing_keys.join(", ")
    );
    let err = cmd.exec();
    Err(anyhow::anyhow!("could not start troupe serve: {err}"))
}

/// A path of a Loopabull config: as Loopabull reads it, from the current directory, when it
/// exists there; else from the config file's directory.
fn loop_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The value of `key` (the first of `keys` present) in `[section]` of INI text, as Python's
/// configparser reads it (`key = value` or `key: value`, `#` and `;` comment lines).
fn ini_value(text: &str, section: &str, keys: &[&str]) -> Option<String> {
    let mut current = String::new();
    let mut found: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            continue;
        };
        if let Some(rank) = keys.iter().position(|k| key.trim().eq_ignore_ascii_case(k)) {
            found.push((rank, value.trim().to_owned()));
        }
    }
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().next().map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inventory_of_an_ansible_cfg() {
        let cfg = "# comment\n[defaults]\n; other\nforks = 5\nhostfile = old\ninventory   = ./hosts.ini\n\n[ssh_connection]\ninventory = no\n";
        assert_eq!(
            ini_value(cfg, "defaults", &["inventory", "hostfile"]).as_deref(),
            Some("./hosts.ini")
        );
        assert_eq!(
            ini_value(
                "[defaults]\nhostfile: h\n",
                "defaults",
                &["inventory", "hostfile"]
            )
            .as_deref(),
            Some("h")
        );
        assert_eq!(
            ini_value("[other]\ninventory = x\n", "defaults", &["inventory"]),
            None
        );
    }
}
