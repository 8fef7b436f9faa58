//! The object catalogue (DESIGN §3-§5, `docs/catalog.md`): buckets, object versions, pending
//! uploads and the deletion queue, as deterministic logic on the transactional key-value state
//! machine of [`crate::raft`].
//!
//! Every mutating operation has the shape "read at the leader, decide, commit conditionally":
//! a pure builder takes the request and what the leader read through a [`KvReader`] and returns
//! a [`Prepared`] command whose conditions make it safe under races; after Raft applies it,
//! [`Prepared::interpret`] turns the [`Response`](crate::raft::Response) into a typed result.
//! A [`CatalogError::Conflict`] means the state moved between the read and the commit: rerun
//! the whole operation (read again, build again).
//!
//! - [`keys`]: the trees and key layout.
//! - [`records`]: the stored records (bincode behind a format byte).
//! - [`ops`]: builders for buckets, uploads, commits, deletes, expiry and the GC queue; reads.
//! - [`list`]: listing of one partition and the merge of P partitions' pages.
//! - [`index`]: the shard index (node ‖ shard → reference), kept by the same entries.
//! - [`repair`]: the repair queue, the survey of degraded segments and the repair commit.
//! - [`multipart`]: multipart uploads (parts as segments of their own, completed without
//!   copying); [`md5`] for their S3 ETag.
//!
//! [`KvReader`]: crate::raft::KvReader

pub mod index;
pub mod keys;
pub mod list;
pub mod multipart;
pub mod ops;
pub mod records;
pub mod repair;

use dogfs_core::layout::LayoutError;
use dogfs_core::names::NameError;
use dogfs_core::scheme::SchemeError;

use crate::raft::StateMachineError;

pub use keys::partition_of;
pub use list::ObjectSummary;
pub use list::{
    ContinuationToken, ListEntry, ListPage, ListQuery, PartitionPage, list_partition, merge_pages,
};
pub use ops::{
    BeginPut, Check, CommitObject, DEFAULT_INLINE_MAX, Prepared, PutInline, ShardReport, Targets,
};
pub use records::{
    BucketRecord, GcEntry, GcReason, ObjectBody, ObjectVersion, PartExtent, PartsBody,
    SchemeRecord, SegmentRecord, ShardRecord, UploadRecord,
};

