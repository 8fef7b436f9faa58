//! Multipart uploads (S3 semantics; `docs/catalog.md`, "Multipart uploads").
//!
//! A multipart upload is a record in its key's partition ([`MultipartRecord`]). Each part is
//! written like a small object of its own: [`begin_part`] records a pending upload (the
//! ordinary [`UploadRecord`], so ReplaceTarget, abort and expiry work on it unchanged) plus a
//! [`PartLink`] naming the multipart upload and part number; [`complete_part`] checks the shard
//! reports exactly like CommitObject and stores a [`PartRecord`] under the part number,
//! replacing (and queueing for GC) an earlier part of that number. [`complete_multipart`] makes
//! one object version whose body lists the chosen parts' segments in order
//! ([`ObjectBody::Parts`]): no byte is copied, each part keeps its own geometry.
//!
//! Races. Every CompletePart rewrites the multipart record (same bytes, new version) and
//! requires it to exist; completion, abort and expiry require the version they read. So a
//! part completed between their read and their apply makes them rerun (`Conflict`), and a part
//! can no longer be completed once its upload is gone. Parts still being written when an upload
//! is completed or aborted are not found by it: their pending uploads expire and are collected.
//!
//! Shard index: a pending part's targets are indexed as any upload's (`Upload`, the part
//! upload id); a completed part's stored shards stay indexed as `Upload` references (the part
//! upload id) until completion re-indexes the chosen ones as the object's (`Object`, numbered
//! across parts) and drops the rest, or abort/expiry drops them all. A shard missing from a
//! completed part has no entry (nothing is on a server) until the object is made: then it is
//! indexed under `UNPLACED` for repair, as for any object.

use std::collections::BTreeMap;

use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::scheme::ErasureScheme;
use serde::{Deserialize, Serialize};

use super::index::{self, RefKind, ShardRef};
use super::ops::{self, BeginPut, Check, Prepared, ShardReport, Targets, gc_put, unchanged};
use super::records;
use super::{CatalogError, GcReason, SchemeRecord, SegmentRecord, keys};
use crate::raft::{Condition, Key, KvReader, KvSpace, Write};

/// S3's part numbers: 1..=10000.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// S3's smallest part other than the last (the service's `--multipart-min-part-size`).
pub const DEFAULT_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
mod complete;

pub use complete::{CompleteMultipart, complete_multipart, multipart_etag};

/// Most parts or uploads in one listing page.
pub const MAX_LIST: usize = 1000;

/// A multipart upload in progress. Never changed after creation except for its version:
/// every CompletePart rewrites it to tell concurrent completions and aborts that the parts
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartRecord {
    pub upload_id: u128,
    pub bucket: String,
    pub key: String,
    /// The bucket incarnation it was created in.
    pub incarnation: u64,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    /// Every part's scheme.
    pub scheme: SchemeRecord,
    pub created_unix: u64,
    pub expires_unix: u64,
}

/// A completed part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: u32,
    /// The pending upload it was written through.
    pub part_upload_id: u128,
    pub size: u64,
    pub segment_size: u64,
    /// As the client gave it (the S3 gateway: the part's MD5 in hex).
    pub etag: String,
    pub completed_unix: u64,
    /// Numbered from 0 within the part.
    pub segments: Vec<SegmentRecord>,
}

/// What a part's pending upload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLink {
    pub upload_id: u128,
    pub number: u32,
}

/// CreateMultipartUpload, with the id and time the leader chose.
#[derive(Debug, Clone)]
pub struct CreateMultipart {
    pub upload_id: u128,
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub scheme: ErasureScheme,
    pub now_unix: u64,
    pub ttl_secs: u64,
}

/// CreateMultipartUpload for bucket incarnation `incarnation`: `Absent(seal)`,
/// `Absent(upload)` → put the record.
pub fn create_multipart(req: &CreateMultipart, incarnation: u64) -> Result<Prepared, CatalogError> {
    let record = MultipartRecord {
        upload_id: req.upload_id,
        bucket: req.bucket.to_string(),
        key: req.key.to_string(),
        incarnation,
        content_type: req.content_type.clone(),
        user_metadata: req.user_metadata.clone(),
        scheme: SchemeRecord::from_scheme(&req.scheme),
        created_unix: req.now_unix,
        expires_unix: req.now_unix.saturating_add(req.ttl_secs),
    };
    let mut p = Prepared::new("creating a multipart upload");
    p.require(
        Condition::Absent(keys::seal(&req.bucket, incarnation)),
        Check::NotSealed {
            bucket: req.bucket.to_string(),
        },
    );
    let key = keys::multipart(&req.bucket, &req.key, req.upload_id);
    p.require(
        Condition::Absent(key.clone()),
        Check::UploadIdFree {
            upload: req.upload_id,
        },
    );
    p.write(Write::Put(
        key,
        records::encode("multipart upload", &record)?,
    ));
    Ok(p)
}

