//! A run's private directory: inventory, group vars, extra vars and a tmp dir; and the callback
//! plugin, shared by every run. After a crash, `reap_orphans` finds what is left of a run by the
//! directory's name, which every process of the run carries in its environment.
//!
//! ```text
//! <runs_dir>/run-<key>-<unique>/      0700
//!   hosts.yml | hosts.ini             the inventory
//!   group_vars/<group>.yml            (only when groups have vars; JSON, which YAML reads)
//!   extra_vars.json                   0600 (only when there are extra vars)
//!   tmp/                              ansible-inventory's ANSIBLE_LOCAL_TEMP when troupe lists
//!                                     the hosts (made by ansible, 0700, when used)
//!   local_tmp                         the path of ansible-playbook's own local temp dir
//!                                     (written by the plugin; removed by troupe after a kill)
//!   ssh-key, become-password, ...     0600, the run's credentials (see `access`)
//! <runs_dir>/plugin-<digest>/         the plugin (troupe.py), the file ansible's CLI is
//!                                     started with (troupe_boot.py) and the warm parent
//!                                     (troupe_warm.py), written once
//! <runs_dir>/warm-parents.json        the warm parents alive, for `troupe doctor`
//! ```
//! Directories cost more than files to create (and a burst of runs creates many), so a run
//! makes as few as it can. Everything here blocks; call it from `spawn_blocking`.

use crate::AnsibleError;
use crate::plugin::{BOOT_FILE, BOOT_SOURCE, PLUGIN_SOURCE};
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
    /// The inventory file (`-i`); `None` when ansible's configuration names the inventory
    /// ([`InventoryContent::from_ansible_config`]).
    pub inventory: Option<PathBuf>,
    /// The `-e @file` to pass; `None` when the run has no extra vars.
    pub extra_vars: Option<PathBuf>,
    pub plugins: PathBuf,
    pub tmp: PathBuf,
    /// What the run's credentials add to the command.
    pub access: crate::access::Access,
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
    credentials: &[troupe_core::credential::CredentialSecret],
    options: &troupe_core::run::RunOptions,
) -> Result<RunDir, AnsibleError> {
    let summary = if inventory.is_from_ansible_config() {
        Default::default()
    } else {
        inventory
            .validate()
            .map_err(|e| AnsibleError::Inventory(e.to_string()))?
    };
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
    let plugins = shared_plugin_dir(runs_dir)?;
    let mut dir = RunDir {
        access: crate::access::Access::default(),
        inventory: (!inventory.is_from_ansible_config()).then(|| {
            root.join(match inventory.format {
                InventoryFormat::Yaml => "hosts.yml",
                InventoryFormat::Ini => "hosts.ini",
            })
        }),
        extra_vars: (!extra_vars.is_empty()).then(|| root.join("extra_vars.json")),
        plugins,
        tmp: root.join("tmp"),
        root,
    };
    let fill = |dir: &mut RunDir| -> Result<(), AnsibleError> {
        // `tmp/` is not made here: ansible makes its local temp dir (0700) when it first needs
        // it, and a directory is the dearest thing a run's start creates.
        if let Some(file) = &dir.inventory {
            write_file(file, inventory.hosts.as_bytes(), 0o600)?;
        }
        let group_vars = dir.root.join("group_vars");
        let mut made_group_vars = false;
        for (group, vars) in &summary.group_vars {
            if vars.is_null() {
                continue;
            }
            if !made_group_vars {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&group_vars)
                    .map_err(io("creating", &group_vars))?;
                made_group_vars = true;
            }
            // Group names are validated by troupe-core ([A-Za-z0-9_-]), so they are safe file
            // names. JSON is valid YAML, and ansible loads `group_vars/<group>.yml` next to the
            // inventory file.
            let text = serde_json::to_vec_pretty(vars)
                .map_err(|e| AnsibleError::Inventory(format!("group vars of {group}: {e}")))?;
            write_file(&group_vars.join(format!("{group}.yml")), &text, 0o600)?;
        }
        if let Some(path) = &dir.extra_vars {
            let extra = serde_json::to_vec(extra_vars)
                .map_err(|e| AnsibleError::Inventory(format!("extra vars: {e}")))?;
            write_file(path, &extra, 0o600)?;
        }
        dir.access = crate::access::write(&dir.root, credentials, options)?;
        Ok(())
    };
    if let Err(e) = fill(&mut dir) {
        let _ = std::fs::remove_dir_all(&dir.root);
        return Err(e);
    }
    Ok(dir)
}

