//! Builders of catalogue commands and the catalogue's point reads.
//!
//! A builder reads what it needs through a [`KvReader`] (at the leader, after a read index),
//! validates the request against it and returns a [`Prepared`] command, or an error with
//! nothing proposed. Builders are deterministic: ids, times and placements come in the request.
//! The command's conditions re-check, at apply time, everything the decision rested on.

use std::collections::{BTreeMap, BTreeSet};

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::NodeId;
use dogfs_core::scheme::ErasureScheme;

use super::index::{self, UNPLACED};
use super::records::{self, SegmentTargets};
use super::{
    BucketRecord, CatalogError, GcEntry, GcReason, ObjectBody, ObjectVersion, SchemeRecord,
    SegmentRecord, ShardRecord, UploadRecord, keys,
};
use crate::raft::{Command, Condition, KvReader, KvSpace, Response, Write};

/// Largest object stored inline in its record (DESIGN §3).
pub const DEFAULT_INLINE_MAX: u64 = 4 * 1024;

/// What a failed condition of a [`Prepared`] command means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `Absent(bucket)`: the bucket exists.
    BucketAbsent { bucket: String },
    /// `Absent(seal)`: the bucket is being (or was) deleted.
    NotSealed { bucket: String },
    /// `Absent(upload)`: the upload id is taken.
    UploadIdFree { upload: u128 },
    /// A `VersionEquals`/`Absent` on something read: it changed since; retry.
    Unchanged,
}

/// A command ready to propose, and how to read its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What the command does, for messages.
    pub operation: &'static str,
    pub command: Command,
    /// One per condition of `command`, same order.
    pub checks: Vec<Check>,
}

impl Prepared {
    pub(crate) fn new(operation: &'static str) -> Prepared {
        Prepared {
            operation,
            command: Command::default(),
            checks: Vec::new(),
        }
    }

    pub(crate) fn require(&mut self, condition: Condition, check: Check) {
        self.command.conditions.push(condition);
        self.checks.push(check);
    }

    pub(crate) fn write(&mut self, write: Write) {
        self.command.writes.push(write);
    }

    /// The typed result of applying the command: the entry's log index (the new version of
    /// every key written), or the error the failed condition stands for.
    pub fn interpret(&self, response: &Response) -> Result<u64, CatalogError> {
        match response {
            Response::Applied { version } => Ok(*version),
            Response::ConditionFailed { index } => Err(match self.checks.get(*index) {
                Some(Check::BucketAbsent { bucket }) => CatalogError::BucketExists {
                    bucket: bucket.clone(),
                },
                Some(Check::NotSealed { bucket }) => CatalogError::BucketBusy {
                    bucket: bucket.clone(),
                },
                Some(Check::UploadIdFree { upload }) => {
                    CatalogError::UploadIdInUse { upload: *upload }
                }
                Some(Check::Unchanged) => CatalogError::Conflict {
                    operation: self.operation,
                },
                None => CatalogError::UnexpectedResponse {
                    operation: self.operation,
                    response: format!("{response:?}"),
                },
            }),
            Response::Invalid { reason } => Err(CatalogError::Rejected {
                reason: reason.clone(),
            }),
            Response::Internal | Response::Batch(_) => Err(CatalogError::UnexpectedResponse {
                operation: self.operation,
                response: format!("{response:?}"),
            }),
        }
    }
}

/// "Absent" if nothing was read, else "VersionEquals(what was read)".
pub(crate) fn unchanged(key: crate::raft::Key, version: Option<u64>) -> Condition {
    match version {
        Some(v) => Condition::VersionEquals(key, v),
        None => Condition::Absent(key),
    }
}

// ---------------------------------------------------------------------------------------------
// Buckets (system group, plus seals in every partition for deletion).

/// CreateBucket: `Absent(bucket)` → put the record. Its incarnation is the returned version.
pub fn create_bucket(name: &BucketName, now_unix: u64) -> Result<Prepared, CatalogError> {
    let mut p = Prepared::new("creating a bucket");
    let key = keys::bucket(name);
    p.require(
        Condition::Absent(key.clone()),
        Check::BucketAbsent {
            bucket: name.to_string(),
        },
    );
    let record = BucketRecord {
        name: name.to_string(),
        created_unix: now_unix,
    };
    p.write(Write::Put(key, records::encode("bucket record", &record)?));
    Ok(p)
}

