//! Project bundles for remote workers: a project's files as one gzipped tar, built the same
//! way from the same files (sorted entries, no times, no owners), so its SHA-256 names its
//! content and a worker that already holds a bundle need not fetch it again.

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest project troupe bundles, uncompressed.
pub const MAX_BUNDLE_BYTES: u64 = 512 * 1024 * 1024;

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the project failed.
    #[error("could not read {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The project is larger than [`MAX_BUNDLE_BYTES`].
    #[error("the project is larger than {} MiB; remote workers cannot fetch it", MAX_BUNDLE_BYTES / (1024 * 1024))]
    TooLarge,
}

/// A bundle: its bytes and their SHA-256 (hex).
#[derive(Clone)]
pub struct Bundle {
    /// The gzipped tar.
    pub bytes: bytes::Bytes,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Bundles recently built, by project directory and content: a burst of runs of one project
/// tars it once.
pub struct Bundles {
    cache: moka::sync::Cache<String, Arc<Bundle>>,
}

impl Default for Bundles {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(256 * 1024 * 1024)
                .weigher(|_: &String, b: &Arc<Bundle>| {
                    u32::try_from(b.bytes.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
        }
    }
}

impl Bundles {
    /// The bundle of `dir` as it is now (built off the async threads).
    pub async fn of(&self, dir: &Path) -> Result<Arc<Bundle>, BundleError> {
        let dir = dir.to_path_buf();
        let built = tokio::task::spawn_blocking(move || build(&dir))
            .await
            .map_err(|e| BundleError::Read {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let bundle = Arc::new(built);
        self.cache
            .insert(bundle.sha256.clone(), Arc::clone(&bundle));
        Ok(bundle)
    }

    /// A bundle built before, by its SHA-256.
    pub fn get(&self, sha256: &str) -> Option<Arc<Bundle>> {
        self.cache.get(sha256)
    }
}

/// Builds the bundle of `dir`: every regular file, directory and symbolic link under it in
/// name order, `.git` left out.
pub fn build(dir: &Path) -> Result<Bundle, BundleError> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut total = 0u64;
    add_dir(&mut tar, dir, Path::new(""), &mut total)?;
    let gz = tar
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|source| BundleError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    let sha256 = hex::encode(Sha256::digest(&gz));
    Ok(Bundle {
        bytes: gz.into(),
        sha256,
    })
}

fn add_dir(
    tar: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    root: &Path,
    rel: &Path,
    total: &mut u64,
) -> Result<(), BundleError> {
    let here = root.join(rel);
    let read = |path: &Path, source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&here)
        .map_err(|e| read(&here, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(&here, e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let rel_path = rel.join(&name);
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| read(&path, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &rel_path, std::io::empty())
                .map_err(|e| read(&path, e))?;
            add_dir(tar, root, &rel_path, total)?;
        } else if meta.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| read(&path, e))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel_path, &target)
                .map_err(|e| read(&path, e))?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > MAX_BUNDLE_BYTES {
                return Err(BundleError::TooLarge);
            }
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = std::fs::File::open(&path).map_err(|e| read(&path, e))?;
            tar.append_data(&mut header, &rel_path, file)
                .map_err(|e| read(&path, e))?;
        }
        // Sockets, fifos and devices are not part of a project.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_make_the_same_bundle_and_a_change_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("roles/web/tasks")).expect("mkdir");
        std::fs::write(dir.path().join("site.yml"), "- hosts: all\n").expect("write");
        std::fs::write(dir.path().join("roles/web/tasks/main.yml"), "[]\n").expect("write");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join(".git/HEAD"), "ref").expect("write");
        let a = build(dir.path()).expect("bundle");
        std::fs::write(dir.path().join(".git/HEAD"), "other").expect("write");
        let b = build(dir.path()).expect("bundle");
        assert_eq!(a.sha256, b.sha256, ".git is not part of the bundle");
        std::fs::write(dir.path().join("site.yml"), "- hosts: web\n").expect("write");
        let c = build(dir.path()).expect("bundle");
        assert_ne!(a.sha256, c.sha256);

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&c.bytes[..]));
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            names.push(entry.path().expect("path").display().to_string());
        }
        assert_eq!(
            names,
            [
                "roles",
                "roles/web",
                "roles/web/tasks",
                "roles/web/tasks/main.yml",
                "site.yml"
            ]
        );
    }
}
