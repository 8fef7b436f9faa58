//! Component identities: a component's certificate carries its roles as URI subject
//! alternative names `spiffe://dogfs/<role>` (SPIFFE's form, so meshes and cert-manager can
//! issue them). A client certificate without such a name authenticates a connection but
//! grants no component rights.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The prefix of a role's URI SAN.
pub const ROLE_URI_PREFIX: &str = "spiffe://dogfs/";

/// What a component is, as its certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A metadata node: Raft, internal proposals, the mover's and repair's calls to chunk
    /// servers.
    Meta,
    /// A chunk server: registration, heartbeats, repair reads from its peers.
    Chunk,
    /// The Kubernetes operator (the admin API).
    Operator,
    /// The S3 gateway.
    Gateway,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Meta, Role::Chunk, Role::Operator, Role::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Meta => "meta",
            Role::Chunk => "chunk",
            Role::Operator => "operator",
            Role::Gateway => "gateway",
        }
    }

    /// The URI SAN naming this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown component role {0:?} (expected meta, chunk, operator or gateway)")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// The roles named in a (verified) certificate; empty when it names none or does not parse.
pub fn roles(cert: &CertificateDer<'_>) -> Vec<Role> {
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Vec::new();
    };
    let mut out: Vec<Role> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX)?.parse().ok(),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{Authority, CertRequest};

    fn der(pem: &str) -> CertificateDer<'static> {
        crate::pem::certificates_from(std::path::Path::new("test"), pem.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn roles_come_from_uri_sans() {
        let ca = Authority::new("ca").unwrap();
        let both = ca
            .issue(&CertRequest::new("n").roles(&[Role::Chunk, Role::Meta]))
            .unwrap();
        assert_eq!(roles(&der(&both.cert_pem)), vec![Role::Meta, Role::Chunk]);
        let none = ca.issue(&CertRequest::new("app")).unwrap();
        assert!(roles(&der(&none.cert_pem)).is_empty());
        assert!(roles(&CertificateDer::from(vec![1u8, 2, 3])).is_empty());
        assert_eq!("gateway".parse::<Role>().unwrap(), Role::Gateway);
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Role::Operator.uri(), "spiffe://dogfs/operator");
    }
}
