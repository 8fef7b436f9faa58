//! `dogfs-chunk`: the chunk server. Stores erasure-coded shards as flat files with CRC32C
//! block checksums and serves them over gRPC (`ChunkService`), with `/metrics`, `/healthz`
//! and `/readyz` on a side HTTP port, a background scrubber, shard repair
//! (`ReconstructShard`) from peers, and shard copies between servers (`CopyShard`) for moves.

pub mod access;
pub mod client;
pub mod config;
pub mod convert;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod repair;
pub mod scrub;
pub mod server;
pub mod service;
pub mod store;

pub use config::ChunkConfig;
pub use server::{ChunkServer, EXIT_REMOVED, ServerError};
