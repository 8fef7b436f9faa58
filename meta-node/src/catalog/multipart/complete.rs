//! CompleteMultipartUpload: the chosen parts' segments become one object version, and S3's
//! ETag of such an object.

use std::collections::{BTreeMap, BTreeSet};

use dogfs_core::names::{BucketName, ObjectKey};

use super::{PartRecord, all_parts, drop_upload, get_multipart, unindex_part};
use crate::catalog::index;
use crate::catalog::ops::{self, Check, Prepared, unchanged};
use crate::catalog::records::{self, PartExtent, PartsBody};
use crate::catalog::{CatalogError, GcReason, ObjectBody, ObjectVersion, SegmentRecord, keys};
use crate::raft::{Condition, KvReader, KvSpace, Write};
use md5::Digest;

/// CompleteMultipartUpload: the chosen parts, as (part number, ETag) in ascending order.
#[derive(Debug, Clone)]
pub struct CompleteMultipart {
    pub bucket: BucketName,
    pub key: ObjectKey,
    pub upload_id: u128,
    pub parts: Vec<(u32, String)>,
    pub now_unix: u64,
    /// The smallest part other than the last ([`DEFAULT_MIN_PART_SIZE`] by default).
    pub min_part_size: u64,
}

fn trim_etag(e: &str) -> &str {
    e.trim().trim_matches('"')
}

