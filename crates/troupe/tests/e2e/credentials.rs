//! Credentials end to end: runs against a real `sshd` on a loopback port (key-only auth, a
//! configuration and host key of the test's own) with an SSH key, a become password and a vault
//! password given through credentials; the PLAY RECAP the same as bare ansible-playbook's with
//! the same key and passwords; no secret in any byte of the database, the data dir or the log;
//! no credential file left once the runs end. And the API's and CLI's answers to bad input.
//!
//! The SSH test needs root (it runs sshd, and makes two users and a sudo rule, idempotently:
//! `troupe-ssh` logs in with the key, may `sudo` to `troupe-app` with its password) and
//! Debian's openssh-server and sudo, which `.ci/run` installs.

use crate::helpers::*;
use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use troupe_testkit::Api;
use troupe_wire::credentials::{CreateCredential, Credential, CredentialKind, CredentialList};

pub(crate) const LOGIN_USER: &str = "troupe-ssh";
const BECOME_USER: &str = "troupe-app";

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// Runs `program args`, failing with its output when it fails.
pub(crate) fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` with `input` on its standard input.
fn sh_in(program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The login user (password `password`, which sudo asks for) and the user it may become.
/// Safe to run again: users are made once, the password and the sudo rule are rewritten.
pub(crate) fn users(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        sh("id", &["-u"])?.trim() == "0",
        "the SSH end-to-end test runs sshd and makes users: run it as root"
    );
    for user in [LOGIN_USER, BECOME_USER] {
        if sh("id", &["-u", user]).is_err() {
            sh("useradd", &["--create-home", "--shell", "/bin/bash", user])?;
        }
    }
    sh_in("chpasswd", &[], &format!("{LOGIN_USER}:{password}\n"))?;
    let rule = "/etc/sudoers.d/troupe-e2e";
    std::fs::write(rule, format!("{LOGIN_USER} ALL=({BECOME_USER}) ALL\n"))?;
    chmod(Path::new(rule), 0o440)?;
    Ok(())
}

/// An sshd of the test's own on a loopback port: key-only, its host key and authorized keys
/// in a temporary directory. Killed when dropped.
pub(crate) struct Sshd {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd letting in the holders of `public_keys`.
    pub(crate) async fn start(public_keys: &[String]) -> anyhow::Result<Sshd> {
        let dir = tempfile::tempdir()?;
        // sshd reads the authorized keys as the user logging in.
        chmod(dir.path(), 0o755)?;
        let (host_key, _, _) = keypair(dir.path(), "host_key", "")?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, public_keys.join(""))?;
        chmod(&authorized, 0o644)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 AllowUsers {LOGIN_USER}\n",
                host_key.display(),
                dir.path().join("sshd.pid").display(),
                authorized.display()
            ),
        )?;
        // Debian's sshd wants its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting /usr/sbin/sshd (openssh-server; .ci/run installs it)")?;
        let sshd = Sshd {
            child,
            port,
            _dir: dir,
        };
        wait_until("sshd listening", Duration::from_secs(20), || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok())
        })
        .await?;
        Ok(sshd)
    }
}

/// A key pair made with ssh-keygen in `dir`: (private key path, its text, public key line).
pub(crate) fn keypair(
    dir: &Path,
    name: &str,
    passphrase: &str,
) -> anyhow::Result<(PathBuf, String, String)> {
    let path = dir.join(name);
    sh(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            name,
            "-f",
            &path.display().to_string(),
        ],
    )?;
    let private = std::fs::read_to_string(&path)?;
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub")))?;
    Ok((path, private, public))
}

/// Three host aliases of the sshd, in YAML.
fn inventory(port: u16) -> String {
    format!(
        "fleet:\n  hosts:\n    web1: {{}}\n    web2: {{}}\n    db1: {{}}\n  vars:\n    \
         ansible_host: 127.0.0.1\n    ansible_port: {port}\n    \
         ansible_python_interpreter: /usr/bin/python3\n    ansible_pipelining: true\n    \
         ansible_ssh_args: -o ControlMaster=no\n"
    )
}

/// Logs in, becomes the other user, reads a vault-encrypted vars file and an environment
/// variable (checked against its digest, so its value is in no extra var).
const PLAYBOOK: &str = r#"- hosts: fleet
  gather_facts: false
  vars_files:
    - secret_vars.yml
  tasks:
    - name: who logs in
      ansible.builtin.command: whoami
      register: login
      changed_when: false
    - name: the key's user
      ansible.builtin.assert:
        that: login.stdout == "troupe-ssh"
    - name: become
      ansible.builtin.command: whoami
      become: true
      register: became
    - name: the other user
      ansible.builtin.assert:
        that: became.stdout == "troupe-app"
    - name: the vault opened
      ansible.builtin.assert:
        that: vault_word == "opened-by-the-vault"
    - name: the environment credential
      ansible.builtin.assert:
        that: (lookup('env', 'E2E_API_KEY') | hash('sha256')) == api_key_digest
"#;

pub(crate) async fn create_credential(
    api: &Api,
    body: &CreateCredential,
) -> anyhow::Result<Credential> {
    let (status, answer) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/credentials",
            Some(&serde_json::to_value(body)?),
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "creating {} answered {status}: {answer}",
        body.name
    );
    Ok(serde_json::from_value(answer)?)
}

/// Every regular file under `dir`.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// Files under `dir` holding any of `needles`, with the needle found.
pub(crate) fn holding(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files_under(dir) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                hits.push(format!("{} holds {n:?}", f.display()));
            }
        }
    }
    hits
}

#[tokio::test]
async fn ssh_become_and_vault_through_credentials_match_bare_ansible() -> anyhow::Result<()> {
    let secret = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4().simple());
    let become_password = secret("sudo-pw");
    let vault_password = secret("vault-pw");
    let passphrase = secret("passphrase");
    let api_key = secret("api-key");
    users(&become_password)?;

    let keys = tempfile::tempdir()?;
    let (key_path, private_key, public_key) = keypair(keys.path(), "id_plain", "")?;
    let (_, locked_key, locked_public) = keypair(keys.path(), "id_locked", &passphrase)?;
    let sshd = Sshd::start(&[public_key, locked_public]).await?;

    // The project: the playbook and a vars file encrypted with vault id `prod`.
    let vault_file = keys.path().join("vault-pw");
    std::fs::write(&vault_file, &vault_password)?;
    let become_file = keys.path().join("become-pw");
    std::fs::write(&become_file, &become_password)?;
    let digest = hex::encode(Sha256::digest(api_key.as_bytes()));
    let proj = named_project(&[
        ("site.yml", PLAYBOOK),
        ("secret_vars.yml", "vault_word: opened-by-the-vault\n"),
    ])?;
    let vars_file = proj.path().join("secret_vars.yml");
    sh(
        "ansible-vault",
        &[
            "encrypt",
            "--vault-id",
            &format!("prod@{}", vault_file.display()),
            &vars_file.display().to_string(),
        ],
    )?;
    anyhow::ensure!(
        std::fs::read_to_string(&vars_file)?.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod")
    );
    let hosts = inventory(sshd.port);
    let ssh_common_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";

    // Bare ansible-playbook with the same key, passwords and environment.
    let inventory_file = keys.path().join("hosts.yml");
    std::fs::write(&inventory_file, &hosts)?;
    let bare = Command::new("ansible-playbook")
        .current_dir(proj.path())
        .env("E2E_API_KEY", &api_key)
        .env("ANSIBLE_NOCOLOR", "1")
        .arg("-i")
        .arg(&inventory_file)
        .arg(format!("--private-key={}", key_path.display()))
        .arg(format!("--user={LOGIN_USER}"))
        .arg(format!("--become-password-file={}", become_file.display()))
        .arg(format!("--become-user={BECOME_USER}"))
        .arg(format!("--vault-id=prod@{}", vault_file.display()))
        .arg(format!("--ssh-common-args={ssh_common_args}"))
        .args(["-e", &format!("api_key_digest={digest}"), "site.yml"])
        .output()
        .context("running ansible-playbook (put the CI venv on PATH)")?;
    let bare_stdout = String::from_utf8_lossy(&bare.stdout).into_owned();
    anyhow::ensure!(
        bare.status.success(),
        "bare ansible-playbook failed:\n{bare_stdout}{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let bare_recap = parse_recap(&bare_stdout);
    assert_eq!(bare_recap.len(), 3, "{bare_stdout}");

    let server = serve()?;
    let api = server.api();
    let project = api.project(proj.path()).await?;
    let mut key = CreateCredential::new("fleet-key", CredentialKind::SshKey);
    key.private_key = Some(private_key.clone());
    key.username = Some(LOGIN_USER.into());
    create_credential(api, &key).await?;
    let mut sudo = CreateCredential::new("fleet-sudo", CredentialKind::Become);
    sudo.password = Some(become_password.clone());
    sudo.username = Some(BECOME_USER.into());
    create_credential(api, &sudo).await?;
    let mut vault = CreateCredential::new("prod-vault", CredentialKind::Vault);
    vault.password = Some(vault_password.clone());
    vault.vault_id = Some("prod".into());
    create_credential(api, &vault).await?;
    let mut env = CreateCredential::new("cloud-env", CredentialKind::Env);
    env.vars = Some([("E2E_API_KEY".to_owned(), api_key.clone())].into());
    create_credential(api, &env).await?;
    let mut locked = CreateCredential::new("locked-key", CredentialKind::SshKey);
    locked.private_key = Some(locked_key.clone());
    locked.passphrase = Some(passphrase.clone());
    create_credential(api, &locked).await?;
    let mut wrong = CreateCredential::new("wrong-sudo", CredentialKind::Become);
    wrong.password = Some(secret("not-the-password"));
    wrong.username = Some(BECOME_USER.into());
    create_credential(api, &wrong).await?;

    let run_with = |credentials: &[&str], extra: Value| {
        let mut body = json!({
            "hosts_format": "yaml",
            "credentials": credentials,
            "ssh_common_args": ssh_common_args,
            "extra_vars": {"api_key_digest": digest},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        api.launch(project, "site.yml", &hosts, body)
    };
    let id = run_with(
        &["fleet-key", "fleet-sudo", "prod-vault", "cloud-env"],
        json!({}),
    )
    .await?;
    let run = api.wait_finished(id).await?;
    let stdout = api.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert_eq!(run["status"], "successful", "{stdout}\n{}", server.log());
    assert_eq!(
        parse_recap(&stdout),
        bare_recap,
        "{stdout}\n---\n{bare_stdout}"
    );

    // The passphrase-protected key, opened through ssh's askpass; the login user given as an
    // option instead of by the credential.
    let id = run_with(
        &["locked-key", "fleet-sudo", "prod-vault", "cloud-env"],
        json!({"remote_user": LOGIN_USER}),
    )
    .await?;
    let run = api.wait_finished(id).await?;
    let stdout = api.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert_eq!(run["status"], "successful", "{stdout}");
    assert_eq!(parse_recap(&stdout), bare_recap, "{stdout}");

    // The passwords are really checked: a wrong become password fails the become task on
    // every host, and without the vault the vars file does not open.
    let id = run_with(
        &["fleet-key", "wrong-sudo", "prod-vault", "cloud-env"],
        json!({}),
    )
    .await?;
    let run = api.wait_finished(id).await?;
    let stdout = api.text(&format!("/api/v1/runs/{id}/stdout")).await?;
    assert_eq!(run["status"], "failed", "{stdout}");
    let recap = parse_recap(&stdout);
    assert_eq!(recap.len(), 3, "{stdout}");
    for (host, columns) in &recap {
        let failed = columns.get("failed").copied().unwrap_or(0)
            + columns.get("unreachable").copied().unwrap_or(0);
        assert_eq!(failed, 1, "{host}: {stdout}");
        assert_eq!(columns.get("ok"), Some(&2), "{host}: {stdout}");
    }
    let id = run_with(&["fleet-key", "fleet-sudo", "cloud-env"], json!({})).await?;
    let run = api.wait_finished(id).await?;
    let output = api.text(&format!("/api/v1/runs/{id}/stdout")).await?
        + &api.text(&format!("/api/v1/runs/{id}/stderr")).await?;
    assert_eq!(run["status"], "failed", "{output}");
    assert!(output.contains("vault"), "{output}");

    // No secret anywhere troupe writes: the database (with its WAL), the data dir, the log;
    // and no credential file is left once the runs have ended.
    let key_body = private_key
        .lines()
        .nth(1)
        .context("the key has a body")?
        .to_owned();
    let locked_body = locked_key
        .lines()
        .nth(1)
        .context("the key has a body")?
        .to_owned();
    let needles = [
        key_body.as_str(),
        locked_body.as_str(),
        become_password.as_str(),
        vault_password.as_str(),
        passphrase.as_str(),
        api_key.as_str(),
    ];
    let list: CredentialList = serde_json::from_value(api.get("/api/v1/credentials").await?)?;
    assert_eq!(list.credentials.len(), 6);
    let shown = serde_json::to_string(&list)?;
    let log = server.log();
    for n in needles {
        assert!(!shown.contains(n), "the list shows a secret: {shown}");
        assert!(!log.contains(n), "the log holds a secret:\n{log}");
    }
    let hits = holding(&server.data_dir, &needles);
    assert!(hits.is_empty(), "{hits:#?}");
    let left: Vec<_> = files_under(&server.data_dir.join("runs"))
        .into_iter()
        .filter(|f| !f.starts_with(server.data_dir.join("runs").join("plugin")))
        .filter(|f| {
            f.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("run-"))
        })
        .collect();
    assert!(left.is_empty(), "run files left: {left:?}");
    // The key file troupe made, and nothing else, sits beside the database.
    assert!(server.data_dir.join("secret.key").is_file());
    Ok(())
}

/// Posts a credential body; (status, answer).
async fn post(api: &Api, body: Value) -> anyhow::Result<(u16, Value)> {
    api.call(reqwest::Method::POST, "/api/v1/credentials", Some(&body))
        .await
}

#[tokio::test]
async fn bad_credentials_and_runs_are_refused_without_echoing_secrets() -> anyhow::Result<()> {
    // The sealing key where TROUPE_SECRET_KEY_FILE says, outside the data dir.
    let keys = tempfile::tempdir()?;
    let key_file = keys.path().join("troupe.key");
    let server = serve_with(ServerOpts {
        extra_env: vec![(
            "TROUPE_SECRET_KEY_FILE".into(),
            key_file.display().to_string(),
        )],
        ..Default::default()
    })?;
    let api = server.api();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file)?.permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(!server.data_dir.join("secret.key").exists());
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtopsecretbody\n-----END OPENSSH PRIVATE KEY-----\n";

    let bad: [(Value, &str); 7] = [
        (
            json!({"name": "k", "kind": "ssh_key", "private_key": "topsecretbody but no key"}),
            "private_key",
        ),
        (
            json!({"name": "k", "kind": "ssh_key", "private_key": key, "password": "topsecret"}),
            "password",
        ),
        (json!({"name": "k", "kind": "become"}), "password"),
        (
            json!({"name": "k", "kind": "vault", "password": "topsecret", "vault_id": "a@b"}),
            "vault_id",
        ),
        (
            json!({"name": "k", "kind": "env", "vars": {"TROUPE_TOKEN": "topsecret"}}),
            "vars.TROUPE_TOKEN",
        ),
        (
            json!({"name": "k", "kind": "env", "varz": {"A": "topsecret"}}),
            "varz",
        ),
        (
            json!({"name": "bad name", "kind": "become", "password": "topsecret"}),
            "name",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = post(api, body.clone()).await?;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(!answer.to_string().contains("topsecret"), "{answer}");
    }
    let (status, answer) = post(
        api,
        json!({"name": "env", "kind": "env", "vars": "API=topsecret"}),
    )
    .await?;
    assert_eq!(status, 422, "{answer}");
    assert!(!answer.to_string().contains("topsecret"), "{answer}");

    let (status, created) = post(
        api,
        json!({"name": "deploy", "kind": "ssh_key", "private_key": key, "username": "deploy"}),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let created: Credential = serde_json::from_value(created)?;
    assert_eq!(created.kind, CredentialKind::SshKey);
    assert_eq!(created.username.as_deref(), Some("deploy"));
    let (status, answer) = post(
        api,
        json!({"name": "deploy", "kind": "become", "password": "topsecret"}),
    )
    .await?;
    assert_eq!(status, 409, "{answer}");
    let one = api
        .get(&format!("/api/v1/credentials/{}", created.id))
        .await?;
    assert_eq!(serde_json::from_value::<Credential>(one.clone())?, created);
    assert!(!one.to_string().contains("topsecret"), "{one}");

    // Runs: an unknown credential, two of one kind, a git credential.
    let proj = project_dir(&[(
        "site.yml",
        "- hosts: all\n  gather_facts: false\n  tasks: []\n",
    )])?;
    let project = api.project(proj.path()).await?;
    let mut second = CreateCredential::new("deploy2", CredentialKind::SshKey);
    second.private_key = Some(key.into());
    create_credential(api, &second).await?;
    let mut git = CreateCredential::new("git-token", CredentialKind::Git);
    git.token = Some("topsecret".into());
    create_credential(api, &git).await?;
    for credentials in [vec!["nope"], vec!["deploy", "deploy2"], vec!["git-token"]] {
        let (status, answer) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/runs",
                Some(&json!({"project": project, "playbook": "site.yml",
                    "hosts": local_hosts(1), "credentials": credentials})),
            )
            .await?;
        assert_eq!(status, 422, "{credentials:?}: {answer}");
        assert_eq!(answer["error"]["field"], "credentials", "{answer}");
    }

    // The CLI: the password from standard input, never an argument.
    let cli = |args: &[&str]| {
        let mut c = Command::new(troupe_bin());
        c.args(args)
            .env("TROUPE_SERVER", &server.base)
            .env("TROUPE_TOKEN", TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut child = cli(&[
        "credentials",
        "create",
        "--name",
        "from-cli",
        "--kind",
        "become",
        "--username",
        "root",
        "--password-stdin",
    ])
    .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"topsecret-cli\n")?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = api.get("/api/v1/credentials").await?;
    let list: CredentialList = serde_json::from_value(found)?;
    let names: Vec<_> = list.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["deploy", "deploy2", "from-cli", "git-token"]);
    let out = cli(&["credentials", "list"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("from-cli") && text.contains("become"),
        "{text}"
    );
    assert!(!text.contains("topsecret"), "{text}");
    let out = cli(&["credentials", "delete", "from-cli"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["credentials", "delete", "from-cli"]).output()?;
    assert!(!out.status.success(), "deleting it twice");
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/credentials/{}", created.id),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let (status, answer) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/credentials/{}", created.id),
            None,
        )
        .await?;
    assert_eq!(status, 404, "{answer}");

    // Nothing the CLI or the API was given is in the database or the log.
    let hits = holding(&server.data_dir, &["topsecret"]);
    assert!(hits.is_empty(), "{hits:#?}");
    assert!(!server.log().contains("topsecret"));
    Ok(())
}

/// A credential deleted while a run that names it waits in the queue: the run does not start
/// without it, and says which credential is missing (nothing of its secret).
#[tokio::test]
async fn a_run_whose_credential_is_deleted_while_queued_fails_naming_it() -> anyhow::Result<()> {
    let server = serve_with(troupe_testkit::ServerOpts {
        max_concurrent_runs: 1,
        ..Default::default()
    })?;
    let dir = troupe_testkit::fixtures::project_dir(&[
        (
            "hold.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 4\n",
        ),
        (
            "env.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n",
        ),
    ])?;
    let project = server.project(dir.path()).await?;
    let hosts = troupe_testkit::fixtures::local_hosts(1);
    let (status, created) = post(
        &server,
        json!({"name": "api-env", "kind": "env", "vars": {"API_KEY": "gone-s3cr3t"}}),
    )
    .await?;
    assert_eq!(status, 201, "{created}");

    // The only slot is taken, so the second run waits in the queue.
    let holder = server
        .launch(project, "hold.yml", &hosts, json!({}))
        .await?;
    server
        .wait_run(holder, Duration::from_secs(60), |s| s == "running")
        .await?;
    let queued = server
        .launch(
            project,
            "env.yml",
            &hosts,
            json!({"credentials": ["api-env"]}),
        )
        .await?;
    let run = server.get(&format!("/api/v1/runs/{queued}")).await?;
    assert_eq!(run["status"], "queued", "{run}");
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/credentials/{}", created["id"]),
            None,
        )
        .await?;
    assert!(status == 204 || status == 200, "{status} {body}");

    let ended = server.wait_finished(queued).await?;
    assert_ne!(ended["status"], "successful", "{ended}");
    let why = ended.to_string();
    assert!(
        why.contains("api-env"),
        "the reason names the credential: {why}"
    );
    assert!(!why.contains("gone-s3cr3t"), "{why}");
    assert_eq!(server.wait_finished(holder).await?["status"], "successful");
    Ok(())
}
