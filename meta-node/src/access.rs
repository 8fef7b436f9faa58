//! Which components may call what on a metadata node's port (applied under TLS, where
//! certificates carry roles; see `dogfs_security::policy`). Client and admin methods are
//! not listed: any client that reaches the port may call them.

use dogfs_security::{Policy, Role, Rule};

/// Raft between metadata nodes, proposals forwarded between them, chunk servers'
/// registration and heartbeats (a metadata node forwards those to the leader).
pub const RULES: &[Rule] = &[
    Rule {
        prefix: "/dogfs.raft.v1.RaftService/",
        roles: &[Role::Meta],
    },
    Rule {
        prefix: "/dogfs.meta.v1.MetaInternal/",
        roles: &[Role::Meta],
    },
    Rule {
        prefix: "/dogfs.meta.v1.ChunkRegistry/",
        roles: &[Role::Chunk, Role::Meta],
    },
];

pub fn policy() -> Policy {
    Policy::new(RULES.to_vec())
}
