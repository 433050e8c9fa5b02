//! A run's private directory: inventory, group vars, extra vars, the plugin, a tmp dir and the
//! `pgid` file `reap_orphans` reads after a crash.
//!
//! ```text
//! <runs_dir>/run-<key>-<unique>/      0700
//!   inventory/hosts.yml | hosts.ini
//!   inventory/group_vars/<group>.yml  (JSON, which YAML reads as is)
//!   extra_vars.json                   0600
//!   plugins/troupe.py
//!   tmp/                              ANSIBLE_LOCAL_TEMP
//!   pgid                              written once the process runs
//! ```
//! Everything here blocks; call it from `spawn_blocking`.

use crate::AnsibleError;
use crate::plugin::PLUGIN_SOURCE;
use serde_json::{Map, Value};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use troupe_core::inventory::{InventoryContent, InventoryFormat};

/// Prefix of every run directory's name; `reap_orphans` only touches directories with it.
pub(crate) const RUN_DIR_PREFIX: &str = "run-";

/// The paths of a prepared run directory.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    pub root: PathBuf,
    pub inventory: PathBuf,
    pub extra_vars: PathBuf,
    pub plugins: PathBuf,
    pub tmp: PathBuf,
}

impl RunDir {
    pub fn pgid_file(&self) -> PathBuf {
        self.root.join("pgid")
    }
}

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> AnsibleError {
    let context = format!("{context} {}", path.display());
    move |e| AnsibleError::io(context, e)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), AnsibleError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("creating", path))?;
    f.write_all(data).map_err(io("writing", path))
}

fn sanitize_key(key: &str) -> String {
    let s: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect();
    if s.is_empty() { "x".into() } else { s }
}

/// Creates and fills the run directory under `runs_dir`.
pub(crate) fn prepare(
    runs_dir: &Path,
    run_key: &str,
    inventory: &InventoryContent,
    extra_vars: &Map<String, Value>,
) -> Result<RunDir, AnsibleError> {
    let summary = inventory
        .validate()
        .map_err(|e| AnsibleError::Inventory(e.to_string()))?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(runs_dir)
        .map_err(io("creating", runs_dir))?;
    let key = sanitize_key(run_key);
    let mut attempt = 0u32;
    let root = loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let candidate = runs_dir.join(format!(
            "{RUN_DIR_PREFIX}{key}-{}-{nanos:08x}{attempt}",
            std::process::id()
        ));
        match DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(io("creating", &candidate)(e)),
        }
    };
    let dir = RunDir {
        inventory: root.join("inventory").join(match inventory.format {
            InventoryFormat::Yaml => "hosts.yml",
            InventoryFormat::Ini => "hosts.ini",
        }),
        extra_vars: root.join("extra_vars.json"),
        plugins: root.join("plugins"),
        tmp: root.join("tmp"),
        root,
    };
    let fill = || -> Result<(), AnsibleError> {
        let inv_dir = dir.root.join("inventory");
        let group_vars = inv_dir.join("group_vars");
        for d in [&inv_dir, &group_vars, &dir.plugins, &dir.tmp] {
            DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(io("creating", d))?;
        }
        write_file(&dir.inventory, inventory.hosts.as_bytes(), 0o600)?;
        for (group, vars) in &summary.group_vars {
            if vars.is_null() {
                continue;
            }
            // Group names are validated by troupe-core ([A-Za-z0-9_-]), so they are safe file
            // names. JSON is valid YAML, and ansible loads `group_vars/<group>.yml` next to the
            // inventory file.
            let text = serde_json::to_vec_pretty(vars)
                .map_err(|e| AnsibleError::Inventory(format!("group vars of {group}: {e}")))?;
            write_file(&group_vars.join(format!("{group}.yml")), &text, 0o600)?;
        }
        let extra = serde_json::to_vec(extra_vars)
            .map_err(|e| AnsibleError::Inventory(format!("extra vars: {e}")))?;
        write_file(&dir.extra_vars, &extra, 0o600)?;
        write_file(
            &dir.plugins.join(format!("{}.py", crate::PLUGIN_NAME)),
            PLUGIN_SOURCE.as_bytes(),
            0o600,
        )?;
        Ok(())
    };
    if let Err(e) = fill() {
        let _ = std::fs::remove_dir_all(&dir.root);
        return Err(e);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sanitized() {
        assert_eq!(sanitize_key("42"), "42");
        assert_eq!(sanitize_key("../../etc"), "etc");
        assert_eq!(sanitize_key("/"), "x");
    }
}
