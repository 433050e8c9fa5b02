//! Credentials: the secrets a run needs to reach real machines (an SSH key, a become password,
//! a vault password, a git token, environment variables), kept sealed at rest.
//!
//! A credential has a public part ([`Credential`]: its name, kind and the non-secret fields a
//! user needs to tell credentials apart) and a secret part ([`CredentialSecret`]), which is only
//! ever stored sealed ([`seal`]/[`open`], with the server's [`Sealer`]) and only opened by the
//! worker, right before it writes the secret into a run's private directory. Neither part's
//! `Debug` shows a secret value.

use crate::ValidationError;
use crate::secret::{SealError, Sealer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest secret value accepted (an RSA 16384-bit key is about 12 KiB).
const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Most variables one `env` credential holds.
const MAX_ENV_VARS: usize = 100;

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An SSH private key (`--private-key`), with an optional login user (`--user`).
    SshKey,
    /// A become (sudo) password (`--become-password-file`), with an optional become user.
    Become,
    /// An ansible-vault password (`--vault-id` / `--vault-password-file`).
    Vault,
    /// A token or an SSH key for git.
    Git,
    /// Environment variables of ansible-playbook (cloud API keys and the like).
    Env,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::SshKey,
        CredentialKind::Become,
        CredentialKind::Vault,
        CredentialKind::Git,
        CredentialKind::Env,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::SshKey => "ssh_key",
            CredentialKind::Become => "become",
            CredentialKind::Vault => "vault",
            CredentialKind::Git => "git",
            CredentialKind::Env => "env",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<CredentialKind> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored credential as anyone may see it: never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Credential {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name, used by runs to ask for it.
    pub name: String,
    /// What it is for.
    pub kind: CredentialKind,
    /// The login user (`ssh_key`) or the user to become (`become`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The vault id (`vault`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The secret part of a credential, by kind. Sealed as JSON; its `Debug` shows no value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialSecret {
    /// An SSH private key.
    SshKey {
        /// The key, in PEM or OpenSSH format.
        private_key: String,
        /// The key's passphrase, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
        /// The user to log in as.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
    /// A become (sudo) password.
    Become {
        /// The user to become.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// The password.
        password: String,
    },
    /// An ansible-vault password.
    Vault {
        /// The vault id it opens; none for the default vault.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vault_id: Option<String>,
        /// The password.
        password: String,
    },
    /// A git token or SSH key.
    Git {
        /// An HTTPS token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// An SSH private key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key: Option<String>,
    },
    /// Environment variables, by name.
    Env {
        /// Name to value.
        vars: BTreeMap<String, String>,
    },
}

impl CredentialSecret {
    /// Its secret values (not the usernames or vault ids), for redaction.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            CredentialSecret::SshKey {
                private_key,
                passphrase,
                ..
            } => std::iter::once(private_key.as_str())
                .chain(passphrase.as_deref())
                .collect(),
            CredentialSecret::Become { password, .. }
            | CredentialSecret::Vault { password, .. } => {
                vec![password.as_str()]
            }
            CredentialSecret::Git { token, private_key } => token
                .iter()
                .chain(private_key)
                .map(String::as_str)
                .collect(),
            CredentialSecret::Env { vars } => vars.values().map(String::as_str).collect(),
        }
    }
}

impl fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialSecret({}, ********)", self.kind())
    }
}

/// The fields a credential request may give, as they came: [`NewCredential::from_fields`]
/// checks which belong to its kind. Its `Debug` shows no value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialFields {
    /// `ssh_key`, `git`.
    pub private_key: Option<String>,
    /// `ssh_key`.
    pub passphrase: Option<String>,
    /// `ssh_key`, `become`.
    pub username: Option<String>,
    /// `become`, `vault`.
    pub password: Option<String>,
    /// `vault`.
    pub vault_id: Option<String>,
    /// `git`.
    pub token: Option<String>,
    /// `env`.
    pub vars: Option<BTreeMap<String, String>>,
}

impl fmt::Debug for CredentialFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialFields(********)")
    }
}