/// Every way a catalogue operation can fail. Messages name the offending value.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error(transparent)]
    InvalidScheme(#[from] SchemeError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("bucket {bucket:?} already exists")]
    BucketExists { bucket: String },
    #[error("bucket {bucket:?} does not exist")]
    NoSuchBucket { bucket: String },
    #[error("bucket {bucket:?} is not empty: partition {partition} still holds object {key:?}")]
    BucketNotEmpty {
        bucket: String,
        partition: u64,
        key: String,
    },
    #[error("bucket {bucket:?} is being deleted; retry (it may be gone by then)")]
    BucketBusy { bucket: String },
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("upload {upload:032x} does not exist (never begun, aborted, or expired and collected)")]
    NoSuchUpload { upload: u128 },
    #[error(
        "upload {upload:032x} was already committed as the current version of {bucket:?}/{key:?}"
    )]
    UploadAlreadyCommitted {
        upload: u128,
        bucket: String,
        key: String,
    },
    #[error("upload {upload:032x} expired at unix time {expired_unix} (now {now_unix})")]
    UploadExpired {
        upload: u128,
        expired_unix: u64,
        now_unix: u64,
    },
    #[error("upload id {upload:032x} is already in use")]
    UploadIdInUse { upload: u128 },
    #[error(
        "size {size} needs {expected} segment target sets (segment size {segment_size}), got {got}"
    )]
    TargetSegments {
        size: u64,
        segment_size: u64,
        expected: u64,
        got: usize,
    },
    #[error("segment {segment} needs {expected} targets (k+m), got {got}")]
    TargetCount {
        segment: u64,
        expected: usize,
        got: usize,
    },
    #[error("segment {segment}: node {node} is a target twice; the k+m targets must be distinct")]
    DuplicateTargetNode { segment: u64, node: String },
    #[error(
        "upload {upload:032x} has no target for segment {segment} shard {shard} ({segments} \
         segments)"
    )]
    NoSuchTarget {
        upload: u128,
        segment: u64,
        shard: usize,
        segments: usize,
    },
    #[error("shard id {shard} is used twice in the upload")]
    DuplicateShardId { shard: String },
    #[error("an object of {size} bytes is inline (at most {inline_max}) and takes no targets")]
    InlineWithTargets { size: u64, inline_max: u64 },
    #[error(
        "commit of upload {upload:032x}: size {committed} differs from the {declared} bytes \
         declared at BeginPut"
    )]
    SizeMismatch {
        upload: u128,
        declared: u64,
        committed: u64,
    },
    #[error(
        "commit of upload {upload:032x}: {size} bytes is at most inline_max {inline_max}; the \
         data must be sent inline"
    )]
    InlineDataMissing {
        upload: u128,
        size: u64,
        inline_max: u64,
    },
    #[error("commit of upload {upload:032x}: inline data has {got} bytes, the object {declared}")]
    InlineLength {
        upload: u128,
        declared: u64,
        got: usize,
    },
    #[error(
        "commit of upload {upload:032x}: {size} bytes exceeds inline_max {inline_max}; inline \
         data is not allowed"
    )]
    InlineTooLarge {
        upload: u128,
        size: u64,
        inline_max: u64,
    },
    #[error("commit of upload {upload:032x}: {got} segments reported, the layout has {expected}")]
    SegmentCount {
        upload: u128,
        expected: u64,
        got: usize,
    },
    #[error("segment {segment} shard {shard}: no checksum reported (and not declared missing)")]
    ChecksumMissing { segment: u64, shard: usize },
    #[error("segment {segment}: {got} shards reported, the scheme has {expected}")]
    ExtraShards {
        segment: u64,
        expected: usize,
        got: usize,
    },
    #[error(
        "segment {segment} shard {shard}: checksum {client:08x} computed by the client differs \
         from {server:08x} acknowledged by the chunk server"
    )]
    ChecksumMismatch {
        segment: u64,
        shard: usize,
        client: u32,
        server: u32,
    },
    #[error("segment {segment} shard {shard}: {got} bytes stored, the layout needs {expected}")]
    ShardSize {
        segment: u64,
        shard: usize,
        expected: u64,
        got: u64,
    },
    #[error(
        "segment {segment}: {missing} shards missing, at most {allowed} may be (the write \
         quorum, min_write_shards, must be stored)"
    )]
    TooManyMissing {
        segment: u64,
        missing: usize,
        allowed: usize,
    },
    #[error(
        "segment {segment} shard {shard}: reported stored, but no chunk server was placed for \
         it (report it missing)"
    )]
    UnplacedShardStored { segment: u64, shard: usize },
    #[error("an inline object has at most {inline_max} bytes, got {size}; use BeginPut")]
    InlineObjectTooLarge { size: u64, inline_max: u64 },
    #[error("InvalidArgument: part number {number} is outside 1..=10000")]
    InvalidPartNumber { number: u32 },
    #[error("InvalidPart: part {number} of upload {upload:032x}: {reason}")]
    InvalidPart {
        upload: u128,
        number: u32,
        reason: String,
    },
    #[error(
        "InvalidPartOrder: part {number} is listed after part {previous}; parts must be listed \
         in ascending order, each once"
    )]
    InvalidPartOrder { previous: u32, number: u32 },
    #[error(
        "EntityTooSmall: part {number} has {size} bytes; every part but the last needs at least \
         {min}"
    )]
    EntityTooSmall { number: u32, size: u64, min: u64 },
    #[error("MalformedXML: completing upload {upload:032x} lists no part")]
    NoPartsListed { upload: u128 },
    #[error(
        "upload {upload:032x} is a part of a multipart upload: finish it with CompletePart, not \
         CommitObject"
    )]
    PartUploadCommit { upload: u128 },
    #[error("invalid listing: {reason}")]
    InvalidListing { reason: String },
    #[error("invalid continuation token: {reason}")]
    InvalidToken { reason: String },
    #[error("the state changed while {operation}; retry the operation")]
    Conflict { operation: &'static str },
    #[error("the state machine rejected the command: {reason}")]
    Rejected { reason: String },
    #[error("unexpected response to {operation}: {response}")]
    UnexpectedResponse {
        operation: &'static str,
        response: String,
    },
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error(transparent)]
    Storage(#[from] StateMachineError),
}
