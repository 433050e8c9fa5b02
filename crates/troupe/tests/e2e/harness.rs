//! The harness itself: how it learns that `troupe serve` is ready, and how it fails when the
//! server cannot start.

use crate::helpers::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn serve_writes_its_address_where_it_is_told() -> anyhow::Result<()> {
    let server = serve()?;
    // The harness found the port through --addr-file; the server answers there.
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(server.addr.port(), 0);
    assert_eq!(server.get("/readyz").await?["store"], "sqlite");
    let help = Command::new(troupe_bin())
        .args(["serve", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--addr-file") && help.contains("TROUPE_ADDR_FILE"),
        "{help}"
    );
    Ok(())
}

#[test]
fn a_server_that_cannot_start_fails_at_once_with_its_log() {
    let started = Instant::now();
    let err = match serve_with(ServerOpts {
        extra_args: vec!["--rules".into(), "/nonexistent/rules.yml".into()],
        ..Default::default()
    }) {
        Ok(_) => panic!("troupe serve started with a rules file that does not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("could not read the rules file"), "{err}");
    // It did not wait for the ready timeout (60 s).
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}
