//! Git credentials end to end: a git project names a `git` credential and the real `git`
//! authenticates with it, a token through `GIT_ASKPASS` against an HTTP git server of the
//! test's own that answers 401 without the right Basic credentials, a key through
//! `GIT_SSH_COMMAND` against an sshd of the test's own; a password stored in an old project's
//! URL moved into a credential on start; rule sources whose secret is a credential; and the
//! key rotated offline. Every secret is then looked for in every byte of the data dir (the
//! database and its WAL included) and the log: none is there.

use crate::credentials::{LOGIN_USER, Sshd, create_credential, holding, keypair, sh};
use crate::events::{github_signature, hook};
use crate::helpers::*;
use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe_store::prelude::*;
use troupe_wire::credentials::CreateCredential;

const PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: from the private repository\n";

/// A working repository and the bare one it pushes to (what servers serve), with the
/// files the dumb HTTP protocol reads kept up to date.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(dir: &Path) -> anyhow::Result<Repo> {
        let work = dir.join("work");
        let bare = dir.join("repo.git");
        std::fs::create_dir_all(&work)?;
        git(&work, &["init", "-q"])?;
        git(dir, &["init", "-q", "--bare", "repo.git"])?;
        let repo = Repo { work, bare };
        repo.commit("site.yml", PLAY)?;
        Ok(repo)
    }

    /// Commits `text` as `file` and pushes it; the new commit.
    fn commit(&self, file: &str, text: &str) -> anyhow::Result<String> {
        std::fs::write(self.work.join(file), text)?;
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", file])?;
        let bare = self.bare.display().to_string();
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--receive-pack=git -c safe.directory=* receive-pack",
                &bare,
                "HEAD:main",
            ],
        )?;
        git(&self.bare, &["update-server-info"])?;
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// An HTTP git server (the dumb protocol: the repository's files) that answers 401 with a
/// Basic challenge unless the request carries `token` as its password; it records the user
/// names it was sent.
struct GitHttp {
    url: String,
    users: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct GitHttpState {
    root: PathBuf,
    token: String,
    users: Arc<Mutex<Vec<String>>>,
}

async fn git_http(State(st): State<GitHttpState>, uri: Uri, headers: HeaderMap) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| b.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let authorized = match given {
        Some((user, password)) => {
            st.users.lock().map(|mut u| u.push(user)).ok();
            password == st.token
        }
        None => false,
    };
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
            "authentication required",
        )
            .into_response();
    }
    let path = uri.path().trim_start_matches('/');
    if path.split('/').any(|p| p == "..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(st.root.join(path)).await {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

impl GitHttp {
    async fn start(root: &Path, token: &str) -> anyhow::Result<GitHttp> {
        let users = Arc::new(Mutex::new(Vec::new()));
        let state = GitHttpState {
            root: root.to_path_buf(),
            token: token.to_owned(),
            users: Arc::clone(&users),
        };
        let app = axum::Router::new()
            .fallback(axum::routing::get(git_http))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(GitHttp {
            url: format!("http://{addr}"),
            users,
            task,
        })
    }

    fn users(&self) -> Vec<String> {
        self.users.lock().map(|u| u.clone()).unwrap_or_default()
    }
}

/// Creates the credential `body` describes.
async fn create(api: &troupe_testkit::Api, body: Value) -> anyhow::Result<()> {
    let body: CreateCredential = serde_json::from_value(body)?;
    create_credential(api, &body).await.map(|_| ())
}

async fn run_of(server: &Server, project: i64, extra: Value) -> anyhow::Result<Value> {
    let id = server
        .launch(project, "site.yml", &local_hosts(1), extra)
        .await?;
    server.wait_finished(id).await
}

/// Stops the server, then fails naming every file of its data dir (and its log) holding
/// one of `secrets`.
fn assert_nowhere(server: Server, secrets: &[&str]) -> anyhow::Result<()> {
    let data_dir = server.data_dir.clone();
    let log = server.log();
    // Its stop checkpoints the WAL: what is left is what a backup would copy.
    server.stop(Duration::from_secs(20))?;
    let mut hits = holding(&data_dir, secrets);
    for s in secrets {
        if log.contains(s) {
            hits.push(format!("the log holds {s:?}"));
        }
    }
    anyhow::ensure!(hits.is_empty(), "secrets left behind: {hits:#?}");
    Ok(())
}

#[tokio::test]
async fn a_git_token_reaches_git_through_askpass_only() -> anyhow::Result<()> {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let tmp = tempfile::tempdir()?;
    let repo = Repo::new(tmp.path())?;
    let http = GitHttp::start(tmp.path(), &token).await?;
    let url = format!("{}/repo.git", http.url);
    let server = serve()?;

    // A password in the URL: refused, the value not quoted back.
    let with_secret = format!(
        "{}/repo.git",
        http.url.replace("://", &format!("://deploy:{token}@"))
    );
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "leaky", "source": {"type": "git", "url": with_secret}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "source.url", "{body}");
    assert!(!body.to_string().contains(&token), "{body}");

    // No credential: the server's 401 fails the clone.
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "anon", "source": {"type": "git", "url": url}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "sync_failed", "{body}");

    // A credential that does not exist, or of another kind: 422 naming it.
    create(
        server.api(),
        json!({"name": "sudo", "kind": "become", "password": "pw-of-another-kind"}),
    )
    .await?;
    for (credential, code) in [
        ("nope", "unknown_credential"),
        ("sudo", "wrong_credential_kind"),
    ] {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                "/api/v1/projects",
                Some(&json!({"name": "p", "source": {"type": "git", "url": url, "credential": credential}})),
            )
            .await?;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"], "source.credential", "{body}");
    }

    // With a git credential: cloned, run, synced.
    create(
        server.api(),
        json!({"name": "forge", "kind": "git", "token": token}),
    )
    .await?;
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "private", "source": {"type": "git", "url": url, "credential": "forge"}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    assert_eq!(p["source"]["credential"], "forge", "{p}");
    assert!(p["sync"]["commit"].is_string(), "{p}");
    let run = run_of(&server, pid, json!({})).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let c2 = repo.commit("other.yml", PLAY)?;
    let synced = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c2, "{synced}");
    // git asked the askpass script for both: the user name it gives, the token.
    assert!(
        http.users().iter().any(|u| u == "x-access-token"),
        "{:?}",
        http.users()
    );
    // No askpass directory is left.
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("projects"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".auth-"))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_nowhere(server, &[&token])
}

