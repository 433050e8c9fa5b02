//! `troupe credentials create|list|delete`. Secret values are read from files or standard
//! input, never from arguments (which every user of the machine can read in `ps`).

use crate::cli::{encode, print_json};
use crate::client::Client;
use anyhow::Context;
use clap::Subcommand;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use troupe_wire::credentials::{CreateCredential, Credential, CredentialKind, CredentialList};

/// Create, list and delete credentials.
#[derive(Debug, Subcommand)]
pub enum CredentialsCmd {
    /// Every credential: name, kind, username, vault id (never a secret).
    List {
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Store a credential. Secrets come from files (`--private-key-file`, `--password-file`,
    /// `--token-file`, `--env-file`) or standard input (`--password-stdin`...), never from
    /// arguments.
    Create(Box<CreateArgs>),
    /// Delete a credential (by id or name).
    Delete {
        /// The credential's id or name.
        credential: String,
    },
}

/// What `troupe credentials create` takes.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name.
    #[arg(long)]
    pub name: String,
    /// `ssh_key`, `become`, `vault`, `git` or `env`.
    #[arg(long, value_parser = ["ssh_key", "become", "vault", "git", "env"])]
    pub kind: String,
    /// `ssh_key`: the user to log in as; `become`: the user to become.
    #[arg(long)]
    pub username: Option<String>,
    /// `vault`: the vault id the password opens.
    #[arg(long)]
    pub vault_id: Option<String>,
    /// `ssh_key`, `git`: the private key file.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// `ssh_key`: a file holding the key's passphrase.
    #[arg(long, conflicts_with = "passphrase_stdin")]
    pub passphrase_file: Option<PathBuf>,
    /// `ssh_key`: read the key's passphrase from standard input.
    #[arg(long)]
    pub passphrase_stdin: bool,
    /// `become`, `vault`: a file holding the password (its first line).
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// `become`, `vault`: read the password from standard input (its first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// `git`: a file holding the token.
    #[arg(long, conflicts_with = "token_stdin")]
    pub token_file: Option<PathBuf>,
    /// `git`: read the token from standard input.
    #[arg(long)]
    pub token_stdin: bool,
    /// `env`: a file of `NAME=value` lines (blank lines and `#` comments skipped).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Print the JSON the API answers.
    #[arg(long)]
    pub json: bool,
}

/// The first line of `text`, without its line break.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

/// The secret of a `--X-file` or `--X-stdin` pair, if either was given.
fn secret(
    file: Option<&Path>,
    stdin: bool,
    stdin_text: &mut Option<String>,
) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        return Ok(Some(first_line(&read_file(path)?)));
    }
    if !stdin {
        return Ok(None);
    }
    let text = match stdin_text.take() {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("could not read standard input")?;
            t
        }
    };
    Ok(Some(first_line(&text)))
}

/// `NAME=value` lines.
fn parse_env_file(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .with_context(|| format!("line {} of the env file is not NAME=value", n + 1))?;
        vars.insert(name.trim().to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// The body `args` stand for.
fn body(args: &CreateArgs) -> anyhow::Result<CreateCredential> {
    let stdins = [args.passphrase_stdin, args.password_stdin, args.token_stdin];
    if stdins.iter().filter(|s| **s).count() > 1 {
        anyhow::bail!("only one secret can come from standard input; give the others as files");
    }
    let kind = CredentialKind::parse(&args.kind)
        .with_context(|| format!("{:?} is not a credential kind", args.kind))?;
    let mut stdin_text = None;
    let mut req = CreateCredential::new(&args.name, kind);
    req.username = args.username.clone();
    req.vault_id = args.vault_id.clone();
    req.private_key = args
        .private_key_file
        .as_deref()
        .map(read_file)
        .transpose()?;
    req.passphrase = secret(
        args.passphrase_file.as_deref(),
        args.passphrase_stdin,
        &mut stdin_text,
    )?;
    req.password = secret(
        args.password_file.as_deref(),
        args.password_stdin,
        &mut stdin_text,
    )?;
    req.token = secret(
        args.token_file.as_deref(),
        args.token_stdin,
        &mut stdin_text,
    )?;
    req.vars = args
        .env_file
        .as_deref()
        .map(|p| read_file(p).and_then(|t| parse_env_file(&t)))
        .transpose()?;
    Ok(req)
}

/// The id of the credential `credential` names (an id, or a name looked up).
async fn find(client: &Client, credential: &str) -> anyhow::Result<i64> {
    if let Ok(id) = credential.parse::<i64>() {
        return Ok(id);
    }
    let list: CredentialList = client.get("/api/v1/credentials").await?;
    list.credentials
        .iter()
        .find(|c| c.name == credential)
        .map(|c| c.id)
        .with_context(|| format!("no credential named {credential:?}"))
}

fn print_row(c: &Credential) {
    println!(
        "{:<5} {:<24} {:<8} {:<16} {}",
        c.id,
        c.name,
        c.kind.as_str(),
        c.username.as_deref().unwrap_or("-"),
        c.vault_id.as_deref().unwrap_or("-")
    );
}

/// Runs a `troupe credentials` command.
pub async fn run(client: &Client, cmd: CredentialsCmd) -> anyhow::Result<i32> {
    match cmd {
        CredentialsCmd::List { json } => {
            let list: CredentialList = client.get("/api/v1/credentials").await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            println!(
                "{:<5} {:<24} {:<8} {:<16} VAULT_ID",
                "ID", "NAME", "KIND", "USERNAME"
            );
            list.credentials.iter().for_each(print_row);
            Ok(0)
        }
        CredentialsCmd::Create(args) => {
            let req = body(&args)?;
            let created: Credential = client.post("/api/v1/credentials", &req).await?;
            if args.json {
                print_json(&created)?;
            } else {
                println!(
                    "credential {} created ({}, id {})",
                    created.name, created.kind, created.id
                );
            }
            Ok(0)
        }
        CredentialsCmd::Delete { credential } => {
            let id = find(client, &credential).await?;
            client
                .delete(&format!("/api/v1/credentials/{}", encode(&id.to_string())))
                .await?;
            println!("credential {credential} deleted");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_env_file;

    #[test]
    fn env_files_are_name_value_lines() {
        let vars = parse_env_file("# cloud\nAWS_KEY=abc=def\n\n TOKEN = x\n").expect("parsed");
        assert_eq!(vars.get("AWS_KEY").map(String::as_str), Some("abc=def"));
        assert_eq!(vars.get("TOKEN").map(String::as_str), Some(" x"));
        assert!(parse_env_file("NOEQUALS").is_err());
    }
}
