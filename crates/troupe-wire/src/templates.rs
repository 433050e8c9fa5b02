//! Templates: saved run definitions that users launch, overriding only what is allowed.
//!
//! A launch's body is a free-form object of overrides (its keys are checked against
//! [`troupe_core::template::OVERRIDABLE`] and the template's `allow_overrides`), so it has no
//! type of its own here.

use crate::IdOrName;
use serde::{Deserialize, Serialize};

pub use troupe_core::run::{Labels, RunOptions};
pub use troupe_core::template::Template;

/// A template to create; project and inventory by id or name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    #[allow(missing_docs)]
    pub name: String,
    #[allow(missing_docs)]
    #[schema(value_type = Object)]
    pub project: IdOrName,
    #[allow(missing_docs)]
    pub playbook: String,
    #[allow(missing_docs)]
    #[schema(value_type = Object)]
    pub inventory: IdOrName,
    /// Options every launch starts from.
    #[serde(default)]
    pub defaults: RunOptions,
    /// Which options a launch may override.
    #[serde(default)]
    pub allow_overrides: Vec<String>,
    #[allow(missing_docs)]
    #[serde(default)]
    pub labels: Labels,
    /// Where every launched run's end is told: `{webhook: URL, headers?}` or
    /// `{slack: URL, text?}`, with `on` (the ends; every end by default). Stored sealed; shown
    /// with the URL's scheme and host only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<troupe_core::notify::Notify>,
}

// The answer to `GET /api/v1/templates`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}
