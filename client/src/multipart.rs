//! Multipart upload (S3 semantics, docs/client.md "Multipart upload") and the read path of
//! objects completed from parts.
//!
//! A part is written like a PUT of its own: `UploadPart` places its segments (its own segment
//! size allowed), the bytes stream to the chunk servers with the PUT data plane (bounded
//! memory, target replacement, degraded writes), and `CompletePart` records it under its part
//! number, replacing an earlier part of that number. `CompleteMultipartUpload` makes one object
//! version of the chosen parts' segments without copying a byte.
//!
//! Reads: such an object's segments have their part's geometry, so a range is cut at part
//! boundaries and each piece is read with its part's layout (`download_object`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use dogfs_core::layout::ObjectLayout;
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::ShardProblem;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, info_span};

use super::{Client, MetaReplacer, names, object_what};
use crate::convert;
use crate::error::{Error, ErrorKind};
use crate::etag::{EtagKind, EtagReader};
use crate::get::download_reporting;
use crate::put::{etag_crc, upload_with_quorum};
use crate::types::{ObjectInfo, Progress, PutOptions};

/// A multipart upload: what every later call names. Build one from a request's bucket, key
/// and upload id with [`MultipartUpload::new`] (the upload itself lives in the cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

impl MultipartUpload {
    pub fn new(
        bucket: impl Into<String>,
        key: impl Into<String>,
        upload_id: impl Into<String>,
    ) -> Self {
        MultipartUpload {
            bucket: bucket.into(),
            key: key.into(),
            upload_id: upload_id.into(),
        }
    }
}

/// A completed part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    /// As stored: the given one, or `hex(MD5(part))`.
    pub etag: String,
    pub last_modified_unix: i64,
}

/// How a part is written.
#[derive(Clone, Default)]
pub struct PartOptions {
    /// The part's ETag, stored as given (the S3 gateway's MD5 of the part). `None`: the
    /// client computes `hex(MD5(part))` while the bytes stream.
    pub etag: Option<String>,
    /// The part's segment size; `None`: the cluster's. A positive multiple of k × cell_size.
    pub segment_size: Option<u64>,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartOptions")
            .field("etag", &self.etag)
            .field("segment_size", &self.segment_size)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One part chosen for completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// A page of [`Client::list_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsPage {
    pub parts: Vec<PartInfo>,
    pub truncated: bool,
    /// Pass as `part_number_marker` for the next page.
    pub next_part_number_marker: u32,
    pub upload: MultipartUploadInfo,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated_unix: i64,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub expires_unix: i64,
}

/// ListMultipartUploads' query (S3: prefix, key-marker, upload-id-marker, max-uploads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadsQuery {
    pub prefix: String,
    pub key_marker: String,
    /// With `key_marker`: uploads of that key after this id; empty: after every upload of it.
    pub upload_id_marker: String,
    /// `None` or 0: 1000; at most 1000.
    pub max_uploads: Option<u32>,
}

/// A page of [`Client::list_multipart_uploads`], in (key, upload id) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadsPage {
    pub uploads: Vec<MultipartUploadInfo>,
    pub truncated: bool,
    pub next_key_marker: String,
    pub next_upload_id_marker: String,
}

/// The S3 error a failed multipart call stands for, when it is one of multipart's own (the
/// metadata service starts those messages with S3's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartFailure {
    NoSuchUpload,
    InvalidPart,
    InvalidPartOrder,
    EntityTooSmall,
    /// CompleteMultipartUpload listed no part (S3: MalformedXML).
    NoPartsListed,
    /// A part number outside 1..=10000 (S3: InvalidArgument).
    InvalidPartNumber,
}

