//! SHIM (replaced by h-fdoc's load.rs on merge).
#![allow(missing_docs)]
use crate::doc::FlowDoc;
#[derive(Debug, Clone, PartialEq)]
pub struct Problem { pub field: String, pub message: String }
impl std::fmt::Display for Problem { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}: {}", self.field, self.message) } }
#[derive(Debug, thiserror::Error)]
pub enum FlowError { #[error("{0}")] Yaml(String), #[error("invalid")] Invalid(Vec<Problem>) }
pub fn load(text: &str) -> Result<FlowDoc, FlowError> { serde_saphyr::from_str(text).map_err(|e| FlowError::Yaml(e.to_string())) }
