//! The TLS settings every DogFS server takes, as one set of flags (`--tls-cert`, `--tls-key`,
//! `--tls-ca`, or `DOGFS_TLS_*`), and the component TLS they load into: the listener's and,
//! with the same certificate as client identity, the connections the component makes.

use std::path::PathBuf;
use std::sync::Arc;

use crate::client::{ClientTls, ClientTlsError, ClientTlsPaths};
use crate::server::{IncompleteTls, ServerTls, TlsError, TlsPaths};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Incomplete(#[from] IncompleteTls),
    #[error("server TLS: {0}")]
    Server(#[from] TlsError),
    #[error("client TLS: {0}")]
    Client(#[from] ClientTlsError),
}

/// TLS flags of a server. All three or none; none is plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain this server presents, and presents as a client to other
    /// components (its roles are `spiffe://dogfs/<role>` URI SANs). Reloaded when it changes.
    #[arg(long = "tls-cert", env = "DOGFS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Reloaded when it changes.
    #[arg(long = "tls-key", env = "DOGFS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that other components' and clients' certificates must chain to.
    #[arg(long = "tls-ca", env = "DOGFS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// A component's TLS: its listener's and its outgoing connections'.
#[derive(Debug, Clone)]
pub struct ComponentTls {
    pub server: Arc<ServerTls>,
    pub client: Arc<ClientTls>,
}

impl TlsArgs {
    pub fn from_paths(paths: &TlsPaths) -> Self {
        TlsArgs {
            tls_cert: Some(paths.cert.clone()),
            tls_key: Some(paths.key.clone()),
            tls_ca: Some(paths.ca.clone()),
        }
    }

    pub fn paths(&self) -> Result<Option<TlsPaths>, IncompleteTls> {
        TlsPaths::from_parts(
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.tls_ca.clone(),
        )
    }

    /// Reads the files (an error names the bad one); `None` when no TLS flag is set.
    pub fn load(&self) -> Result<Option<ComponentTls>, LoadError> {
        let Some(paths) = self.paths()? else {
            return Ok(None);
        };
        let client = ClientTls::load(ClientTlsPaths::component(&paths))?;
        let server = ServerTls::load(paths)?;
        Ok(Some(ComponentTls {
            server: Arc::new(server),
            client: Arc::new(client),
        }))
    }
}
