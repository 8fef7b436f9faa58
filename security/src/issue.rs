//! A certificate authority in-process: a CA and certificates for components and clients,
//! for test clusters and `dogfs dev --tls` (the operator's own-CA mode builds on it).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::Role;
use crate::server::TlsPaths;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("generating a key pair: {0}")]
    GenerateKey(rcgen::Error),
    #[error("{name:?} is not a valid subject alternative name: {source}")]
    Name { name: String, source: rcgen::Error },
    #[error("signing the certificate of {subject}: {source}")]
    Sign {
        subject: String,
        source: rcgen::Error,
    },
    #[error("loading the CA: {reason}")]
    LoadCa { reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub common_name: String,
    /// Component roles, as `spiffe://dogfs/<role>` URI SANs.
    pub roles: Vec<Role>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertRequest {
    /// Valid from an hour ago (clock skew) for a year, for `localhost` and 127.0.0.1.
    pub fn new(common_name: impl Into<String>) -> Self {
        let now = SystemTime::now();
        CertRequest {
            common_name: common_name.into(),
            roles: Vec::new(),
            dns_names: vec!["localhost".to_string()],
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(365 * 24 * 3600),
        }
    }

    pub fn roles(mut self, roles: &[Role]) -> Self {
        self.roles = roles.to_vec();
        self
    }

    /// Valid only between these two instants (an expired certificate for tests: both past).
    pub fn valid(mut self, not_before: SystemTime, not_after: SystemTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// An issued certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed CA that signs [`CertRequest`]s.
#[derive(Debug)]
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<Self, IssueError> {
        let key = KeyPair::generate().map_err(IssueError::GenerateKey)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|source| IssueError::Sign {
                subject: name.to_string(),
                source,
            })?;
        Ok(Authority { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for both TLS ends (server and client authentication), signed by this CA.
    pub fn issue(&self, req: &CertRequest) -> Result<Issued, IssueError> {
        let key = KeyPair::generate().map_err(IssueError::GenerateKey)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&req.common_name);
        let mut sans = Vec::new();
        for name in &req.dns_names {
            let ia5 = name.clone().try_into().map_err(|source| IssueError::Name {
                name: name.clone(),
                source,
            })?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
        for role in &req.roles {
            let uri = role.uri();
            let ia5 = uri
                .clone()
                .try_into()
                .map_err(|source| IssueError::Name { name: uri, source })?;
            sans.push(SanType::URI(ia5));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = req.not_before.into();
        params.not_after = req.not_after.into();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| IssueError::Sign {
                subject: req.common_name.clone(),
                source,
            })?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "DogFS");
    dn
}

/// The TLS files of a local cluster in one directory: `ca.crt`, and `meta.crt`/`meta.key`,
/// `chunk.crt`/`chunk.key` for `localhost` and 127.0.0.1 with their roles. Kept across
/// restarts (clients keep trusting the same `ca.crt`); made anew when any is missing.
#[derive(Debug, Clone)]
pub struct LocalClusterFiles {
    dir: PathBuf,
}

impl LocalClusterFiles {
    const KINDS: [(&'static str, Role); 2] = [("meta", Role::Meta), ("chunk", Role::Chunk)];

    pub fn ensure(dir: &Path) -> Result<Self, IssueError> {
        let files = LocalClusterFiles {
            dir: dir.to_owned(),
        };
        let complete = std::iter::once(files.ca())
            .chain(Self::KINDS.iter().flat_map(|(n, _)| {
                let p = files.paths(n);
                [p.cert, p.key]
            }))
            .all(|p| p.is_file());
        if complete {
            return Ok(files);
        }
        std::fs::create_dir_all(dir).map_err(|source| IssueError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let ca = Authority::new("dogfs-local-ca")?;
        for (name, role) in Self::KINDS {
            let issued = ca.issue(&CertRequest::new(format!("dogfs-{name}")).roles(&[role]))?;
            let p = files.paths(name);
            write_file(&p.cert, &issued.cert_pem, false)?;
            write_file(&p.key, &issued.key_pem, true)?;
        }
        // Last: its presence with the others marks a complete set.
        write_file(&files.ca(), &ca.cert_pem(), false)?;
        Ok(files)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The files of component kind `name` ("meta" or "chunk").
    pub fn paths(&self, name: &str) -> TlsPaths {
        TlsPaths {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            ca: self.ca(),
        }
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), IssueError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| IssueError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Additions for the operator's own-CA mode: a CA with a chosen validity (the operator's clock
/// is injectable), and a CA loaded back from the PEM it stored in a Secret.
impl Authority {
    /// A new CA named `name`, valid between the two instants.
    pub fn new_valid(
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, IssueError> {
        let key = KeyPair::generate().map_err(IssueError::GenerateKey)?;
        let params = ca_params(name, not_before, not_after);
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|source| IssueError::Sign {
                subject: name.to_string(),
                source,
            })?;
        Ok(Authority { issuer })
    }

    /// The CA whose certificate and key [`Authority::cert_pem`] and [`Authority::key_pem`]
    /// returned (kept in a Secret between runs). Certificates it issues chain to that stored
    /// certificate: same subject, same key, same key identifier. The in-memory CA certificate
    /// is re-signed, so `cert_pem()` of the loaded CA differs from `cert_pem` byte for byte;
    /// keep handing out the stored one.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        let bad = |reason: String| IssueError::LoadCa { reason };
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("the key: {e}")))?;
        let der = first_certificate_der(cert_pem).ok_or_else(|| {
            bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_string())
        })?;
        let (_, stored) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
        let common_name = stored
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| bad("the certificate has no common name".to_string()))?
            .to_string();
        if stored.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad("the key does not belong to the certificate".to_string()));
        }
        let not_before = stored.validity().not_before.timestamp();
        let not_after = stored.validity().not_after.timestamp();
        let at = |secs: i64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        };
        let mut params = ca_params(&common_name, at(not_before), at(not_after));
        // Issued certificates must name the stored CA's key identifier, not a recomputed one.
        for ext in stored.extensions() {
            if let x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) =
                ext.parsed_extension()
            {
                params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(id.0.to_vec());
            }
        }
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|source| IssueError::Sign {
                subject: common_name.clone(),
                source,
            })?;
        // Chains are built by subject: only a CA this module made re-encodes to the same one.
        let (_, rebuilt) = x509_parser::parse_x509_certificate(issuer.der())
            .map_err(|e| bad(format!("the re-signed certificate does not parse: {e}")))?;
        if rebuilt.subject().as_raw() != stored.subject().as_raw() {
            return Err(bad(
                "its subject is not the CN + O=DogFS form this module issues".to_string(),
            ));
        }
        Ok(Authority { issuer })
    }
}

