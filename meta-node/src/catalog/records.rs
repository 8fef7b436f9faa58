//! The stored records. Each value is one format byte ([`FORMAT_V1`]) followed by the bincode
//! encoding of the record, so a later format can be told apart and migrated on read.
//!
//! `dogfs-core` types carry no serde, so records hold their raw forms (`u128` ids, the scheme's
//! fields) and convert through the validating constructors on the way out.

use std::collections::BTreeMap;

use dogfs_core::ids::ShardId;
use dogfs_core::layout::{LayoutError, ObjectLayout, SegmentLayout};
use dogfs_core::placement::NodeId;
use dogfs_core::scheme::{Codec, ErasureScheme};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::CatalogError;

/// The current record format.
pub const FORMAT_V1: u8 = 1;

/// Encodes a record: format byte, then bincode.
pub fn encode<T: Serialize>(what: &'static str, record: &T) -> Result<Vec<u8>, CatalogError> {
    let mut out = vec![FORMAT_V1];
    bincode::serialize_into(&mut out, record).map_err(|e| CatalogError::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &'static str, raw: &[u8]) -> Result<T, CatalogError> {
    match raw.split_first() {
        Some((&FORMAT_V1, body)) => bincode::deserialize(body).map_err(|e| CatalogError::Corrupt {
            what,
            reason: e.to_string(),
        }),
        Some((other, _)) => Err(CatalogError::Corrupt {
            what,
            reason: format!("unknown format byte {other}"),
        }),
        None => Err(CatalogError::Corrupt {
            what,
            reason: "empty value".into(),
        }),
    }
}

/// A bucket, in the system group. Its incarnation is the version (log index) of the entry that
/// created it, i.e. the record's version as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    pub created_unix: u64,
}

/// An erasure scheme in stored form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemeRecord {
    pub codec: String,
    pub k: u8,
    pub m: u8,
    pub cell_size: u32,
}

impl SchemeRecord {
    pub fn from_scheme(s: &ErasureScheme) -> SchemeRecord {
        SchemeRecord {
            codec: s.codec().as_str().to_owned(),
            k: s.k(),
            m: s.m(),
            cell_size: s.cell_size(),
        }
    }

    /// The validated scheme.
    pub fn scheme(&self) -> Result<ErasureScheme, CatalogError> {
        let codec: Codec = self.codec.parse()?;
        Ok(ErasureScheme::new(
            codec,
            u32::from(self.k),
            u32::from(self.m),
            u64::from(self.cell_size),
        )?)
    }
}

/// One shard of a committed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// 0..k are data shards, k..k+m parity.
    pub index: u8,
    pub shard_id: u128,
    /// The chunk server holding it (`placement::NodeId` as u128).
    pub node: u128,
    /// CRC32C of the whole shard file (0 when missing).
    pub crc32c: u32,
    /// Bytes of the shard file (the layout's `shard_len`).
    pub size: u64,
    /// Not stored at commit (DESIGN §4 step 3); repair fills it.
    pub missing: bool,
}

impl ShardRecord {
    pub fn shard(&self) -> ShardId {
        ShardId::from_u128(self.shard_id)
    }

    pub fn node(&self) -> NodeId {
        NodeId::from_u128(self.node)
    }
}

/// One committed segment: its k+m shards in index order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub index: u64,
    pub shards: Vec<ShardRecord>,
}

/// Where an object's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectBody {
    /// At most `inline_max` bytes, kept in the record (replicated by Raft).
    Inline(#[serde(with = "crate::raft::bytes_serde")] Vec<u8>),
    /// Erasure-coded segments.
    Segments(Vec<SegmentRecord>),
    /// Completed from a multipart upload: each part keeps the geometry it was written with
    /// (its own size and segment size), so no byte is copied. Added last: bincode numbers
    /// variants, and the records of the two above must decode as before.
    Parts(PartsBody),
}

/// The body of an object completed from parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsBody {
    /// The parts in object order.
    pub parts: Vec<PartExtent>,
    /// Every part's segments in object order, numbered across parts: part i's segments follow
    /// part i−1's, so (version, segment) names one segment as for any object (repair queue,
    /// shard index).
    pub segments: Vec<SegmentRecord>,
}

