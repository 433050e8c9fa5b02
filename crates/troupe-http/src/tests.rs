//! CA files that cannot be used are refused by name. (HTTPS itself is tested end to end, through
//! the server's flow steps: crates/troupe/tests/e2e/tls.rs.)

use super::*;

#[test]
fn ca_files_that_are_missing_or_hold_no_certificate_are_named() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let missing = dir.join("missing.pem");
    let err = builder(Some(&missing)).expect_err("missing file");
    assert!(matches!(err, ClientError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = builder(Some(&empty)).expect_err("no certificate");
    assert!(matches!(err, ClientError::BadCaFile { .. }), "{err}");
    assert!(err.to_string().contains("empty.pem"), "{err}");
}