/// The bucket's record and incarnation (the version of the entry that created it).
pub fn get_bucket<S: KvSpace>(
    system: &KvReader<S>,
    name: &BucketName,
) -> Result<(BucketRecord, u64), CatalogError> {
    match system.get(&keys::bucket(name))? {
        Some(v) => Ok((records::decode("bucket record", &v.value)?, v.version)),
        None => Err(CatalogError::NoSuchBucket {
            bucket: name.to_string(),
        }),
    }
}

/// Up to `limit` buckets after `start_after`, in name order.
pub fn list_buckets<S: KvSpace>(
    system: &KvReader<S>,
    start_after: Option<&BucketName>,
    limit: usize,
) -> Result<Vec<BucketRecord>, CatalogError> {
    let after = start_after.map(|b| b.as_str().as_bytes());
    system
        .list(keys::BUCKETS, b"", after, limit)?
        .into_iter()
        .map(|(_, v)| records::decode("bucket record", &v.value))
        .collect()
}

/// DeleteBucket step 1, in every partition: seal the incarnation, so no upload of it begins or
/// commits there any more. Seals are never removed (see `docs/catalog.md`).
pub fn seal_bucket(name: &BucketName, incarnation: u64) -> Prepared {
    let mut p = Prepared::new("sealing a bucket");
    p.write(Write::Put(keys::seal(name, incarnation), Vec::new()));
    p
}

/// DeleteBucket step 2, in every partition after its seal applied: the bucket holds no object
/// there.
pub fn check_partition_empty<S: KvSpace>(
    partition: &KvReader<S>,
    partition_id: u64,
    name: &BucketName,
) -> Result<(), CatalogError> {
    let prefix = keys::object_prefix(name);
    match partition.list(keys::OBJECTS, &prefix, None, 1)?.first() {
        None => Ok(()),
        Some((k, _)) => Err(CatalogError::BucketNotEmpty {
            bucket: name.to_string(),
            partition: partition_id,
            key: String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned(),
        }),
    }
}

/// DeleteBucket, rollback when some partition is not empty: remove the seals again.
pub fn unseal_bucket(name: &BucketName, incarnation: u64) -> Prepared {
    let mut p = Prepared::new("unsealing a bucket");
    p.write(Write::Delete(keys::seal(name, incarnation)));
    p
}

/// DeleteBucket step 3, in the system group once every partition is sealed and empty: delete
/// the record if it is still that incarnation.
pub fn delete_bucket_record(name: &BucketName, incarnation: u64) -> Prepared {
    let mut p = Prepared::new("deleting a bucket");
    let key = keys::bucket(name);
    p.require(
        Condition::VersionEquals(key.clone(), incarnation),
        Check::Unchanged,
    );
    p.write(Write::Delete(key));
    p
}

// ---------------------------------------------------------------------------------------------
// Uploads.

/// Per segment, the k+m (shard id, chunk server) targets chosen by placement; `None` for a
/// shard no eligible server could take (written as missing, DESIGN §4 step 1).
pub type Targets = Vec<Vec<(ShardId, Option<NodeId>)>>;

/// A BeginPut request, with the ids and targets the leader chose.
#[derive(Debug, Clone)]
pub struct BeginPut {
    pub upload_id: u128,
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub size: u64,
    pub scheme: ErasureScheme,
    pub segment_size: u64,
    /// Empty for an inline object (size ≤ inline_max).
    pub targets: Targets,
    pub now_unix: u64,
    pub ttl_secs: u64,
}

