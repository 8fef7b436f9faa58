//! `dogfs-tests`: cross-crate tests that start real DogFS clusters on loopback (DESIGN §11).
//! The library is the harness ([`cluster::Cluster`]); the tests are under `tests/`.
//! docs/testing.md describes how it works and how to run it.

pub mod auth;
pub mod bins;
pub mod cluster;
pub mod tls;

pub use auth::{Bearer, TestAuth};
pub use cluster::{Cluster, ClusterError, ClusterOptions, Node, NodeRef};
pub use tls::TestTls;
