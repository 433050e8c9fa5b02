//! A run's credentials as ansible-playbook takes them: each secret in a 0600 file of the run's
//! private directory (removed with it when the run ends, however it ends), named on the
//! command line by path only, or an environment variable of the child. No secret is ever an
//! argument: the command line of a process is readable by every user of the machine.
//!
//! ```text
//! <run dir>/ssh-key              --private-key FILE  (and --user, from the username)
//! <run dir>/ssh-passphrase       read by <run dir>/ssh-askpass, ssh's SSH_ASKPASS
//! <run dir>/become-password      --become-password-file FILE  (and --become-user)
//! <run dir>/vault-<n>            --vault-id ID@FILE, or --vault-password-file FILE
//! ```

use crate::AnsibleError;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use troupe_core::credential::CredentialSecret;
use troupe_core::run::RunOptions;

/// What a run's credentials add to its ansible-playbook: arguments (paths only) and
/// environment variables. Its `Debug` shows no value.
#[derive(Clone, Default)]
pub(crate) struct Access {
    /// Arguments, before the options' own.
    pub args: Vec<OsString>,
    /// Environment variables of the child.
    pub env: Vec<(OsString, OsString)>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("args", &self.args)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

fn write_secret(path: &Path, data: &[u8], mode: u32) -> Result<(), AnsibleError> {
    let context = || format!("writing a credential file {}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| AnsibleError::io(context(), e))?;
    f.write_all(data)
        .map_err(|e| AnsibleError::io(context(), e))
}

/// Shell-quotes `s` in single quotes.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the files of `credentials` into `root` and says how ansible-playbook is to use them.
/// A username of a credential applies unless `options` set the user themselves.
pub(crate) fn write(
    root: &Path,
    credentials: &[CredentialSecret],
    options: &RunOptions,
) -> Result<Access, AnsibleError> {
    let mut access = Access::default();
    let mut vaults = 0usize;
    let path_arg = |flag: &str, path: &Path| {
        let mut arg = OsString::from(flag);
        arg.push(path);
        arg
    };
    for credential in credentials {
        match credential {
            CredentialSecret::SshKey {
                private_key,
                passphrase,
                username,
            } => {
                let path = root.join("ssh-key");
                // ssh refuses a key file whose last line has no line break.
                let mut key = private_key.trim().to_owned();
                key.push('\n');
                write_secret(&path, key.as_bytes(), 0o600)?;
                access.args.push(path_arg("--private-key=", &path));
                if let (Some(user), None) = (username, &options.remote_user) {
                    access.args.push(format!("--user={user}").into());
                }
                if let Some(passphrase) = passphrase {
                    // ssh asks SSH_ASKPASS for the passphrase (forced: there is no terminal);
                    // the script prints the file, so the passphrase is in no environment or
                    // argument list.
                    let secret = root.join("ssh-passphrase");
                    write_secret(&secret, passphrase.as_bytes(), 0o600)?;
                    let script = root.join("ssh-askpass");
                    let text = format!(
                        "#!/bin/sh\nexec cat {}\n",
                        sh_quote(&secret.to_string_lossy())
                    );
                    write_secret(&script, text.as_bytes(), 0o700)?;
                    access.env.push(("SSH_ASKPASS".into(), script.into()));
                    access
                        .env
                        .push(("SSH_ASKPASS_REQUIRE".into(), "force".into()));
                }
            }
            CredentialSecret::Become { username, password } => {
                let path = root.join("become-password");
                write_secret(&path, password.as_bytes(), 0o600)?;
                access.args.push(path_arg("--become-password-file=", &path));
                if let (Some(user), None) = (username, &options.become_user) {
                    access.args.push(format!("--become-user={user}").into());
                }
            }
            CredentialSecret::Vault { vault_id, password } => {
                vaults += 1;
                let path = root.join(format!("vault-{vaults}"));
                write_secret(&path, password.as_bytes(), 0o600)?;
                match vault_id {
                    Some(id) => {
                        let mut arg = OsString::from(format!("--vault-id={id}@"));
                        arg.push(&path);
                        access.args.push(arg);
                    }
                    None => access.args.push(path_arg("--vault-password-file=", &path)),
                }
            }
            CredentialSecret::Env { vars } => {
                access.env.extend(
                    vars.iter()
                        .map(|(k, v)| (OsString::from(k), OsString::from(v))),
                );
            }
            // Git credentials are for cloning projects; a launch refuses them for runs.
            CredentialSecret::Git { .. } => {}
        }
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_go_to_0600_files_and_only_paths_to_the_command_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        let creds = [
            CredentialSecret::SshKey {
                private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nKEYTEXT\n-----END OPENSSH PRIVATE KEY-----".into(),
                passphrase: Some("it's pass".into()),
                username: Some("deploy".into()),
            },
            CredentialSecret::Become {
                username: Some("app".into()),
                password: "sudo-pw".into(),
            },
            CredentialSecret::Vault {
                vault_id: Some("prod".into()),
                password: "vault-pw".into(),
            },
            CredentialSecret::Vault {
                vault_id: None,
                password: "default-pw".into(),
            },
            CredentialSecret::Env {
                vars: [("API_KEY".to_owned(), "env-secret".to_owned())].into(),
            },
        ];
        let options = RunOptions {
            become_user: Some("other".into()),
            ..RunOptions::default()
        };
        let access = write(root, &creds, &options).expect("written");
        let p = |name: &str| root.join(name).display().to_string();
        let args: Vec<String> = access
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            vec![
                format!("--private-key={}", p("ssh-key")),
                "--user=deploy".to_owned(),
                format!("--become-password-file={}", p("become-password")),
                format!("--vault-id=prod@{}", p("vault-1")),
                format!("--vault-password-file={}", p("vault-2")),
            ],
            "the options' become_user wins over the credential's"
        );
        for secret in [
            "KEYTEXT",
            "it's pass",
            "sudo-pw",
            "vault-pw",
            "default-pw",
            "env-secret",
        ] {
            assert!(
                !args.iter().any(|a| a.contains(secret)),
                "{secret} in {args:?}"
            );
            assert!(!format!("{access:?}").contains(secret), "{secret} in Debug");
        }
        let read = |name: &str| std::fs::read_to_string(root.join(name)).expect(name);
        assert!(read("ssh-key").ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        assert_eq!(read("become-password"), "sudo-pw");
        assert_eq!(read("vault-1"), "vault-pw");
        for name in [
            "ssh-key",
            "ssh-passphrase",
            "become-password",
            "vault-1",
            "vault-2",
        ] {
            let mode = std::fs::metadata(root.join(name))
                .expect(name)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        // The askpass script prints the passphrase, quotes and all.
        let out = std::process::Command::new(root.join("ssh-askpass"))
            .output()
            .expect("askpass runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's pass");
        let env: Vec<_> = access
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert!(env.contains(&("API_KEY".into(), "env-secret".into())));
        assert!(env.contains(&("SSH_ASKPASS_REQUIRE".into(), "force".into())));
    }
}
