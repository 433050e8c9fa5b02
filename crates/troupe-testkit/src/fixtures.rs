//! What runs need: inventories of this machine, project directories, and reading ansible's
//! recap.

use std::collections::BTreeMap;

/// A local inventory of `n` hosts (`h1`..`hn`) that run on this machine with ansible's own
/// python.
pub fn local_hosts(n: usize) -> String {
    let mut s = String::from("[all]\n");
    for i in 1..=n {
        s.push_str(&format!("h{i}\n"));
    }
    s.push_str("[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n");
    s
}

/// A temporary project directory holding `files` (name, text); names may have directories.
pub fn project_dir(files: &[(&str, &str)]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    write_files(dir.path(), files)?;
    Ok(dir)
}

/// Writes `files` (name, text) under `dir`, making the directories they need.
pub fn write_files(dir: &std::path::Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, text) in files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(())
}

/// ansible's PLAY RECAP from its stdout: host -> column (`ok`, `changed`, `unreachable`,
/// `failed`, `skipped`, `rescued`, `ignored`) -> count.
pub fn parse_recap(stdout: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let mut in_recap = false;
    for line in stdout.lines() {
        if line.starts_with("PLAY RECAP") {
            in_recap = true;
            continue;
        }
        if !in_recap || line.trim().is_empty() {
            continue;
        }
        let Some((host, rest)) = line.split_once(':') else {
            continue;
        };
        let mut m = BTreeMap::new();
        for kv in rest.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=')
                && let Ok(n) = v.parse::<i64>()
            {
                m.insert(k.to_owned(), n);
            }
        }
        out.insert(host.trim().to_owned(), m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recap_is_read_per_host_and_column() {
        let stdout = "PLAY [all]\n\nok: [h1]\n\nPLAY RECAP *****\n\
            h1 : ok=2 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=1\n\
            h2 : ok=1 changed=0 unreachable=0 failed=1 skipped=2 rescued=0 ignored=0\n\n";
        let recap = parse_recap(stdout);
        assert_eq!(recap.len(), 2);
        assert_eq!(recap["h1"]["ok"], 2);
        assert_eq!(recap["h1"]["ignored"], 1);
        assert_eq!(recap["h2"]["failed"], 1);
        assert_eq!(recap["h2"]["skipped"], 2);
    }

    #[test]
    fn local_hosts_are_numbered_from_one() {
        let inv = local_hosts(2);
        assert!(inv.starts_with("[all]\nh1\nh2\n[all:vars]\n"), "{inv}");
        assert!(inv.contains("ansible_connection=local"));
    }
}
