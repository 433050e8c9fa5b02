//! Client-side commands: they talk to a troupe server over HTTP.

pub mod events;
pub mod export;
pub mod inventory;
pub mod jobs;
pub mod run;
pub mod runs;

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}