/// The multipart upload and its version, or `NoSuchUpload`.
pub fn get_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    upload_id: u128,
) -> Result<(MultipartRecord, u64), CatalogError> {
    match partition.get(&keys::multipart(bucket, key, upload_id))? {
        Some(v) => Ok((records::decode("multipart upload", &v.value)?, v.version)),
        None => Err(CatalogError::NoSuchUpload { upload: upload_id }),
    }
}

/// [`get_multipart`], refusing an expired upload.
fn live_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    upload_id: u128,
    now_unix: u64,
) -> Result<(MultipartRecord, u64), CatalogError> {
    let (m, v) = get_multipart(partition, bucket, key, upload_id)?;
    if now_unix > m.expires_unix {
        return Err(CatalogError::UploadExpired {
            upload: upload_id,
            expired_unix: m.expires_unix,
            now_unix,
        });
    }
    Ok((m, v))
}

/// UploadPart: the part's targets, chosen by the leader like BeginPut's.
#[derive(Debug, Clone)]
pub struct BeginPart {
    pub upload_id: u128,
    pub part_upload_id: u128,
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub number: u32,
    pub size: u64,
    /// The part's own segment size (a positive multiple of k × cell_size).
    pub segment_size: u64,
    /// One target set per segment (none for an empty part).
    pub targets: Targets,
    pub now_unix: u64,
    pub ttl_secs: u64,
}

fn check_number(number: u32) -> Result<(), CatalogError> {
    if (1..=MAX_PART_NUMBER).contains(&number) {
        Ok(())
    } else {
        Err(CatalogError::InvalidPartNumber { number })
    }
}

/// UploadPart: a pending upload for the part (validated as BeginPut's; parts are never
/// inline) and its link, provided the multipart upload still exists.
pub fn begin_part<S: KvSpace>(
    partition: &KvReader<S>,
    req: &BeginPart,
) -> Result<Prepared, CatalogError> {
    check_number(req.number)?;
    let (mpu, _) = live_multipart(
        partition,
        &req.bucket,
        &req.key,
        req.upload_id,
        req.now_unix,
    )?;
    let put = BeginPut {
        upload_id: req.part_upload_id,
        bucket: req.bucket.clone(),
        key: req.key.clone(),
        size: req.size,
        scheme: mpu.scheme.scheme()?,
        segment_size: req.segment_size,
        targets: req.targets.clone(),
        now_unix: req.now_unix,
        ttl_secs: req.ttl_secs,
    };
    // inline_max 0: a part's bytes are always in shards (only an empty part has none).
    let mut p = ops::begin_put(&put, mpu.incarnation, 0)?;
    p.operation = "beginning a part upload";
    p.require(
        Condition::Exists(keys::multipart(&req.bucket, &req.key, req.upload_id)),
        Check::Unchanged,
    );
    let link = PartLink {
        upload_id: req.upload_id,
        number: req.number,
    };
    p.write(Write::Put(
        keys::part_link(req.part_upload_id),
        records::encode("part link", &link)?,
    ));
    Ok(p)
}

/// CompletePart: the part's shard reports, as CommitObject's.
#[derive(Debug, Clone)]
pub struct CompletePart {
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub upload_id: u128,
    pub part_upload_id: u128,
    pub etag: String,
    pub segments: Vec<Vec<ShardReport>>,
    pub now_unix: u64,
    /// The cluster's `min_write_shards` (see [`ops::write_quorum`]).
    pub min_write_shards: usize,
}

/// What [`complete_part`] decided.
#[derive(Debug, Clone)]
pub enum PartCommit {
    /// Propose this; the part becomes this record.
    Commit(Prepared, PartRecord),
    /// The part upload was completed already (a retried call): this is its record.
    AlreadyCompleted(PartRecord),
}

