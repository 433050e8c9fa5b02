//! Redaction: the secret values a run knows of (its credentials' values and its secret extra
//! vars) are replaced with `********` in everything it produces before anything is stored,
//! streamed or logged; and extra vars whose names say they are secret are sealed before a run
//! is stored, and masked in event records.
//!
//! A [`Redactor`] is built from a run's secret texts and the forms ansible prints them in: as
//! they are, JSON-escaped (as `to_json` and the callback's `json.dumps` write them, `\uXXXX`
//! included), and inside a Python string's `repr` (a failed module's `msg`, `-vvv` dumps).
//! Texts shorter than [`MIN_REDACTED`] characters are left alone: "on" or "1" would blank out
//! every word that holds them while hiding little.
//!
//! [`SecretNames`] is the configurable pattern (`redact_vars`) of extra-var names whose values
//! are secret, at any depth of nested mappings.

use crate::Event;
use crate::EventData;
use crate::secret::{SealError, Sealer};
use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// What a secret is replaced with.
pub const REDACTED: &str = "********";

/// Secret texts shorter than this (in characters) are not redacted.
pub const MIN_REDACTED: usize = 4;

/// The default `redact_vars`: extra vars named like these hold secrets.
pub const DEFAULT_SECRET_VARS: &str = r"(?i)(password|passwd|secret|token|api_?key|private_key)";

/// What a sealed extra var's value starts with; the rest is the sealed JSON of the value.
pub const SEALED_PREFIX: &str = "troupe-sealed:v1:";

/// Replaces a run's secret texts, in the forms ansible prints them, with [`REDACTED`].
#[derive(Clone, Default)]
pub struct Redactor {
    /// `None` when there is nothing to redact: the hot path then does no work at all.
    matcher: Option<AhoCorasick>,
    patterns: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns)
    }
}

