//! HTTPS out of troupe: a flow's `http` step reaches a server behind a private CA when the
//! server is told to trust it (`TROUPE_CA_FILE`), and is refused on the certificate otherwise.

use crate::flows::{put_flow, start, wait_execution};
use crate::helpers::*;
use serde_json::{Value, json};
use troupe_testkit::Api;
use troupe_testkit::tls::HttpsServer;

/// Stores a flow with one `http` step to `url`, starts it, and returns the ended execution.
async fn call_once(api: &Api, url: &str) -> anyhow::Result<Value> {
    let doc =
        format!("name: ping\nsteps:\n  - id: ping\n    http: {{url: \"{url}\", expect: [200]}}\n");
    put_flow(api, &doc).await?;
    let id = start(api, "ping", json!({})).await?;
    wait_execution(api, id, None).await
}

#[tokio::test]
async fn https_steps_trust_the_configured_ca_and_refuse_unknown_ones() -> anyhow::Result<()> {
    let https = HttpsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &https.ca_pem)?;
    let url = https.url("/health");

    let trusting = serve_with(troupe_testkit::ServerOpts {
        extra_env: vec![("TROUPE_CA_FILE".into(), ca.display().to_string())],
        ..Default::default()
    })?;
    let e = call_once(&trusting, &url).await?;
    assert_eq!(e["status"], "successful", "{e}\n{}", trusting.log());
    let ping = &e["steps"][0];
    assert_eq!(ping["result"]["status"], 200, "{ping}");
    assert_eq!(ping["result"]["body"]["ok"], true, "{ping}");
    assert_eq!(https.requests(), 1);

    // Without the CA file the system's CAs do not know the server's: nothing is sent.
    let plain = serve()?;
    let e = call_once(&plain, &url).await?;
    assert_eq!(e["status"], "failed", "{e}");
    let error = e["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{e}");
    assert_eq!(
        https.requests(),
        1,
        "no request reached the server untrusted"
    );
    Ok(())
}
