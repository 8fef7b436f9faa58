//! Repair in the catalogue (DESIGN §7, `docs/repair.md`): the queue of shards reported
//! corrupt, the survey that finds every segment short of shards without a full scan, and the
//! conditional commit of a rebuilt shard's new location.
//!
//! What needs repair is derived from durable facts, never from an in-memory task list, so a
//! new leader resumes exactly where a dead one stopped:
//! - shards missing since their write: the shard index under [`UNPLACED`];
//! - shards on servers that are down or removed: the shard index under each such server;
//! - shards reported corrupt (scrubber, readers): the `repair` tree.

use std::collections::{BTreeMap, HashMap, HashSet};

use dogfs_core::placement::NodeState;
use serde::{Deserialize, Serialize};

use super::index::{self, RefKind, ShardRef, UNPLACED};
use super::ops::{Check, Prepared, gc_put, read_object};
use super::records::{self, GcReason, ObjectVersion};
use super::{CatalogError, keys};
use crate::raft::{Condition, Key, KvReader, KvSpace, Write};
use dogfs_core::names::{BucketName, ObjectKey};

/// Why a shard is in the repair queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairReason {
    /// Its chunk server's scrubber or a read on the server found it corrupt.
    Corrupt,
    /// A client could not use it (checksum, size, not found).
    Reported,
}

/// A queued repair of one shard of the current version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairEntry {
    pub bucket: String,
    pub key: String,
    pub shard_id: u128,
    pub node: u128,
    pub reason: RepairReason,
    pub queued_unix: u64,
}

/// The repair-queue key of shard `index` of `segment` of version `version_id`.
pub fn entry_key(version_id: u128, segment: u64, index: u8) -> Key {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(&version_id.to_be_bytes());
    k.extend_from_slice(&segment.to_be_bytes());
    k.push(index);
    Key::new(keys::REPAIRS, k)
}

/// Queues shard `shard_id` of the current version of `bucket`/`key` for repair: `None` when
/// there is nothing to do (another version now, the shard is not in it, already missing or
/// already queued). Conditioned on the object being unchanged, so a report built on a stale
/// read never queues a shard of a replaced version.
#[allow(clippy::too_many_arguments)]
pub fn queue<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    version_id: u128,
    shard_id: u128,
    reason: RepairReason,
    now_unix: u64,
) -> Result<Option<Prepared>, CatalogError> {
    let Some((object, version)) = read_object(partition, bucket, key)? else {
        return Ok(None);
    };
    if object.version_id != version_id {
        return Ok(None);
    }
    let Some((segment, shard)) = find_shard(&object, shard_id) else {
        return Ok(None);
    };
    if shard.missing {
        return Ok(None);
    }
    let ekey = entry_key(version_id, segment, shard.index);
    if partition.get(&ekey)?.is_some() {
        return Ok(None);
    }
    let mut p = Prepared::new("queueing a repair");
    p.require(
        Condition::VersionEquals(keys::object(bucket, key), version),
        Check::Unchanged,
    );
    p.require(Condition::Absent(ekey.clone()), Check::Unchanged);
    let entry = RepairEntry {
        bucket: bucket.to_string(),
        key: key.to_string(),
        shard_id,
        node: shard.node,
        reason,
        queued_unix: now_unix,
    };
    p.write(Write::Put(ekey, records::encode("repair entry", &entry)?));
    Ok(Some(p))
}

fn find_shard(object: &ObjectVersion, shard_id: u128) -> Option<(u64, &records::ShardRecord)> {
    object.segment_records().iter().find_map(|seg| {
        seg.shards
            .iter()
            .find(|s| s.shard_id == shard_id)
            .map(|s| (seg.index, s))
    })
}

/// A rebuilt shard, ready to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub shard_id: u128,
    pub node: u128,
    pub crc32c: u32,
    pub size: u64,
}

