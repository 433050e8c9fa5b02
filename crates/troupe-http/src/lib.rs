//! troupe's HTTP clients, built one way.
//!
//! Every client troupe makes (the CLI talking to a server, flow steps, discovery, the benchmark)
//! comes from [`builder`]: TLS is rustls with the ring provider (pure Rust, nothing to install),
//! servers are verified against the system's CA certificates, and a CA file adds a private CA.
//! Building a `reqwest::Client` any other way is refused by clippy (see `clippy.toml`): without
//! the provider this installs, reqwest would panic on the first client it builds.

use std::path::{Path, PathBuf};
use std::sync::Once;

pub use reqwest;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read.
    #[error("could not read the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no certificate troupe could read.
    #[error("the CA file {path} holds no PEM certificate ({reason})")]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// reqwest refused the configuration.
    #[error("could not build the HTTP client: {0}")]
    Build(String),
}

/// Installs ring as the process's rustls provider, once. Whoever installed one first wins; a
/// provider is all reqwest needs.
fn ensure_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder verifying servers against the system's CAs, and those of `ca_file` (PEM,
/// one or more certificates) when given. Set timeouts and the rest on it, then `build`.
pub fn builder(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, ClientError> {
    ensure_provider();
    #[allow(clippy::disallowed_methods)] // the one place clients are started from
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("troupe/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
            path: path.to_owned(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::BadCaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ClientError::BadCaFile {
                path: path.to_owned(),
                reason: "no certificate found".into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// A client with the system's CAs and nothing else set.
pub fn client() -> Result<reqwest::Client, ClientError> {
    builder(None)?
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// What went wrong with a request, for people: what failed (timed out, could not connect, ...)
/// and each cause after it, `: `-joined (a certificate refused says why). The URL is left out:
/// callers name the request themselves, without the credentials or query a URL may hold.
pub fn describe(e: &reqwest::Error) -> String {
    let mut parts = vec![
        if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        }
        .to_owned(),
    ];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests;
