//! RedRunner's jobs and units: a tagged set of named units; an action on a unit runs
//! `<action>-<unit>.yml` from the unit's playbooks.

use crate::ValidationError;
use crate::project::validate_name;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a unit's playbooks are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitSource {
    /// A registered project.
    Project(i64),
    /// A directory holding a `project/` (or `projects/`) directory of playbooks.
    DataDir(String),
}

/// One unit of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unit {
    /// Its name (a microservice component, usually).
    pub name: String,
    /// Where its playbooks are, once set (falls back to the job's project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<UnitSource>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    /// Store-assigned id.
    pub id: i64,
    /// The tag; many jobs may share one.
    pub tag: String,
    /// Default project of the units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    /// The units, in the order given.
    pub units: Vec<Unit>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// The tag.
    pub tag: String,
    /// Unit names: unique, each usable in a playbook file name.
    pub units: Vec<String>,
    /// Default project of the units.
    #[serde(default)]
    pub project_id: Option<i64>,
}

impl NewJob {
    /// Checks the tag and unit names.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.tag, "tag")?;
        if self.units.is_empty() || self.units.len() > 1000 {
            return Err(ValidationError::new(
                "invalid_field",
                "units",
                "a job needs 1 to 1000 units",
            ));
        }
        let mut seen = BTreeSet::new();
        for u in &self.units {
            validate_unit_name(u)?;
            if u == EACH {
                return Err(ValidationError::new(
                    "invalid_unit",
                    "units",
                    format!(
                        "{EACH:?} is reserved: `<action>-{EACH}.yml` names an action on every unit"
                    ),
                ));
            }
            if !seen.insert(u) {
                return Err(ValidationError::new(
                    "invalid_field",
                    "units",
                    format!("unit {u:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// Unit names become parts of playbook file names (`<action>-<unit>.yml`) and host names.
pub fn validate_unit_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "invalid_unit",
            "unit",
            format!(
                "{name:?} is not a valid unit name (1 to 63 of letters, digits, '_', '.', '-')"
            ),
        ))
    }
}

/// Action names become the first part of playbook file names (`<action>-<unit>.yml`). They may
/// contain `-` (`restart-each`): the unit is always known when the file name is made, so the
/// name is never split again. A name ending in `.yml` is a playbook file name, not an action
/// (see [`resolve_unit_action`]).
pub fn validate_action(action: &str) -> Result<(), ValidationError> {
    let ok = !action.is_empty()
        && action.len() <= 63
        && action
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !action.starts_with(['.', '-'])
        && !action.ends_with(".yml")
        && !action.ends_with(".yaml");
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "invalid_action",
            "action",
            format!(
                "{action:?} is not a valid action (1 to 63 of letters, digits, '_', '.', '-'; \
                 not starting with '.' or '-')"
            ),
        ))
    }
}

/// The playbook-name form of every unit's action: `<action>-each.yml`.
pub const EACH: &str = "each";

/// The action an action request for `unit` names: an action name as it is, or the seed's
/// playbook file name, `<action>-<unit>.yml` (or `<action>-each.yml`), whose action is what
/// comes before `-<unit>.yml`. The unit is given, so the split is unambiguous even when both
/// the action and the unit contain `-`.
pub fn resolve_unit_action(given: &str, unit: &str) -> Result<String, ValidationError> {
    resolve_action(given, Some(unit))
}

/// The action an action request for every unit of a job names: an action name, or
/// `<action>-each.yml`.
pub fn resolve_job_action(given: &str) -> Result<String, ValidationError> {
    resolve_action(given, None)
}

