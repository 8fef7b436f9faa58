//! TLS material for a test cluster: a CA of its own and one certificate per component kind
//! (every metadata node shares the meta certificate, every chunk server the chunk one; all
//! name 127.0.0.1 and localhost), written under the cluster's directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dogfs_security::issue::{Authority, CertRequest};
use dogfs_security::{ClientTls, ClientTlsPaths, Role};

use crate::ClusterError;

fn tls_error(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A test cluster's CA and component certificates.
#[derive(Debug)]
pub struct TestTls {
    authority: Authority,
    dir: PathBuf,
    /// CA only, no client certificate: what an SDK user holds. Used by the harness's probes.
    client: Arc<ClientTls>,
    /// The metadata nodes' certificate as client identity: the harness's direct calls to
    /// chunk servers (`ListShards` is for metadata nodes only).
    as_meta: Arc<ClientTls>,
}

impl TestTls {
    /// A new CA and the meta and chunk certificates, in `dir`.
    pub fn create(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let authority = Authority::new("dogfs-test-ca").map_err(|e| tls_error("test CA", e))?;
        write(&dir.join("ca.crt"), &authority.cert_pem())?;
        let client = ClientTls::load(ClientTlsPaths::ca_only(dir.join("ca.crt")))
            .map_err(|e| tls_error("loading the test CA", e))?;
        let (cert, key) = issue(
            &authority,
            dir,
            "meta",
            CertRequest::new("dogfs-meta").roles(&[Role::Meta]),
        )?;
        issue(
            &authority,
            dir,
            "chunk",
            CertRequest::new("dogfs-chunk").roles(&[Role::Chunk]),
        )?;
        let as_meta = ClientTls::load(ClientTlsPaths {
            ca: dir.join("ca.crt"),
            identity: Some((cert, key)),
        })
        .map_err(|e| tls_error("loading the meta certificate", e))?;
        Ok(TestTls {
            authority,
            dir: dir.to_owned(),
            client: Arc::new(client),
            as_meta: Arc::new(as_meta),
        })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The harness's client side (CA only).
    pub fn client(&self) -> &Arc<ClientTls> {
        &self.client
    }

    /// The harness's identity for calls only metadata nodes may make.
    pub fn as_meta(&self) -> &Arc<ClientTls> {
        &self.as_meta
    }

    /// Issues `req` into `<name>.crt` and `<name>.key`; returns their paths.
    pub fn issue(&self, name: &str, req: CertRequest) -> Result<(PathBuf, PathBuf), ClusterError> {
        issue(&self.authority, &self.dir, name, req)
    }

    /// The `DOGFS_TLS_*` settings of a process using the `<name>` certificate.
    pub fn env(&self, name: &str) -> Vec<(String, String)> {
        [
            ("DOGFS_TLS_CERT", self.dir.join(format!("{name}.crt"))),
            ("DOGFS_TLS_KEY", self.dir.join(format!("{name}.key"))),
            ("DOGFS_TLS_CA", self.ca_path()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect()
    }
}

fn issue(
    authority: &Authority,
    dir: &Path,
    name: &str,
    req: CertRequest,
) -> Result<(PathBuf, PathBuf), ClusterError> {
    let issued = authority
        .issue(&req)
        .map_err(|e| tls_error("issuing a test certificate", e))?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    write(&cert, &issued.cert_pem)?;
    write(&key, &issued.key_pem)?;
    Ok((cert, key))
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|source| ClusterError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
