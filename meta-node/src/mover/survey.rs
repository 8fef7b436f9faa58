//! What the mover may move this round: read from the shard index of the partitions (the
//! answering node's replicas; a stale read only makes a move's conditional commit fail), never
//! from a scan of every object.
//!
//! - every server being drained: its whole index range is counted (shards and bytes left, for
//!   `NodeStatus`), and up to [`DRAIN_BATCH`] of its object shards are offered to the planner;
//! - while a rebalance runs, every up server fuller than the mean: up to [`BALANCE_BATCH`]
//!   object shards, from a cursor that moves on each round so shards that cannot move now do
//!   not hide the others.

use std::collections::{BTreeMap, HashMap, HashSet};

use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::{NodeId, SegmentPlacement, ShardLocation};

use crate::catalog::index::{self, RefKind, ShardRef};
use crate::catalog::ops::read_object;
use crate::catalog::records::{ObjectVersion, SchemeRecord, ShardRecord};
use crate::catalog::{CatalogError, index::UNPLACED};
use crate::raft::{KvReader, KvSpace};

/// Object shards of one draining server offered to the planner per round.
pub const DRAIN_BATCH: usize = 512;
/// Object shards of one over-full server offered to the planner per round.
pub const BALANCE_BATCH: usize = 256;
/// Index entries read per page.
const PAGE: usize = 1024;

/// One segment the planner may move a shard of; its position in [`Gathered::segments`] is the
/// planner's opaque segment key.
#[derive(Debug, Clone)]
pub struct SegmentRef {
    pub partition: u64,
    pub bucket: String,
    pub key: String,
    pub version_id: u128,
    pub segment: u64,
    pub shards: Vec<ShardRecord>,
    pub scheme: SchemeRecord,
    /// The segment's data bytes (for a fallback reconstruction's geometry).
    pub data_len: u64,
}

impl SegmentRef {
    pub fn names(&self) -> Result<(BucketName, ObjectKey), CatalogError> {
        Ok((
            BucketName::parse(&self.bucket)?,
            ObjectKey::parse(&self.key)?,
        ))
    }

    pub fn shard(&self, index: u8) -> Option<&ShardRecord> {
        self.shards.iter().find(|s| s.index == index)
    }
}

/// What is left on a draining server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    /// Object shards and their bytes.
    pub shards: u64,
    pub bytes: u64,
    /// Targets of pending uploads.
    pub uploads: u64,
}

/// The round's candidates.
#[derive(Debug, Default)]
pub struct Gathered {
    pub segments: Vec<SegmentRef>,
    /// Per draining server: shards and bytes still referenced there (bytes exact for the
    /// shards read this round, the rest at their average).
    pub left: HashMap<u128, Left>,
    seen: HashSet<(u128, u64)>,
}

