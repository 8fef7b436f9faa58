//! PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject.

use bytes::Bytes;
use dogfs_client::{Client, ErrorKind, ObjectInfo};
use futures::StreamExt;
use s3s::dto::{
    CopyObjectInput, CopyObjectOutput, CopyObjectResult, CopySource, DeleteObjectInput,
    DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject, ETag,
    GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput, MetadataDirective,
    PutObjectInput, PutObjectOutput, StreamingBlob,
};
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};
use tracing::{Instrument, debug, info_span, warn};

use crate::body::{Algorithm, Expected, PutBody, object_stream};
use crate::conditional::{
    Conditions, PartRead, Verdict, byte_range, check_part_number, part_read, verdict_error,
};
use crate::errors::{Subject, map_error, s3_error};
use crate::metadata::{ObjectHeaders, http_date, timestamp};
use crate::service::DogS3;

/// S3's limit on the keys of one DeleteObjects request.
const MAX_DELETE_KEYS: usize = 1000;
/// DeleteObjects deletes this many keys at a time.
const DELETE_PARALLELISM: usize = 8;
/// Attempts at a CopyObject whose source is replaced while it is copied.
pub(crate) const COPY_ATTEMPTS: usize = 3;

/// Content-Encoding without the `aws-chunked` transfer coding (S3 does not store it).
pub(crate) fn stored_encoding(e: Option<String>) -> Option<String> {
    let e = e?;
    let kept: Vec<&str> = e
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

fn etag(info: &ObjectInfo) -> ETag {
    ETag::Strong(info.etag.clone())
}

/// Buckets are unversioned: every object's only version is `null`, the one id a client can
/// have been given (ListObjectVersions), so any other names nothing.
pub(crate) fn check_version(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(v) => Err(s3_error!(
            NoSuchVersion,
            "The specified version {v} does not exist (buckets are unversioned: the only version is null)."
        )),
    }
}

