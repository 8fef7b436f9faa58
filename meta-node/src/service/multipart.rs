//! MetaService's multipart upload calls (meta.proto, `docs/catalog.md` "Multipart uploads"),
//! served on the leader of the key's partition: `meta.rs` routes them here. Each one runs
//! its catalogue builder (`catalog::multipart`) in `with_retries`, so a `Conflict` (a race with
//! another part or a completion) reruns the read and the build.

use std::collections::BTreeMap;

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::NodeId;
use dogfs_proto::meta as pb;

use super::convert::{self, hex_id};
use super::meta::location;
use super::{Core, ServiceError, now_unix, peer_request, with_retries};
use crate::catalog::multipart::{
    self, BeginPart, CompleteMultipart, CompletePart, CreateMultipart, MultipartRecord, PartCommit,
    PartRecord,
};
use crate::catalog::{CatalogError, ShardReport, ops};

fn unix(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn part_info(p: &PartRecord) -> pb::PartInfo {
    pb::PartInfo {
        part_number: p.number,
        size: p.size,
        etag: p.etag.clone(),
        last_modified_unix: unix(p.completed_unix),
    }
}

fn upload_info(m: &MultipartRecord) -> pb::MultipartUpload {
    pb::MultipartUpload {
        key: m.key.clone(),
        upload_id: hex_id(m.upload_id),
        initiated_unix: unix(m.created_unix),
        content_type: m.content_type.clone(),
        user_metadata: m
            .user_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        scheme: Some(convert::scheme_record_to_pb(&m.scheme)),
        expires_unix: unix(m.expires_unix),
    }
}

/// Reports in the catalogue's form (as CommitObject's).
fn reports(segments: &[pb::SegmentReport]) -> Vec<Vec<ShardReport>> {
    segments
        .iter()
        .map(|s| {
            s.shards
                .iter()
                .map(|sh| {
                    if sh.missing {
                        ShardReport::Missing
                    } else {
                        ShardReport::Stored {
                            client_crc32c: sh.client_crc32c,
                            server_crc32c: sh.server_crc32c,
                            size: sh.size,
                        }
                    }
                })
                .collect()
        })
        .collect()
}

fn page_limit(requested: Option<u32>) -> usize {
    match requested {
        None | Some(0) => multipart::MAX_LIST,
        Some(n) => (n as usize).min(multipart::MAX_LIST),
    }
}

impl Core {
    pub(super) async fn create_multipart_upload(
        &self,
        r: &pb::CreateMultipartUploadRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::CreateMultipartUploadResponse, ServiceError> {
        let scheme = match &r.scheme {
            Some(s) => convert::scheme_from_pb(s)?,
            None => self.scheme,
        };
        let group = self.partition(&bucket, &key);
        let created = with_retries(|attempt| {
            let (bucket, key) = (bucket.clone(), key.clone());
            async move {
                let inc = self.incarnation(&bucket, attempt > 0).await?;
                let req = CreateMultipart {
                    upload_id: rand::random(),
                    bucket,
                    key,
                    content_type: r.content_type.clone(),
                    user_metadata: r
                        .user_metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>(),
                    scheme,
                    now_unix: now_unix(),
                    ttl_secs: self.cfg.upload_ttl_secs,
                };
                self.propose(group, &multipart::create_multipart(&req, inc)?)
                    .await?;
                Ok(req)
            }
        })
        .await?;
        Ok(pb::CreateMultipartUploadResponse {
            upload_id: hex_id(created.upload_id),
            expires_unix: unix(created.now_unix.saturating_add(created.ttl_secs)),
        })
    }

    pub(super) async fn upload_part(
        &self,
        r: &pb::UploadPartRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::UploadPartResponse, ServiceError> {
        let upload_id = convert::upload_id(&r.upload_id)?;
        let segment_size = r.segment_size.unwrap_or(self.cfg.segment_size.0);
        let group = self.partition(&bucket, &key);
        let (begun, scheme, addrs) = with_retries(|_| {
            let (bucket, key) = (bucket.clone(), key.clone());
            async move {
                self.read_barrier(group).await?;
                let reader = self.reader(group)?;
                let (mpu, _) = multipart::get_multipart(&reader, &bucket, &key, upload_id)?;
                let scheme = mpu.scheme.scheme()?;
                let layout =
                    ObjectLayout::new(r.size, segment_size, scheme).map_err(CatalogError::from)?;
                let part_upload_id: u128 = rand::random();
                let (views, addrs) = self.node_views()?;
                let targets = if r.size == 0 {
                    Vec::new()
                } else {
                    self.targets(part_upload_id, &layout, &views)?
                };
                let req = BeginPart {
                    upload_id,
                    part_upload_id,
                    bucket,
                    key,
                    number: r.part_number,
                    size: r.size,
                    segment_size,
                    targets,
                    now_unix: now_unix(),
                    ttl_secs: self.cfg.upload_ttl_secs,
                };
                self.propose(group, &multipart::begin_part(&reader, &req)?)
                    .await?;
                Ok((req, scheme, addrs))
            }
        })
        .await?;
        let mut resp = pb::UploadPartResponse {
            part_upload_id: hex_id(begun.part_upload_id),
            scheme: Some(convert::scheme_to_pb(&scheme)),
            segment_size,
            expires_unix: unix(begun.now_unix.saturating_add(begun.ttl_secs)),
            min_write_shards: u32::try_from(self.cfg.write_quorum(&scheme)).unwrap_or(u32::MAX),
            segments: (0u64..)
                .zip(&begun.targets)
                .map(|(index, t)| pb::Segment {
                    index,
                    shards: t
                        .iter()
                        .enumerate()
                        .map(|(i, (shard, node)): (usize, &(ShardId, Option<NodeId>))| {
                            location(i, shard.as_u128(), node.map(NodeId::as_u128), &addrs)
                        })
                        .collect(),
                })
                .collect(),
        };
        self.grant_put(resp.expires_unix, &mut resp.segments);
        Ok(resp)
    }

    pub(super) async fn complete_part(
        &self,
        r: &pb::CompletePartRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::CompletePartResponse, ServiceError> {
        let req = CompletePart {
            bucket,
            key,
            upload_id: convert::upload_id(&r.upload_id)?,
            part_upload_id: convert::upload_id(&r.part_upload_id)?,
            etag: r.etag.clone(),
            segments: reports(&r.segments),
            now_unix: 0,
            min_write_shards: self.cfg.min_write_shards,
        };
        let group = self.partition(&req.bucket, &req.key);
        let part = with_retries(|_| {
            let mut req = req.clone();
            async move {
                self.read_barrier(group).await?;
                req.now_unix = now_unix();
                match multipart::complete_part(&self.reader(group)?, &req)? {
                    PartCommit::Commit(p, record) => {
                        self.propose(group, &p).await?;
                        Ok(record)
                    }
                    // A retry of a call whose answer was lost: the same outcome.
                    PartCommit::AlreadyCompleted(record) => Ok(record),
                }
            }
        })
        .await?;
        Ok(pb::CompletePartResponse {
            part: Some(part_info(&part)),
        })
    }

    pub(super) async fn list_parts(
        &self,
        r: &pb::ListPartsRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::ListPartsResponse, ServiceError> {
        let upload_id = convert::upload_id(&r.upload_id)?;
        let group = self.partition(&bucket, &key);
        self.read_barrier(group).await?;
        let reader = self.reader(group)?;
        let (mpu, _) = multipart::get_multipart(&reader, &bucket, &key, upload_id)?;
        let limit = page_limit(r.max_parts);
        let mut parts = multipart::list_parts(&reader, upload_id, r.part_number_marker, limit + 1)?;
        let truncated = parts.len() > limit;
        parts.truncate(limit);
        Ok(pb::ListPartsResponse {
            next_part_number_marker: parts.last().map_or(0, |p| p.number),
            parts: parts.iter().map(part_info).collect(),
            truncated,
            upload: Some(upload_info(&mpu)),
        })
    }

    pub(super) async fn abort_multipart_upload(
        &self,
        r: &pb::AbortMultipartUploadRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::AbortMultipartUploadResponse, ServiceError> {
        let upload_id = convert::upload_id(&r.upload_id)?;
        let group = self.partition(&bucket, &key);
        with_retries(|_| async {
            self.read_barrier(group).await?;
            let p = multipart::abort_multipart(
                &self.reader(group)?,
                &bucket,
                &key,
                upload_id,
                now_unix(),
            )?;
            self.propose(group, &p).await
        })
        .await?;
        Ok(pb::AbortMultipartUploadResponse {})
    }

    pub(super) async fn complete_multipart_upload(
        &self,
        r: &pb::CompleteMultipartUploadRequest,
        bucket: BucketName,
        key: ObjectKey,
    ) -> Result<pb::CompleteMultipartUploadResponse, ServiceError> {
        let req = CompleteMultipart {
            bucket,
            key,
            upload_id: convert::upload_id(&r.upload_id)?,
            parts: r
                .parts
                .iter()
                .map(|p| (p.part_number, p.etag.clone()))
                .collect(),
            now_unix: 0,
            min_part_size: self.cfg.multipart_min_part_size.0,
        };
        let group = self.partition(&req.bucket, &req.key);
        let version = with_retries(|_| {
            let mut req = req.clone();
            async move {
                self.read_barrier(group).await?;
                let reader = self.reader(group)?;
                req.now_unix = now_unix();
                self.propose(group, &multipart::complete_multipart(&reader, &req)?)
                    .await?;
                // Applied here (the leader) before the proposal returned.
                Ok(ops::head_object(&reader, &req.bucket, &req.key)?)
            }
        })
        .await?;
        Ok(pb::CompleteMultipartUploadResponse {
            object: Some(convert::object_info(&version)),
        })
    }

    /// One partition's page when `r.partition` is set (this node leads it), else the merge of
    /// every partition's page in (key, upload id) order.
    pub(super) async fn list_multipart_uploads(
        &self,
        r: &pb::ListMultipartUploadsRequest,
        bucket: BucketName,
    ) -> Result<pb::ListMultipartUploadsResponse, ServiceError> {
        let limit = page_limit(r.max_uploads);
        let marker_key = (!r.key_marker.is_empty())
            .then(|| convert::key(&r.key_marker))
            .transpose()?;
        let marker_id = (!r.upload_id_marker.is_empty())
            .then(|| convert::upload_id(&r.upload_id_marker))
            .transpose()?;
        let marker = marker_key.as_ref().map(|k| (k, marker_id));
        if let Some(p) = r.partition {
            self.read_barrier(p).await?;
            let (uploads, truncated) =
                multipart::list_multipart(&self.reader(p)?, &bucket, &r.prefix, marker, limit)?;
            return Ok(pb::ListMultipartUploadsResponse {
                uploads: uploads.iter().map(upload_info).collect(),
                truncated,
                ..Default::default()
            });
        }
        // Every upload among the first `limit` overall is among the first `limit` of its
        // partition, so merging the P pages is exact (as for ListObjects).
        let mut all = Vec::new();
        let mut some_truncated = false;
        for p in 1..=self.partitions() {
            let page = if self.is_leader(p) {
                self.read_barrier(p).await?;
                let (uploads, truncated) =
                    multipart::list_multipart(&self.reader(p)?, &bucket, &r.prefix, marker, limit)?;
                pb::ListMultipartUploadsResponse {
                    uploads: uploads.iter().map(upload_info).collect(),
                    truncated,
                    ..Default::default()
                }
            } else {
                let mut forwarded = r.clone();
                forwarded.partition = Some(p);
                self.meta_client(self.leader_channel(p)?)
                    .list_multipart_uploads(peer_request(forwarded))
                    .await
                    .map_err(ServiceError::Remote)?
                    .into_inner()
            };
            some_truncated |= page.truncated;
            all.extend(page.uploads);
        }
        if all.is_empty() {
            // S3: listing a missing bucket is NoSuchBucket, not an empty page.
            self.incarnation(&bucket, true).await?;
        }
        all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        let truncated = some_truncated || all.len() > limit;
        all.truncate(limit);
        let (next_key_marker, next_upload_id_marker) = match (truncated, all.last()) {
            (true, Some(last)) => (last.key.clone(), last.upload_id.clone()),
            _ => (String::new(), String::new()),
        };
        Ok(pb::ListMultipartUploadsResponse {
            uploads: all,
            truncated,
            next_key_marker,
            next_upload_id_marker,
        })
    }
}
