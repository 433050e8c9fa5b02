//! TLS for tests: an HTTPS server with a CA of its own, standing in for the services troupe
//! calls over TLS (a webhook receiver, Slack, Consul behind a private CA), and a private CA
//! that issues certificates for `troupe serve` itself over HTTPS.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A running HTTPS server for `localhost` that answers every request `200` with `{"ok":true}`.
/// It stops when dropped.
pub struct HttpsServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its self-signed certificate, PEM: the CA a client must trust to reach it.
    pub ca_pem: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    /// Starts one on a free port (call from a Tokio runtime).
    pub async fn start() -> anyhow::Result<HttpsServer> {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .context("could not make a certificate")?;
        let ca_pem = issued.cert.pem();
        let cert = pki_types::CertificateDer::from(issued.cert.der().to_vec());
        let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
            issued.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    // A client that does not trust the CA hangs up here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = br#"{"ok":true}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(HttpsServer {
            port,
            ca_pem,
            requests,
            task,
        })
    }

    /// `https://localhost:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// How many requests it has answered (over a TLS session the client accepted).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A private certificate authority in a temporary directory, issuing certificates for
/// servers under test: what an operator's own CA is to `troupe serve` over HTTPS.
pub struct PrivateCa {
    dir: tempfile::TempDir,
    /// Its certificate (PEM): the file clients are given as `--ca-file`.
    pub ca_file: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    issued: AtomicUsize,
}

/// A certificate and its key, as files (the key 0600), for `troupe serve`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate (PEM): `TROUPE_TLS_CERT_FILE`.
    pub cert_file: PathBuf,
    /// Its private key (PEM, mode 0600): `TROUPE_TLS_KEY_FILE`.
    pub key_file: PathBuf,
    /// The CA that signed it (PEM), for the harness's client.
    pub ca_file: PathBuf,
}

impl PrivateCa {
    /// A new CA, its certificate written to [`PrivateCa::ca_file`].
    pub fn new() -> anyhow::Result<PrivateCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "troupe test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)
            .context("could not make the CA certificate")?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem())?;
        Ok(PrivateCa {
            dir,
            ca_file,
            issuer,
            issued: AtomicUsize::new(0),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<ServerTls> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("troupe"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("could not sign the server certificate")?;
        let cert_file = self.dir.path().join(format!("server{n}.pem"));
        let key_file = self.dir.path().join(format!("server{n}.key"));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)?
            .write_all(key.serialize_pem().as_bytes())?;
        Ok(ServerTls {
            cert_file,
            key_file,
            ca_file: self.ca_file.clone(),
        })
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn localhost(&self) -> anyhow::Result<ServerTls> {
        self.issue(&["127.0.0.1", "localhost"])
    }

    /// A directory that lives as long as the CA, for files tests make beside its own.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