impl CertRequest {
    /// Adds DNS subject alternative names (kept: `localhost`).
    pub fn dns<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dns_names.extend(names.into_iter().map(Into::into));
        self
    }
}

fn ca_params(name: &str, not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params
}

/// DER of the first certificate in a PEM text.
fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

#[cfg(test)]
mod operator_ca_tests {
    use super::*;

    fn parse(pem: &str) -> Vec<u8> {
        first_certificate_der(pem).unwrap()
    }

    #[test]
    fn a_ca_loaded_back_issues_certificates_that_name_the_stored_ca() {
        let now = SystemTime::now();
        let stored =
            Authority::new_valid("dogfs CA demo.ns 1", now, now + Duration::from_secs(86400))
                .unwrap();
        let loaded = Authority::from_pem(&stored.cert_pem(), &stored.key_pem()).unwrap();
        let issued = loaded
            .issue(
                &CertRequest::new("demo-meta")
                    .roles(&[Role::Meta])
                    .dns(["demo-meta.ns.svc"]),
            )
            .unwrap();
        let ca_der = parse(&stored.cert_pem());
        let leaf_der = parse(&issued.cert_pem);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        assert_eq!(ca.validity().not_after.timestamp(), {
            let secs = (now + Duration::from_secs(86400))
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            i64::try_from(secs).unwrap()
        });
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.contains("demo-meta.ns.svc")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let a = Authority::new("a").unwrap();
        let b = Authority::new("b").unwrap();
        let error = Authority::from_pem(&a.cert_pem(), &b.key_pem()).unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
        assert!(Authority::from_pem("not pem", &a.key_pem()).is_err());
    }
}
