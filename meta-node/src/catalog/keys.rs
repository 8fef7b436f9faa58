//! Trees and key layout of the catalogue (`docs/catalog.md`, "Key layout").
//!
//! Keys are built only from validated names ([`BucketName`], [`ObjectKey`]) and ids, never from
//! raw request strings. Bucket names contain no NUL, so `bucket ‖ 0x00 ‖ key` keeps every
//! bucket's objects contiguous and ordered by key bytes (= S3's UTF-8 binary order), and a
//! listing of one bucket is a prefix range.

use dogfs_core::ids::ShardId;
use dogfs_core::names::{BucketName, ObjectKey};

use crate::raft::Key;

/// System group: bucket name → [`BucketRecord`](super::BucketRecord).
pub const BUCKETS: &str = "bucket";
/// Partition: `bucket ‖ 0x00 ‖ key` → current [`ObjectVersion`](super::ObjectVersion).
pub const OBJECTS: &str = "object";
/// Partition: upload id (16 bytes, big-endian) → [`UploadRecord`](super::UploadRecord).
pub const UPLOADS: &str = "upload";
/// Partition: shard id (16 bytes, big-endian) → [`GcEntry`](super::GcEntry).
pub const GC: &str = "gc";
/// Partition: `bucket ‖ 0x00 ‖ incarnation (u64 BE)` → empty: the bucket incarnation is being
/// deleted, no upload may begin or commit for it in this partition.
pub const SEALS: &str = "seal";

/// Partition: `node (16 bytes BE) ‖ shard id (16 bytes BE)` →
/// [`ShardRef`](super::index::ShardRef): the shard index (`index.rs`).
pub const SHARD_INDEX: &str = "shardref";
/// Partition: `version id (16 BE) ‖ segment (8 BE) ‖ shard index (1)` →
/// [`RepairEntry`](super::repair::RepairEntry): shards reported corrupt, queued for repair.
pub const REPAIRS: &str = "repair";

/// Byte that never occurs in UTF-8; `prefix ‖ 0xFF` sorts after every key starting with
/// `prefix` and before every greater key that does not.
pub(crate) const PAST_PREFIX: u8 = 0xFF;

/// The bucket's record in the system group.
pub fn bucket(name: &BucketName) -> Key {
    Key::new(BUCKETS, name.as_str().as_bytes())
}

/// `bucket ‖ 0x00`: the prefix of every object key of the bucket.
pub fn object_prefix(bucket: &BucketName) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.as_str().len() + 1);
    k.extend_from_slice(bucket.as_str().as_bytes());
    k.push(0);
    k
}

/// The object's current version in its partition.
pub fn object(bucket: &BucketName, key: &ObjectKey) -> Key {
    let mut k = object_prefix(bucket);
    k.extend_from_slice(key.as_str().as_bytes());
    Key::new(OBJECTS, k)
}

/// A pending upload.
pub fn upload(id: u128) -> Key {
    Key::new(UPLOADS, id.to_be_bytes().to_vec())
}

/// A deletion-queue entry.
pub fn gc(shard: ShardId) -> Key {
    Key::new(GC, shard.as_u128().to_be_bytes().to_vec())
}

/// The seal of a bucket incarnation in a partition.
pub fn seal(bucket: &BucketName, incarnation: u64) -> Key {
    let mut k = object_prefix(bucket);
    k.extend_from_slice(&incarnation.to_be_bytes());
    Key::new(SEALS, k)
}

/// The object partition (1..=`partitions`) of a key: `1 + fnv1a64(bucket ‖ 0x00 ‖ key) mod P`.
/// FNV-1a 64 is fixed forever (DESIGN §5). Implemented in `dogfs-core` so clients route with
/// the same function.
pub fn partition_of(bucket: &BucketName, key: &ObjectKey, partitions: u64) -> u64 {
    dogfs_core::names::partition_of(bucket, key, partitions)
}

/// Partition: `bucket ‖ 0x00 ‖ key ‖ 0x00 ‖ upload id (16 BE)` →
/// [`MultipartRecord`](super::multipart::MultipartRecord): a multipart upload in progress. Keys
/// hold no NUL, so a bucket's uploads are one prefix range in (key, upload id) order, S3's
/// ListMultipartUploads order.
pub const MULTIPART: &str = "mpu";
/// Partition: `upload id (16 BE) ‖ part number (4 BE)` →
/// [`PartRecord`](super::multipart::PartRecord): a completed part, in part-number order.
pub const PARTS: &str = "mpart";
/// Partition: part upload id (16 BE) → [`PartLink`](super::multipart::PartLink): the pending
/// upload (in [`UPLOADS`]) of a part, and which multipart upload and part number it is for.
pub const PART_LINKS: &str = "mplink";

/// `bucket ‖ 0x00 ‖ key ‖ 0x00`: the prefix of every multipart upload of one key.
pub fn multipart_key_prefix(bucket: &BucketName, key: &ObjectKey) -> Vec<u8> {
    let mut k = object_prefix(bucket);
    k.extend_from_slice(key.as_str().as_bytes());
    k.push(0);
    k
}

/// A multipart upload in progress.
pub fn multipart(bucket: &BucketName, key: &ObjectKey, upload_id: u128) -> Key {
    let mut k = multipart_key_prefix(bucket, key);
    k.extend_from_slice(&upload_id.to_be_bytes());
    Key::new(MULTIPART, k)
}

/// A completed part of a multipart upload.
pub fn part(upload_id: u128, number: u32) -> Key {
    let mut k = upload_id.to_be_bytes().to_vec();
    k.extend_from_slice(&number.to_be_bytes());
    Key::new(PARTS, k)
}

/// The link of a part's pending upload to its multipart upload.
pub fn part_link(part_upload_id: u128) -> Key {
    Key::new(PART_LINKS, part_upload_id.to_be_bytes().to_vec())
}
