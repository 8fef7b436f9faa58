//! DogFS Kubernetes operator: reconciles `DogCluster` resources into the metadata and chunk
//! StatefulSets and their Services, ConfigMaps and PodDisruptionBudgets (and, with `spec.s3`,
//! the S3 gateway's Deployment, Service and PodDisruptionBudget), and drives drains,
//! node removal and rebalancing through the metadata service's admin API ([`admin`]) when
//! chunk replicas change.
//!
//! Pipeline per reconcile: [`validate`] (pure) → certificates ([`certs`]: the operator's CA,
//! cert-manager or a given Secret) and the auth Secret ([`auth`]) → observe (the admin API) →
//! [`scale`] plan (pure) → [`build`] (pure, with [`netpol`]) → server-side apply → the step's
//! action → status ([`status`]), driven by [`reconcile`].

pub mod admin;
pub mod auth;
pub mod build;
pub mod certs;
pub mod crd;
pub mod metrics;
pub mod netpol;
pub mod reconcile;
pub mod scale;
pub mod status;
pub mod validate;