fn resolve_action(given: &str, unit: Option<&str>) -> Result<String, ValidationError> {
    let Some(stem) = given.strip_suffix(".yml") else {
        validate_action(given)?;
        return Ok(given.to_owned());
    };
    let action = unit
        .and_then(|u| stem.strip_suffix(u)?.strip_suffix('-'))
        .or_else(|| stem.strip_suffix(EACH)?.strip_suffix('-'));
    let Some(action) = action else {
        let expected = match unit {
            Some(u) => format!("`<action>-{u}.yml` or `<action>-{EACH}.yml`"),
            None => format!("`<action>-{EACH}.yml` (or an action name)"),
        };
        return Err(ValidationError::new(
            "invalid_action",
            "action",
            format!("playbook {given:?} is not named {expected}"),
        ));
    };
    validate_action(action)?;
    Ok(action.to_owned())
}

/// A job's status from its units' latest run statuses (`idle` for a unit without runs):
/// `idle` when no unit has run, `running` while a unit's latest run is queued or running,
/// `failed` when some unit's latest run did not succeed, else `successful`.
pub fn aggregate_status<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let all: Vec<&str> = statuses.collect();
    if all.iter().all(|s| *s == "idle") {
        "idle"
    } else if all.iter().any(|s| matches!(*s, "queued" | "running")) {
        "running"
    } else if all.iter().any(|s| !matches!(*s, "successful" | "idle")) {
        "failed"
    } else {
        "successful"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_names() {
        let ok = NewJob {
            tag: "nightly".into(),
            units: vec!["frontend".into(), "backend".into()],
            project_id: None,
        };
        assert!(ok.validate().is_ok());
        let dup = NewJob {
            units: vec!["a".into(), "a".into()],
            ..ok.clone()
        };
        assert!(dup.validate().is_err());
        let empty = NewJob {
            units: vec![],
            ..ok.clone()
        };
        assert!(empty.validate().is_err());
        assert!(validate_unit_name("../x").is_err());
        assert!(validate_action("backup").is_ok());
        assert!(validate_action("restart-each").is_ok());
        assert!(validate_action("-x").is_err());
        assert!(validate_action("backup.yml").is_err());
        let each = NewJob {
            units: vec!["each".into()],
            ..ok.clone()
        };
        assert!(each.validate().is_err());
    }

    #[test]
    fn actions_resolve_from_names_and_playbook_file_names() {
        let unit = |given: &str, unit: &str| resolve_unit_action(given, unit).ok();
        assert_eq!(unit("backup", "frontend").as_deref(), Some("backup"));
        assert_eq!(
            unit("backup-frontend.yml", "frontend").as_deref(),
            Some("backup")
        );
        // Both contain '-': the unit is known, so the action is what precedes it.
        assert_eq!(
            unit("restart-each-front-end.yml", "front-end").as_deref(),
            Some("restart-each")
        );
        assert_eq!(unit("a-b-c.yml", "c").as_deref(), Some("a-b"));
        assert_eq!(unit("a-b-c.yml", "b-c").as_deref(), Some("a"));
        assert_eq!(unit("restart-each.yml", "db").as_deref(), Some("restart"));
        assert_eq!(unit("backup-db.yml", "frontend"), None, "another unit's");
        assert_eq!(unit("-frontend.yml", "frontend"), None, "no action");
        assert_eq!(unit("../x-frontend.yml", "frontend"), None);
        let job = |given: &str| resolve_job_action(given).ok();
        assert_eq!(job("restart-each.yml").as_deref(), Some("restart"));
        assert_eq!(job("hot-restart-each.yml").as_deref(), Some("hot-restart"));
        assert_eq!(job("hot-restart").as_deref(), Some("hot-restart"));
        assert_eq!(job("backup-frontend.yml"), None);
    }
    #[test]
    fn job_status_aggregates_unit_statuses() {
        assert_eq!(aggregate_status(["idle", "idle"].into_iter()), "idle");
        assert_eq!(
            aggregate_status(["successful", "running"].into_iter()),
            "running"
        );
        assert_eq!(
            aggregate_status(["successful", "failed"].into_iter()),
            "failed"
        );
        assert_eq!(
            aggregate_status(["successful", "idle"].into_iter()),
            "successful"
        );
        assert_eq!(
            aggregate_status(["successful", "canceled"].into_iter()),
            "failed"
        );
    }
}