impl MultipartFailure {
    pub fn of(e: &Error) -> Option<MultipartFailure> {
        let msg = e.to_string();
        let has = |code: &str| msg.contains(&format!("{code}: "));
        match e.kind() {
            ErrorKind::NotFound if msg.contains("upload ") && msg.contains("does not exist") => {
                Some(MultipartFailure::NoSuchUpload)
            }
            ErrorKind::InvalidInput if has("InvalidPartOrder") => {
                Some(MultipartFailure::InvalidPartOrder)
            }
            ErrorKind::InvalidInput if has("InvalidPart") => Some(MultipartFailure::InvalidPart),
            ErrorKind::InvalidInput if has("EntityTooSmall") => {
                Some(MultipartFailure::EntityTooSmall)
            }
            ErrorKind::InvalidInput if has("MalformedXML") => Some(MultipartFailure::NoPartsListed),
            ErrorKind::InvalidInput if has("InvalidArgument") && msg.contains("part number") => {
                Some(MultipartFailure::InvalidPartNumber)
            }
            _ => None,
        }
    }
}

fn part_info(p: Option<pb::PartInfo>, what: &str) -> Result<PartInfo, Error> {
    let p = p.ok_or_else(|| Error::protocol(format!("answer for {what} lacks the part")))?;
    Ok(PartInfo {
        part_number: p.part_number,
        size: p.size,
        etag: p.etag,
        last_modified_unix: p.last_modified_unix,
    })
}

fn upload_info(u: pb::MultipartUpload) -> MultipartUploadInfo {
    MultipartUploadInfo {
        key: u.key,
        upload_id: u.upload_id,
        initiated_unix: u.initiated_unix,
        content_type: u.content_type,
        user_metadata: u.user_metadata.into_iter().collect(),
        expires_unix: u.expires_unix,
    }
}

fn upload_what(u: &MultipartUpload) -> String {
    format!(
        "multipart upload {} of {}",
        u.upload_id,
        object_what(&u.bucket, &u.key)
    )
}

