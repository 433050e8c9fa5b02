//! SHIM (replaced by h-discovery on merge).
#![allow(missing_docs)]
use serde_json::{Map, Value};
use troupe_core::inventory::{InventoryContent, InventoryFormat};
pub fn inventory_of(nodes: &[String], vars: &Map<String, Value>) -> InventoryContent {
    let mut hosts = Map::new();
    for n in nodes { hosts.insert(n.clone(), Value::Object(vars.clone())); }
    let doc = serde_json::json!({"all": {"hosts": hosts}});
    InventoryContent { format: InventoryFormat::Yaml, hosts: serde_json::to_string(&doc).unwrap_or_default(), vars: None }
}
