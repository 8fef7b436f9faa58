//! TLS for a gRPC listener: [`ServerTls`] holds the server configuration built from the
//! certificate, key and CA files and rebuilds it when they change; [`ServerTls::incoming`]
//! turns a TCP listener into a stream of TLS connections for tonic's `serve_with_incoming`.
//!
//! Client certificates are verified against the CA when presented and not required: SDK
//! clients authenticate with tokens, components with their certificates, and the
//! [`crate::policy`] layer decides per method which of them may call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use crate::pem::{self, PemError};
use crate::reload::Reloading;

/// How long a client may take over its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections handshaken but not yet taken by the server.
const READY_QUEUE: usize = 64;
/// HTTP/2 streams one connection may have open at once (hostile input: a client cannot pin
/// unbounded server tasks on one connection). Well above what one SDK process opens: its
/// calls share one connection per server, 256 concurrent in the widest benchmark.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest header block a request may send (names, tokens, grants are far smaller).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("CA bundle {path}: {message}")]
    ClientVerifier { path: PathBuf, message: String },
    #[error("certificate {cert} with key {key}: {source}")]
    CertKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS protocol versions: {0}")]
    Protocol(rustls::Error),
}

/// The three files of a component's TLS identity (cert-manager's Secret layout:
/// `tls.crt`, `tls.key`, `ca.crt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle that peers' certificates must chain to.
    pub ca: PathBuf,
}

impl TlsPaths {
    /// From three optional settings (flags or environment): all or none.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<Self>, IncompleteTls> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsPaths { cert, key, ca })),
            (cert, key, ca) => Err(IncompleteTls {
                missing: [
                    cert.is_none().then_some("--tls-cert (DOGFS_TLS_CERT)"),
                    key.is_none().then_some("--tls-key (DOGFS_TLS_KEY)"),
                    ca.is_none().then_some("--tls-ca (DOGFS_TLS_CA)"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("TLS needs a certificate, its key and a CA bundle; missing {missing}")]
pub struct IncompleteTls {
    pub missing: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(paths: &TlsPaths) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let roots = pem::roots(&paths.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientVerifier {
            path: paths.ca.clone(),
            message: e.to_string(),
        })?;
    let certs = pem::certificates(&paths.cert)?;
    let key = pem::private_key(&paths.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::CertKey {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A listener's TLS configuration, re-read from its files when they change.
pub struct ServerTls {
    paths: TlsPaths,
    config: Reloading<ServerConfig, TlsError>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("paths", &self.paths)
            .finish()
    }
}

impl ServerTls {
    /// Loads the files now: a missing or bad file is an error at start, not at the first
    /// connection.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let p = paths.clone();
        // Checked on every new connection: three `stat`s, negligible next to a handshake.
        let config = Reloading::new(
            vec![paths.cert.clone(), paths.key.clone(), paths.ca.clone()],
            Duration::ZERO,
            move || build(&p),
        )?;
        Ok(ServerTls { paths, config })
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// An acceptor with the current files.
    pub fn acceptor(&self) -> TlsAcceptor {
        let (config, _) = self.config.current();
        TlsAcceptor::from(config)
    }

    /// TLS connections accepted on `listener`. Handshakes run concurrently (a slow or silent
    /// client holds up no one, and is dropped after 10 s); failed ones are logged and
    /// dropped. The listener closes when the stream is dropped.
    pub fn incoming(self: Arc<Self>, listener: TcpListener) -> TlsIncoming {
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(self, listener, tx));
        ReceiverStream::new(rx)
    }
}

/// What [`ServerTls::incoming`] yields.
pub type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

async fn accept_loop(
    tls: Arc<ServerTls>,
    listener: TcpListener,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tx.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(conn)) => {
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