impl Gathered {
    /// The planner's view of the segments.
    pub fn placements(&self) -> Vec<SegmentPlacement> {
        (0u64..)
            .zip(&self.segments)
            .map(|(id, s)| SegmentPlacement {
                segment: id,
                shards: s
                    .shards
                    .iter()
                    .filter(|sh| !sh.missing && sh.node != UNPLACED)
                    .map(|sh| ShardLocation {
                        index: sh.index,
                        node: NodeId::from_u128(sh.node),
                        bytes: sh.size,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Objects read this round, so a segment-rich object is decoded once.
type ObjectCache = BTreeMap<(u64, String, String), Option<ObjectVersion>>;

/// Gathers from `partitions` (`(partition, reader)` pairs): every server in `draining`, and
/// (while rebalancing) every server in `fuller` from its cursor in `cursors`, which is moved
/// on. Segments in `busy` (a move of theirs is in flight) are left out.
pub fn gather<S: KvSpace>(
    partitions: &[(u64, KvReader<S>)],
    draining: &[u128],
    fuller: &[u128],
    cursors: &mut HashMap<u128, (u64, Option<u128>)>,
    busy: &HashSet<(u128, u64)>,
) -> Result<Gathered, CatalogError> {
    let mut g = Gathered::default();
    let mut cache = ObjectCache::new();
    for &node in draining {
        let mut left = Left::default();
        let (mut sized, mut sized_bytes, mut offered) = (0u64, 0u64, 0usize);
        for (p, reader) in partitions {
            let mut after = None;
            loop {
                let page = index::on_node(reader, node, after, PAGE)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(*last);
                for (shard, r) in &page {
                    if r.kind != RefKind::Object {
                        left.uploads += 1;
                        continue;
                    }
                    left.shards += 1;
                    if offered >= DRAIN_BATCH {
                        continue;
                    }
                    if let Some(size) = g.offer(*p, reader, &mut cache, *shard, r, busy)? {
                        sized += 1;
                        sized_bytes += size;
                        offered += 1;
                    }
                }
                if page.len() < PAGE {
                    break;
                }
            }
        }
        let average = sized_bytes.checked_div(sized).unwrap_or(0);
        left.bytes = sized_bytes + left.shards.saturating_sub(sized) * average;
        g.left.insert(node, left);
    }
    for &node in fuller {
        let mut offered = 0usize;
        // Resume where the last round stopped: (partition, last shard id read).
        let (start_p, start_after) = cursors.get(&node).copied().unwrap_or((0, None));
        let order: Vec<usize> = {
            let first = partitions
                .iter()
                .position(|(p, _)| *p == start_p)
                .unwrap_or(0);
            (0..=partitions.len())
                .map(|i| (first + i) % partitions.len().max(1))
                .collect()
        };
        let mut cursor = (start_p, start_after);
        'parts: for (turn, &i) in order.iter().enumerate() {
            let Some((p, reader)) = partitions.get(i) else {
                break;
            };
            // The first partition is read from the cursor, and once more from its start at
            // the end of the circle.
            let mut after = if turn == 0 && *p == start_p {
                start_after
            } else {
                None
            };
            let last_turn = turn == order.len() - 1;
            loop {
                let page = index::on_node(reader, node, after, PAGE)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(*last);
                for (shard, r) in &page {
                    if last_turn && start_after.is_some_and(|s| *shard > s) {
                        break 'parts;
                    }
                    cursor = (*p, Some(*shard));
                    let before = g.segments.len();
                    if r.kind == RefKind::Object {
                        g.offer(*p, reader, &mut cache, *shard, r, busy)?;
                    }
                    if g.segments.len() > before {
                        offered += 1;
                        if offered >= BALANCE_BATCH {
                            break 'parts;
                        }
                    }
                }
                if page.len() < PAGE {
                    break;
                }
            }
            cursor = (partitions.get(i + 1).map_or(0, |(p, _)| *p), None);
        }
        cursors.insert(node, cursor);
    }
    Ok(g)
}

impl Gathered {
    /// Adds the segment of shard `shard` (referenced by `r`) unless it is busy or already
    /// here; the shard's size when it is current (the object still has it there).
    fn offer<S: KvSpace>(
        &mut self,
        p: u64,
        reader: &KvReader<S>,
        cache: &mut ObjectCache,
        shard: u128,
        r: &ShardRef,
        busy: &HashSet<(u128, u64)>,
    ) -> Result<Option<u64>, CatalogError> {
        let entry = (p, r.bucket.clone(), r.key.clone());
        if !cache.contains_key(&entry) {
            let object = match (BucketName::parse(&r.bucket), ObjectKey::parse(&r.key)) {
                (Ok(b), Ok(k)) => read_object(reader, &b, &k)?.map(|(o, _)| o),
                _ => None,
            };
            cache.insert(entry.clone(), object);
        }
        let Some(Some(object)) = cache.get(&entry) else {
            return Ok(None);
        };
        if object.version_id != r.version_id {
            return Ok(None);
        }
        let Some(seg) = object
            .segment_records()
            .iter()
            .find(|s| s.index == r.segment)
        else {
            return Ok(None);
        };
        let Some(record) = seg.shards.iter().find(|s| s.shard_id == shard) else {
            return Ok(None);
        };
        let size = record.size;
        let id = (object.version_id, seg.index);
        if busy.contains(&id) || !self.seen.insert(id) {
            return Ok(Some(size));
        }
        let data_len = object.segment_layout(seg.index)?.data_len();
        self.segments.push(SegmentRef {
            partition: p,
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version_id: object.version_id,
            segment: seg.index,
            shards: seg.shards.clone(),
            scheme: object.scheme.clone(),
            data_len,
        });
        Ok(Some(size))
    }
}
