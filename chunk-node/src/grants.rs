//! Shard grants on a chunk server (docs/security.md "Shard grants"): with a key file, a
//! client's `PutShard`, `GetShard`, `StatShard` and `DeleteShard` need a grant the metadata
//! service signed for that shard and operation. Components (certificates with the meta or
//! chunk role: the mover, repair, garbage collection, peers' repair reads) need none; their
//! certificate already says what they are.

use std::time::SystemTime;

use dogfs_core::ids::ShardId;
use dogfs_security::{GrantKeyFile, GrantOp, Role};
use tonic::Status;

#[derive(Debug)]
pub struct GrantCheck {
    keys: GrantKeyFile,
}

/// Whether the caller of a request is a component, by its verified certificate.
pub fn is_component(ext: &tonic::codegen::http::Extensions) -> bool {
    let roles = dogfs_security::policy::caller_roles(ext);
    roles.contains(&Role::Meta) || roles.contains(&Role::Chunk)
}

impl GrantCheck {
    pub fn new(keys: GrantKeyFile) -> Self {
        GrantCheck { keys }
    }

    /// Allows the call, or PERMISSION_DENIED saying why not.
    pub fn check(
        &self,
        component: bool,
        op: GrantOp,
        shard: ShardId,
        grant: &[u8],
    ) -> Result<(), Status> {
        if component {
            return Ok(());
        }
        self.keys
            .keys()
            .verify(grant, op, shard.as_u128(), SystemTime::now())
            .map_err(|e| Status::permission_denied(e.to_string()))
    }
}

/// The check of a server that may or may not have grants on.
pub fn check(
    grants: Option<&GrantCheck>,
    component: bool,
    op: GrantOp,
    shard: ShardId,
    grant: &[u8],
) -> Result<(), Status> {
    grants.map_or(Ok(()), |g| g.check(component, op, shard, grant))
}