/// Why a repair could not be committed; the rebuilt shard is then garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleRepair {
    #[error("the object was deleted")]
    Deleted,
    #[error("the object was overwritten by version {now:032x}")]
    Overwritten { now: u128 },
    #[error("segment {segment} shard {index} is now shard {now:032x}, not {was:032x}")]
    ShardMoved {
        segment: u64,
        index: u8,
        was: u128,
        now: u128,
    },
    #[error("segment {segment} shard {index} does not exist in the version")]
    NoSuchShard { segment: u64, index: u8 },
    #[error("the rebuilt shard's size {got} differs from the recorded {expected}")]
    Size { expected: u64, got: u64 },
    #[error("the rebuilt shard reuses the id of the shard it replaces")]
    SameShard,
    #[error("the rebuilt shard's server {node:032x} already holds a shard of the segment")]
    TargetInSegment { node: u128 },
}

/// Records a rebuilt shard in place of `old_shard` at (`segment`, `index`) of version
/// `version_id`: `Err(StaleRepair)` when the version is gone or the slot moved on (then
/// nothing may reference the rebuilt shard: queue it for deletion). Conditions: the object
/// unchanged since the read, so a repair racing a delete or an overwrite never resurrects data
/// or leaks shards. Writes: the version with the new location, the index moved, the old copy
/// (if it was stored anywhere) queued for deletion with reason `old_copy`, the repair-queue
/// entry removed. The mover commits its moves through here too (a move is a repair whose old
/// copy is still good).
#[allow(clippy::too_many_arguments)]
pub fn commit<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    version_id: u128,
    segment: u64,
    index: u8,
    old_shard: u128,
    new: Rebuilt,
    old_copy: GcReason,
    now_unix: u64,
) -> Result<Result<Prepared, StaleRepair>, CatalogError> {
    let Some((mut object, version)) = read_object(partition, bucket, key)? else {
        return Ok(Err(StaleRepair::Deleted));
    };
    if object.version_id != version_id {
        return Ok(Err(StaleRepair::Overwritten {
            now: object.version_id,
        }));
    }
    let Some(slot) = object
        .segment_records_mut()
        .iter_mut()
        .find(|s| s.index == segment)
        .and_then(|s| s.shards.iter_mut().find(|sh| sh.index == index))
    else {
        return Ok(Err(StaleRepair::NoSuchShard { segment, index }));
    };
    if slot.shard_id != old_shard {
        return Ok(Err(StaleRepair::ShardMoved {
            segment,
            index,
            was: old_shard,
            now: slot.shard_id,
        }));
    }
    if slot.size != new.size {
        return Ok(Err(StaleRepair::Size {
            expected: slot.size,
            got: new.size,
        }));
    }
    // The GC queue is keyed by shard id: the same id would queue the rebuilt shard itself.
    if new.shard_id == old_shard {
        return Ok(Err(StaleRepair::SameShard));
    }
    let old = slot.clone();
    // Never two shards of one segment on one server (the old copy's server may be reused:
    // its copy is the one being replaced).
    if let Some(seg) = object.segment_records().iter().find(|s| s.index == segment)
        && seg
            .shards
            .iter()
            .any(|s| s.index != index && !s.missing && s.node == new.node)
    {
        return Ok(Err(StaleRepair::TargetInSegment { node: new.node }));
    }
    let Some(slot) = object
        .segment_records_mut()
        .iter_mut()
        .find(|s| s.index == segment)
        .and_then(|s| s.shards.iter_mut().find(|sh| sh.index == index))
    else {
        return Ok(Err(StaleRepair::NoSuchShard { segment, index }));
    };
    slot.shard_id = new.shard_id;
    slot.node = new.node;
    slot.crc32c = new.crc32c;
    slot.missing = false;

    let mut p = Prepared::new("recording a repaired shard");
    let okey = keys::object(bucket, key);
    p.require(
        Condition::VersionEquals(okey.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Put(
        okey,
        records::encode("object version", &object)?,
    ));
    index::delete(&mut p, index::holder(&old), old.shard_id);
    index::put(
        &mut p,
        new.node,
        new.shard_id,
        &ShardRef {
            kind: RefKind::Object,
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version_id,
            segment,
            index,
            since_unix: now_unix,
        },
    )?;
    if !old.missing {
        // The old copy may still exist (a down server that returns, a corrupt file).
        gc_put(&mut p, old.shard_id, old.node, old_copy, now_unix)?;
    }
    p.write(Write::Delete(entry_key(version_id, segment, index)));
    Ok(Ok(p))
}

/// Queues a shard that nothing references for deletion (a rebuilt shard whose repair could not
/// be committed, an orphan found on a server).
pub fn discard(
    shard: u128,
    node: u128,
    reason: GcReason,
    now_unix: u64,
) -> Result<Prepared, CatalogError> {
    let mut p = Prepared::new("queueing an unreferenced shard for deletion");
    gc_put(&mut p, shard, node, reason, now_unix)?;
    Ok(p)
}

/// Removes a repair-queue entry that no longer applies (its version or shard is gone).
pub fn drop_entry(version_id: u128, segment: u64, index: u8) -> Prepared {
    let mut p = Prepared::new("dropping a stale repair entry");
    p.write(Write::Delete(entry_key(version_id, segment, index)));
    p
}

// ---------------------------------------------------------------------------------------------
// Survey: which segments are short of shards.

/// What the survey knows of a chunk server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    pub state: NodeState,
    /// When it was marked down (0 when unknown or not down).
    pub down_since_unix: u64,
}