impl Redactor {
    /// A redactor for these secret texts (those shorter than [`MIN_REDACTED`] characters are
    /// skipped) and their printed forms.
    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut forms: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            add_forms(secret, &mut forms);
            // A multi-line secret (a private key) may be printed a line at a time.
            if secret.contains('\n') {
                for line in secret.lines() {
                    let line = line.trim();
                    if line.len() >= 16 && !line.starts_with("-----") {
                        add_forms(line, &mut forms);
                    }
                }
            }
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        if forms.is_empty() {
            return Redactor::default();
        }
        // Leftmost-longest: of two forms where one holds the other, the longer goes whole.
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
        {
            Ok(ac) => Redactor {
                matcher: Some(ac),
                patterns: forms.len(),
            },
            // Only too many or too long patterns fail to build: blank everything rather than
            // let a secret through.
            Err(_) => Redactor {
                matcher: AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build([""])
                    .ok(),
                patterns: 1,
            },
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Whether `s` holds a secret.
    pub fn finds(&self, s: &str) -> bool {
        self.matcher.as_ref().is_some_and(|ac| ac.is_match(s))
    }

    /// `s` with every secret replaced (borrowed when there was none).
    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(ac) if ac.is_match(s) => {
                Cow::Owned(ac.replace_all(s, &vec![REDACTED; self.patterns]))
            }
            _ => Cow::Borrowed(s),
        }
    }

    /// Redacts `s` in place.
    pub fn redact_string(&self, s: &mut String) {
        if let Cow::Owned(r) = self.redact_str(s) {
            *s = r;
        }
    }

    /// Redacts every string of a JSON value, mapping keys included; the value stays valid.
    pub fn redact_value(&self, v: &mut Value) {
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => self.redact_string(s),
            Value::Number(n) => {
                if self.finds(&n.to_string()) {
                    *v = Value::String(REDACTED.to_owned());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_value(i)),
            Value::Object(map) => {
                if map.keys().any(|k| self.finds(k)) {
                    let old = std::mem::take(map);
                    for (k, mut item) in old {
                        self.redact_value(&mut item);
                        map.insert(self.redact_str(&k).into_owned(), item);
                    }
                } else {
                    map.values_mut().for_each(|i| self.redact_value(i));
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// Redacts an event's `stdout` and `event_data`. `event_data` is only parsed and written
    /// again when its text holds a secret in some form.
    pub fn redact_event(&self, event: &mut Event) {
        if self.is_empty() {
            return;
        }
        self.redact_string(&mut event.stdout);
        if self.finds(event.event_data.json()) {
            let mut data = event.event_data.to_value();
            self.redact_value(&mut data);
            event.event_data = EventData::from(data);
        }
    }
}

/// Adds the forms `secret` is printed in, when it is long enough.
fn add_forms(secret: &str, out: &mut Vec<String>) {
    if secret.chars().count() < MIN_REDACTED {
        return;
    }
    out.push(secret.to_owned());
    let json = json_escaped(secret, false);
    let ascii = json_escaped(secret, true);
    let repr = python_escaped(secret);
    // A shell command line holding the secret quoted (`| quote`, shlex.quote, and so `-vvv`'s
    // command lines): every `'` becomes `'"'"'`; and that inside JSON.
    let shell = secret.replace('\'', r#"'"'"'"#);
    let shell_json = json_escaped(&shell, false);
    // `| b64encode`, `base64`: the whole text's base64 and, as a text followed by anything
    // (`echo`'s newline) encodes to the same characters up to its last whole 3-byte group,
    // that aligned head too when it is long enough to mean something.
    let b64 = BASE64.encode(secret);
    let b64_line = BASE64.encode(format!("{secret}\n"));
    let whole = secret.len() / 3 * 3;
    let head = (whole >= 6).then(|| BASE64.encode(&secret.as_bytes()[..whole]));
    for form in [json, ascii, repr, shell, shell_json, b64, b64_line]
        .into_iter()
        .chain(head)
    {
        if form != secret {
            out.push(form);
        }
    }
}

/// The inside of a JSON string holding `s`; `ascii` escapes every non-ASCII character as
/// Python's `json.dumps` does by default.
fn json_escaped(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The inside of a single-quoted Python `repr` of `s`.
fn python_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The texts a secret value shows up as: a string as it is, a number as written, and those
/// inside a list or a mapping.
pub fn secret_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| secret_texts(i, out)),
        Value::Object(map) => map.values().for_each(|i| secret_texts(i, out)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// The names of extra vars (and of keys in event payloads) whose values are secret.
#[derive(Clone)]
pub struct SecretNames(regex::Regex);

impl fmt::Debug for SecretNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretNames({:?})", self.0.as_str())
    }
}

impl Default for SecretNames {
    fn default() -> Self {
        // The default pattern is a constant known to compile (a unit test builds it).
        SecretNames::new(DEFAULT_SECRET_VARS).unwrap_or_else(|_| SecretNames::never())
    }
}

impl SecretNames {
    /// Names matching `pattern` (a regular expression, searched anywhere in the name).
    pub fn new(pattern: &str) -> Result<SecretNames, regex::Error> {
        regex::Regex::new(pattern).map(SecretNames)
    }

    /// No name is secret.
    pub fn never() -> SecretNames {
        SecretNames(regex::Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!()))
    }

    /// Whether a value under `name` is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.0.is_match(name)
    }

    /// Replaces the values of secret keys, at any depth, with [`REDACTED`]; answers whether
    /// any was.
    pub fn mask(&self, v: &mut Value) -> bool {
        let mut any = false;
        match v {
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if self.is_secret(k) {
                        if !item.is_null() {
                            *item = Value::String(REDACTED.to_owned());
                            any = true;
                        }
                    } else {
                        any |= self.mask(item);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    any |= self.mask(item);
                }
            }
            _ => {}
        }
        any
    }

    /// Seals the values of secret keys, at any depth, as `troupe-sealed:v1:...` strings
    /// (values already sealed are kept): what a run's stored options hold instead.
    pub fn seal(
        &self,
        vars: &mut Map<String, Value>,
        sealer: &dyn Sealer,
    ) -> Result<(), SealError> {
        for (k, item) in vars.iter_mut() {
            if self.is_secret(k) {
                if !item.is_null() && !is_sealed(item) {
                    *item = sealed(item, sealer)?;
                }
            } else {
                self.seal_value(item, sealer)?;
            }
        }
        Ok(())
    }

    fn seal_value(&self, v: &mut Value, sealer: &dyn Sealer) -> Result<(), SealError> {
        match v {
            Value::Object(map) => self.seal(map, sealer),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|i| self.seal_value(i, sealer)),
            _ => Ok(()),
        }
    }
}