impl DogS3 {
    pub(crate) async fn do_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            // A check-then-put would not be atomic: refuse rather than succeed wrongly.
            return Err(s3_error!(
                NotImplemented,
                "Conditional writes (If-Match / If-None-Match on PUT) are not supported"
            ));
        }
        let size = body_size(input.content_length, &req.headers)?;
        let (bucket, key) = (input.bucket, input.key);
        let span = info_span!("put_object", bucket = %bucket, key = %key, size);
        let expected = expected_digests(
            input.content_md5.as_deref(),
            [
                input.checksum_crc32.as_ref(),
                input.checksum_crc32c.as_ref(),
                input.checksum_crc64nvme.as_ref(),
                input.checksum_sha1.as_ref(),
                input.checksum_sha256.as_ref(),
            ],
            &req.headers,
        )?;
        let headers = ObjectHeaders {
            content_type: input.content_type,
            content_encoding: stored_encoding(input.content_encoding),
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            user: input.metadata,
        };
        let stream = input.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let (mut body, outcome) = PutBody::new(stream, size, expected, req.trailing_headers);
        let opts = headers.to_put_options();
        let result = async {
            if size == 0 {
                body.verify_empty().await.map_err(|e| e.to_s3())?;
                let empty = tokio::io::empty();
                Ok::<_, S3Error>(
                    client
                        .put_with_md5_etag(&bucket, &key, empty, 0, opts)
                        .await,
                )
            } else {
                Ok(client
                    .put_with_md5_etag(&bucket, &key, body, size, opts)
                    .await)
            }
        }
        .instrument(span)
        .await?;
        let info = match result {
            Ok(info) => info,
            // The body's own failure (digest, short body) explains the client's error.
            Err(e) => match outcome.failure() {
                Some(f) => return Err(f.to_s3()),
                None => return Err(s3_error(client, Subject::Object(&bucket, &key), e).await),
            },
        };
        debug!(bucket = %bucket, key = %key, etag = %info.etag, "object stored");
        let mut out = PutObjectOutput {
            e_tag: Some(etag(&info)),
            ..PutObjectOutput::default()
        };
        for (a, v) in outcome.checksums() {
            let slot = match a {
                Algorithm::Crc32 => &mut out.checksum_crc32,
                Algorithm::Crc32c => &mut out.checksum_crc32c,
                Algorithm::Crc64Nvme => &mut out.checksum_crc64nvme,
                Algorithm::Sha1 => &mut out.checksum_sha1,
                Algorithm::Sha256 => &mut out.checksum_sha256,
            };
            *slot = Some(v);
        }
        Ok(S3Response::new(out))
    }

    /// The object's info, answering S3's errors for a missing bucket or key.
    pub(crate) async fn info(
        &self,
        client: &Client,
        bucket: &str,
        key: &str,
    ) -> S3Result<ObjectInfo> {
        match client.head(bucket, key).await {
            Ok(i) => Ok(i),
            Err(e) => Err(s3_error(client, Subject::Object(bucket, key), e).await),
        }
    }

    /// The object a GET or HEAD reads and, for `partNumber`, which of its bytes: the part
    /// layout comes from the same metadata call, so part and object agree.
    async fn read_target(
        &self,
        client: &Client,
        bucket: &str,
        key: &str,
        part: Option<i32>,
    ) -> S3Result<(ObjectInfo, Option<PartRead>)> {
        let Some(n) = part else {
            return Ok((self.info(client, bucket, key).await?, None));
        };
        let layout = match client.object_parts(bucket, key).await {
            Ok(l) => l,
            Err(e) => return Err(s3_error(client, Subject::Object(bucket, key), e).await),
        };
        let read = part_read(n, &layout)?;
        Ok((layout.info, Some(read)))
    }

    pub(crate) async fn do_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = (input.bucket, input.key);
        let span = info_span!("get_object", bucket = %bucket, key = %key);
        check_part_number(input.part_number, input.range.is_some())?;
        check_version(input.version_id.as_deref())?;
        let (info, part) = self
            .read_target(client, &bucket, &key, input.part_number)
            .instrument(span.clone())
            .await?;
        let last_modified = timestamp(info.created_unix);
        let conditions = Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        };
        let verdict = conditions.evaluate(&info.etag, info.created_unix);
        if let Some(e) = verdict_error(&verdict, &info.etag, &http_date(&last_modified)) {
            return Err(e);
        }
        let (range, content_range) = match &part {
            // A part is served as a range of the object (206 with its Content-Range), as S3.
            Some(p) if p.parts_count.is_some() => {
                (Some(p.range.clone()), p.content_range(info.size))
            }
            // Part 1 of an object of one PUT: the whole object, 200.
            Some(_) => (None, None),
            None => {
                let r = byte_range(input.range.as_ref(), info.size)?;
                let cr = r
                    .as_ref()
                    .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, info.size));
                (r, cr)
            }
        };
        let len = range.as_ref().map_or(info.size, |r| r.end - r.start);
        let body = {
            let _entered = span.enter();
            object_stream(
                client.clone(),
                bucket.clone(),
                key.clone(),
                range,
                info.version_id.clone(),
            )
        };
        let h = ObjectHeaders::of(&info);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            parts_count: part.and_then(|p| p.parts_count),
            e_tag: Some(etag(&info)),
            last_modified: Some(last_modified),
            content_type: h.content_type,
            content_encoding: h.content_encoding,
            content_disposition: h.content_disposition,
            content_language: h.content_language,
            cache_control: h.cache_control,
            expires: h.expires,
            metadata: h.user,
            ..GetObjectOutput::default()
        }))
    }

    pub(crate) async fn do_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = (input.bucket, input.key);
        check_part_number(input.part_number, input.range.is_some())?;
        check_version(input.version_id.as_deref())?;
        let (info, part) = self
            .read_target(client, &bucket, &key, input.part_number)
            .instrument(info_span!("head_object", bucket = %bucket, key = %key))
            .await?;
        let last_modified = timestamp(info.created_unix);
        let conditions = Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        };
        let verdict = conditions.evaluate(&info.etag, info.created_unix);
        if let Some(e) = verdict_error(&verdict, &info.etag, &http_date(&last_modified)) {
            return Err(e);
        }
        let h = ObjectHeaders::of(&info);
        // A part of an object completed from parts: its length and place; the server layer
        // answers such a HEAD 206, as S3 (s3s's HeadObject is always 200).
        let (len, content_range, parts_count) = match &part {
            Some(p) if p.parts_count.is_some() => (
                p.range.end - p.range.start,
                p.content_range(info.size),
                p.parts_count,
            ),
            _ => (info.size, None, None),
        };
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            parts_count,
            e_tag: Some(etag(&info)),
            last_modified: Some(last_modified),
            content_type: h.content_type,
            content_encoding: h.content_encoding,
            content_disposition: h.content_disposition,
            content_language: h.content_language,
            cache_control: h.cache_control,
            expires: h.expires,
            metadata: h.user,
            ..HeadObjectOutput::default()
        }))
    }

    pub(crate) async fn do_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = (input.bucket, input.key);
        if input.if_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "Conditional deletes (If-Match on DELETE) are not supported"
            ));
        }
        check_version(input.version_id.as_deref())?;
        let span = info_span!("delete_object", bucket = %bucket, key = %key);
        match client.delete(&bucket, &key).instrument(span).await {
            // S3 answers 204 whether or not the key existed.
            Ok(_) => Ok(S3Response::new(DeleteObjectOutput::default())),
            Err(e) => Err(s3_error(client, Subject::Object(&bucket, &key), e).await),
        }
    }

    pub(crate) async fn do_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let bucket = input.bucket;
        let objects = input.delete.objects;
        let quiet = input.delete.quiet.unwrap_or(false);
        if objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "DeleteObjects takes at most {MAX_DELETE_KEYS} keys, got {}",
                objects.len()
            ));
        }
        // A missing bucket fails the whole request, as in S3.
        if let Err(e) = client.head_bucket(&bucket).await {
            return Err(s3_error(client, Subject::Bucket(&bucket), e).await);
        }
        let span = info_span!("delete_objects", bucket = %bucket, keys = objects.len());
        let results: Vec<_> = futures::stream::iter(objects)
            .map(|o| {
                let bucket = &bucket;
                async move {
                    let r = match check_version(o.version_id.as_deref()) {
                        Ok(()) => client
                            .delete(bucket, &o.key)
                            .await
                            .map_err(|e| map_error(Subject::Object(bucket, &o.key), &e)),
                        Err(e) => Err(e),
                    };
                    (o.key, r)
                }
            })
            .buffered(DELETE_PARALLELISM)
            .collect()
            .instrument(span)
            .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, r) in results {
            match r {
                Ok(_) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(key),
                            ..DeletedObject::default()
                        });
                    }
                }
                Err(s3) => {
                    warn!(bucket = %bucket, key = %key, error = %s3, "DeleteObjects: one key failed");
                    errors.push(s3s::dto::Error {
                        code: Some(s3.code().as_str().to_owned()),
                        key: Some(key),
                        message: s3.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            request_charged: None,
        }))
    }

    pub(crate) async fn do_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let (src_bucket, src_key, src_version) = match &input.copy_source {
            CopySource::Bucket {
                bucket,
                key,
                version_id,
            } => (bucket.to_string(), key.to_string(), version_id.clone()),
            _ => return Err(s3_error!(NotImplemented, "copy from an access point")),
        };
        check_version(src_version.as_deref())?;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let span = info_span!("copy_object", src_bucket = %src_bucket, src_key = %src_key,
            bucket = %bucket, key = %key);
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && src_bucket == bucket && src_key == key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata, storage class, website redirect \
                 location or encryption attributes."
            ));
        }
        let conditions = Conditions {
            if_match: input.copy_source_if_match.clone(),
            if_none_match: input.copy_source_if_none_match.clone(),
            if_modified_since: input.copy_source_if_modified_since.clone(),
            if_unmodified_since: input.copy_source_if_unmodified_since.clone(),
        };
        for attempt in 1..=COPY_ATTEMPTS {
            let src = self
                .info(client, &src_bucket, &src_key)
                .instrument(span.clone())
                .await?;
            // A copy's failed condition is always 412.
            if !conditions.is_empty()
                && conditions.evaluate(&src.etag, src.created_unix) != Verdict::Proceed
            {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
            let headers = if replace {
                ObjectHeaders {
                    content_type: input.content_type.clone(),
                    content_encoding: input.content_encoding.clone(),
                    content_disposition: input.content_disposition.clone(),
                    content_language: input.content_language.clone(),
                    cache_control: input.cache_control.clone(),
                    expires: input.expires.clone(),
                    user: input.metadata.clone(),
                }
            } else {
                ObjectHeaders::of(&src)
            };
            let (copied, info) = self
                .stream_copy(client, &src, &bucket, &key, headers)
                .instrument(span.clone())
                .await?;
            if copied.version_id == src.version_id {
                return Ok(S3Response::new(CopyObjectOutput {
                    copy_object_result: Some(CopyObjectResult {
                        e_tag: Some(etag(&info)),
                        last_modified: Some(timestamp(info.created_unix)),
                        ..CopyObjectResult::default()
                    }),
                    ..CopyObjectOutput::default()
                }));
            }
            // The source was replaced between its look-up and its read: the copy holds the
            // new bytes under the old headers. Copy again, from the new version.
            warn!(attempt, "copy source replaced while copying; copying again");
        }
        Err(s3_error!(
            OperationAborted,
            "the copy source kept changing while it was copied; retry"
        ))
    }

    /// Streams `src` into `bucket/key` through the gateway; returns the version read and the
    /// object written.
    async fn stream_copy(
        &self,
        client: &Client,
        src: &ObjectInfo,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
    ) -> S3Result<(ObjectInfo, ObjectInfo)> {
        let (writer, reader) = tokio::io::duplex(1 << 20);
        let get = client.get(
            &src.bucket,
            &src.key,
            writer,
            dogfs_client::GetOptions::default(),
        );
        let put = client.put_with_md5_etag(bucket, key, reader, src.size, headers.to_put_options());
        let (got, put) = tokio::join!(get, put);
        match (got, put) {
            (Ok(copied), Ok(info)) => Ok((copied, info)),
            // A write error of the pipe only says the put stopped reading: the put's error
            // is the cause.
            (Err(e), Err(pe)) if e.kind() == ErrorKind::Io => {
                Err(s3_error(client, Subject::Object(bucket, key), pe).await)
            }
            (Err(e), _) => Err(s3_error(client, Subject::Object(&src.bucket, &src.key), e).await),
            (Ok(_), Err(e)) => Err(s3_error(client, Subject::Object(bucket, key), e).await),
        }
    }
}