/// S3's ETag of an object made of parts: the MD5 of the parts' MD5s (each part's ETag as hex
/// bytes; an ETag that is not hex counts as its text), then `-` and the number of parts.
pub fn multipart_etag<'a>(etags: impl IntoIterator<Item = &'a str>) -> String {
    let mut digests = Vec::new();
    let mut n = 0usize;
    for etag in etags {
        n += 1;
        let e = trim_etag(etag);
        match decode_hex(e) {
            Some(bytes) => digests.extend_from_slice(&bytes),
            None => digests.extend_from_slice(e.as_bytes()),
        }
    }
    let digest = md5::Md5::digest(&digests);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{n}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// CompleteMultipartUpload. Validation, first failure reported: the upload exists (else
/// `UploadAlreadyCommitted` when it is the key's current version) and has not expired; parts
/// listed, ascending without repeats (`InvalidPartOrder`); every one uploaded with that ETag
/// (`InvalidPart`); then each but the last at least `min_part_size` (`EntityTooSmall`).
/// Conditions: the upload unchanged (no part completed since the read), the incarnation not
/// sealed, the object unchanged. Writes, in one entry: the new version (segments numbered
/// across the parts), the upload and every part record removed, unlisted parts' shards queued
/// (`Aborted`), the replaced version's shards queued (`Replaced`), the shard index moved.
pub fn complete_multipart<S: KvSpace>(
    partition: &KvReader<S>,
    req: &CompleteMultipart,
) -> Result<Prepared, CatalogError> {
    let (mpu, version) = match get_multipart(partition, &req.bucket, &req.key, req.upload_id) {
        Ok(found) => found,
        Err(CatalogError::NoSuchUpload { upload }) => {
            return Err(match ops::read_object(partition, &req.bucket, &req.key)? {
                Some((o, _)) if o.version_id == upload => CatalogError::UploadAlreadyCommitted {
                    upload,
                    bucket: req.bucket.to_string(),
                    key: req.key.to_string(),
                },
                _ => CatalogError::NoSuchUpload { upload },
            });
        }
        Err(e) => return Err(e),
    };
    if req.now_unix > mpu.expires_unix {
        return Err(CatalogError::UploadExpired {
            upload: req.upload_id,
            expired_unix: mpu.expires_unix,
            now_unix: req.now_unix,
        });
    }
    if req.parts.is_empty() {
        return Err(CatalogError::NoPartsListed {
            upload: req.upload_id,
        });
    }
    for pair in req.parts.windows(2) {
        if let [(previous, _), (number, _)] = pair
            && number <= previous
        {
            return Err(CatalogError::InvalidPartOrder {
                previous: *previous,
                number: *number,
            });
        }
    }
    let stored = all_parts(partition, req.upload_id)?;
    let by_number: BTreeMap<u32, &PartRecord> = stored.iter().map(|(r, _)| (r.number, r)).collect();
    let mut chosen = Vec::with_capacity(req.parts.len());
    for (number, etag) in &req.parts {
        let part = by_number
            .get(number)
            .copied()
            .ok_or_else(|| CatalogError::InvalidPart {
                upload: req.upload_id,
                number: *number,
                reason: "it was not uploaded (or was aborted)".into(),
            })?;
        if trim_etag(etag) != trim_etag(&part.etag) {
            return Err(CatalogError::InvalidPart {
                upload: req.upload_id,
                number: *number,
                reason: format!("ETag {etag:?} differs from the part's {:?}", part.etag),
            });
        }
        chosen.push(part);
    }
    // Sizes once every listed part is known to exist (S3 reports a missing part first).
    if let Some((_, but_last)) = chosen.split_last()
        && let Some(small) = but_last.iter().find(|p| p.size < req.min_part_size)
    {
        return Err(CatalogError::EntityTooSmall {
            number: small.number,
            size: small.size,
            min: req.min_part_size,
        });
    }

    let mut extents = Vec::with_capacity(chosen.len());
    let mut segments = Vec::new();
    let mut size = 0u64;
    for part in &chosen {
        let first = segments.len() as u64;
        segments.extend(part.segments.iter().map(|s| SegmentRecord {
            index: first + s.index,
            shards: s.shards.clone(),
        }));
        extents.push(PartExtent {
            number: part.number,
            size: part.size,
            segment_size: part.segment_size,
            etag: part.etag.clone(),
        });
        size = size.saturating_add(part.size);
    }
    let object = ObjectVersion {
        bucket: mpu.bucket.clone(),
        key: mpu.key.clone(),
        version_id: req.upload_id,
        incarnation: mpu.incarnation,
        size,
        etag: multipart_etag(chosen.iter().map(|p| p.etag.as_str())),
        content_type: mpu.content_type.clone(),
        user_metadata: mpu.user_metadata.clone(),
        created_unix: req.now_unix,
        scheme: mpu.scheme.clone(),
        // Informational (ObjectInfo): reads use each part's own.
        segment_size: chosen.first().map_or(0, |p| p.segment_size),
        body: ObjectBody::Parts(PartsBody {
            parts: extents,
            segments,
        }),
    };

    let current = ops::read_object(partition, &req.bucket, &req.key)?;
    let okey = keys::object(&req.bucket, &req.key);
    let mut p = Prepared::new("completing a multipart upload");
    p.require(
        Condition::Absent(keys::seal(&req.bucket, mpu.incarnation)),
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
        records::encode("object version", &object)?,
    ));
    let listed: BTreeSet<u32> = req.parts.iter().map(|(n, _)| *n).collect();
    let (kept, dropped): (Vec<_>, Vec<_>) = stored
        .iter()
        .cloned()
        .partition(|(r, _)| listed.contains(&r.number));
    drop_upload(
        &mut p,
        keys::multipart(&req.bucket, &req.key, req.upload_id),
        version,
        &dropped,
        req.upload_id,
        GcReason::Aborted,
        req.now_unix,
    )?;
    for (part, _) in &kept {
        p.write(Write::Delete(keys::part(req.upload_id, part.number)));
        unindex_part(&mut p, part);
    }
    if let Some((old, _)) = &current {
        index::unindex_version(&mut p, old);
        ops::queue_version(&mut p, old, GcReason::Replaced, req.now_unix)?;
    }
    // After every delete: the kept parts' shards become the object's.
    index::index_version(&mut p, &object, req.now_unix)?;
    Ok(p)
}
