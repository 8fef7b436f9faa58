//! `dogfs-s3`: an S3-compatible gateway over `dogfs-client` (docs/s3.md).
//!
//! [`serve`] answers the S3 REST API on a listener until a shutdown future completes. The
//! HTTP layer, SigV4 (header and presigned query) verification, aws-chunked bodies and the
//! XML are `s3s`'s; this crate maps each S3 operation onto the DogFS client, streaming object
//! bytes both ways with bounded memory. It keeps no state of its own, so any number of
//! gateways can serve one cluster.

mod auth;
mod body;
mod buckets;
mod conditional;
mod config;
mod errors;
mod list;
mod metadata;
mod multipart;
mod objects;
mod server;
mod service;
pub mod sigv4;

pub use auth::{CredentialEntry, Credentials, CredentialsError, Scope};
pub use config::GatewayConfig;
pub use server::{ServeError, serve};
pub use service::DogS3;
