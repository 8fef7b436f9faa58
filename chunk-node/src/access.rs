//! Which components may call what on a chunk server's port (applied under TLS, where
//! certificates carry roles; see `dogfs_security::policy`). Reading and writing shards is
//! open to clients that reach the port (shard grants will narrow it).

use dogfs_security::{Policy, Role, Rule};

/// Copies, rebuilds, deletions and listings are the metadata service's work (the mover,
/// repair, garbage and orphan collection).
pub const RULES: &[Rule] = &[
    Rule {
        prefix: "/dogfs.chunk.v1.ChunkService/CopyShard",
        roles: &[Role::Meta],
    },
    Rule {
        prefix: "/dogfs.chunk.v1.ChunkService/ReconstructShard",
        roles: &[Role::Meta],
    },
    Rule {
        prefix: "/dogfs.chunk.v1.ChunkService/DeleteShard",
        roles: &[Role::Meta],
    },
    Rule {
        prefix: "/dogfs.chunk.v1.ChunkService/ListShards",
        roles: &[Role::Meta],
    },
];

pub fn policy() -> Policy {
    Policy::new(RULES.to_vec())
}
