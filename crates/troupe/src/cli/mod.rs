//! Client-side commands: they talk to a troupe server over HTTP (those that check a file,
//! like `rules check` and `flow validate`, need none).

pub mod audit;
pub mod credentials;
pub mod events;
pub mod executions;
pub mod export;
pub mod flow;
pub mod inventory;
pub mod jobs;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod tokens;
pub mod workers;

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

/// Prints an answer for `--json`: pretty, with keys in sorted order, as the CLI printed the
/// server's JSON before it read answers into types.
pub fn print_json<T: serde::Serialize>(answer: &T) -> anyhow::Result<()> {
    // Through a `Value`, whose map keeps keys sorted, rather than in the types' field order.
    let value = serde_json::to_value(answer)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
