//! The client side of TLS: the CA bundle that servers' certificates must chain to and, for
//! components, their own certificate (mutual TLS). Re-read when the files change; a caller
//! caching channels compares [`ClientTls::generation`] to make new connections with the
//! renewed files (connections already open keep theirs).

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::pem::{self, PemError};
use crate::reload::Reloading;

/// Files are looked at no more than once a second (callers ask on every request).
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("endpoint {endpoint} is https:// but no CA bundle is set (--ca or DOGFS_CA)")]
    HttpsWithoutCa { endpoint: String },
    #[error("TLS settings for {endpoint}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Where a client's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsPaths {
    /// PEM CA bundle the server's certificate must chain to.
    pub ca: PathBuf,
    /// This client's certificate and key (components; SDK users normally have none).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsPaths {
    pub fn ca_only(ca: impl Into<PathBuf>) -> Self {
        ClientTlsPaths {
            ca: ca.into(),
            identity: None,
        }
    }

    /// A component's: its server files double as its client identity.
    pub fn component(paths: &crate::TlsPaths) -> Self {
        ClientTlsPaths {
            ca: paths.ca.clone(),
            identity: Some((paths.cert.clone(), paths.key.clone())),
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientTlsError> {
    std::fs::read(path).map_err(|source| ClientTlsError::Read {
        path: path.clone(),
        source,
    })
}

fn build(paths: &ClientTlsPaths) -> Result<ClientTlsConfig, ClientTlsError> {
    let ca = read(&paths.ca)?;
    // Parsed here too so a bad file fails with its name, not at the first connection.
    pem::certificates_from(&paths.ca, &ca)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        // gRPC is HTTP/2 only; do not depend on the server's ALPN answer.
        .assume_http2(true);
    if let Some((cert, key)) = &paths.identity {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        pem::certificates_from(cert, &cert_pem)?;
        pem::private_key_from(key, &key_pem)?;
        config = config.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(config)
}

/// A client's TLS configuration, re-read from its files when they change.
pub struct ClientTls {
    paths: ClientTlsPaths,
    config: Reloading<ClientTlsConfig, ClientTlsError>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("paths", &self.paths)
            .finish()
    }
}

impl ClientTls {
    /// Loads the files now, so a bad path fails at start.
    pub fn load(paths: ClientTlsPaths) -> Result<Self, ClientTlsError> {
        let p = paths.clone();
        let mut files = vec![paths.ca.clone()];
        if let Some((cert, key)) = &paths.identity {
            files.extend([cert.clone(), key.clone()]);
        }
        let config = Reloading::new(files, CHECK_EVERY, move || build(&p))?;
        Ok(ClientTls { paths, config })
    }

    pub fn paths(&self) -> &ClientTlsPaths {
        &self.paths
    }

    /// Bumped each time the files change and load; a channel made at an older generation
    /// should be replaced.
    pub fn generation(&self) -> u64 {
        self.config.current().1
    }

    /// `endpoint` with the current TLS settings, and their generation.
    pub fn apply(&self, endpoint: Endpoint) -> Result<(Endpoint, u64), ClientTlsError> {
        let (config, generation) = self.config.current();
        let uri = endpoint.uri().to_string();
        let endpoint =
            endpoint
                .tls_config((*config).clone())
                .map_err(|source| ClientTlsError::Endpoint {
                    endpoint: uri,
                    source,
                })?;
        Ok((endpoint, generation))
    }
}

/// The URI to dial for `addr` (`host:port` or a URI): with TLS configured a bare address is
/// `https://`, without it `http://`. A scheme given explicitly is kept (an `http://` address
/// is plain text on purpose), and `https://` without a CA is refused.
pub fn uri(addr: &str, tls: Option<&ClientTls>) -> Result<String, ClientTlsError> {
    if addr.starts_with("https://") && tls.is_none() {
        return Err(ClientTlsError::HttpsWithoutCa {
            endpoint: addr.to_string(),
        });
    }
    if addr.contains("://") {
        return Ok(addr.to_string());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(format!("{scheme}://{addr}"))
}

/// An [`Endpoint`] for `uri` with TLS when the URI is `https://` (and its generation, 0 for
/// plain text).
pub fn endpoint(uri: &str, tls: Option<&ClientTls>) -> Result<(Endpoint, u64), ClientTlsError> {
    let endpoint =
        Endpoint::from_shared(uri.to_string()).map_err(|source| ClientTlsError::Endpoint {
            endpoint: uri.to_string(),
            source,
        })?;
    match tls {
        Some(tls) if uri.starts_with("https://") => tls.apply(endpoint),
        _ => Ok((endpoint, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_follows_the_tls_setting() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::issue::Authority::new("c").unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        let tls = ClientTls::load(ClientTlsPaths::ca_only(&path)).unwrap();
        assert_eq!(uri("h:1", None).unwrap(), "http://h:1");
        assert_eq!(uri("h:1", Some(&tls)).unwrap(), "https://h:1");
        assert_eq!(uri("http://h:1", Some(&tls)).unwrap(), "http://h:1");
        let e = uri("https://h:1", None).unwrap_err().to_string();
        assert!(e.contains("--ca"), "{e}");
        assert_eq!(tls.generation(), 0);
    }
}