impl Client {
    /// Starts a multipart upload of `bucket`/`key` (content type and user metadata from
    /// `opts`; its progress is unused).
    pub async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<MultipartUpload, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let req = pb::CreateMultipartUploadRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type: opts.content_type.unwrap_or_default(),
            user_metadata: opts.user_metadata.into_iter().collect(),
            scheme: None,
        };
        // A retry after a lost answer creates a second upload; the first one expires.
        let r = self
            .inner
            .meta
            .call(
                "CreateMultipartUpload",
                &what,
                self.route(&b, &k),
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move {
                        MetaServiceClient::new(ch)
                            .create_multipart_upload(req)
                            .await
                    }
                },
            )
            .instrument(info_span!("create_multipart", bucket, key))
            .await?;
        Ok(MultipartUpload::new(bucket, key, r.upload_id))
    }

    /// Uploads part `part_number` (1..=10000) of `size` bytes from `reader`; its ETag is
    /// `hex(MD5(part))`. Uploading a part number again replaces that part.
    pub async fn upload_part<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        reader: R,
        size: u64,
    ) -> Result<PartInfo, Error> {
        self.upload_part_with(upload, part_number, reader, size, PartOptions::default())
            .await
    }

    /// [`Client::upload_part`] with options (a given ETag, the part's segment size, progress).
    pub async fn upload_part_with<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        reader: R,
        size: u64,
        opts: PartOptions,
    ) -> Result<PartInfo, Error> {
        let span = info_span!(
            "upload_part",
            bucket = upload.bucket,
            key = upload.key,
            part_number,
            size
        );
        self.upload_part_inner(upload, part_number, reader, size, opts)
            .instrument(span)
            .await
    }

    async fn upload_part_inner<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &MultipartUpload,
        part_number: u32,
        reader: R,
        size: u64,
        opts: PartOptions,
    ) -> Result<PartInfo, Error> {
        let (b, k) = names(&upload.bucket, &upload.key)?;
        let what = format!("part {part_number} of {}", upload_what(upload));
        let route = self.route(&b, &k);
        let req = pb::UploadPartRequest {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            part_number,
            size,
            segment_size: opts.segment_size,
        };
        let begun = self
            .inner
            .meta
            .call("UploadPart", &what, route, self.deadline(), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).upload_part(req).await }
            })
            .await?;
        let kind = if opts.etag.is_some() {
            EtagKind::Crc32c
        } else {
            EtagKind::Md5
        };
        let mut reader = EtagReader::new(reader, kind);
        let result = self
            .part_data(upload, &what, &mut reader, size, &opts, &begun, route)
            .await;
        match &result {
            Err(e) if e.kind() == ErrorKind::OutcomeUnknown => {}
            // Queues what was written; the part number keeps its earlier part, if any.
            Err(_) => self.abort_upload(&upload.bucket, &upload.key, &begun.part_upload_id, route),
            Ok(_) => {}
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn part_data<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &MultipartUpload,
        what: &str,
        reader: &mut EtagReader<R>,
        size: u64,
        opts: &PartOptions,
        begun: &pb::UploadPartResponse,
        route: super::Route,
    ) -> Result<PartInfo, Error> {
        let mut req = pb::CompletePartRequest {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            part_upload_id: begun.part_upload_id.clone(),
            etag: String::new(),
            segments: Vec::new(),
        };
        if size > 0 {
            let scheme = begun
                .scheme
                .as_ref()
                .ok_or_else(|| Error::protocol(format!("UploadPart for {what} gave no scheme")))
                .and_then(convert::scheme_from_proto)?;
            let layout = ObjectLayout::new(size, begun.segment_size, scheme)
                .map_err(|e| Error::protocol(format!("UploadPart for {what}: {e}")))?;
            let replacer = MetaReplacer {
                client: self,
                bucket: &upload.bucket,
                key: &upload.key,
                upload_id: &begun.part_upload_id,
                route,
            };
            let out = upload_with_quorum(
                &self.inner.pool,
                &self.inner.data,
                self.codec(&scheme)?,
                layout,
                &begun.segments,
                reader,
                &replacer,
                opts.progress.as_ref(),
                begun.min_write_shards as usize,
            )
            .await?;
            req.segments = out.reports;
        } else if !begun.segments.is_empty() {
            return Err(Error::protocol(format!(
                "UploadPart for {what}: an empty part got {} segments",
                begun.segments.len()
            )));
        }
        req.etag = match &opts.etag {
            Some(e) => e.clone(),
            None => reader
                .md5_hex()
                .ok_or_else(|| Error::protocol("the part's MD5 was not computed"))?,
        };
        // CompletePart of one part upload is idempotent (a repeat answers the stored part).
        let done = self
            .inner
            .meta
            .call_write(
                "CompletePart",
                what,
                route,
                self.fresh_deadline(),
                "the part may or may not have been recorded: list the parts to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).complete_part(req).await }
                },
            )
            .await;
        part_info(done.result?.part, what)
    }

    /// A page of the upload's completed parts after `part_number_marker` (0: from the first).
    pub async fn list_parts(
        &self,
        upload: &MultipartUpload,
        part_number_marker: u32,
        max_parts: Option<u32>,
    ) -> Result<PartsPage, Error> {
        let (b, k) = names(&upload.bucket, &upload.key)?;
        let what = upload_what(upload);
        let req = pb::ListPartsRequest {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            part_number_marker,
            max_parts,
        };
        let r = self
            .inner
            .meta
            .call(
                "ListParts",
                &what,
                self.route(&b, &k),
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).list_parts(req).await }
                },
            )
            .await?;
        let upload = r
            .upload
            .map(upload_info)
            .ok_or_else(|| Error::protocol(format!("ListParts for {what} lacks the upload")))?;
        Ok(PartsPage {
            parts: r
                .parts
                .into_iter()
                .map(|p| part_info(Some(p), &what))
                .collect::<Result<_, _>>()?,
            truncated: r.truncated,
            next_part_number_marker: r.next_part_number_marker,
            upload,
        })
    }

    /// Makes the listed parts (ascending part numbers, with their ETags) the object's new
    /// version; parts not listed are deleted. The ETag is S3's: MD5 of the part MD5s, `-N`.
    pub async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectInfo, Error> {
        let (b, k) = names(&upload.bucket, &upload.key)?;
        let what = upload_what(upload);
        let req = pb::CompleteMultipartUploadRequest {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            parts: parts
                .iter()
                .map(|p| pb::CompletedPart {
                    part_number: p.part_number,
                    etag: p.etag.clone(),
                })
                .collect(),
        };
        let done = self
            .inner
            .meta
            .call_write(
                "CompleteMultipartUpload",
                &what,
                self.route(&b, &k),
                self.deadline(),
                "the object may or may not have been completed: read it (HeadObject) to find out",
                |ch| {
                    let req = req.clone();
                    async move {
                        MetaServiceClient::new(ch)
                            .complete_multipart_upload(req)
                            .await
                    }
                },
            )
            .instrument(info_span!(
                "complete_multipart",
                bucket = upload.bucket,
                key = upload.key
            ))
            .await;
        match done.result {
            Ok(r) => convert::object(r.object, &what),
            // A retry whose first attempt got through: the object is this upload.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                match self.head(&upload.bucket, &upload.key).await {
                    Ok(info) if info.version_id == upload.upload_id => Ok(info),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Aborts the upload: every completed part is deleted. Parts still being uploaded expire.
    pub async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), Error> {
        let (b, k) = names(&upload.bucket, &upload.key)?;
        let what = upload_what(upload);
        let req = pb::AbortMultipartUploadRequest {
            bucket: upload.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
        };
        let done = self
            .inner
            .meta
            .call_write(
                "AbortMultipartUpload",
                &what,
                self.route(&b, &k),
                self.deadline(),
                "the upload may or may not have been aborted: list its parts to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).abort_multipart_upload(req).await }
                },
            )
            .await;
        match done.result {
            Ok(_) => Ok(()),
            // A retry after an unanswered attempt, which most likely aborted it.
            Err(e) if e.kind() == ErrorKind::NotFound && done.maybe_applied => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A page of the bucket's multipart uploads in progress, in (key, upload id) order.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        q: &UploadsQuery,
    ) -> Result<UploadsPage, Error> {
        dogfs_core::names::BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::ListMultipartUploadsRequest {
            bucket: bucket.to_string(),
            prefix: q.prefix.clone(),
            key_marker: q.key_marker.clone(),
            upload_id_marker: q.upload_id_marker.clone(),
            max_uploads: q.max_uploads,
            partition: None,
        };
        let r = self
            .inner
            .meta
            .call(
                "ListMultipartUploads",
                &what,
                super::Route::System,
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).list_multipart_uploads(req).await }
                },
            )
            .await?;
        Ok(UploadsPage {
            uploads: r.uploads.into_iter().map(upload_info).collect(),
            truncated: r.truncated,
            next_key_marker: r.next_key_marker,
            next_upload_id_marker: r.next_upload_id_marker,
        })
    }

    /// Object bytes `range` from its segments: with one layout (`parts` empty), or part by
    /// part for an object completed from parts, each part with its own geometry and its
    /// segments renumbered from 0. Returns the bytes written and every shard the read could
    /// not use (numbered as the object's segments).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn download_object<W: AsyncWrite + Unpin + Send>(
        &self,
        what: &str,
        info: &ObjectInfo,
        scheme: ErasureScheme,
        segments: Vec<pb::Segment>,
        parts: Vec<pb::PartExtent>,
        range: Range<u64>,
        writer: &mut W,
        progress: Option<&Progress>,
    ) -> (Result<u64, Error>, Vec<ShardProblem>) {
        let codec = match self.codec(&scheme) {
            Ok(c) => c,
            Err(e) => return (Err(e), Vec::new()),
        };
        if parts.is_empty() {
            let layout = match ObjectLayout::new(info.size, info.segment_size, scheme) {
                Ok(l) => l,
                Err(e) => return (Err(Error::protocol(format!("{what}: {e}"))), Vec::new()),
            };
            return download_reporting(
                &self.inner.pool,
                &self.inner.data,
                codec,
                layout,
                Arc::new(segments),
                range,
                writer,
                progress,
                etag_crc(&info.etag),
            )
            .await;
        }
        crate::get::download_parts(
            &self.inner.pool,
            &self.inner.data,
            codec,
            what,
            info.size,
            scheme,
            segments,
            parts,
            range,
            writer,
            progress,
        )
        .await
    }
}
