//! Shared by the reconcile and scaling tests: a fake of the metadata service's admin API and a
//! mocked Kubernetes API server for multi-round flows.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod fake_admin;
pub mod world;
