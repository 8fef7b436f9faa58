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
