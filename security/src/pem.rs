//! Reading PEM certificates, keys and CA bundles from files, with errors that name the file
//! and what is wrong with it (an operator's first TLS mistake is usually a swapped path).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM certificate file: {message}")]
    ParseCertificate { path: PathBuf, message: String },
    #[error("{path}: holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {message}")]
    ParseKey { path: PathBuf, message: String },
    #[error("{path}: CA certificate rejected: {message}")]
    AddRoot { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `path`, in file order (leaf first for a chain).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    certificates_from(path, &bytes)
}

/// [`certificates`] from bytes already read; `path` only names them in errors.
pub fn certificates_from(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::ParseCertificate {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    private_key_from(path, &bytes)
}

/// [`private_key`] from bytes already read; `path` only names them in errors.
pub fn private_key_from(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| PemError::ParseKey {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The CA bundle in `path` as trust anchors.
pub fn roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| PemError::AddRoot {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let e = certificates(&missing).unwrap_err().to_string();
        assert!(e.contains("absent.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let e = certificates(&empty).unwrap_err();
        assert!(matches!(e, PemError::NoCertificate { .. }), "{e}");
        let e = private_key(&empty).unwrap_err();
        assert!(matches!(e, PemError::ParseKey { .. }), "{e}");

        // A key file given where the certificate belongs: no certificate in it.
        let ca = crate::issue::Authority::new("pem-test").unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, ca.key_pem()).unwrap();
        assert!(matches!(
            certificates(&key).unwrap_err(),
            PemError::NoCertificate { .. }
        ));
        let cert = dir.path().join("ca.pem");
        std::fs::write(&cert, ca.cert_pem()).unwrap();
        assert_eq!(certificates(&cert).unwrap().len(), 1);
        assert_eq!(roots(&cert).unwrap().len(), 1);
        assert!(private_key(&key).is_ok());
    }
}
