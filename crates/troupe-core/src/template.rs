//! Templates: saved run definitions that users launch, with the options a launch may change.

use crate::ValidationError;
use crate::notify::SealedNotify;
use crate::project::{PlaybookRef, validate_name};
use crate::run::{Labels, RunOptions};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Run options a launch may override, when the template allows it.
pub const OVERRIDABLE: &[&str] = &[
    "extra_vars",
    "limit",
    "tags",
    "skip_tags",
    "check",
    "diff",
    "forks",
    "verbosity",
    "timeout_s",
    "start_at_task",
    "inventory",
    "labels",
];

/// A stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The project.
    pub project_id: i64,
    /// The playbook, relative to the project.
    pub playbook: String,
    /// The inventory.
    pub inventory_id: i64,
    /// Options every launch starts from.
    pub defaults: RunOptions,
    /// Which options a launch may override (names from [`OVERRIDABLE`]).
    pub allow_overrides: Vec<String>,
    /// Labels every launched run carries.
    pub labels: Labels,
    /// Where every launched run's end is told (URLs shown as scheme and host only).
    #[serde(default, with = "crate::notify::shown_only")]
    #[schema(value_type = Vec<crate::notify::NotifyShown>)]
    pub notify: Vec<SealedNotify>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A template to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// Unique name.
    pub name: String,
    /// The project id.
    pub project_id: i64,
    /// The playbook, relative to the project.
    pub playbook: String,
    /// The inventory id.
    pub inventory_id: i64,
    /// Options every launch starts from.
    #[serde(default)]
    pub defaults: RunOptions,
    /// Which options a launch may override.
    #[serde(default)]
    pub allow_overrides: Vec<String>,
    /// Labels every launched run carries.
    #[serde(default)]
    pub labels: Labels,
    /// Where every launched run's end is told, sealed by the caller (never taken from a
    /// request body: [`crate::notify::Notify`] is what requests carry).
    #[serde(skip)]
    pub notify: Vec<SealedNotify>,
}

impl NewTemplate {
    /// Checks everything but references to other resources.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name, "name")?;
        PlaybookRef::parse(&self.playbook)?;
        self.defaults.validate()?;
        for o in &self.allow_overrides {
            if !OVERRIDABLE.contains(&o.as_str()) {
                return Err(ValidationError::new(
                    "invalid_field",
                    "allow_overrides",
                    format!(
                        "{o:?} cannot be overridden (one of: {})",
                        OVERRIDABLE.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
