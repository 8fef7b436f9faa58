//! DogFS metadata service (DESIGN §5).
//!
//! - [`wal`]: the write-ahead log that the Raft log and vote of every group are stored in
//!   (`docs/wal.md`).
//! - [`raft`]: openraft 0.9 storage on it: the log store over the WAL and the transactional
//!   key-value state machine on sled, with snapshot files (`docs/raft-storage.md`); the
//!   multi-group node and its transport (`docs/raft-network.md`).
//! - [`catalog`]: buckets, objects, uploads and the deletion queue on the Raft KV
//!   (`docs/catalog.md`); [`registry`]: chunk servers and the cluster config; [`repair`]:
//!   background repair of segments short of shards (`docs/repair.md`); [`orphans`]: collection
//!   of shards nothing references (`docs/meta-service.md`); [`mover`]: drains and rebalancing
//!   (`docs/elasticity.md`).
//! - [`service`], [`server`], [`tasks`], [`vote_guard`], [`http`], [`metrics`], [`config`]: the gRPC services,
//!   the server that runs them, its background tasks and HTTP side port
//!   (`docs/meta-service.md`).
//! - [`access`] (component certificates), [`auth`] and [`tokens`] (bearer tokens): who may
//!   call what (`docs/security.md`).

pub mod access;
pub mod auth;
pub mod catalog;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod mover;
pub mod orphans;
pub mod raft;
pub mod registry;
pub mod repair;
pub mod server;
pub mod service;
pub mod tasks;
pub mod tokens;
pub mod vote_guard;
pub mod wal;

pub use config::{LogFormat, MetaConfig};
pub use server::{MetaServer, ServerError};