/// A PUT body's size (PutObject, UploadPart). Without Content-Length an HTTP/1.1 body is empty,
/// unless it is chunked, which S3 refuses: the size must be known before the upload begins.
pub(crate) fn body_size(content_length: Option<i64>, headers: &http::HeaderMap) -> S3Result<u64> {
    let size = match content_length {
        Some(n) => n,
        None if headers.contains_key(http::header::TRANSFER_ENCODING) => {
            return Err(s3_error!(
                MissingContentLength,
                "You must provide the Content-Length HTTP header."
            ));
        }
        None => 0,
    };
    u64::try_from(size).map_err(|_| s3_error!(InvalidArgument, "negative Content-Length {size}"))
}

/// The digests a PUT body must match: Content-MD5, the `x-amz-checksum-*` headers (CRC32,
/// CRC32C, CRC64NVME, SHA1, SHA256, in that order) and the trailer `x-amz-trailer` announces.
pub(crate) fn expected_digests(
    content_md5: Option<&str>,
    checksums: [Option<&String>; 5],
    headers: &http::HeaderMap,
) -> S3Result<Expected> {
    let [crc32, crc32c, crc64nvme, sha1, sha256] = checksums;
    Expected::new(
        content_md5,
        [
            (Algorithm::Crc32, crc32),
            (Algorithm::Crc32c, crc32c),
            (Algorithm::Crc64Nvme, crc64nvme),
            (Algorithm::Sha1, sha1),
            (Algorithm::Sha256, sha256),
        ],
        headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()),
    )
    .map_err(|e| e.to_s3())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_not_stored() {
        assert_eq!(stored_encoding(Some("aws-chunked".into())), None);
        assert_eq!(
            stored_encoding(Some("gzip,aws-chunked".into())).as_deref(),
            Some("gzip")
        );
        assert_eq!(stored_encoding(None), None);
    }
}
