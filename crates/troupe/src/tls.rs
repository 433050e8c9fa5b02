//! HTTPS for `troupe serve`: the certificate and key the configuration names, checked before
//! anything starts, and a listener that hands axum a connection once its TLS handshake is done.
//!
//! TLS is rustls with the ring provider (the one `troupe-http` uses for what troupe sends), so
//! there is nothing to install and no OpenSSL.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake; one that stalls holds only its own task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done, waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Why HTTPS could not be set up (each one stops `troupe serve` before it starts).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files is configured.
    #[error(
        "{set} is set but {unset} is not: HTTPS needs both the certificate and its key \
         (TROUPE_TLS_CERT_FILE and TROUPE_TLS_KEY_FILE), plain HTTP neither"
    )]
    Half {
        /// The key that is set.
        set: &'static str,
        /// The key that is missing.
        unset: &'static str,
    },
    /// A file could not be read.
    #[error("could not read the TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file may be read by other users.
    #[error(
        "the TLS key file {path} may be read by others (mode {mode:o}); make it 0600 (chmod 600)"
    )]
    KeyReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate file holds no PEM certificate.
    #[error("the TLS certificate file {path} holds no PEM certificate ({reason})")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key file holds no PEM private key.
    #[error("the TLS key file {path} holds no PEM private key ({reason})")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the TLS key {key} does not match the certificate {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the pair for another reason (an unsupported key type, a malformed
    /// certificate).
    #[error("the TLS certificate {cert} and key {key} cannot be used: {reason}")]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The TLS configuration for `cert` and `key` when both are set, `None` (plain HTTP) when
/// neither is.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::Half {
            set: "tls_cert_file",
            unset: "tls_key_file",
        }),
        (None, Some(_)) => Err(TlsError::Half {
            set: "tls_key_file",
            unset: "tls_cert_file",
        }),
        (Some(cert), Some(key)) => load(cert, key).map(|c| Some(Arc::new(c))),
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", cert_path)?;
    // The key is a secret: refuse one that others may read, as the sealing key is refused.
    let mode = std::fs::metadata(key_path)
        .map_err(|source| TlsError::Read {
            what: "key",
            path: key_path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyReadable {
            path: key_path.to_owned(),
            mode: mode & 0o777,
        });
    }
    let key_pem = read("key", key_path)?;

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCert {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadCert {
            path: cert_path.to_owned(),
            reason: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        // Checks that the key is the certificate's.
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::Mismatch {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                }
            }
            e => TlsError::Rejected {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
                reason: e.to_string(),
            },
        })?;
    // The server speaks HTTP/1.1 (axum's HTTP/2 is not built in); say so to clients that
    // would offer h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener for `axum::serve` that accepts TCP connections and yields them once their TLS
/// handshake is done. Handshakes run in tasks of their own, so a slow or silent client delays
/// no one; one that fails (plain HTTP, a certificate the client refused) is logged and dropped.
/// Dropping the listener (as graceful shutdown does) stops accepting and frees the port.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp` (call from a Tokio runtime).
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server has stopped: the connection just closes.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ends only once this listener is dropped: never here.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
