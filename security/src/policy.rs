//! Which components may call which gRPC methods. A [`Rule`] names a method path prefix and
//! the roles allowed to call it; a method no rule names is open to any client that can
//! reach the port (the token checks of the API apply there). The [`PolicyLayer`] applies
//! the rules on a TLS server, reading the verified client certificate of the connection.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::gate::{Gate, GateLayer};
use crate::identity::{self, Role};

/// Methods under `prefix` (e.g. `/dogfs.raft.v1.RaftService/`) need one of `roles`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub prefix: &'static str,
    pub roles: &'static [Role],
}

/// A server's rules; the first matching rule decides.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Arc<[Rule]>,
}

fn names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Self {
        Policy {
            rules: rules.into(),
        }
    }

    /// Whether a connection whose verified client certificate chain is `certs` (none: no
    /// certificate given) may call `path`.
    pub fn check(&self, path: &str, certs: Option<&[CertificateDer<'_>]>) -> Result<(), Status> {
        let Some(rule) = self.rules.iter().find(|r| path.starts_with(r.prefix)) else {
            return Ok(());
        };
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Err(Status::unauthenticated(format!(
                "{path} is for DogFS components ({}): connect with a component certificate \
                 (mutual TLS)",
                names(rule.roles)
            )));
        };
        let held = identity::roles(leaf);
        if held.iter().any(|r| rule.roles.contains(r)) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{path} needs a certificate with role {} (spiffe://dogfs/<role>); this one has {}",
            names(rule.roles),
            if held.is_empty() {
                "none".to_string()
            } else {
                names(&held)
            }
        )))
    }
}

fn peer_certs(ext: &http::Extensions) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
}

/// The roles of the verified client certificate of the connection a request came on (none
/// over plain text or without a certificate).
pub fn caller_roles(ext: &http::Extensions) -> Vec<Role> {
    peer_certs(ext)
        .and_then(|c| c.first().map(identity::roles))
        .unwrap_or_default()
}

impl Gate for Policy {
    fn admit(
        &self,
        path: &str,
        _headers: &http::HeaderMap,
        ext: &mut http::Extensions,
    ) -> Result<(), Status> {
        self.check(path, peer_certs(ext).as_deref().map(Vec::as_slice))
    }
}

/// Applies a [`Policy`] to every request; with `None` (a plain-text server, which has no
/// certificates to check) it lets everything through.
pub type PolicyLayer = GateLayer<Policy>;

impl GateLayer<Policy> {
    pub fn new(policy: Option<Policy>) -> Self {
        GateLayer::with(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{Authority, CertRequest};

    const RULES: &[Rule] = &[Rule {
        prefix: "/dogfs.raft.v1.RaftService/",
        roles: &[Role::Meta],
    }];

    fn der(pem: &str) -> CertificateDer<'static> {
        crate::pem::certificates_from(std::path::Path::new("t"), pem.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn rules_decide_by_prefix_and_role() {
        let p = Policy::new(RULES.to_vec());
        let ca = Authority::new("ca").unwrap();
        let meta = der(&ca
            .issue(&CertRequest::new("m").roles(&[Role::Meta]))
            .unwrap()
            .cert_pem);
        let chunk = der(&ca
            .issue(&CertRequest::new("c").roles(&[Role::Chunk]))
            .unwrap()
            .cert_pem);
        let vote = "/dogfs.raft.v1.RaftService/Vote";
        assert!(p.check(vote, Some(std::slice::from_ref(&meta))).is_ok());
        let e = p
            .check(vote, Some(std::slice::from_ref(&chunk)))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("chunk"), "{}", e.message());
        let e = p.check(vote, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            p.check(vote, Some(&[])).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // Methods no rule names are open.
        assert!(
            p.check("/dogfs.meta.v1.MetaService/GetObject", None)
                .is_ok()
        );
    }
}