/// The state of one shard of a surveyed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCondition {
    /// On a live server (up, suspect, draining), not reported corrupt.
    Good,
    /// Never stored, or lost: no copy anywhere.
    Missing,
    /// Reported corrupt; its server is live.
    Corrupt,
    /// Its server is down; `due` once it has been down for `repair_after`.
    Down { due: bool },
    /// Its server was removed, or is unknown to the registry.
    Gone,
}

impl ShardCondition {
    /// Readable now.
    pub fn readable(self) -> bool {
        matches!(self, ShardCondition::Good)
    }

    /// To be rebuilt now.
    pub fn due(self) -> bool {
        matches!(
            self,
            ShardCondition::Missing
                | ShardCondition::Corrupt
                | ShardCondition::Gone
                | ShardCondition::Down { due: true }
        )
    }
}

/// One segment short of shards.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradedSegment {
    pub bucket: String,
    pub key: String,
    pub version_id: u128,
    pub segment: u64,
    pub k: usize,
    /// Per shard, in index order, with its record.
    pub shards: Vec<(records::ShardRecord, ShardCondition)>,
    /// The segment's data bytes (for the rebuild's geometry).
    pub data_len: u64,
    pub scheme: records::SchemeRecord,
}

impl DegradedSegment {
    /// Shards readable now.
    pub fn shards_left(&self) -> usize {
        self.shards.iter().filter(|(_, c)| c.readable()).count()
    }

    /// Some shard is due for a rebuild.
    pub fn due(&self) -> bool {
        self.shards.iter().any(|(_, c)| c.due())
    }

    /// Fewer than k readable shards: nothing can be rebuilt until a server returns.
    pub fn unreadable(&self) -> bool {
        self.shards_left() < self.k
    }
}