/// BeginPut in the key's partition, for bucket incarnation `incarnation` (from
/// [`get_bucket`]): `Absent(seal)`, `Absent(upload)` → put the upload record.
pub fn begin_put(
    req: &BeginPut,
    incarnation: u64,
    inline_max: u64,
) -> Result<Prepared, CatalogError> {
    let layout = ObjectLayout::new(req.size, req.segment_size, req.scheme)?;
    let mut segments = Vec::with_capacity(req.targets.len());
    if req.size <= inline_max {
        if !req.targets.is_empty() {
            return Err(CatalogError::InlineWithTargets {
                size: req.size,
                inline_max,
            });
        }
    } else {
        let expected = layout.segment_count();
        if req.targets.len() as u64 != expected {
            return Err(CatalogError::TargetSegments {
                size: req.size,
                segment_size: req.segment_size,
                expected,
                got: req.targets.len(),
            });
        }
        let mut shard_ids = BTreeSet::new();
        for (segment, targets) in (0u64..).zip(&req.targets) {
            if targets.len() != req.scheme.total() {
                return Err(CatalogError::TargetCount {
                    segment,
                    expected: req.scheme.total(),
                    got: targets.len(),
                });
            }
            let mut nodes = BTreeSet::new();
            for (shard, node) in targets {
                if node.is_some_and(|n| n.as_u128() == UNPLACED) {
                    return Err(CatalogError::DuplicateTargetNode {
                        segment,
                        node: "the nil node id".into(),
                    });
                }
                if let Some(node) = node
                    && !nodes.insert(*node)
                {
                    return Err(CatalogError::DuplicateTargetNode {
                        segment,
                        node: node.to_string(),
                    });
                }
                if !shard_ids.insert(*shard) {
                    return Err(CatalogError::DuplicateShardId {
                        shard: shard.to_string(),
                    });
                }
            }
            segments.push(SegmentTargets {
                shards: targets
                    .iter()
                    .map(|(s, n)| (s.as_u128(), n.map_or(UNPLACED, NodeId::as_u128)))
                    .collect(),
            });
        }
    }
    let record = UploadRecord {
        upload_id: req.upload_id,
        bucket: req.bucket.to_string(),
        key: req.key.to_string(),
        incarnation,
        size: req.size,
        scheme: SchemeRecord::from_scheme(&req.scheme),
        segment_size: req.segment_size,
        segments,
        created_unix: req.now_unix,
        expires_unix: req.now_unix.saturating_add(req.ttl_secs),
    };
    let mut p = Prepared::new("beginning an upload");
    p.require(
        Condition::Absent(keys::seal(&req.bucket, incarnation)),
        Check::NotSealed {
            bucket: req.bucket.to_string(),
        },
    );
    let ukey = keys::upload(req.upload_id);
    p.require(
        Condition::Absent(ukey.clone()),
        Check::UploadIdFree {
            upload: req.upload_id,
        },
    );
    p.write(Write::Put(ukey, records::encode("upload record", &record)?));
    index::index_upload(&mut p, &record)?;
    Ok(p)
}

/// A pending upload and its version.
pub fn get_upload<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
) -> Result<Option<(UploadRecord, u64)>, CatalogError> {
    partition
        .get(&keys::upload(upload_id))?
        .map(|v| Ok((records::decode("upload record", &v.value)?, v.version)))
        .transpose()
}

/// What the client reports for one shard at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardReport {
    /// Stored: CRC32C of the shard computed by the client and the one the chunk server
    /// acknowledged; bytes stored.
    Stored {
        client_crc32c: u32,
        server_crc32c: u32,
        size: u64,
    },
    /// No server could take it (DESIGN §4 step 3); repair fills it.
    Missing,
}

/// A CommitObject request.
#[derive(Debug, Clone)]
pub struct CommitObject {
    pub upload_id: u128,
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub size: u64,
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    /// Per segment, one report per shard index (empty for inline objects).
    pub segments: Vec<Vec<ShardReport>>,
    /// The data of an inline object.
    pub inline: Option<Vec<u8>>,
    pub now_unix: u64,
    /// The write quorum: the fewest shards of a segment that must be stored (the cluster's
    /// `min_write_shards`, clamped per scheme to k+1..=k+m by [`write_quorum`]).
    pub min_write_shards: usize,
}

/// The write quorum of a segment of `total` = k+m shards for the cluster setting `setting`
/// (0 = the default, k+1): at least k+1, so a freshly written segment survives one more loss,
/// and at most k+m.
pub fn write_quorum(setting: usize, k: usize, total: usize) -> usize {
    let floor = (k + 1).min(total);
    if setting == 0 {
        floor
    } else {
        setting.clamp(floor, total)
    }
}

/// The current version of an object and its version (log index), if any.
pub fn read_object<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
) -> Result<Option<(ObjectVersion, u64)>, CatalogError> {
    partition
        .get(&keys::object(bucket, key))?
        .map(|v| Ok((records::decode("object version", &v.value)?, v.version)))
        .transpose()
}

