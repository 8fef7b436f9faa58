//! The shard index (DESIGN §7, `docs/repair.md`): in every partition, one entry per shard that
//! a committed version or a pending upload of that partition references, keyed
//! `node (16 bytes BE) ‖ shard id (16 bytes BE)` → [`ShardRef`]. It is written by the same
//! Raft entry that creates or drops the reference, so it is never behind the catalogue:
//!
//! - repair finds a dead server's shards with one prefix range (no scan of every object);
//! - shards that were never stored (missing since the write, or lost) sit under the node
//!   [`UNPLACED`], so "every segment short of a shard" is one range too;
//! - orphan collection asks "does anything reference shard s on node n?" with one point read
//!   per partition. An upload's targets are indexed by BeginPut, before any byte of them is
//!   written; a repair's new shard is indexed by the repair's commit, which is refused once
//!   the repair has run for half the orphan grace period (`docs/repair.md`).

use serde::{Deserialize, Serialize};

use super::CatalogError;
use super::keys;
use super::ops::Prepared;
use super::records::{self, ObjectVersion, UploadRecord};
use crate::raft::{Key, KvReader, KvSpace, Write};

/// The "node" of shards that are on no server: missing since their write (DESIGN §4 step 3) or
/// whose target could not be placed. Node ids are random UUIDs; the nil UUID is never one
/// (registration refuses it).
pub const UNPLACED: u128 = 0;

/// What references a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefKind {
    /// A target of a pending upload (`version_id` is the upload id).
    Upload,
    /// A shard of the object's current version.
    Object,
}

/// One index entry: where the shard belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    pub kind: RefKind,
    pub bucket: String,
    pub key: String,
    pub version_id: u128,
    pub segment: u64,
    pub index: u8,
    /// When the reference was made.
    pub since_unix: u64,
}

/// The index key of `shard` on `node`.
pub fn key(node: u128, shard: u128) -> Key {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&node.to_be_bytes());
    k.extend_from_slice(&shard.to_be_bytes());
    Key::new(keys::SHARD_INDEX, k)
}

pub(crate) fn put(
    p: &mut Prepared,
    node: u128,
    shard: u128,
    r: &ShardRef,
) -> Result<(), CatalogError> {
    p.write(Write::Put(
        key(node, shard),
        records::encode("shard reference", r)?,
    ));
    Ok(())
}

pub(crate) fn delete(p: &mut Prepared, node: u128, shard: u128) {
    p.write(Write::Delete(key(node, shard)));
}

/// References for every placed target of `upload`.
pub(crate) fn index_upload(p: &mut Prepared, upload: &UploadRecord) -> Result<(), CatalogError> {
    for (segment, seg) in (0u64..).zip(&upload.segments) {
        for (index, (shard, node)) in seg.shards.iter().enumerate() {
            if *node == UNPLACED {
                continue;
            }
            let r = ShardRef {
                kind: RefKind::Upload,
                bucket: upload.bucket.clone(),
                key: upload.key.clone(),
                version_id: upload.upload_id,
                segment,
                index: u8::try_from(index).unwrap_or(u8::MAX),
                since_unix: upload.created_unix,
            };
            put(p, *node, *shard, &r)?;
        }
    }
    Ok(())
}

/// Drops the references of every target of `upload`.
pub(crate) fn unindex_upload(p: &mut Prepared, upload: &UploadRecord) {
    for seg in &upload.segments {
        for (shard, node) in &seg.shards {
            if *node != UNPLACED {
                delete(p, *node, *shard);
            }
        }
    }
}

/// References for every shard of a committed version (missing ones under [`UNPLACED`]).
pub(crate) fn index_version(
    p: &mut Prepared,
    v: &ObjectVersion,
    now_unix: u64,
) -> Result<(), CatalogError> {
    for seg in segments(v) {
        for s in &seg.shards {
            let r = ShardRef {
                kind: RefKind::Object,
                bucket: v.bucket.clone(),
                key: v.key.clone(),
                version_id: v.version_id,
                segment: seg.index,
                index: s.index,
                since_unix: now_unix,
            };
            put(p, holder(s), s.shard_id, &r)?;
        }
    }
    Ok(())
}

/// Drops the references of every shard of a version.
pub(crate) fn unindex_version(p: &mut Prepared, v: &ObjectVersion) {
    for s in v.shards() {
        delete(p, holder(s), s.shard_id);
    }
}

/// The index node of a shard record: its server, or [`UNPLACED`] when it is missing.
pub fn holder(s: &records::ShardRecord) -> u128 {
    if s.missing { UNPLACED } else { s.node }
}

fn segments(v: &ObjectVersion) -> &[records::SegmentRecord] {
    v.segment_records()
}

/// The reference of `shard` on `node`, if any.
pub fn get<S: KvSpace>(
    partition: &KvReader<S>,
    node: u128,
    shard: u128,
) -> Result<Option<ShardRef>, CatalogError> {
    partition
        .get(&key(node, shard))?
        .map(|v| records::decode("shard reference", &v.value))
        .transpose()
}

/// Up to `limit` references on `node`, in shard-id order, after `after`.
pub fn on_node<S: KvSpace>(
    partition: &KvReader<S>,
    node: u128,
    after: Option<u128>,
    limit: usize,
) -> Result<Vec<(u128, ShardRef)>, CatalogError> {
    let prefix = node.to_be_bytes();
    let after_key = after.map(|a| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&a.to_be_bytes());
        k
    });
    partition
        .list(keys::SHARD_INDEX, &prefix, after_key.as_deref(), limit)?
        .into_iter()
        .map(|(k, v)| {
            let shard = k
                .get(16..32)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(u128::from_be_bytes)
                .ok_or_else(|| CatalogError::Corrupt {
                    what: "shard reference key",
                    reason: format!("{} bytes, expected 32", k.len()),
                })?;
            Ok((shard, records::decode("shard reference", &v.value)?))
        })
        .collect()
}

/// How many references `node` has in `partition`, as (object shards, upload targets).
pub fn count_on_node<S: KvSpace>(
    partition: &KvReader<S>,
    node: u128,
) -> Result<(u64, u64), CatalogError> {
    let (mut objects, mut uploads) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = on_node(partition, node, after, COUNT_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (_, r) in &page {
            match r.kind {
                RefKind::Object => objects += 1,
                RefKind::Upload => uploads += 1,
            }
        }
        if page.len() < COUNT_PAGE {
            break;
        }
    }
    Ok((objects, uploads))
}

const COUNT_PAGE: usize = 4096;
