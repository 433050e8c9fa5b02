//! troupe's HTTP API on the wire: every request body, query and response of `/api/v1`, one
//! module per resource, shared by the server (`troupe-api`), the CLI and the benchmark so that
//! neither side builds or reads JSON by hand.
//!
//! Domain types the API sends as they are (a [`runs::Run`], a [`projects::Project`]...) live in
//! `troupe-core` and are re-exported here, not copied.
//!
//! The types derive `utoipa` schemas, and the OpenAPI document is generated from them: a doc
//! comment on a field becomes that field's description in the published document. Fields that
//! have no description there carry `#[allow(missing_docs)]` instead of a doc comment, so that
//! moving the types here left the document unchanged; describing them is an API change of its
//! own. Request types skip absent optional fields when they are serialized (by clients), which
//! the server reads as it reads them missing.

pub mod errors;
pub mod events;
pub mod inventories;
pub mod jobs;
pub mod projects;
pub mod runs;
pub mod streams;
pub mod templates;
pub mod tokens;

use serde::{Deserialize, Serialize};

/// A reference to a resource (a project, an inventory) by id or by name: `5` or `"web"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IdOrName {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}

impl std::fmt::Display for IdOrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdOrName::Id(id) => write!(f, "with id {id}"),
            IdOrName::Name(n) => write!(f, "named {n:?}"),
        }
    }
}

impl From<i64> for IdOrName {
    fn from(id: i64) -> Self {
        IdOrName::Id(id)
    }
}

impl std::str::FromStr for IdOrName {
    type Err = std::convert::Infallible;

    /// A command-line argument: an id when it is a number, a name otherwise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse::<i64>()
            .map_or_else(|_| IdOrName::Name(s.to_owned()), IdOrName::Id))
    }
}
