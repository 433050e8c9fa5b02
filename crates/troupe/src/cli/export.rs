//! `troupe runs export ID DIR`: a finished run as ansible-runner's artifact directory.
//!
//! The server sends `GET /api/v1/runs/{id}/artifacts` as a `.tar.gz` whose entries live under
//! one top directory; the export writes what is under it straight into DIR (`DIR/job_events/`,
//! `DIR/stdout`, ...), so DIR reads like runner's `artifacts/<ident>/`. The archive is outside
//! data: nothing in it may write outside DIR, whether through `..`, an absolute path, a link
//! entry or a symbolic link already in DIR.

use crate::client::Client;
use anyhow::{Context, bail};
use flate2::read::GzDecoder;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Downloads run `id`'s artifacts and unpacks them into `dir` (created when missing).
pub async fn run(client: &Client, id: i64, dir: PathBuf) -> anyhow::Result<i32> {
    let archive = client
        .get_bytes(&format!("/api/v1/runs/{id}/artifacts"))
        .await?;
    let target = dir.clone();
    let files = tokio::task::spawn_blocking(move || unpack(archive.as_slice(), &target))
        .await
        .context("the unpacking thread failed")??;
    eprintln!(
        "troupe: run {id} exported to {} ({files} files)",
        dir.display()
    );
    Ok(0)
}

/// Unpacks a gzipped tar into `dir`, dropping the archive's top directory. Returns the number
/// of files written. Refuses (with an error naming the entry) anything that would land
/// outside `dir` and any entry that is neither a file nor a directory.
pub fn unpack(gz: impl Read, dir: &Path) -> anyhow::Result<usize> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(gz));
    let mut files = 0;
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry
            .path()
            .context("an archive entry has an unreadable path")?
            .into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(rel) = inner_path(&raw)? else {
            continue;
        };
        let dest = root.join(&rel);
        match kind {
            tar::EntryType::Directory => make_dir_inside(&root, &dest)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    make_dir_inside(&root, parent)?;
                }
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
                    bail!(
                        "refusing to write {}: it is a symbolic link",
                        dest.display()
                    );
                }
                let mut out = fs::File::create(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                io::copy(&mut entry, &mut out)
                    .with_context(|| format!("writing {}", dest.display()))?;
                files += 1;
            }
            other => bail!(
                "refusing archive entry {}: it is a {other:?}, and only files and directories are exported",
                raw.display()
            ),
        }
    }
    Ok(files)
}

/// The part of an entry's path below the top directory; `None` for the top directory itself.
fn inner_path(raw: &Path) -> anyhow::Result<Option<PathBuf>> {
    let outside = || {
        anyhow::anyhow!(
            "refusing archive entry {}: it points outside the export directory",
            raw.display()
        )
    };
    let mut parts = raw.components();
    match parts.next() {
        Some(Component::Normal(_)) => {}
        _ => return Err(outside()),
    }
    let mut rel = PathBuf::new();
    for part in parts {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Creates `dir` and checks that, symbolic links resolved, it is still inside `root`.
fn make_dir_inside(root: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let real = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if !real.starts_with(root) {
        bail!(
            "refusing to write into {}: it resolves to {}, outside {}",
            dir.display(),
            real.display(),
            root.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// A tar.gz of (raw name, entry type, data), names written as given (no checks).
    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc").expect("link name");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().and_then(GzEncoder::finish).expect("finish")
    }

    #[test]
    fn strips_the_top_directory() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("out");
        let gz = archive(&[
            ("troupe-run-3/", tar::EntryType::Directory, b""),
            ("troupe-run-3/stdout", tar::EntryType::Regular, b"hello\n"),
            (
                "troupe-run-3/job_events/1-u.json",
                tar::EntryType::Regular,
                b"{}",
            ),
        ]);
        assert_eq!(unpack(gz.as_slice(), &dir)?, 2);
        assert_eq!(fs::read_to_string(dir.join("stdout"))?, "hello\n");
        assert_eq!(fs::read_to_string(dir.join("job_events/1-u.json"))?, "{}");
        Ok(())
    }

    #[test]
    fn refuses_to_write_outside() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("out");
        for name in ["top/../../evil", "/evil", "top/a/../../../evil", "../evil"] {
            let gz = archive(&[(name, tar::EntryType::Regular, b"x")]);
            let err = unpack(gz.as_slice(), &dir).expect_err(name);
            assert!(err.to_string().contains("outside"), "{name}: {err}");
        }
        let gz = archive(&[("top/link", tar::EntryType::Symlink, b"")]);
        assert!(unpack(gz.as_slice(), &dir).is_err());
        assert!(!tmp.path().join("evil").exists());

        // A symbolic link already in DIR does not lead the export out of it.
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&elsewhere)?;
        std::os::unix::fs::symlink(&elsewhere, dir.join("job_events"))?;
        let gz = archive(&[("top/job_events/1-u.json", tar::EntryType::Regular, b"{}")]);
        let err = unpack(gz.as_slice(), &dir).expect_err("symlinked dir");
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(!elsewhere.join("1-u.json").exists());
        Ok(())
    }
}