#[tokio::test]
async fn a_git_key_reaches_ssh_as_a_private_file_only() -> anyhow::Result<()> {
    anyhow::ensure!(
        sh("id", &["-u"])?.trim() == "0",
        "the SSH end-to-end test runs sshd: run it as root"
    );
    if sh("id", &["-u", LOGIN_USER]).is_err() {
        sh(
            "useradd",
            &["--create-home", "--shell", "/bin/bash", LOGIN_USER],
        )?;
    }
    // sshd (without PAM) lets no one into a locked account ("!" password), even with a key;
    // "*" opens no password login either. A password the credentials test set is left.
    let shadow = sh("getent", &["shadow", LOGIN_USER])?;
    if shadow.split(':').nth(1).is_some_and(|p| p.starts_with('!')) {
        sh("usermod", &["-p", "*", LOGIN_USER])?;
    }
    let keys = tempfile::tempdir()?;
    let (_, private_key, public_key) = keypair(keys.path(), "git_key", "")?;
    let sshd = Sshd::start(&[public_key]).await?;
    let tmp = tempfile::tempdir()?;
    let repo = Repo::new(tmp.path())?;
    // The login user reads the repository.
    sh(
        "chown",
        &["-R", LOGIN_USER, &tmp.path().display().to_string()],
    )?;
    sh("chmod", &["755", &tmp.path().display().to_string()])?;
    let url = format!(
        "ssh://{LOGIN_USER}@127.0.0.1:{}{}",
        sshd.port,
        repo.bare.display()
    );
    let server = serve_with(ServerOpts {
        extra_env: vec![(
            "GIT_SSH_COMMAND".into(),
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                .into(),
        )],
        ..ServerOpts::default()
    })?;
    // Without the key, ssh is refused.
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(&json!({"name": "anon", "source": {"type": "git", "url": url}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    create(
        server.api(),
        json!({"name": "deploy-key", "kind": "git", "private_key": private_key}),
    )
    .await?;
    let p = server
        .post(
            "/api/v1/projects",
            &json!({"name": "over-ssh", "source": {"type": "git", "url": url, "credential": "deploy-key"}}),
        )
        .await?;
    let pid = p["id"].as_i64().context("id")?;
    let run = run_of(&server, pid, json!({})).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let c2 = repo.commit("other.yml", PLAY)?;
    let synced = server
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c2, "{synced}");
    let key_line = private_key
        .lines()
        .nth(2)
        .context("a line of the key")?
        .to_owned();
    assert_nowhere(server, &[&private_key, &key_line])
}

// Two threads: the test's own git clone blocks one while the HTTP git server answers on the
// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_kept_in_an_old_git_url_moves_into_a_credential() -> anyhow::Result<()> {
    let token = format!("old-tok-{}", uuid::Uuid::new_v4().simple());
    let tmp = tempfile::tempdir()?;
    let repo = Repo::new(tmp.path())?;
    let http = GitHttp::start(tmp.path(), &token).await?;
    let secret_url = format!(
        "{}/repo.git",
        http.url.replace("://", &format!("://deploy:{token}@"))
    );
    // Kept with its user name, which is masked when shown.
    let shown_url = format!("{}/repo.git", http.url);

    // A data dir as an older troupe left it: the project's URL with the token in the
    // database, its clone's remote too.
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("data");
    let server = serve_with(ServerOpts {
        data_dir: Some(data_dir.clone()),
        ..ServerOpts::default()
    })?;
    server.stop(Duration::from_secs(20))?;
    let store = troupe_sqlite::SqliteStore::open(&data_dir.join("troupe.db")).await?;
    let legacy = store
        .create_project(&troupe_core::project::NewProject {
            name: "legacy".into(),
            source: troupe_core::project::ProjectSource::Git {
                url: secret_url.clone(),
                git_ref: None,
                credential: None,
            },
        })
        .await?;
    store.close().await;
    drop(store);
    let clone = data_dir.join("projects").join(legacy.id.to_string());
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--no-checkout",
            &secret_url,
            &clone.display().to_string(),
        ],
    )?;
    assert!(std::fs::read_to_string(clone.join(".git/config"))?.contains(&token));

    // Started again: moved, once.
    let server = serve_with(ServerOpts {
        data_dir: Some(data_dir.clone()),
        ..ServerOpts::default()
    })?;
    let p = server
        .get(&format!("/api/v1/projects/{}", legacy.id))
        .await?;
    assert_eq!(p["source"]["url"], shown_url, "{p}");
    assert_eq!(p["source"]["credential"], "git-legacy", "{p}");
    let listed = server.get("/api/v1/credentials").await?;
    assert_eq!(listed["credentials"][0]["name"], "git-legacy", "{listed}");
    assert_eq!(listed["credentials"][0]["kind"], "git", "{listed}");
    assert!(server.log().contains("legacy"), "the log names the project");
    // It syncs and runs with the credential.
    let c2 = repo.commit("other.yml", PLAY)?;
    let synced = server
        .post(&format!("/api/v1/projects/{}/sync", legacy.id), &json!({}))
        .await?;
    assert_eq!(synced["sync"]["commit"], c2, "{synced}");
    let run = run_of(&server, legacy.id, json!({})).await?;
    assert_eq!(run["status"], "successful", "{run}");
    assert!(
        http.users().iter().any(|u| u == "deploy"),
        "{:?}",
        http.users()
    );
    server.stop(Duration::from_secs(20))?;

    // A second start moves nothing more.
    let server = serve_with(ServerOpts {
        data_dir: Some(data_dir.clone()),
        ..ServerOpts::default()
    })?;
    let listed = server.get("/api/v1/credentials").await?;
    assert_eq!(
        listed["credentials"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_nowhere(server, &[&token])
}

#[tokio::test]
async fn rule_sources_take_their_secrets_from_credentials() -> anyhow::Result<()> {
    let hmac_key = format!("hmac-{}", uuid::Uuid::new_v4().simple());
    let proj = named_project(&[("playbooks/ping.yml", PLAY)])?;
    let server = serve_with(with_project(proj.path()))?;
    create(
        server.api(),
        json!({"name": "hooks", "kind": "env", "vars": {"GITHUB_HMAC": hmac_key}}),
    )
    .await?;
    let rules = |secret: &str| {
        format!(
            "sources:\n  gh: {{type: webhook, secret: {secret}}}\nrules:\n  - name: ping\n    routing_keys: [ping]\n    action:\n      project: {}\n      playbooks_dir: playbooks\n",
            project_name(proj.path())
        )
    };
    // A credential that does not exist, a variable it does not have, a kind without one
    // value: 422 naming the field.
    for bad in [
        "{credential: nope}",
        "{credential: hooks, var: OTHER}",
        "{credential: hooks}",
    ] {
        let (status, body) = server.put_rules(&rules(bad)).await?;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body.to_string().contains("sources.gh.secret"),
            "{bad}: {body}"
        );
    }
    let shown = server
        .apply_rules(&rules("{credential: hooks, var: GITHUB_HMAC}"))
        .await?;
    assert!(!shown.to_string().contains(&hmac_key), "{shown}");
    // Shown as written: the credential's name, not a placeholder.
    assert_eq!(
        shown["document"]["sources"]["gh"]["secret"],
        json!({"credential": "hooks", "var": "GITHUB_HMAC"}),
        "{shown}"
    );
    let body = br#"{"n": 1}"#;
    let (status, v) = hook(
        &server,
        "/api/v1/hooks/gh/ping",
        body,
        &[("x-hub-signature-256", github_signature(&hmac_key, body)?)],
    )
    .await?;
    assert_eq!(status, 202, "{v}");
    let run_id = v["event"]["run_ids"][0].as_i64().context("run id")?;
    let run = server.wait_finished(run_id).await?;
    assert_eq!(run["status"], "successful", "{run}");
    let (status, v) = hook(
        &server,
        "/api/v1/hooks/gh/ping",
        body,
        &[(
            "x-hub-signature-256",
            github_signature("another key", body)?,
        )],
    )
    .await?;
    assert_eq!(status, 401, "{v}");
    assert_nowhere(server, &[&hmac_key])
}

