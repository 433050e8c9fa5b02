//! The web UI in a real browser: the real server (with its embedded UI) and real
//! ansible-playbook runs on local hosts, driven by playwright-core and Debian's Chromium from
//! `ui-tests/ui.test.mjs` (node's test runner). This test prepares the server, a project and an
//! inventory, runs node, and fails with node's output when a scenario fails. Screenshots go to
//! `target/ui-screenshots/`.

use crate::helpers::*;
use anyhow::{Context, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use troupe_wire::inventories::Inventory;

/// Three tasks per host and a failure on h2: the grid's states (ok, changed, failed, skipped,
/// not run), with a pause so the browser sees the grid fill while the run is going.
const SITE: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: greet
      ansible.builtin.debug:
        msg: "{{ greeting | default('hello') }} from {{ inventory_hostname }}"
    - name: wait a little
      ansible.builtin.command: sleep 3
    - name: break h2
      ansible.builtin.fail:
        msg: h2 is broken on purpose
      when: inventory_hostname == 'h2'
    - name: only h1
      ansible.builtin.debug:
        msg: one
      when: inventory_hostname == 'h1'
"#;

/// Long enough in its second task for a graceful cancel to land while it is in flight.
const SLOW: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: started
      ansible.builtin.debug:
        msg: started
    - name: sleeping
      ansible.builtin.command: sleep 5
    - name: never reached
      ansible.builtin.debug:
        msg: not after a cancel
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_web_ui_in_a_browser() -> anyhow::Result<()> {
    let tests = repo_root().join("ui-tests");
    if !tests.join("node_modules/playwright-core").is_dir() {
        bail!(
            "playwright-core is not installed in {}: run `npm ci` there (scripts/test does)",
            tests.display()
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        bail!("no Chromium at {chromium} (apt-get install chromium; .ci/run does)");
    }

    let server = serve()?;
    let proj = named_project(&[("site.yml", SITE), ("slow.yml", SLOW)])?;
    let project = server.project(proj.path()).await?;
    let inventory: Inventory = serde_json::from_value(
        server
            .post(
                "/api/v1/inventories",
                &json!({"name": "local3", "format": "ini", "hosts": local_hosts(3)}),
            )
            .await?,
    )?;
    let shots = repo_root().join("target/ui-screenshots");

    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "ui.test.mjs"])
        .current_dir(&tests)
        .env("TROUPE_URL", server.url(""))
        .env("TROUPE_TOKEN", server.token())
        .env("TROUPE_PROJECT", project.to_string())
        .env("TROUPE_INVENTORY", inventory.id.to_string())
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .context("running node (node 20 or later must be on the PATH)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "the browser tests failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
            out.status,
            server.log()
        );
    }
    // node's runner says how many passed: all six scenarios must have run.
    anyhow::ensure!(
        stdout.contains("pass 6") && stdout.contains("fail 0"),
        "the browser tests did not all run:\n{stdout}\n{stderr}"
    );
    println!("{stdout}\nscreenshots: {}", shots.display());
    Ok(())
}

#[tokio::test]
async fn the_ui_is_served_without_a_token_with_its_policy_and_etags() -> anyhow::Result<()> {
    let server = serve()?;
    let http = server.http.clone();
    let index = http.get(server.url("/")).send().await?;
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str()?;
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let body = index.text().await?;
    assert!(
        body.contains(r#"<script type="module" src="/ui/js/app.js">"#),
        "{body}"
    );

    let app = http.get(server.url("/ui/js/app.js")).send().await?;
    assert_eq!(app.status(), 200);
    assert_eq!(
        app.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = app.headers()["etag"].clone();
    let again = http
        .get(server.url("/ui/js/app.js"))
        .header("if-none-match", etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);

    for missing in ["/ui/nope.js", "/ui/vendor/update.sh"] {
        assert_eq!(http.get(server.url(missing)).send().await?.status(), 404);
    }
    // The data is not: the API still wants a token.
    assert_eq!(
        http.get(server.url("/api/v1/runs")).send().await?.status(),
        401
    );
    Ok(())
}
