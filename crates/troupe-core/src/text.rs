//! Terminal text: ansible prints colours (troupe keeps them, as ansible-runner does); readers
//! that are not terminals get plain text.

/// What kind of JSON value `v` is, with its article ("an object", "a string", "null"), for
/// error messages.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` without ANSI escape sequences: colours and cursor moves go, while tabs, carriage
/// returns, form feeds and newlines stay as ansible printed them.
pub fn plain(text: &str) -> String {
    anstream::adapter::strip_str(text).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(
            super::plain("\u{1b}[0;32mok: [h1]\u{1b}[0m\n"),
            "ok: [h1]\n"
        );
        assert_eq!(super::plain("plain"), "plain");
    }

    #[test]
    fn keeps_tabs_and_carriage_returns() {
        assert_eq!(
            super::plain("a\tb\r\n\u{1b}[1;31mc\td\u{1b}[0m\r\n"),
            "a\tb\r\nc\td\r\n"
        );
        // Other control characters are not text.
        assert_eq!(super::plain("x\u{7}y\u{0}z"), "xyz");
    }
}