/// The current version of an object.
pub fn get_object<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
) -> Result<ObjectVersion, CatalogError> {
    read_object(partition, bucket, key)?
        .map(|(o, _)| o)
        .ok_or_else(|| CatalogError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
}

/// HeadObject: the version without its inline data (segments kept: they are the layout).
pub fn head_object<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
) -> Result<ObjectVersion, CatalogError> {
    let mut o = get_object(partition, bucket, key)?;
    if let ObjectBody::Inline(data) = &mut o.body {
        data.clear();
    }
    Ok(o)
}

pub(crate) fn gc_put(
    p: &mut Prepared,
    shard: u128,
    node: u128,
    reason: GcReason,
    now: u64,
) -> Result<(), CatalogError> {
    let entry = GcEntry {
        shard_id: shard,
        node,
        reason,
        queued_unix: now,
    };
    p.write(Write::Put(
        keys::gc(ShardId::from_u128(shard)),
        records::encode("gc entry", &entry)?,
    ));
    Ok(())
}

pub(crate) fn queue_version(
    p: &mut Prepared,
    old: &ObjectVersion,
    reason: GcReason,
    now: u64,
) -> Result<(), CatalogError> {
    for s in old.shards().filter(|s| !s.missing) {
        gc_put(p, s.shard_id, s.node, reason, now)?;
    }
    Ok(())
}