/// CompletePart. Conditions: the part upload unchanged, the multipart upload present, the
/// part number's previous part unchanged (or still absent). Writes: the part record, the part
/// upload and link removed, the multipart record rewritten (see the module docs), the replaced
/// part's stored shards unindexed and queued for GC (`Replaced`).
pub fn complete_part<S: KvSpace>(
    partition: &KvReader<S>,
    req: &CompletePart,
) -> Result<PartCommit, CatalogError> {
    let link: Option<PartLink> = partition
        .get(&keys::part_link(req.part_upload_id))?
        .map(|v| records::decode("part link", &v.value))
        .transpose()?;
    let Some(link) = link.filter(|l| l.upload_id == req.upload_id) else {
        // Gone: completed already (a retry), aborted, expired, or never begun.
        get_multipart(partition, &req.bucket, &req.key, req.upload_id)?;
        return all_parts(partition, req.upload_id)?
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r.part_upload_id == req.part_upload_id)
            .map(PartCommit::AlreadyCompleted)
            .ok_or(CatalogError::NoSuchUpload {
                upload: req.part_upload_id,
            });
    };
    let (mpu, _) = live_multipart(
        partition,
        &req.bucket,
        &req.key,
        req.upload_id,
        req.now_unix,
    )?;
    let (upload, upload_version) = ops::get_upload(partition, req.part_upload_id)?
        .filter(|(u, _)| u.bucket == req.bucket.as_str() && u.key == req.key.as_str())
        .ok_or(CatalogError::NoSuchUpload {
            upload: req.part_upload_id,
        })?;
    if req.now_unix > upload.expires_unix {
        return Err(CatalogError::UploadExpired {
            upload: req.part_upload_id,
            expired_unix: upload.expires_unix,
            now_unix: req.now_unix,
        });
    }
    let layout = ObjectLayout::new(upload.size, upload.segment_size, upload.scheme.scheme()?)?;
    let segments = ops::segment_records(&upload, &layout, &req.segments, req.min_write_shards)?;
    let record = PartRecord {
        number: link.number,
        part_upload_id: req.part_upload_id,
        size: upload.size,
        segment_size: upload.segment_size,
        etag: req.etag.clone(),
        completed_unix: req.now_unix,
        segments,
    };
    let pkey = keys::part(req.upload_id, link.number);
    let previous: Option<(PartRecord, u64)> = partition
        .get(&pkey)?
        .map(|v| Ok::<_, CatalogError>((records::decode("part", &v.value)?, v.version)))
        .transpose()?;
    let mkey = keys::multipart(&req.bucket, &req.key, req.upload_id);
    let ukey = keys::upload(req.part_upload_id);
    let mut p = Prepared::new("completing a part");
    p.require(
        Condition::VersionEquals(ukey.clone(), upload_version),
        Check::Unchanged,
    );
    p.require(Condition::Exists(mkey.clone()), Check::Unchanged);
    p.require(
        unchanged(pkey.clone(), previous.as_ref().map(|(_, v)| *v)),
        Check::Unchanged,
    );
    p.write(Write::Put(pkey, records::encode("part", &record)?));
    p.write(Write::Delete(ukey));
    p.write(Write::Delete(keys::part_link(req.part_upload_id)));
    p.write(Write::Put(mkey, records::encode("multipart upload", &mpu)?));
    if let Some((old, _)) = &previous {
        unindex_part(&mut p, old);
        queue_part(&mut p, old, GcReason::Replaced, req.now_unix)?;
    }
    // After every delete: the upload's targets become the part's stored shards.
    index::unindex_upload(&mut p, &upload);
    index_part(&mut p, &mpu, &record, req.now_unix)?;
    Ok(PartCommit::Commit(p, record))
}

fn index_part(
    p: &mut Prepared,
    mpu: &MultipartRecord,
    part: &PartRecord,
    now: u64,
) -> Result<(), CatalogError> {
    for seg in &part.segments {
        for s in seg.shards.iter().filter(|s| !s.missing) {
            let r = ShardRef {
                kind: RefKind::Upload,
                bucket: mpu.bucket.clone(),
                key: mpu.key.clone(),
                version_id: part.part_upload_id,
                segment: seg.index,
                index: s.index,
                since_unix: now,
            };
            index::put(p, s.node, s.shard_id, &r)?;
        }
    }
    Ok(())
}

fn unindex_part(p: &mut Prepared, part: &PartRecord) {
    for s in part.segments.iter().flat_map(|s| &s.shards) {
        if !s.missing {
            index::delete(p, s.node, s.shard_id);
        }
    }
}

/// Missing shards are on no server: nothing to delete (a partial file is an orphan).
fn queue_part(
    p: &mut Prepared,
    part: &PartRecord,
    reason: GcReason,
    now: u64,
) -> Result<(), CatalogError> {
    for s in part.segments.iter().flat_map(|s| &s.shards) {
        if !s.missing {
            gc_put(p, s.shard_id, s.node, reason, now)?;
        }
    }
    Ok(())
}