/// One part of an object completed from parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartExtent {
    pub number: u32,
    pub size: u64,
    pub segment_size: u64,
    pub etag: String,
}

/// The current version of an object (immutable once committed; a new PUT replaces it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    /// The upload id it was committed from.
    pub version_id: u128,
    /// The bucket incarnation it belongs to.
    pub incarnation: u64,
    pub size: u64,
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub created_unix: u64,
    pub scheme: SchemeRecord,
    pub segment_size: u64,
    pub body: ObjectBody,
}

impl ObjectVersion {
    /// The object's layout (validated scheme and segment size).
    pub fn layout(&self) -> Result<ObjectLayout, CatalogError> {
        Ok(ObjectLayout::new(
            self.size,
            self.segment_size,
            self.scheme.scheme()?,
        )?)
    }

    /// Every shard of the version (none when inline).
    pub fn shards(&self) -> impl Iterator<Item = &ShardRecord> {
        self.segment_records().iter().flat_map(|s| s.shards.iter())
    }

    /// Every segment of the version in order (none when inline), whatever its body.
    pub fn segment_records(&self) -> &[SegmentRecord] {
        match &self.body {
            ObjectBody::Inline(_) => &[],
            ObjectBody::Segments(s) => s,
            ObjectBody::Parts(p) => &p.segments,
        }
    }

    /// [`Self::segment_records`], mutable (repair and moves rewrite a shard in place).
    pub fn segment_records_mut(&mut self) -> &mut [SegmentRecord] {
        match &mut self.body {
            ObjectBody::Inline(_) => &mut [],
            ObjectBody::Segments(s) => s,
            ObjectBody::Parts(p) => &mut p.segments,
        }
    }

    /// The parts of an object completed from a multipart upload.
    pub fn parts(&self) -> Option<&[PartExtent]> {
        match &self.body {
            ObjectBody::Parts(p) => Some(&p.parts),
            _ => None,
        }
    }

    /// The geometry of segment `index` (numbered across parts for a multipart object). For a
    /// part's segment, `object_offset` and `index` of the answer are relative to its part;
    /// its lengths (data, cell, shard) are what repair and moves need.
    pub fn segment_layout(&self, index: u64) -> Result<SegmentLayout, CatalogError> {
        let Some(parts) = self.parts() else {
            return Ok(self.layout()?.segment(index)?);
        };
        let scheme = self.scheme.scheme()?;
        let mut first = 0u64;
        for part in parts {
            let layout = ObjectLayout::new(part.size, part.segment_size, scheme)?;
            let count = layout.segment_count();
            if index < first + count {
                return Ok(layout.segment(index - first)?);
            }
            first += count;
        }
        Err(LayoutError::SegmentIndex {
            index,
            count: first,
        }
        .into())
    }
}

/// The k+m targets of one segment: (shard id, node) per shard index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTargets {
    pub shards: Vec<(u128, u128)>,
}

/// A pending upload (DESIGN §4 step 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub upload_id: u128,
    pub bucket: String,
    pub key: String,
    /// The bucket incarnation the upload was begun in.
    pub incarnation: u64,
    /// Declared object size.
    pub size: u64,
    pub scheme: SchemeRecord,
    pub segment_size: u64,
    /// Per segment, the targets; empty for an inline object.
    pub segments: Vec<SegmentTargets>,
    pub created_unix: u64,
    pub expires_unix: u64,
}

/// Why a shard is in the deletion queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GcReason {
    /// Its version was replaced by a newer commit.
    Replaced,
    /// Its object was deleted.
    Deleted,
    /// Its upload was aborted.
    Aborted,
    /// It was a target of a pending upload that was replaced (it may hold a partial write).
    TargetReplaced,
    /// Its upload expired.
    Expired,
    /// A rebuilt copy replaced it (it was on a down server, or corrupt).
    Repaired,
    /// Nothing references it: a rebuilt shard whose repair lost a race with a delete or an
    /// overwrite, or an orphan found on a server.
    Unreferenced,
    /// A copy on another server replaced it (a drain or a rebalance moved it).
    Moved,
}

/// A deletion-queue entry: delete `shard_id` on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcEntry {
    pub shard_id: u128,
    pub node: u128,
    pub reason: GcReason,
    pub queued_unix: u64,
}