/// The upload for a commit/abort, or the precise reason there is none.
fn live_upload<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
    bucket: &BucketName,
    key: &ObjectKey,
) -> Result<(UploadRecord, u64), CatalogError> {
    match get_upload(partition, upload_id)? {
        Some((u, v)) if u.bucket == bucket.as_str() && u.key == key.as_str() => Ok((u, v)),
        Some(_) => Err(CatalogError::NoSuchUpload { upload: upload_id }),
        None => match read_object(partition, bucket, key)? {
            Some((o, _)) if o.version_id == upload_id => {
                Err(CatalogError::UploadAlreadyCommitted {
                    upload: upload_id,
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
            _ => Err(CatalogError::NoSuchUpload { upload: upload_id }),
        },
    }
}

/// CommitObject in the key's partition. Conditions: the upload unchanged, the bucket incarnation
/// not sealed, the object's current version unchanged (so a concurrent commit is detected).
/// Writes: the new version, the upload's removal, the replaced version's shards into the
/// deletion queue — one atomic entry.
pub fn commit_object<S: KvSpace>(
    partition: &KvReader<S>,
    req: &CommitObject,
    inline_max: u64,
) -> Result<Prepared, CatalogError> {
    let upload_id = req.upload_id;
    let (upload, upload_version) = live_upload(partition, upload_id, &req.bucket, &req.key)?;
    // A part's upload becomes a part (multipart::complete_part), never an object by itself. The
    // link is written with the upload, so reading it here suffices.
    if partition.get(&keys::part_link(upload_id))?.is_some() {
        return Err(CatalogError::PartUploadCommit { upload: upload_id });
    }
    if req.now_unix > upload.expires_unix {
        return Err(CatalogError::UploadExpired {
            upload: upload_id,
            expired_unix: upload.expires_unix,
            now_unix: req.now_unix,
        });
    }
    if req.size != upload.size {
        return Err(CatalogError::SizeMismatch {
            upload: upload_id,
            declared: upload.size,
            committed: req.size,
        });
    }
    let scheme = upload.scheme.scheme()?;
    let layout = ObjectLayout::new(upload.size, upload.segment_size, scheme)?;
    let body = if upload.size <= inline_max {
        let Some(data) = &req.inline else {
            return Err(CatalogError::InlineDataMissing {
                upload: upload_id,
                size: upload.size,
                inline_max,
            });
        };
        if data.len() as u64 != upload.size {
            return Err(CatalogError::InlineLength {
                upload: upload_id,
                declared: upload.size,
                got: data.len(),
            });
        }
        ObjectBody::Inline(data.clone())
    } else {
        if req.inline.is_some() {
            return Err(CatalogError::InlineTooLarge {
                upload: upload_id,
                size: upload.size,
                inline_max,
            });
        }
        ObjectBody::Segments(segment_records(
            &upload,
            &layout,
            &req.segments,
            req.min_write_shards,
        )?)
    };
    let current = read_object(partition, &req.bucket, &req.key)?;
    let version = ObjectVersion {
        bucket: upload.bucket.clone(),
        key: upload.key.clone(),
        version_id: upload_id,
        incarnation: upload.incarnation,
        size: upload.size,
        etag: req.etag.clone(),
        content_type: req.content_type.clone(),
        user_metadata: req.user_metadata.clone(),
        created_unix: req.now_unix,
        scheme: upload.scheme.clone(),
        segment_size: upload.segment_size,
        body,
    };
    let mut p = Prepared::new("committing an object");
    let ukey = keys::upload(upload_id);
    let okey = keys::object(&req.bucket, &req.key);
    p.require(
        Condition::VersionEquals(ukey.clone(), upload_version),
        Check::Unchanged,
    );
    p.require(
        Condition::Absent(keys::seal(&req.bucket, upload.incarnation)),
        Check::NotSealed {
            bucket: req.bucket.to_string(),
        },
    );
    p.require(
        unchanged(okey.clone(), current.as_ref().map(|(_, v)| *v)),
        Check::Unchanged,
    );
    p.write(Write::Put(
        okey,
        records::encode("object version", &version)?,
    ));
    p.write(Write::Delete(ukey));
    if let Some((old, _)) = &current {
        index::unindex_version(&mut p, old);
        queue_version(&mut p, old, GcReason::Replaced, req.now_unix)?;
    }
    // After the old version's references are gone: the upload's targets become the new
    // version's (a missing one moves under UNPLACED; its partial file, if any, is an orphan).
    index::unindex_upload(&mut p, &upload);
    index::index_version(&mut p, &version, req.now_unix)?;
    Ok(p)
}

/// Checks the reports against the upload's targets and layout (DESIGN §4.3: per segment at
/// least the write quorum stored, k+1 by default) and builds the segment records.
pub(crate) fn segment_records(
    upload: &UploadRecord,
    layout: &ObjectLayout,
    reports: &[Vec<ShardReport>],
    min_write_shards: usize,
) -> Result<Vec<SegmentRecord>, CatalogError> {
    let expected = layout.segment_count();
    if reports.len() as u64 != expected || upload.segments.len() as u64 != expected {
        return Err(CatalogError::SegmentCount {
            upload: upload.upload_id,
            expected,
            got: reports.len(),
        });
    }
    let mut out = Vec::with_capacity(reports.len());
    for ((seg, targets), shards) in layout.segments().zip(&upload.segments).zip(reports) {
        let segment = seg.index();
        let total = seg.total_shards();
        if shards.len() < total {
            return Err(CatalogError::ChecksumMissing {
                segment,
                shard: shards.len(),
            });
        }
        if shards.len() > total || targets.shards.len() != total {
            return Err(CatalogError::ExtraShards {
                segment,
                expected: total,
                got: shards.len(),
            });
        }
        let allowed = total - write_quorum(min_write_shards, seg.k(), total);
        let missing = shards
            .iter()
            .filter(|s| **s == ShardReport::Missing)
            .count();
        if missing > allowed {
            return Err(CatalogError::TooManyMissing {
                segment,
                missing,
                allowed,
            });
        }
        let mut recs = Vec::with_capacity(total);
        for (index, (report, (shard_id, node))) in shards.iter().zip(&targets.shards).enumerate() {
            let (crc32c, size, missing) = match *report {
                ShardReport::Stored {
                    client_crc32c,
                    server_crc32c,
                    size,
                } => {
                    if *node == UNPLACED {
                        return Err(CatalogError::UnplacedShardStored {
                            segment,
                            shard: index,
                        });
                    }
                    if client_crc32c != server_crc32c {
                        return Err(CatalogError::ChecksumMismatch {
                            segment,
                            shard: index,
                            client: client_crc32c,
                            server: server_crc32c,
                        });
                    }
                    if size != seg.shard_len() {
                        return Err(CatalogError::ShardSize {
                            segment,
                            shard: index,
                            expected: seg.shard_len(),
                            got: size,
                        });
                    }
                    (client_crc32c, size, false)
                }
                ShardReport::Missing => (0, seg.shard_len(), true),
            };
            recs.push(ShardRecord {
                // total ≤ 32.
                index: u8::try_from(index).unwrap_or(u8::MAX),
                shard_id: *shard_id,
                node: *node,
                crc32c,
                size,
                missing,
            });
        }
        out.push(SegmentRecord {
            index: segment,
            shards: recs,
        });
    }
    Ok(out)
}

/// ReplaceTarget (DESIGN §4 step 3): shard `shard` of segment `segment` of a pending upload
/// goes to `new` (from `placement::replacement`) instead; the old target is queued for
/// deletion, since it may hold a partial write. The upload must be unchanged since the read.
#[allow(clippy::too_many_arguments)]
pub fn replace_target<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
    bucket: &BucketName,
    key: &ObjectKey,
    segment: u64,
    shard: usize,
    new: (ShardId, NodeId),
    now_unix: u64,
) -> Result<Prepared, CatalogError> {
    let (mut upload, version) = live_upload(partition, upload_id, bucket, key)?;
    if new.1.as_u128() == UNPLACED {
        return Err(CatalogError::DuplicateTargetNode {
            segment,
            node: "the nil node id".into(),
        });
    }
    let segments = upload.segments.len();
    let (new_shard, new_node) = (new.0.as_u128(), new.1.as_u128());
    if upload
        .segments
        .iter()
        .flat_map(|s| &s.shards)
        .any(|(id, _)| *id == new_shard)
    {
        return Err(CatalogError::DuplicateShardId {
            shard: new.0.to_string(),
        });
    }
    let targets = usize::try_from(segment)
        .ok()
        .and_then(|i| upload.segments.get_mut(i))
        .ok_or(CatalogError::NoSuchTarget {
            upload: upload_id,
            segment,
            shard,
            segments,
        })?;
    if targets.shards.iter().any(|(_, n)| *n == new_node) {
        return Err(CatalogError::DuplicateTargetNode {
            segment,
            node: new.1.to_string(),
        });
    }
    let slot = targets
        .shards
        .get_mut(shard)
        .ok_or(CatalogError::NoSuchTarget {
            upload: upload_id,
            segment,
            shard,
            segments,
        })?;
    let (old_shard, old_node) = std::mem::replace(slot, (new_shard, new_node));
    let mut p = Prepared::new("replacing a target");
    let ukey = keys::upload(upload_id);
    p.require(
        Condition::VersionEquals(ukey.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Put(ukey, records::encode("upload record", &upload)?));
    if old_node != UNPLACED {
        index::delete(&mut p, old_node, old_shard);
        gc_put(
            &mut p,
            old_shard,
            old_node,
            GcReason::TargetReplaced,
            now_unix,
        )?;
    }
    index::put(
        &mut p,
        new_node,
        new_shard,
        &index::ShardRef {
            kind: index::RefKind::Upload,
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            version_id: upload_id,
            segment,
            index: u8::try_from(shard).unwrap_or(u8::MAX),
            since_unix: now_unix,
        },
    )?;
    Ok(p)
}

/// AbortUpload: remove the upload and queue all its targets (any may hold a shard).
pub fn abort_upload<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
    bucket: &BucketName,
    key: &ObjectKey,
    now_unix: u64,
) -> Result<Prepared, CatalogError> {
    let (upload, version) = live_upload(partition, upload_id, bucket, key)?;
    let mut p = Prepared::new("aborting an upload");
    let ukey = keys::upload(upload_id);
    p.require(
        Condition::VersionEquals(ukey.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Delete(ukey));
    // A part's upload has a link to its multipart upload (none for others: a no-op).
    p.write(Write::Delete(keys::part_link(upload_id)));
    index::unindex_upload(&mut p, &upload);
    queue_targets(&mut p, &upload, GcReason::Aborted, now_unix)?;
    Ok(p)
}

fn queue_targets(
    p: &mut Prepared,
    upload: &UploadRecord,
    reason: GcReason,
    now: u64,
) -> Result<(), CatalogError> {
    for seg in &upload.segments {
        for (shard, node) in seg.shards.iter().filter(|(_, n)| *n != UNPLACED) {
            gc_put(p, *shard, *node, reason, now)?;
        }
    }
    Ok(())
}

/// Expiry: up to `limit` uploads whose expiry is before `now_unix`, removed with their targets
/// queued; `None` when there is nothing to do.
pub fn expire_uploads<S: KvSpace>(
    partition: &KvReader<S>,
    now_unix: u64,
    limit: usize,
) -> Result<Option<Prepared>, CatalogError> {
    let mut p = Prepared::new("expiring uploads");
    let mut found = 0;
    for (k, v) in partition.list(keys::UPLOADS, b"", None, usize::MAX)? {
        if found >= limit {
            break;
        }
        let upload: UploadRecord = records::decode("upload record", &v.value)?;
        if upload.expires_unix >= now_unix {
            continue;
        }
        found += 1;
        let key = crate::raft::Key::new(keys::UPLOADS, k);
        p.require(
            Condition::VersionEquals(key.clone(), v.version),
            Check::Unchanged,
        );
        p.write(Write::Delete(key));
        p.write(Write::Delete(keys::part_link(upload.upload_id)));
        index::unindex_upload(&mut p, &upload);
        queue_targets(&mut p, &upload, GcReason::Expired, now_unix)?;
    }
    Ok((found > 0).then_some(p))
}

/// DeleteObject: remove the current version (the tombstone is its absence) and queue its
/// shards; `None` when there is no such object (S3: deleting a missing key succeeds).
pub fn delete_object<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    now_unix: u64,
) -> Result<Option<Prepared>, CatalogError> {
    let Some((old, version)) = read_object(partition, bucket, key)? else {
        return Ok(None);
    };
    let mut p = Prepared::new("deleting an object");
    let okey = keys::object(bucket, key);
    p.require(
        Condition::VersionEquals(okey.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Delete(okey));
    index::unindex_version(&mut p, &old);
    queue_version(&mut p, &old, GcReason::Deleted, now_unix)?;
    Ok(Some(p))
}

/// Up to `limit` deletion-queue entries, in shard-id order.
pub fn gc_pending<S: KvSpace>(
    partition: &KvReader<S>,
    limit: usize,
) -> Result<Vec<GcEntry>, CatalogError> {
    partition
        .list(keys::GC, b"", None, limit)?
        .into_iter()
        .map(|(_, v)| records::decode("gc entry", &v.value))
        .collect()
}

/// Removes deletion-queue entries whose shards were deleted.
pub fn gc_done(shards: &[ShardId]) -> Prepared {
    let mut p = Prepared::new("completing garbage collection");
    for s in shards {
        p.write(Write::Delete(keys::gc(*s)));
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Small objects in one entry.

/// A PutInlineObject request, with the version id and time the leader chose.
#[derive(Debug, Clone)]
pub struct PutInline {
    /// The new version's id (drawn like an upload id).
    pub version_id: u128,
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub data: Vec<u8>,
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    /// Recorded in the version (the cluster default), so a later read has a layout.
    pub scheme: ErasureScheme,
    pub segment_size: u64,
    pub now_unix: u64,
}

/// PutInlineObject in the key's partition, for bucket incarnation `incarnation`: one entry
/// writes the inline version and queues the replaced version's shards. Conditions: the
/// incarnation not sealed, the current version unchanged (or still absent).
pub fn put_inline<S: KvSpace>(
    partition: &KvReader<S>,
    req: &PutInline,
    incarnation: u64,
    inline_max: u64,
) -> Result<Prepared, CatalogError> {
    let size = req.data.len() as u64;
    if size > inline_max {
        return Err(CatalogError::InlineObjectTooLarge { size, inline_max });
    }
    // Validates the scheme and segment size like a BeginPut would.
    ObjectLayout::new(size, req.segment_size, req.scheme)?;
    let current = read_object(partition, &req.bucket, &req.key)?;
    let version = ObjectVersion {
        bucket: req.bucket.to_string(),
        key: req.key.to_string(),
        version_id: req.version_id,
        incarnation,
        size,
        etag: req.etag.clone(),
        content_type: req.content_type.clone(),
        user_metadata: req.user_metadata.clone(),
        created_unix: req.now_unix,
        scheme: SchemeRecord::from_scheme(&req.scheme),
        segment_size: req.segment_size,
        body: ObjectBody::Inline(req.data.clone()),
    };
    let mut p = Prepared::new("putting an inline object");
    p.require(
        Condition::Absent(keys::seal(&req.bucket, incarnation)),
        Check::NotSealed {
            bucket: req.bucket.to_string(),
        },
    );
    let okey = keys::object(&req.bucket, &req.key);
    p.require(
        unchanged(okey.clone(), current.as_ref().map(|(_, v)| *v)),
        Check::Unchanged,
    );
    p.write(Write::Put(
        okey,
        records::encode("object version", &version)?,
    ));
    if let Some((old, _)) = &current {
        index::unindex_version(&mut p, old);
        queue_version(&mut p, old, GcReason::Replaced, req.now_unix)?;
    }
    Ok(p)
}
