//! `dogfs-client`: the DogFS SDK. Buckets and objects over the metadata service, object bytes
//! straight to and from the chunk servers, erasure-coded on the client (docs/client.md).

mod admin;
mod client;
mod config;
mod convert;
mod error;
mod etag;
mod get;
mod hedge;
mod meta;
mod pool;
mod put;
mod report;
mod tokens;
mod types;

pub use client::Client;
pub use client::multipart::{
    CompletedPart, MultipartFailure, MultipartUpload, MultipartUploadInfo, PartInfo, PartOptions,
    PartsPage, UploadsPage, UploadsQuery,
};
pub use client::object_parts::{ObjectPart, ObjectParts};
pub use config::{ClientConfig, ClientTlsPaths, Token};
pub use dogfs_proto::meta::{TokenInfo, TokenScope};
pub use error::{Error, ErrorKind};
pub use hedge::{DEFAULT_HEDGE_MAX, DEFAULT_HEDGE_MIN};
pub use meta::Bearer;
pub use tokens::{CreatedToken, TokenRequest};
pub use types::{
    BucketInfo, GetOptions, ListEntry, ListPage, ListQuery, ObjectInfo, ObjectSummary, Progress,
    PutOptions, Scheme,
};

/// The data plane without the metadata service: streams an object into, or out of, shard
/// locations given by the caller. For tests, benchmarks and tools; the [`Client`] drives it
/// with layouts from metadata.
#[doc(hidden)]
pub mod dataplane {
    pub use crate::get::{DataPlaneConfig, WINDOW_DATA_BYTES, download, download_reporting};
    pub use crate::hedge::Hedger;
    pub use crate::pool::ChunkPool;
    pub use crate::put::{
        NoReplacement, SHARD_QUEUE, TargetReplacer, UploadOutcome, etag, etag_crc, upload,
    };
}
