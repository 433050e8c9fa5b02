//! The server's sealing key on disk: one base64 line in a file only its owner may read,
//! made on first use.
//!
//! Every replica of a PostgreSQL deployment must be given the same file, or one replica
//! cannot open what another sealed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use troupe_core::secret::SecretKey;

/// Reads the key in `path`, or makes a new one there (mode 0600) when there is no file.
/// A file the group or others may read is refused, as is one that does not hold a key.
///
/// Blocking: call it at start-up, or from `spawn_blocking`.
pub fn load_or_create_key(path: &Path) -> io::Result<SecretKey> {
    match read_key(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let key = SecretKey::generate().map_err(io::Error::other)?;
    match create(path, &key) {
        Ok(()) => Ok(key),
        // Another process (a second replica starting at the same time) made it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(e),
    }
}

fn read_key(path: &Path) -> io::Result<SecretKey> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the key file {} may be read by others (mode {:o}); make it 0600 (chmod 600)",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    let text = fs::read_to_string(path)?;
    SecretKey::from_base64(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the key file {}: {e}", path.display()),
        )
    })
}

/// Writes the key to a temporary file beside `path`, then links it in place: no reader ever
/// sees a half-written key, and an existing file is never replaced.
fn create(path: &Path, key: &SecretKey) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".to_owned());
    // Unique to this process and call, so only the final link can find the file there.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", key.to_base64())?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_file_is_made_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/secret.key");
        let key = load_or_create_key(&path).expect("created");
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_key(&path).expect("read");
        assert_eq!(again, key);
        let sealed = key.seal(b"x").expect("sealed");
        assert_eq!(again.open(&sealed).expect("opens"), b"x");
        // Nothing but the key file is left in the directory.
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["secret.key"]);
    }

    #[test]
    fn an_existing_key_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let key = SecretKey::generate().expect("key");
        fs::write(&path, key.to_base64()).expect("written");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(load_or_create_key(&path).expect("read"), key);
    }

    #[test]
    fn a_readable_or_broken_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let key = SecretKey::generate().expect("key");
        fs::write(&path, key.to_base64()).expect("written");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create_key(&path).expect_err("readable by others");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("644"), "{e}");
        assert!(!e.to_string().contains(&key.to_base64()), "{e}");

        fs::write(&path, "not a key").expect("written");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = load_or_create_key(&path).expect_err("not a key");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Refused, not replaced.
        assert_eq!(fs::read_to_string(&path).expect("read"), "not a key");
    }
}
