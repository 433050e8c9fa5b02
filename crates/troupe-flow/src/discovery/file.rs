//! `file`: a YAML or JSON file inside a project, holding a list of names or a mapping with a
//! `nodes` list. The path must stay inside the project, symlinks included.

use super::{SourceError, names_in};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// The largest node file read.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The names in `path` inside the project directory `root`.
pub(super) async fn nodes(root: PathBuf, path: &str) -> Result<Vec<String>, SourceError> {
    let shown = path.to_owned();
    tokio::task::spawn_blocking(move || read_inside(&root, &shown))
        .await
        .map_err(|e| SourceError::io("reading the node file", std::io::Error::other(e)))?
        .and_then(|(text, is_json)| parse(&text, is_json, path))
}

/// Resolves `path` inside `root` (refusing absolute paths, `..` and symlinks leading out) and
/// reads it. Returns the text and whether it is JSON (by its extension). Blocking.
fn read_inside(root: &Path, path: &str) -> Result<(String, bool), SourceError> {
    let refuse = |reason: &str| SourceError::Path {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let relative = Path::new(path);
    if path.is_empty() {
        return Err(refuse("is empty"));
    }
    if relative.is_absolute() {
        return Err(refuse("must be relative to the project"));
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(refuse("must stay inside the project (no '..')"));
    }
    let root = std::fs::canonicalize(root)
        .map_err(|e| SourceError::io(format!("project directory {}", root.display()), e))?;
    let full = std::fs::canonicalize(root.join(relative))
        .map_err(|_| refuse("does not exist in the project"))?;
    if !full.starts_with(&root) {
        return Err(refuse("leads outside the project (through a symlink)"));
    }
    let meta = std::fs::metadata(&full).map_err(|_| refuse("does not exist in the project"))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(refuse(&format!(
            "is larger than {MAX_FILE_BYTES} bytes ({} bytes)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&full)
        .map_err(|e| SourceError::io(format!("reading {path:?}"), e))?;
    let is_json = full
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    Ok((text, is_json))
}

/// A list of names, or a mapping whose `nodes` is one.
fn parse(text: &str, is_json: bool, path: &str) -> Result<Vec<String>, SourceError> {
    let what = format!("file {path:?}");
    let doc: Value = if is_json {
        serde_json::from_str(text).map_err(|e| SourceError::shape(&what, e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| SourceError::shape(&what, e.to_string()))?
    };
    match &doc {
        Value::Array(items) => names_in(items, None, &what),
        Value::Object(map) => match map.get("nodes") {
            Some(Value::Array(items)) => names_in(items, None, &what),
            Some(_) => Err(SourceError::shape(&what, "`nodes` is not a list")),
            None => Err(SourceError::shape(
                &what,
                "a mapping must have a `nodes` list",
            )),
        },
        Value::Null => Ok(Vec::new()),
        _ => Err(SourceError::shape(
            &what,
            "expected a list of names or a mapping with a `nodes` list",
        )),
    }
}
