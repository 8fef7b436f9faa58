//! Token authentication on a metadata node (docs/security.md "Tokens"): which calls need
//! which scope, and the [`Authenticator`] that checks a presented token against the bootstrap
//! token file and the token records of this node's replica of the system group.
//!
//! The replica is read without a Raft round: a token is checked on every call, and a round
//! each time would double the cost of a small read. A revocation therefore takes effect on a
//! node once it applied the entry; RevokeToken waits for that on every reachable node
//! (`service/tokens.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use dogfs_security::auth::{AuthError, AuthRule, Authenticator};
use dogfs_security::token::{self, Action, BootstrapFile, Identity};

use crate::raft::RaftHandle;
use crate::tokens::{self as store, Refusal};

const fn rule(prefix: &'static str, action: Action) -> AuthRule {
    AuthRule { prefix, action }
}

/// Every client and admin method and what it does. Methods not listed (Raft, internal calls,
/// the chunk registry) are for components and checked by certificate (`access.rs`).
pub const RULES: &[AuthRule] = &[
    rule("/dogfs.meta.v1.MetaService/HeadBucket", Action::Read),
    rule("/dogfs.meta.v1.MetaService/ListBuckets", Action::Read),
    rule("/dogfs.meta.v1.MetaService/GetObject", Action::Read),
    rule("/dogfs.meta.v1.MetaService/HeadObject", Action::Read),
    rule("/dogfs.meta.v1.MetaService/ListObjects", Action::Read),
    rule("/dogfs.meta.v1.MetaService/GetClusterMap", Action::Read),
    rule("/dogfs.meta.v1.MetaService/ReportShards", Action::Read),
    rule("/dogfs.meta.v1.MetaService/ListParts", Action::Read),
    rule(
        "/dogfs.meta.v1.MetaService/ListMultipartUploads",
        Action::Read,
    ),
    // Everything else of MetaService writes: buckets, puts, commits, deletes, multipart.
    rule("/dogfs.meta.v1.MetaService/", Action::Write),
    rule("/dogfs.meta.v1.AdminService/", Action::Admin),
];

/// Checks tokens on one metadata node.
#[derive(Debug)]
pub struct MetaAuthenticator {
    bootstrap: BootstrapFile,
    raft: RaftHandle,
}

impl MetaAuthenticator {
    pub fn new(bootstrap: BootstrapFile, raft: RaftHandle) -> Self {
        MetaAuthenticator { bootstrap, raft }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator for MetaAuthenticator {
    fn authenticate(&self, presented: &str) -> Result<Identity, AuthError> {
        if self.bootstrap.matches(presented) {
            return Ok(Identity::bootstrap());
        }
        let p = token::parse(presented).map_err(|_| AuthError::NotIssued)?;
        let lookup = |reason: String| AuthError::Lookup {
            id: p.id.clone(),
            reason,
        };
        let reader = self.raft.reader(0).map_err(|e| lookup(e.to_string()))?;
        let record = store::get(&reader, &p.id)
            .map_err(|e| lookup(e.to_string()))?
            .map(|(r, _)| r);
        store::verify(record, &p, now_unix()).map_err(|refusal| match refusal {
            Refusal::Unknown => AuthError::Unknown { id: p.id.clone() },
            Refusal::Revoked(r) => AuthError::Revoked {
                id: r.id,
                name: r.name,
            },
            Refusal::Expired(r) => AuthError::Expired {
                id: r.id,
                name: r.name,
                at: r.expires_unix,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(path: &str) -> Option<Action> {
        RULES
            .iter()
            .find(|r| path.starts_with(r.prefix))
            .map(|r| r.action)
    }

    #[test]
    fn every_client_method_has_its_action() {
        let m = "/dogfs.meta.v1.MetaService/";
        assert_eq!(action(&format!("{m}GetObject")), Some(Action::Read));
        assert_eq!(action(&format!("{m}ListObjects")), Some(Action::Read));
        assert_eq!(action(&format!("{m}BeginPut")), Some(Action::Write));
        assert_eq!(action(&format!("{m}DeleteObject")), Some(Action::Write));
        assert_eq!(action(&format!("{m}CreateBucket")), Some(Action::Write));
        assert_eq!(
            action(&format!("{m}CompleteMultipartUpload")),
            Some(Action::Write)
        );
        assert_eq!(
            action("/dogfs.meta.v1.AdminService/CreateToken"),
            Some(Action::Admin)
        );
        assert_eq!(action("/dogfs.raft.v1.RaftService/Vote"), None);
        assert_eq!(action("/dogfs.meta.v1.ChunkRegistry/Heartbeat"), None);
        assert_eq!(action("/dogfs.meta.v1.MetaInternal/Propose"), None);
    }
}