/// `value` sealed whole, as the `troupe-sealed:v1:...` string a run's stored extra vars hold
/// instead (opened by [`open_sealed`]).
pub fn sealed(value: &Value, sealer: &dyn Sealer) -> Result<Value, SealError> {
    let plain = serde_json::to_vec(value).unwrap_or_default();
    Ok(Value::String(format!(
        "{SEALED_PREFIX}{}",
        sealer.seal(&plain)?
    )))
}

/// Whether a value is a sealed extra var.
pub fn is_sealed(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with(SEALED_PREFIX))
}

/// Opens the sealed values in extra vars, at any depth, in place; answers the secret texts
/// they held (for a [`Redactor`]).
pub fn open_sealed(
    vars: &mut Map<String, Value>,
    sealer: &dyn Sealer,
) -> Result<Vec<String>, SealError> {
    let mut texts = Vec::new();
    for item in vars.values_mut() {
        open_value(item, sealer, &mut texts)?;
    }
    Ok(texts)
}

/// Whether extra vars hold a sealed value anywhere.
pub fn has_sealed(vars: &Map<String, Value>) -> bool {
    fn any(v: &Value) -> bool {
        match v {
            Value::String(_) => is_sealed(v),
            Value::Array(items) => items.iter().any(any),
            Value::Object(map) => map.values().any(any),
            _ => false,
        }
    }
    vars.values().any(any)
}

