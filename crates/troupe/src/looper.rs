//! `troupe loop`: a Loopabull configuration turned into a project, an inventory and a rules
//! file, then `troupe serve` with them.

use crate::config::Config;
use crate::serve;
use anyhow::Context;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use troupe_core::inventory::ansible::AnsibleInventory;
use troupe_core::inventory::{InventoryFormat, NewInventory};
use troupe_events::loopabull::{LOOP_NAME, LOOPER_URL_ENV, LoopConfig};

/// Turns the Loopabull config into a project and a rules file, stores the inventory its
/// `ansible.cfg` names (as the inventory `loopabull`, which the rule uses), then becomes
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
    let inventory = match &ansible_cfg {
        Some(Ok(ansible_cfg)) => cfg_inventory(ansible_cfg)?,
        _ => None,
    };
    if inventory.is_some() {
        for rule in &mut rules.rules {
            rule.action.inventory = Some(LOOP_NAME.to_owned());
        }
    }
    troupe_events::Rules::compile(rules.clone())
        .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.join("; ")))?;
    serve::ensure_data_dir(&cfg.data_dir)?;
    if let Some(inventory) = &inventory {
        store_inventory(cfg, inventory).await?;
        eprintln!(
            "troupe loop: runs use the inventory {} that the ansible.cfg names",
            inventory.display()
        );
    }
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

/// The inventory file an `ansible.cfg` names (`[defaults] inventory`, or the older
/// `hostfile`), read from the file's directory when relative, as ansible reads it; `None` when
/// it names none, or one that does not exist (ansible then has only `localhost`, as troupe's
/// local inventory). Several sources, a directory or a script are refused: troupe passes the
/// inventory to its runs as one INI or YAML text.
fn cfg_inventory(ansible_cfg: &Path) -> anyhow::Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(ansible_cfg)
        .with_context(|| format!("could not read {}", ansible_cfg.display()))?;
    let Some(value) = ini_value(&text, "defaults", &["inventory", "hostfile"]) else {
        return Ok(None);
    };
    let sources: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [source] = sources[..] else {
        anyhow::bail!(
            "{}: inventory {value:?} names several sources; troupe loop reads one inventory file",
            ansible_cfg.display()
        );
    };
    let expanded = match (source.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(source),
    };
    let dir = ansible_cfg.parent().unwrap_or(Path::new("/"));
    let path = dir.join(expanded);
    let Ok(meta) = std::fs::metadata(&path) else {
        eprintln!(
            "troupe loop: the inventory {} that {} names does not exist; runs use the local inventory",
            path.display(),
            ansible_cfg.display()
        );
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    anyhow::ensure!(
        meta.is_file() && meta.permissions().mode() & 0o111 == 0,
        "{}: inventory {} is a directory or a script; troupe loop reads one INI or YAML inventory file",
        ansible_cfg.display(),
        path.display()
    );
    Ok(Some(path))
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

/// Stores `file` as the inventory `loopabull` (made, or replaced), checked as the API checks
/// an inventory.
async fn store_inventory(cfg: &Config, file: &Path) -> anyhow::Result<()> {
    let hosts = std::fs::read_to_string(file)
        .with_context(|| format!("could not read the inventory {}", file.display()))?;
    let new = NewInventory {
        name: LOOP_NAME.to_owned(),
        env: None,
        version: None,
        format: InventoryFormat::detect(&hosts),
        hosts,
        vars: None,
    };
    let summary = new
        .validate()
        .map_err(|e| anyhow::anyhow!("inventory {}: {e}", file.display()))?;
    AnsibleInventory::load(&new.content())
        .map_err(|e| anyhow::anyhow!("inventory {}: {e}", file.display()))?;
    let count = i64::try_from(summary.hosts.len()).unwrap_or(i64::MAX);
    let store = serve::open_store(cfg).await?;
    match store.find_inventory(LOOP_NAME).await? {
        Some(old) => store.update_inventory(old.id, &new, count).await?,
        None => store.create_inventory(&new, count).await?,
    };
    Ok(())
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

    #[test]
    fn several_sources_directories_and_scripts_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("ansible.cfg");
        let write = |inventory: &str| {
            std::fs::write(&cfg, format!("[defaults]\ninventory = {inventory}\n"))
        };
        std::fs::write(dir.path().join("hosts"), "localhost\n")?;
        write("hosts")?;
        assert_eq!(cfg_inventory(&cfg)?, Some(dir.path().join("hosts")));
        write("missing")?;
        assert_eq!(cfg_inventory(&cfg)?, None);
        write("hosts,other")?;
        let e = cfg_inventory(&cfg).expect_err("two").to_string();
        assert!(e.contains("several sources"), "{e}");
        std::fs::create_dir(dir.path().join("inv"))?;
        write("inv")?;
        let e = cfg_inventory(&cfg).expect_err("a directory").to_string();
        assert!(e.contains("a directory or a script"), "{e}");
        std::fs::write(&cfg, "[defaults]\nforks = 2\n")?;
        assert_eq!(cfg_inventory(&cfg)?, None);
        Ok(())
    }
}
