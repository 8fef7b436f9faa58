//! DogFS Kubernetes operator: reconciles `DogCluster` resources into the metadata and chunk
//! StatefulSets and their Services, ConfigMaps and PodDisruptionBudgets.
//!
//! Pipeline per reconcile: [`validate`] (pure) → [`build`] (pure) → server-side apply →
//! observe ([`status`]) → status patch, driven by [`reconcile`].

pub mod build;
pub mod crd;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod validate;
