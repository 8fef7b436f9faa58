//! Shared by the reconcile and scaling tests: a fake of the metadata service's admin API and a
//! mocked Kubernetes API server for multi-round flows.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod fake_admin;
pub mod world;

use dogfs_operator::crd::{AuthSpec, DogCluster, TlsModeSpec, TlsSpec};

/// TLS and auth explicitly off: the flows these tests follow (scaling, the gateway, invalid
/// specs) predate both defaults and read no Secrets; the certificate and auth flows have their
/// own tests (`tls.rs`).
pub fn without_tls_and_auth(cluster: &mut DogCluster) {
    cluster.spec.tls = Some(TlsSpec {
        mode: Some(TlsModeSpec::Disabled),
        ..TlsSpec::default()
    });
    cluster.spec.auth = Some(AuthSpec {
        enabled: false,
        secret_name: None,
    });
}

/// `spec.tls.secretName: <name>`.
pub fn tls_secret(name: &str) -> Option<TlsSpec> {
    Some(TlsSpec {
        secret_name: Some(name.to_string()),
        ..TlsSpec::default()
    })
}