/// The directory holding this troupe's plugin, under `runs_dir`: named after the plugin's
/// digest, so a troupe upgrade never runs an old plugin, and written once (to a temporary name,
/// then renamed into place, so concurrent runs never see half a file).
fn shared_plugin_dir(runs_dir: &Path) -> Result<PathBuf, AnsibleError> {
    use sha2::{Digest, Sha256};
    let files = [
        (format!("{}.py", crate::PLUGIN_NAME), PLUGIN_SOURCE),
        (crate::warm::WARM_FILE.to_owned(), crate::warm::WARM_SOURCE),
        // Last: when it is there, all are.
        (BOOT_FILE.to_owned(), BOOT_SOURCE),
    ];
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let digest = DIGEST.get_or_init(|| {
        let mut hash = Sha256::new();
        hash.update(PLUGIN_SOURCE.as_bytes());
        hash.update(BOOT_SOURCE.as_bytes());
        hash.update(crate::warm::WARM_SOURCE.as_bytes());
        hex::encode(&hash.finalize()[..8])
    });
    let dir = runs_dir.join(format!("plugin-{digest}"));
    // Each file is renamed into place whole, the boot file last: when it is there, both are.
    if dir.join(BOOT_FILE).is_file() {
        return Ok(dir);
    }
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating", &dir)(e)),
    }
    for (name, source) in files {
        let file = dir.join(&name);
        let tmp = dir.join(format!(
            ".{name}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&tmp);
        write_file(&tmp, source.as_bytes(), 0o600)?;
        std::fs::rename(&tmp, &file).map_err(io("installing", &file))?;
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

    #[test]
    fn the_plugin_is_written_once_and_shared() {
        let tmp = tempfile::tempdir().expect("tmp");
        let inv = InventoryContent {
            format: InventoryFormat::Ini,
            hosts: "[web]\nw1\n".into(),
            vars: None,
        };
        let a = prepare(tmp.path(), "1", &inv, &Map::new(), &[], &Default::default()).expect("a");
        let mut vars = Map::new();
        vars.insert("x".into(), Value::from(1));
        let b = prepare(tmp.path(), "2", &inv, &vars, &[], &Default::default()).expect("b");
        assert_eq!(a.plugins, b.plugins);
        let plugin = a.plugins.join(format!("{}.py", crate::PLUGIN_NAME));
        assert_eq!(
            std::fs::read_to_string(plugin).expect("plugin"),
            PLUGIN_SOURCE
        );
        let boot = a.plugins.join(BOOT_FILE);
        assert_eq!(std::fs::read_to_string(boot).expect("boot"), BOOT_SOURCE);
        assert_ne!(a.root, b.root);
        assert!(a.inventory.as_ref().is_some_and(|f| f.is_file()) && a.extra_vars.is_none());
        let b_vars = b.extra_vars.as_ref().expect("b has extra vars");
        assert_eq!(std::fs::read_to_string(b_vars).expect("vars"), r#"{"x":1}"#);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(b_vars)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !a.root.join("group_vars").exists(),
            "no group vars, no directory"
        );
        let with_vars = InventoryContent {
            vars: Some("web:\n  port: 80\n".into()),
            ..inv
        };
        let c = prepare(
            tmp.path(),
            "3",
            &with_vars,
            &Map::new(),
            &[],
            &Default::default(),
        )
        .expect("c");
        let gv = std::fs::read_to_string(c.root.join("group_vars/web.yml")).expect("group vars");
        assert!(gv.contains("80"), "{gv}");
    }
}
