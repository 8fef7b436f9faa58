//! DogFS wire protocol: the `.proto` files under `proto/` and the code generated from them.
//! Nothing else lives here; conversions to `dogfs-core` types live in each consuming crate.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

/// The chunk service: shard storage on one chunk server.
pub mod chunk {
    pub mod v1 {
        tonic::include_proto!("dogfs.chunk.v1");
    }
    pub use v1::*;
}

/// The metadata service's public API: objects and buckets, the chunk registry, administration.
pub mod meta {
    pub mod v1 {
        tonic::include_proto!("dogfs.meta.v1");
    }
    pub use v1::*;
}

/// The internal Raft transport of the metadata service: Raft messages of many groups, routed by
/// group id.
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("dogfs.raft.v1");
    }
    pub use v1::*;
}

/// A subset of etcd's KV API, only for the peer benchmark (`dogfs bench etcd`): `KV.Put`.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