/// Up to `limit` completed parts after part number `after`, in part-number order.
pub fn list_parts<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
    after: u32,
    limit: usize,
) -> Result<Vec<PartRecord>, CatalogError> {
    let prefix = upload_id.to_be_bytes();
    let start = keys::part(upload_id, after);
    let start = (after > 0).then_some(start.key.as_slice());
    partition
        .list(keys::PARTS, &prefix, start, limit)?
        .into_iter()
        .map(|(_, v)| records::decode("part", &v.value))
        .collect()
}

/// Every completed part (at most [`MAX_PART_NUMBER`]) with its version.
fn all_parts<S: KvSpace>(
    partition: &KvReader<S>,
    upload_id: u128,
) -> Result<Vec<(PartRecord, u64)>, CatalogError> {
    partition
        .list(keys::PARTS, &upload_id.to_be_bytes(), None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| Ok((records::decode("part", &v.value)?, v.version)))
        .collect()
}

/// Drops the upload and every part: records deleted, shards unindexed and queued.
fn drop_upload(
    p: &mut Prepared,
    key: Key,
    version: u64,
    parts: &[(PartRecord, u64)],
    upload_id: u128,
    reason: GcReason,
    now: u64,
) -> Result<(), CatalogError> {
    p.require(
        Condition::VersionEquals(key.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Delete(key));
    for (part, _) in parts {
        p.write(Write::Delete(keys::part(upload_id, part.number)));
        unindex_part(p, part);
        queue_part(p, part, reason, now)?;
    }
    Ok(())
}

/// AbortMultipartUpload: the upload and every completed part removed, their shards queued
/// (`Aborted`). Conditioned on the upload's version, so a part completed meanwhile reruns it.
pub fn abort_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    key: &ObjectKey,
    upload_id: u128,
    now_unix: u64,
) -> Result<Prepared, CatalogError> {
    let (_, version) = get_multipart(partition, bucket, key, upload_id)?;
    let parts = all_parts(partition, upload_id)?;
    let mut p = Prepared::new("aborting a multipart upload");
    drop_upload(
        &mut p,
        keys::multipart(bucket, key, upload_id),
        version,
        &parts,
        upload_id,
        GcReason::Aborted,
        now_unix,
    )?;
    Ok(p)
}

/// Expiry: up to `limit` multipart uploads past `expires_unix`, dropped with their parts
/// (`Expired`); `None` when there is nothing to do.
pub fn expire_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    now_unix: u64,
    limit: usize,
) -> Result<Option<Prepared>, CatalogError> {
    let mut p = Prepared::new("expiring multipart uploads");
    let mut found = 0;
    for (k, v) in partition.list(keys::MULTIPART, b"", None, usize::MAX)? {
        if found >= limit {
            break;
        }
        let mpu: MultipartRecord = records::decode("multipart upload", &v.value)?;
        if mpu.expires_unix >= now_unix {
            continue;
        }
        found += 1;
        let parts = all_parts(partition, mpu.upload_id)?;
        drop_upload(
            &mut p,
            Key::new(keys::MULTIPART, k),
            v.version,
            &parts,
            mpu.upload_id,
            GcReason::Expired,
            now_unix,
        )?;
    }
    Ok((found > 0).then_some(p))
}

/// A page of one partition's multipart uploads of `bucket` whose key starts with `prefix`,
/// after `(key_marker, upload_id_marker)` (no upload id: after every upload of the key), in
/// (key, upload id) order; `true` when more follow.
pub fn list_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    prefix: &str,
    marker: Option<(&ObjectKey, Option<u128>)>,
    limit: usize,
) -> Result<(Vec<MultipartRecord>, bool), CatalogError> {
    let mut range = keys::object_prefix(bucket);
    range.extend_from_slice(prefix.as_bytes());
    let after = marker.map(|(key, id)| {
        let mut k = keys::multipart_key_prefix(bucket, key);
        // All ones sorts after every upload id of the key, before every later key.
        k.extend_from_slice(&id.unwrap_or(u128::MAX).to_be_bytes());
        k
    });
    let limit = limit.min(MAX_LIST);
    let mut page = partition
        .list(
            keys::MULTIPART,
            &range,
            after.as_deref(),
            limit.saturating_add(1),
        )?
        .into_iter()
        .map(|(_, v)| records::decode("multipart upload", &v.value))
        .collect::<Result<Vec<MultipartRecord>, _>>()?;
    let truncated = page.len() > limit;
    page.truncate(limit);
    Ok((page, truncated))
}