/// Every segment of `partition` short of a shard, given the registry's view of the servers,
/// most urgent first (fewest readable shards, then due before waiting). Reads only the index
/// ranges of [`UNPLACED`] and of down or removed servers, and the repair queue: the
/// cost follows the damage, not the catalogue's size. Stale queue entries (their version or
/// shard gone) are returned in `stale` for [`drop_entry`].
pub fn survey<S: KvSpace>(
    partition: &KvReader<S>,
    nodes: &HashMap<u128, NodeHealth>,
    now_unix: u64,
    repair_after_secs: u64,
) -> Result<Survey, CatalogError> {
    // (bucket, key) → the segments touched, from every source of damage.
    let mut touched: BTreeMap<(String, String), HashSet<u64>> = BTreeMap::new();
    let mut scan: Vec<u128> = vec![UNPLACED];
    scan.extend(
        nodes
            .iter()
            .filter(|(n, h)| {
                **n != UNPLACED && matches!(h.state, NodeState::Down | NodeState::Removed)
            })
            .map(|(n, _)| *n),
    );
    for node in scan {
        let mut after = None;
        loop {
            let page = index::on_node(partition, node, after, SURVEY_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (_, r) in &page {
                if r.kind == RefKind::Object {
                    touched
                        .entry((r.bucket.clone(), r.key.clone()))
                        .or_default()
                        .insert(r.segment);
                }
            }
            if page.len() < SURVEY_PAGE {
                break;
            }
        }
    }
    let mut corrupt: HashSet<(u128, u64, u8)> = HashSet::new();
    let mut queued: Vec<(Vec<u8>, RepairEntry)> = Vec::new();
    for (k, v) in partition.list(keys::REPAIRS, b"", None, usize::MAX)? {
        let e: RepairEntry = records::decode("repair entry", &v.value)?;
        queued.push((k, e));
    }
    for (k, e) in &queued {
        let Some((version_id, segment, index)) = parse_entry_key(k) else {
            continue;
        };
        corrupt.insert((version_id, segment, index));
        touched
            .entry((e.bucket.clone(), e.key.clone()))
            .or_default()
            .insert(segment);
    }

    let mut out = Survey::default();
    let mut live_entries: HashSet<(u128, u64, u8)> = HashSet::new();
    for ((bucket, key), segments) in touched {
        let (Ok(b), Ok(k)) = (BucketName::parse(&bucket), ObjectKey::parse(&key)) else {
            continue;
        };
        let Some((object, _)) = read_object(partition, &b, &k)? else {
            continue;
        };
        let segs = object.segment_records();
        for seg in segs.iter().filter(|s| segments.contains(&s.index)) {
            let geometry = object.segment_layout(seg.index)?;
            let shards: Vec<_> = seg
                .shards
                .iter()
                .map(|s| {
                    let is_corrupt = corrupt.contains(&(object.version_id, seg.index, s.index));
                    if is_corrupt {
                        live_entries.insert((object.version_id, seg.index, s.index));
                    }
                    (
                        s.clone(),
                        condition(s, is_corrupt, nodes, now_unix, repair_after_secs),
                    )
                })
                .collect();
            if shards.iter().all(|(_, c)| *c == ShardCondition::Good) {
                continue;
            }
            out.segments.push(DegradedSegment {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                version_id: object.version_id,
                segment: seg.index,
                k: geometry.k(),
                shards,
                data_len: geometry.data_len(),
                scheme: object.scheme.clone(),
            });
        }
    }
    for (k, _) in &queued {
        if let Some(id) = parse_entry_key(k)
            && !live_entries.contains(&id)
        {
            out.stale.push(id);
        }
    }
    out.segments.sort_by_key(|s| (s.shards_left(), !s.due()));
    Ok(out)
}

/// Index entries read per page while surveying.
const SURVEY_PAGE: usize = 1024;

/// The survey's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    pub segments: Vec<DegradedSegment>,
    /// Repair-queue entries whose version or shard no longer exists.
    pub stale: Vec<(u128, u64, u8)>,
}

fn condition(
    s: &records::ShardRecord,
    corrupt: bool,
    nodes: &HashMap<u128, NodeHealth>,
    now_unix: u64,
    repair_after_secs: u64,
) -> ShardCondition {
    if s.missing {
        return ShardCondition::Missing;
    }
    match nodes.get(&s.node) {
        None => ShardCondition::Gone,
        Some(h) => match h.state {
            NodeState::Removed => ShardCondition::Gone,
            NodeState::Down => ShardCondition::Down {
                due: h.down_since_unix.saturating_add(repair_after_secs) <= now_unix,
            },
            _ if corrupt => ShardCondition::Corrupt,
            _ => ShardCondition::Good,
        },
    }
}

fn parse_entry_key(k: &[u8]) -> Option<(u128, u64, u8)> {
    if k.len() != 25 {
        return None;
    }
    let v = u128::from_be_bytes(k.get(0..16)?.try_into().ok()?);
    let s = u64::from_be_bytes(k.get(16..24)?.try_into().ok()?);
    Some((v, s, *k.get(24)?))
}