const ROTATED_PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.assert:\n        that:\n          - (db_password | hash('sha256')) == pw_digest\n          - (lookup('env', 'E2E_CLOUD_KEY') | hash('sha256')) == key_digest\n";

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn the_key_rotates_offline_and_everything_opens_with_the_new_one() -> anyhow::Result<()> {
    let db_password = format!("db-{}", uuid::Uuid::new_v4().simple());
    let cloud_key = format!("cloud-{}", uuid::Uuid::new_v4().simple());
    let proj = named_project(&[("site.yml", ROTATED_PLAY)])?;
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("data");
    let opts = || ServerOpts {
        data_dir: Some(data_dir.clone()),
        ..with_project(proj.path())
    };
    let server = serve_with(opts())?;
    create(
        server.api(),
        json!({"name": "cloud", "kind": "env", "vars": {"E2E_CLOUD_KEY": cloud_key}}),
    )
    .await?;
    let pid = server.get("/api/v1/projects").await?["projects"][0]["id"]
        .as_i64()
        .context("project")?;
    let extra = json!({
        "credentials": ["cloud"],
        "extra_vars": {"db_password": db_password, "pw_digest": digest(&db_password),
                       "key_digest": digest(&cloud_key)},
    });
    let before = run_of(&server, pid, extra.clone()).await?;
    assert_eq!(before["status"], "successful", "{before}");

    // A template whose defaults hold the secret extra var (sealed there) and the credential.
    server
        .post(
            "/api/v1/inventories",
            &json!({"name": "one", "format": "ini", "hosts": local_hosts(1)}),
        )
        .await?;
    let template = server
        .post(
            "/api/v1/templates",
            &json!({"name": "rotated", "project": pid, "playbook": "site.yml",
                    "inventory": "one", "defaults": extra.clone()}),
        )
        .await?;
    let tid = template["id"].as_i64().context("template id")?;

    // Refused while the server has the store open.
    let rotate = || {
        Command::new(troupe_bin())
            .args(["secrets", "rotate-key", "--data-dir"])
            .arg(&data_dir)
            .output()
    };
    let out = rotate()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop(Duration::from_secs(20))?;

    let key_file = data_dir.join("secret.key");
    let old_key =
        troupe_core::secret::SecretKey::from_base64(&std::fs::read_to_string(&key_file)?)?;
    let out = rotate()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("credentials.sealed: 1 sealed again"),
        "{said}"
    );
    assert!(said.contains("runs.options: 1 sealed again"), "{said}");
    assert!(
        said.contains("templates.defaults: 1 sealed again"),
        "{said}"
    );
    let new_key =
        troupe_core::secret::SecretKey::from_base64(&std::fs::read_to_string(&key_file)?)?;
    assert_ne!(new_key, old_key);
    let kept: Vec<PathBuf> = std::fs::read_dir(&data_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("secret.key.old-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_key =
        troupe_core::secret::SecretKey::from_base64(&std::fs::read_to_string(&kept[0])?)?;
    assert_eq!(kept_key, old_key);
    for file in [&key_file, &kept[0]] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(file)?.permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    // What is stored opens with the new key only.
    {
        let store = troupe_sqlite::SqliteStore::open(&data_dir.join("troupe.db")).await?;
        let stored = store
            .sealed_credential("cloud")
            .await?
            .context("the credential")?;
        assert!(old_key.open(&stored.sealed).is_err());
        let opened = new_key.open(&stored.sealed)?;
        assert!(String::from_utf8(opened)?.contains(&cloud_key));
        let run = store.get_run(before["id"].as_i64().context("id")?).await?;
        let sealed = run.options.extra_vars["db_password"]
            .as_str()
            .and_then(|s| s.strip_prefix(troupe_core::redact::SEALED_PREFIX))
            .context("sealed")?
            .to_owned();
        assert!(old_key.open(&sealed).is_err());
        assert!(String::from_utf8(new_key.open(&sealed)?)?.contains(&db_password));
        store.close().await;
    }

    // The server starts with the new key: a new run, and a relaunch of the old one (its
    // sealed extra var), succeed.
    let server = serve_with(opts())?;
    let after = run_of(&server, pid, extra).await?;
    assert_eq!(after["status"], "successful", "{after}");
    let relaunched = server
        .post(
            &format!("/api/v1/runs/{}/relaunch", before["id"]),
            &json!({}),
        )
        .await?;
    let relaunched = server
        .wait_finished(relaunched["id"].as_i64().context("id")?)
        .await?;
    assert_eq!(relaunched["status"], "successful", "{relaunched}");
    let launched = server
        .post(&format!("/api/v1/templates/{tid}/launch"), &json!({}))
        .await?;
    let launched = server
        .wait_finished(launched["id"].as_i64().context("id")?)
        .await?;
    assert_eq!(launched["status"], "successful", "{launched}");
    assert_nowhere(server, &[&db_password, &cloud_key])
}
