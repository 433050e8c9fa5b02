//! `troupe token create|list|revoke`.

use crate::cli::print_json;
use crate::client::Client;
use clap::Subcommand;
use troupe_core::worker::TokenRole;
use troupe_wire::IdOrName;
use troupe_wire::tokens::{IssuedToken, NewToken, TokenList};

/// Manage API tokens.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a new API token and print it (once).
    Create {
        /// What the token is for.
        name: String,
        /// `admin` (everything), `operator` (launch, cancel, sync, approve; read all),
        /// `viewer` (read only), `worker` (only the worker protocol, for `troupe worker`) or
        /// `webhook` (only event intake). See docs/security.md.
        #[arg(long, default_value = "admin",
            value_parser = ["admin", "operator", "viewer", "worker", "webhook"])]
        role: String,
        /// Limit the token to this project (id or name); repeat for several.
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// Expire the token after this long: `90s`, `15m`, `12h`, `30d` (seconds without a unit).
        #[arg(long, value_parser = parse_duration_s)]
        expires: Option<u64>,
    },
    /// The tokens that are not revoked: id, name, role, projects, expiry (never the secret).
    List {
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once (the last admin token cannot be revoked).
    Revoke {
        /// The token's id, as `troupe token list` shows it.
        id: i64,
    },
}

pub async fn run(client: &Client, cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            projects,
            expires,
        } => {
            let role =
                TokenRole::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
            let projects = (!projects.is_empty()).then(|| {
                projects
                    .iter()
                    .map(|p| match p.parse::<i64>() {
                        Ok(id) => IdOrName::Id(id),
                        Err(_) => IdOrName::Name(p.clone()),
                    })
                    .collect()
            });
            let body = NewToken {
                name,
                role,
                projects,
                expires_in_s: expires,
                expires_at: None,
            };
            let t: IssuedToken = client.post("/api/v1/tokens", &body).await?;
            println!("{}", t.token);
            Ok(0)
        }
        TokenCmd::List { json } => {
            let list: TokenList = client.get("/api/v1/tokens").await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            println!(
                "{:>5} {:<20} {:<9} {:<16} {:<20} EXPIRES",
                "ID", "NAME", "ROLE", "PROJECTS", "CREATED"
            );
            for t in &list.tokens {
                let projects = match &t.projects {
                    None => "all".to_owned(),
                    Some(ids) => ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
                };
                let expires = match t.expires_at {
                    None => "never".to_owned(),
                    Some(at) if t.expired => format!("expired {}", at.format("%Y-%m-%d %H:%M:%S")),
                    Some(at) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
                };
                println!(
                    "{:>5} {:<20} {:<9} {:<16} {:<20} {}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    projects,
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    expires
                );
            }
            Ok(0)
        }
        TokenCmd::Revoke { id } => {
            client.delete(&format!("/api/v1/tokens/{id}")).await?;
            println!("token {id} revoked");
            Ok(0)
        }
    }
}

/// A duration as `--expires` takes it: a number with `s`, `m`, `h`, `d` or `w` (seconds
/// without one), in seconds.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 12h or 30d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the duration must be more than zero".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_s;

    #[test]
    fn durations_in_seconds() {
        assert_eq!(parse_duration_s("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration_s("12h"), Ok(12 * 3600));
        assert_eq!(parse_duration_s("15m"), Ok(900));
        assert_eq!(parse_duration_s("90"), Ok(90));
        assert_eq!(parse_duration_s("2w"), Ok(14 * 86_400));
        assert!(parse_duration_s("0s").is_err());
        assert!(parse_duration_s("d").is_err());
        assert!(parse_duration_s("3y").is_err());
        assert!(parse_duration_s("-3d").is_err());
        assert!(parse_duration_s("99999999999999999999d").is_err());
    }
}
