//! SHIM (replaced by h-fdoc's inputs.rs on merge).
#![allow(missing_docs)]
use indexmap::IndexMap;
use serde_json::{Map, Value};
use crate::doc::InputSpec;
use crate::load::Problem;
pub struct Inputs { all: Map<String, Value>, secret: Vec<String> }
pub fn resolve(specs: &IndexMap<String, InputSpec>, given: &Map<String, Value>) -> Result<Inputs, Vec<Problem>> {
    let mut all = given.clone();
    for (k, s) in specs { if !all.contains_key(k) { if let Some(d) = &s.default { all.insert(k.clone(), d.clone()); } } }
    Ok(Inputs { all, secret: specs.iter().filter(|(_, s)| s.secret).map(|(k, _)| k.clone()).collect() })
}
impl Inputs {
    pub fn all(&self) -> &Map<String, Value> { &self.all }
    pub fn redacted(&self) -> Map<String, Value> { self.all.iter().map(|(k, v)| (k.clone(), if self.secret.contains(k) { Value::String("********".into()) } else { v.clone() })).collect() }
    pub fn secrets(&self) -> Map<String, Value> { self.all.iter().filter(|(k, _)| self.secret.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect() }
    pub fn with_secrets(redacted: Map<String, Value>, secrets: Map<String, Value>) -> Inputs { let secret = secrets.keys().cloned().collect(); let mut all = redacted; all.extend(secrets); Inputs { all, secret } }
    pub fn scrubber(&self) -> Scrubber { Scrubber(self.secrets().values().filter_map(|v| v.as_str().map(str::to_owned)).collect()) }
}
pub struct Scrubber(Vec<String>);
impl Scrubber {
    pub fn scrub_str(&self, s: &str) -> String { let mut s = s.to_owned(); for x in &self.0 { if x.len() >= 4 { s = s.replace(x, "********"); } } s }
    pub fn scrub(&self, v: &mut Value) { match v { Value::String(s) => *s = self.scrub_str(s), Value::Array(a) => a.iter_mut().for_each(|i| self.scrub(i)), Value::Object(m) => m.values_mut().for_each(|i| self.scrub(i)), _ => {} } }
}
