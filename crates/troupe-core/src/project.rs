//! Projects: where playbooks live, and the lexical rules a playbook path must follow before it
//! is ever resolved on disk.

use crate::ValidationError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// Where a project's playbooks come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProjectSource {
    /// A directory on the server's file system.
    Dir {
        /// Absolute path of the directory.
        path: String,
    },
    /// A git repository, cloned into the data dir and fetched on sync.
    Git {
        /// Clone URL (any URL or path `git clone` accepts).
        url: String,
        /// Branch, tag or commit to check out (default: the remote's default branch).
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        git_ref: Option<String>,
        /// The name of the `git` credential clones and fetches authenticate with: its token
        /// over HTTPS, its private key over SSH.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
}

/// Where a git project stands: what was last synced, and how the last sync went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectSync {
    /// The commit checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the last sync finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<DateTime<Utc>>,
    /// Why the last sync failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What installing `requirements.yml` reported, when it did not succeed (not fatal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements_error: Option<String>,
}

/// A stored project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Where its playbooks are.
    pub source: ProjectSource,
    /// For git projects: the state of the last sync.
    #[serde(default)]
    pub sync: ProjectSync,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A project to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// Unique name: letters, digits, `.`, `_`, `-`; at most 100 characters.
    pub name: String,
    /// Where its playbooks are.
    pub source: ProjectSource,
}

impl NewProject {
    /// Checks the name and source without touching the file system.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name, "name")?;
        match &self.source {
            ProjectSource::Dir { path } => {
                if !Path::new(path).is_absolute() {
                    return Err(ValidationError::new(
                        "invalid_source",
                        "source.path",
                        format!("project directory must be an absolute path, got {path:?}"),
                    ));
                }
            }
            ProjectSource::Git {
                url,
                git_ref,
                credential,
            } => {
                if url.is_empty() || url.starts_with('-') || url.contains(['\0', '\n']) {
                    return Err(ValidationError::new(
                        "invalid_source",
                        "source.url",
                        format!(
                            "{:?} is not a usable git URL",
                            crate::url::redact_credentials(url)
                        ),
                    ));
                }
                if crate::url::split_password(url).is_some() {
                    return Err(ValidationError::new(
                        "secret_in_url",
                        "source.url",
                        "the URL holds a password or token, which would be kept in clear: make a \
                         git credential of it (troupe credentials create --name NAME --kind git \
                         --token-stdin), name it in source.credential and give the URL without it",
                    ));
                }
                if let Some(name) = credential {
                    validate_name(name, "source.credential")?;
                }
                if let Some(r) = git_ref
                    && (r.is_empty()
                        || r.starts_with('-')
                        || r.contains(['\0', '\n', ' ', '~', '^', ':']))
                {
                    return Err(ValidationError::new(
                        "invalid_source",
                        "source.ref",
                        format!("{r:?} is not a usable git ref"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a resource name: 1 to 100 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str, field: &str) -> Result<(), ValidationError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 100 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(ValidationError::new(
            "invalid_name",
            field,
            format!(
                "{name:?} is not a valid name: use 1 to 100 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
            ),
        ));
    }
    Ok(())
}

/// A playbook path relative to its project's root that cannot name anything outside it
/// lexically (no absolute path, no `..`). Symlinks are checked where the path is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlaybookRef(String);

impl PlaybookRef {
    /// Validates `raw` as a playbook path inside a project.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| {
            ValidationError::new(
                "invalid_playbook",
                "playbook",
                format!("playbook {raw:?} {why}"),
            )
        };
        if raw.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.contains('\0') || raw.len() > 1024 {
            return Err(bad("is not a usable path"));
        }
        let path = Path::new(raw);
        if path.is_absolute() {
            return Err(bad("must be relative to the project directory"));
        }
        for c in path.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                _ => return Err(bad("must stay inside the project directory (no '..')")),
            }
        }
        if !(raw.ends_with(".yml") || raw.ends_with(".yaml")) {
            return Err(bad("must be a .yml or .yaml file"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The path, relative to the project root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlaybookRef {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PlaybookRef> for String {
    fn from(value: PlaybookRef) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playbook_paths_stay_inside() {
        assert!(PlaybookRef::parse("site.yml").is_ok());
        assert!(PlaybookRef::parse("sub/dir/play.yaml").is_ok());
        assert!(PlaybookRef::parse("./site.yml").is_ok());
        for bad in [
            "",
            "/etc/passwd.yml",
            "../x.yml",
            "a/../../x.yml",
            "site.txt",
            "a\0.yml",
        ] {
            let err = PlaybookRef::parse(bad).expect_err(bad);
            assert_eq!(err.code, "invalid_playbook");
            assert_eq!(err.field, "playbook");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("web-1.prod_x", "name").is_ok());
        for bad in ["", ".hidden", "-x", "a b", "a/b", &"x".repeat(101)] {
            assert!(validate_name(bad, "name").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn project_dir_must_be_absolute() {
        let p = NewProject {
            name: "p".into(),
            source: ProjectSource::Dir {
                path: "rel/dir".into(),
            },
        };
        assert_eq!(p.validate().expect_err("relative").field, "source.path");
    }
}