/// A credential to create: its name and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    /// Unique name.
    pub name: String,
    /// The secret, with the non-secret fields of its kind.
    pub secret: CredentialSecret,
}

fn invalid(field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::new("invalid_field", field, message)
}

impl NewCredential {
    /// A credential of `kind` from the fields a request gave: each field must belong to the
    /// kind and the kind's required fields must be there; then [`NewCredential::validate`].
    /// Errors name the field and never quote a secret value.
    pub fn from_fields(
        name: String,
        kind: CredentialKind,
        fields: CredentialFields,
    ) -> Result<NewCredential, ValidationError> {
        let CredentialFields {
            private_key,
            passphrase,
            username,
            password,
            vault_id,
            token,
            vars,
        } = fields;
        let given = [
            ("private_key", private_key.is_some()),
            ("passphrase", passphrase.is_some()),
            ("username", username.is_some()),
            ("password", password.is_some()),
            ("vault_id", vault_id.is_some()),
            ("token", token.is_some()),
            ("vars", vars.is_some()),
        ];
        let allowed: &[&str] = match kind {
            CredentialKind::SshKey => &["private_key", "passphrase", "username"],
            CredentialKind::Become => &["username", "password"],
            CredentialKind::Vault => &["vault_id", "password"],
            CredentialKind::Git => &["token", "private_key"],
            CredentialKind::Env => &["vars"],
        };
        if let Some((field, _)) = given
            .iter()
            .find(|(field, set)| *set && !allowed.contains(field))
        {
            return Err(invalid(
                field,
                format!(
                    "{field} is not a field of a {kind} credential (its fields: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let required = |value: Option<String>, field: &str| {
            value.ok_or_else(|| {
                ValidationError::new(
                    "missing_field",
                    field,
                    format!("a {kind} credential needs {field}"),
                )
            })
        };
        let secret = match kind {
            CredentialKind::SshKey => CredentialSecret::SshKey {
                private_key: required(private_key, "private_key")?,
                passphrase,
                username,
            },
            CredentialKind::Become => CredentialSecret::Become {
                username,
                password: required(password, "password")?,
            },
            CredentialKind::Vault => CredentialSecret::Vault {
                vault_id,
                password: required(password, "password")?,
            },
            CredentialKind::Git => {
                if token.is_none() && private_key.is_none() {
                    return Err(ValidationError::new(
                        "missing_field",
                        "token",
                        "a git credential needs token or private_key",
                    ));
                }
                CredentialSecret::Git { token, private_key }
            }
            CredentialKind::Env => CredentialSecret::Env {
                vars: vars.ok_or_else(|| {
                    ValidationError::new("missing_field", "vars", "an env credential needs vars")
                })?,
            },
        };
        let new = NewCredential { name, secret };
        new.validate()?;
        Ok(new)
    }

    /// Checks the name and every field; errors name the field and never quote a secret value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::project::validate_name(&self.name, "name")?;
        self.secret.validate()
    }
}

impl CredentialSecret {
    /// Its kind.
    pub fn kind(&self) -> CredentialKind {
        match self {
            CredentialSecret::SshKey { .. } => CredentialKind::SshKey,
            CredentialSecret::Become { .. } => CredentialKind::Become,
            CredentialSecret::Vault { .. } => CredentialKind::Vault,
            CredentialSecret::Git { .. } => CredentialKind::Git,
            CredentialSecret::Env { .. } => CredentialKind::Env,
        }
    }

    /// The login user or the user to become, when given.
    pub fn username(&self) -> Option<&str> {
        match self {
            CredentialSecret::SshKey { username, .. }
            | CredentialSecret::Become { username, .. } => username.as_deref(),
            _ => None,
        }
    }

    /// The vault id, when given.
    pub fn vault_id(&self) -> Option<&str> {
        match self {
            CredentialSecret::Vault { vault_id, .. } => vault_id.as_deref(),
            _ => None,
        }
    }

    /// Checks every field; errors name the field and never quote a secret value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(user) = self.username() {
            check_word(user, "username")?;
        }
        if let Some(id) = self.vault_id() {
            // `--vault-id ID@FILE`: an `@` would split it elsewhere.
            check_word(id, "vault_id")?;
            if id.contains(['@', ',', ' ']) {
                return Err(invalid(
                    "vault_id",
                    "vault_id must not contain '@', ',' or spaces",
                ));
            }
        }
        match self {
            CredentialSecret::SshKey {
                private_key,
                passphrase,
                ..
            } => {
                check_private_key(private_key, "private_key")?;
                if let Some(p) = passphrase {
                    check_secret(p, "passphrase")?;
                }
            }
            CredentialSecret::Become { password, .. }
            | CredentialSecret::Vault { password, .. } => {
                check_secret(password, "password")?;
                if password.contains('\n') {
                    // Ansible reads a password file up to its first line break.
                    return Err(invalid("password", "password must be one line"));
                }
            }
            CredentialSecret::Git { token, private_key } => {
                if let Some(t) = token {
                    check_secret(t, "token")?;
                }
                if let Some(k) = private_key {
                    check_private_key(k, "private_key")?;
                }
            }
            CredentialSecret::Env { vars } => {
                if vars.is_empty() || vars.len() > MAX_ENV_VARS {
                    return Err(invalid(
                        "vars",
                        format!("vars holds 1 to {MAX_ENV_VARS} variables"),
                    ));
                }
                for (name, value) in vars {
                    check_env_name(name)?;
                    if value.len() > MAX_SECRET_BYTES || value.contains('\0') {
                        return Err(invalid(
                            &format!("vars.{name}"),
                            format!(
                                "the value of {name} must be at most {MAX_SECRET_BYTES} bytes, without NUL"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A user name or vault id: a short word ansible takes on its command line.
fn check_word(value: &str, field: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && !value.starts_with('-')
        && !value.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{field} must be 1 to 256 characters, not starting with '-', no control characters"
            ),
        ))
    }
}

fn check_secret(value: &str, field: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_SECRET_BYTES || value.contains('\0') {
        return Err(invalid(
            field,
            format!("{field} must be 1 to {MAX_SECRET_BYTES} bytes, without NUL"),
        ));
    }
    Ok(())
}

/// The headers a private key file starts with, in PEM (`-----BEGIN RSA PRIVATE KEY-----`,
/// `EC`, `DSA`, PKCS#8 `PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`) or OpenSSH format.
fn check_private_key(key: &str, field: &str) -> Result<(), ValidationError> {
    check_secret(key, field)?;
    let text = key.trim();
    let first = text.lines().next().unwrap_or_default().trim();
    let last = text.lines().last().unwrap_or_default().trim();
    let kind = first
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.strip_suffix("-----"));
    let ok = match kind {
        Some(kind) => {
            (kind == "OPENSSH PRIVATE KEY" || kind.ends_with("PRIVATE KEY"))
                && last == format!("-----END {kind}-----")
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{field} is not a private key: it must start with a '-----BEGIN ... PRIVATE KEY-----' line (PEM or OpenSSH format) and end with the matching END line"
            ),
        ))
    }
}

/// Names troupe sets for ansible-playbook itself, which a credential may not replace.
fn check_env_name(name: &str) -> Result<(), ValidationError> {
    let mut chars = name.chars();
    let well_formed = name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(invalid(
            "vars",
            format!("{name:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    let reserved = name.starts_with("TROUPE_")
        || matches!(
            name,
            "PATH" | "HOME" | "ANSIBLE_CALLBACK_PLUGINS" | "ANSIBLE_CALLBACKS_ENABLED"
        );
    if reserved {
        return Err(invalid(
            &format!("vars.{name}"),
            format!("{name} is set by troupe and cannot come from a credential"),
        ));
    }
    Ok(())
}

/// A credential ready to store: its public part and its secret, sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredential {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub kind: CredentialKind,
    /// The login user or user to become, shown.
    pub username: Option<String>,
    /// The vault id, shown.
    pub vault_id: Option<String>,
    /// The [`CredentialSecret`] as JSON, sealed.
    pub sealed: String,
}

impl fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCredential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("vault_id", &self.vault_id)
            .finish_non_exhaustive()
    }
}

/// `new`, sealed with `sealer`, ready to store.
pub fn seal(sealer: &dyn Sealer, new: &NewCredential) -> Result<SealedCredential, SealError> {
    let json = serde_json::to_vec(&new.secret).map_err(|_| SealError::TooLong)?;
    Ok(SealedCredential {
        name: new.name.clone(),
        kind: new.secret.kind(),
        username: new.secret.username().map(str::to_owned),
        vault_id: new.secret.vault_id().map(str::to_owned),
        sealed: sealer.seal(&json)?,
    })
}

/// The secret a sealed text holds.
pub fn open(sealer: &dyn Sealer, sealed: &str) -> Result<CredentialSecret, SealError> {
    let json = sealer.open(sealed)?;
    serde_json::from_slice(&json)
        .map_err(|e| SealError::Malformed(format!("not a credential: line {}", e.line())))
}

/// Checks the credentials a run asks for, by their public parts: at most one of each kind,
/// except vault (one per vault id), and no git credential (those are for projects).
/// `field` names the list in errors.
pub fn check_run_credentials(
    credentials: &[Credential],
    field: &str,
) -> Result<(), ValidationError> {
    let mut seen: Vec<(CredentialKind, Option<&str>)> = Vec::new();
    for c in credentials {
        if c.kind == CredentialKind::Git {
            return Err(invalid(
                field,
                format!(
                    "credential {:?} is a git credential: those are for projects, not runs",
                    c.name
                ),
            ));
        }
        let slot = (
            c.kind,
            (c.kind == CredentialKind::Vault).then_some(c.vault_id.as_deref().unwrap_or("")),
        );
        if seen.contains(&slot) {
            let what = match c.kind {
                CredentialKind::Vault => format!(
                    "vault credentials with the vault id {:?}",
                    c.vault_id.as_deref().unwrap_or("default")
                ),
                kind => format!("{kind} credentials"),
            };
            return Err(invalid(
                field,
                format!(
                    "a run takes at most one of its {what} ({:?} is another)",
                    c.name
                ),
            ));
        }
        seen.push(slot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretKey;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    fn fields() -> CredentialFields {
        CredentialFields::default()
    }

    #[test]
    fn fields_must_belong_to_the_kind() {
        let ok = NewCredential::from_fields(
            "deploy".into(),
            CredentialKind::SshKey,
            CredentialFields {
                private_key: Some(KEY.into()),
                username: Some("deploy".into()),
                ..fields()
            },
        )
        .expect("valid");
        assert_eq!(ok.secret.kind(), CredentialKind::SshKey);
        assert_eq!(ok.secret.username(), Some("deploy"));

        let e = NewCredential::from_fields(
            "x".into(),
            CredentialKind::SshKey,
            CredentialFields {
                private_key: Some(KEY.into()),
                password: Some("hunter2".into()),
                ..fields()
            },
        )
        .expect_err("password is not an ssh_key field");
        assert_eq!(e.field, "password");
        assert!(!e.message.contains("hunter2"), "{e}");

        let e = NewCredential::from_fields("x".into(), CredentialKind::Vault, fields())
            .expect_err("no password");
        assert_eq!((e.code, e.field.as_str()), ("missing_field", "password"));
        let e = NewCredential::from_fields("x".into(), CredentialKind::Git, fields())
            .expect_err("no token");
        assert_eq!(e.code, "missing_field");
        let e = NewCredential::from_fields(
            "bad name!".into(),
            CredentialKind::Become,
            CredentialFields {
                password: Some("p".into()),
                ..fields()
            },
        )
        .expect_err("name");
        assert_eq!(e.field, "name");
    }

    #[test]
    fn a_private_key_needs_its_header_and_footer() {
        let secret = |k: &str| CredentialSecret::SshKey {
            private_key: k.into(),
            passphrase: None,
            username: None,
        };
        secret(KEY).validate().expect("openssh");
        secret("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----")
            .validate()
            .expect("pem rsa");
        for bad in [
            "not a key at all s3cr3t",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl",
            "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----",
            "",
        ] {
            let e = secret(bad).validate().expect_err(bad);
            assert_eq!(e.field, "private_key");
            assert!(bad.is_empty() || !e.message.contains(bad), "{e}");
            assert!(!e.message.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn passwords_vault_ids_and_env_names_are_checked() {
        let vault = |id: Option<&str>, pw: &str| CredentialSecret::Vault {
            vault_id: id.map(str::to_owned),
            password: pw.into(),
        };
        vault(Some("prod"), "pw").validate().expect("ok");
        assert_eq!(
            vault(Some("a@b"), "pw").validate().expect_err("@").field,
            "vault_id"
        );
        assert_eq!(
            vault(None, "two\nlines")
                .validate()
                .expect_err("lines")
                .field,
            "password"
        );
        assert_eq!(
            vault(None, "").validate().expect_err("empty").field,
            "password"
        );
        let env = |name: &str| CredentialSecret::Env {
            vars: [(name.to_owned(), "v".to_owned())].into(),
        };
        env("AWS_SECRET_ACCESS_KEY").validate().expect("ok");
        assert_eq!(env("1X").validate().expect_err("digit").field, "vars");
        assert_eq!(
            env("TROUPE_TOKEN").validate().expect_err("ours").field,
            "vars.TROUPE_TOKEN"
        );
        assert_eq!(env("PATH").validate().expect_err("path").field, "vars.PATH");
        let empty = CredentialSecret::Env {
            vars: BTreeMap::new(),
        };
        assert_eq!(empty.validate().expect_err("empty").field, "vars");
    }

    #[test]
    fn sealed_and_opened_and_never_shown() {
        let key = SecretKey::generate().expect("key");
        let new = NewCredential {
            name: "become".into(),
            secret: CredentialSecret::Become {
                username: Some("admin".into()),
                password: "s3cr3t-pw".into(),
            },
        };
        let sealed = seal(&key, &new).expect("sealed");
        assert_eq!(sealed.kind, CredentialKind::Become);
        assert_eq!(sealed.username.as_deref(), Some("admin"));
        assert!(!sealed.sealed.contains("s3cr3t"));
        assert_eq!(open(&key, &sealed.sealed).expect("opens"), new.secret);
        let other = SecretKey::generate().expect("key");
        assert_eq!(
            open(&other, &sealed.sealed),
            Err(SealError::WrongKeyOrTampered)
        );
        for shown in [
            format!("{new:?}"),
            format!("{sealed:?}"),
            format!(
                "{:?}",
                CredentialFields {
                    password: Some("s3cr3t-pw".into()),
                    ..fields()
                }
            ),
        ] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn a_run_takes_one_credential_per_kind_and_vault_id() {
        let c = |name: &str, kind, vault_id: Option<&str>| Credential {
            id: 1,
            name: name.into(),
            kind,
            username: None,
            vault_id: vault_id.map(str::to_owned),
            created_at: Utc::now(),
        };
        let ssh = c("key", CredentialKind::SshKey, None);
        let become_ = c("sudo", CredentialKind::Become, None);
        let dev = c("dev", CredentialKind::Vault, Some("dev"));
        let prod = c("prod", CredentialKind::Vault, Some("prod"));
        let default = c("default", CredentialKind::Vault, None);
        check_run_credentials(
            &[
                ssh.clone(),
                become_.clone(),
                dev.clone(),
                prod,
                default.clone(),
            ],
            "credentials",
        )
        .expect("one of each");
        let e = check_run_credentials(
            &[ssh.clone(), c("key2", CredentialKind::SshKey, None)],
            "credentials",
        )
        .expect_err("two keys");
        assert!(e.message.contains("key2"), "{e}");
        check_run_credentials(
            &[dev.clone(), c("dev2", CredentialKind::Vault, Some("dev"))],
            "credentials",
        )
        .expect_err("two dev vaults");
        check_run_credentials(
            &[default, c("d2", CredentialKind::Vault, None)],
            "credentials",
        )
        .expect_err("two default vaults");
        check_run_credentials(&[c("g", CredentialKind::Git, None)], "credentials")
            .expect_err("git");
    }
}
