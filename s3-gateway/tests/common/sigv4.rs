//! The tests sign with the gateway crate's own SigV4 signer (`dogfs_s3::sigv4`, checked there
//! against the AWS examples), so one copy of it exists.

pub use dogfs_s3::sigv4::*;