fn open_value(
    v: &mut Value,
    sealer: &dyn Sealer,
    texts: &mut Vec<String>,
) -> Result<(), SealError> {
    match v {
        Value::String(s) => {
            if let Some(sealed) = s.strip_prefix(SEALED_PREFIX) {
                let plain = sealer.open(sealed)?;
                let value: Value = serde_json::from_slice(&plain)
                    .map_err(|e| SealError::Malformed(e.to_string()))?;
                secret_texts(&value, texts);
                *v = value;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|i| open_value(i, sealer, texts)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|i| open_value(i, sealer, texts)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretKey;
    use serde_json::json;

    #[test]
    fn replaces_every_printed_form() {
        let r = Redactor::new(["s3cr\"et'pa\\ss\u{e9}", "abc"]);
        assert!(!r.is_empty());
        assert_eq!(r.redact_str("x s3cr\"et'pa\\ss\u{e9} y"), "x ******** y");
        assert_eq!(
            r.redact_str(r#"{"a": "s3cr\"et'pa\\ss\u00e9"}"#),
            r#"{"a": "********"}"#
        );
        assert_eq!(
            r.redact_str(r#"{"a": "s3cr\"et'pa\\ssé"}"#),
            r#"{"a": "********"}"#
        );
        assert_eq!(
            r.redact_str(r#"msg: 's3cr"et\'pa\\ssé'"#),
            "msg: '********'"
        );
        // Too short to redact: left alone.
        assert_eq!(r.redact_str("abc abcd"), "abc abcd");
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn shell_quoted_and_base64_forms_go_too() {
        // Expected texts from Python: shlex.quote("it's-open-sesame"), base64.b64encode(...).
        let r = Redactor::new(["it's-open-sesame", "open-sesame"]);
        assert_eq!(
            r.redact_str(r#"sh -c 'echo 'it'"'"'s-open-sesame''"#),
            "sh -c 'echo '********''"
        );
        assert_eq!(r.redact_str("b64: b3Blbi1zZXNhbWU="), "b64: ********");
        assert_eq!(
            r.redact_str("echo|base64: b3Blbi1zZXNhbWUK"),
            "echo|base64: ********"
        );
        // Followed by other bytes: the aligned head goes, at most two bytes' worth is left.
        assert_eq!(r.redact_str("b3Blbi1zZXNhbWUgYW5k"), "********bWUgYW5k");
    }

    #[test]
    fn an_empty_redactor_does_nothing() {
        let r = Redactor::new(Vec::<String>::new());
        assert!(r.is_empty());
        let r2 = Redactor::new(["", "ab"]);
        assert!(r2.is_empty());
        assert!(matches!(r.redact_str("x"), Cow::Borrowed(_)));
    }

    #[test]
    fn longer_secrets_win_and_lines_of_keys_go_too() {
        let r = Redactor::new(["hunter2", "hunter2-longer"]);
        assert_eq!(
            r.redact_str("a hunter2-longer b hunter2"),
            "a ******** b ********"
        );
        let key =
            "-----BEGIN KEY-----\nAAAABBBBCCCCDDDDEEEE\nFFFFGGGGHHHHIIIIJJJJ\n-----END KEY-----\n";
        let r = Redactor::new([key]);
        assert_eq!(r.redact_str("x FFFFGGGGHHHHIIIIJJJJ y"), "x ******** y");
    }

    #[test]
    fn json_stays_valid_and_keys_are_redacted() {
        let r = Redactor::new(["topsecret"]);
        let mut v = json!({"msg": "pw=topsecret", "n": [1, {"topsecret": "x"}], "ok": true});
        r.redact_value(&mut v);
        assert_eq!(
            v,
            json!({"msg": "pw=********", "n": [1, {"********": "x"}], "ok": true})
        );
        let r = Redactor::new(["123456"]);
        let mut v = json!({"pin": 123456});
        r.redact_value(&mut v);
        assert_eq!(v, json!({"pin": "********"}));
    }

    #[test]
    fn events_are_redacted_in_stdout_and_data() {
        let r = Redactor::new(["line\nbreak-secret"]);
        let mut ev: Event = serde_json::from_value(json!({
            "counter": 1, "uuid": "u", "event": "runner_on_ok",
            "created": "2026-01-01T00:00:00Z", "stdout": "ok: \"line\\nbreak-secret\"",
            "start_line": 0, "end_line": 1,
            "event_data": {"host": "h", "res": {"msg": "line\nbreak-secret", "x": 1}}
        }))
        .expect("event");
        r.redact_event(&mut ev);
        assert_eq!(ev.stdout, "ok: \"********\"");
        assert_eq!(
            ev.event_data.to_value(),
            json!({"host": "h", "res": {"msg": "********", "x": 1}})
        );
        assert_eq!(ev.host(), Some("h"));
    }

    #[test]
    fn secret_names_mask_and_seal_at_any_depth() {
        let names = SecretNames::default();
        assert!(names.is_secret("db_password"));
        assert!(names.is_secret("API_KEY"));
        assert!(names.is_secret("github_token"));
        assert!(!names.is_secret("user"));
        let mut v = json!({"user": "u", "db": {"Password": "p1", "list": [{"apikey": 5}]}});
        assert!(names.mask(&mut v));
        assert_eq!(
            v,
            json!({"user": "u", "db": {"Password": "********", "list": [{"apikey": "********"}]}})
        );

        let key = SecretKey::generate().expect("key");
        let original = json!({"user": "u", "db": {"db_password": "p1xx", "token": {"a": 7}}});
        let Value::Object(mut vars) = original.clone() else {
            unreachable!()
        };
        names.seal(&mut vars, &key).expect("seal");
        let text = serde_json::to_string(&vars).expect("json");
        assert!(!text.contains("p1xx"), "{text}");
        assert!(has_sealed(&vars));
        // Sealing again keeps what is sealed.
        let before = vars.clone();
        names.seal(&mut vars, &key).expect("seal");
        assert_eq!(vars, before);
        let texts = open_sealed(&mut vars, &key).expect("open");
        assert_eq!(Value::Object(vars), original);
        assert_eq!(texts, vec!["p1xx".to_owned(), "7".to_owned()]);
    }

    #[test]
    fn the_default_pattern_compiles_and_never_matches_nothing() {
        assert!(SecretNames::new(DEFAULT_SECRET_VARS).is_ok());
        assert!(!SecretNames::never().is_secret("password"));
        assert!(!SecretNames::never().is_secret(""));
    }
}
