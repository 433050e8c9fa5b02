//! SHIM (replaced by h-fdoc's explain.rs on merge).
#![allow(missing_docs)]
pub fn explain(doc: &crate::doc::FlowDoc) -> String { format!("Flow {}.", doc.name) }
