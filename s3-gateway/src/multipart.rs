//! Multipart upload over the client's multipart API (docs/client.md "Multipart upload"):
//! parts are stored as segments of their own and CompleteMultipartUpload makes one object
//! version of them without copying a byte. A part's body streams into the client like a PUT's
//! (bounded memory, Content-MD5 and `x-amz-checksum-*` verified before the part is recorded);
//! its ETag is the hex MD5 of its bytes, and the object's is S3's MD5 of the part MD5s, `-N`.
//! UploadPartCopy streams the source's bytes (or range) through the gateway into the part, as
//! CopyObject does (bounded memory; no server-side copy yet).

use std::ops::Range;

use bytes::Bytes;
use dogfs_client::{
    Client, CompletedPart, Error, ErrorKind, GetOptions, MultipartFailure, MultipartUpload,
    ObjectInfo, PartInfo, PartOptions,
};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyPartResult, CopySource, CreateMultipartUploadInput,
    CreateMultipartUploadOutput, ETag, ListPartsInput, ListPartsOutput, Part, StorageClass,
    StreamingBlob, UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tracing::{Instrument, debug, info_span, warn};

use crate::body::{Algorithm, PutBody};
use crate::conditional::{Conditions, MAX_PART_NUMBER, Verdict, copy_source_range};
use crate::errors::{Subject, s3_error};
use crate::metadata::{ObjectHeaders, timestamp};
use crate::objects::{COPY_ATTEMPTS, body_size, check_version, expected_digests, stored_encoding};
use crate::service::DogS3;

/// The pipe between a copy's read of its source and its part upload.
const COPY_PIPE_BYTES: usize = 1 << 20;
/// S3's page limit of ListParts and ListMultipartUploads (list.rs).
pub(crate) const MAX_PAGE: i32 = 1000;

/// A part number as the client's, or S3's InvalidArgument.
fn part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n.unsigned_abs())
    } else {
        Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        ))
    }
}

/// A page size: absent means S3's 1000; above 1000 is 1000; negative is refused.
pub(crate) fn page_size(n: Option<i32>, what: &str) -> S3Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "{what} must be non-negative")),
        Some(n) => Ok(Some(n.min(MAX_PAGE).unsigned_abs())),
    }
}

/// A part ETag as sent in CompleteMultipartUpload, without quotes.
fn bare_etag(e: ETag) -> String {
    e.into_value().trim_matches('"').to_owned()
}

/// The S3 error of a failed multipart call: multipart's own codes, else the usual mapping.
async fn multipart_error(s3: &DogS3, upload: &MultipartUpload, e: Error) -> S3Error {
    // S3 knows no malformed upload id: any id it never gave out names no upload.
    let malformed_id =
        e.kind() == ErrorKind::InvalidInput && e.to_string().contains("invalid upload id");
    let failure = if malformed_id {
        Some(MultipartFailure::NoSuchUpload)
    } else {
        MultipartFailure::of(&e)
    };
    let code = match failure {
        Some(MultipartFailure::NoSuchUpload) => {
            return S3Error::with_message(
                S3ErrorCode::NoSuchUpload,
                format!(
                    "The specified upload does not exist. The upload ID may be invalid, or the \
                     upload may have been aborted or completed: {}",
                    upload.upload_id
                ),
            );
        }
        Some(MultipartFailure::InvalidPart) => S3ErrorCode::InvalidPart,
        Some(MultipartFailure::InvalidPartOrder) => S3ErrorCode::InvalidPartOrder,
        Some(MultipartFailure::EntityTooSmall) => S3ErrorCode::EntityTooSmall,
        Some(MultipartFailure::NoPartsListed) => S3ErrorCode::MalformedXML,
        Some(MultipartFailure::InvalidPartNumber) => S3ErrorCode::InvalidArgument,
        None => {
            return s3_error(&s3.client, Subject::Object(&upload.bucket, &upload.key), e).await;
        }
    };
    S3Error::with_message(code, e.to_string())
}

impl DogS3 {
    pub(crate) async fn do_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let (bucket, key) = (input.bucket, input.key);
        let headers = ObjectHeaders {
            content_type: input.content_type,
            content_encoding: stored_encoding(input.content_encoding),
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            user: input.metadata,
        };
        let span = info_span!("create_multipart_upload", bucket = %bucket, key = %key);
        let upload = match client
            .create_multipart(&bucket, &key, headers.to_put_options())
            .instrument(span)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                return Err(s3_error(client, Subject::Object(&bucket, &key), e).await);
            }
        };
        debug!(bucket = %bucket, key = %key, upload_id = %upload.upload_id, "multipart upload created");
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload.upload_id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    pub(crate) async fn do_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let number = part_number(input.part_number)?;
        let size = body_size(input.content_length, &req.headers)?;
        let upload = MultipartUpload::new(input.bucket, input.key, input.upload_id);
        let span = info_span!("upload_part", bucket = %upload.bucket, key = %upload.key,
            upload_id = %upload.upload_id, part = number, size);
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
        let stream = input.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let (mut body, outcome) = PutBody::new(stream, size, expected, req.trailing_headers);
        // No ETag given: the client stores hex(MD5(part)), computed as the bytes stream.
        let opts = PartOptions::default();
        let result = async {
            if size == 0 {
                body.verify_empty().await.map_err(|e| e.to_s3())?;
                Ok::<_, S3Error>(
                    client
                        .upload_part_with(&upload, number, tokio::io::empty(), 0, opts)
                        .await,
                )
            } else {
                Ok(client
                    .upload_part_with(&upload, number, body, size, opts)
                    .await)
            }
        }
        .instrument(span)
        .await?;
        let part = match result {
            Ok(p) => p,
            Err(e) => match outcome.failure() {
                Some(f) => return Err(f.to_s3()),
                None => return Err(multipart_error(self, &upload, e).await),
            },
        };
        debug!(upload_id = %upload.upload_id, part = number, etag = %part.etag, "part stored");
        let mut out = UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..UploadPartOutput::default()
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

    pub(crate) async fn do_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let number = part_number(input.part_number)?;
        let (src_bucket, src_key, src_version) = match &input.copy_source {
            CopySource::Bucket {
                bucket,
                key,
                version_id,
            } => (bucket.to_string(), key.to_string(), version_id.clone()),
            _ => return Err(s3_error!(NotImplemented, "copy from an access point")),
        };
        check_version(src_version.as_deref())?;
        let upload = MultipartUpload::new(input.bucket, input.key, input.upload_id);
        let span = info_span!("upload_part_copy", src_bucket = %src_bucket, src_key = %src_key,
            bucket = %upload.bucket, key = %upload.key, upload_id = %upload.upload_id,
            part = number);
        let conditions = Conditions {
            if_match: input.copy_source_if_match,
            if_none_match: input.copy_source_if_none_match,
            if_modified_since: input.copy_source_if_modified_since,
            if_unmodified_since: input.copy_source_if_unmodified_since,
        };
        for attempt in 1..=COPY_ATTEMPTS {
            let src = self
                .info(client, &src_bucket, &src_key)
                .instrument(span.clone())
                .await?;
            // As CopyObject: a copy's failed condition is always 412.
            if !conditions.is_empty()
                && conditions.evaluate(&src.etag, src.created_unix) != Verdict::Proceed
            {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
            let range = match input.copy_source_range.as_deref() {
                Some(v) => copy_source_range(v, src.size)?,
                None => 0..src.size,
            };
            let (read, part) = self
                .copy_into_part(client, &src, range, &upload, number)
                .instrument(span.clone())
                .await?;
            if read == src.version_id {
                debug!(upload_id = %upload.upload_id, part = number, etag = %part.etag,
                    "part copied");
                return Ok(S3Response::new(UploadPartCopyOutput {
                    copy_part_result: Some(CopyPartResult {
                        e_tag: Some(ETag::Strong(part.etag)),
                        last_modified: Some(timestamp(part.last_modified_unix)),
                        ..CopyPartResult::default()
                    }),
                    ..UploadPartCopyOutput::default()
                }));
            }
            // The source was replaced between its look-up and its read (its conditions were
            // checked on the old version): copy again; the new part replaces this one.
            warn!(
                attempt,
                "copy source replaced while copying a part; copying again"
            );
        }
        Err(s3_error!(
            OperationAborted,
            "the copy source kept changing while it was copied; retry"
        ))
    }

    /// Streams `range` of `src` into part `number` of `upload` (the client computes the part's
    /// MD5 ETag as the bytes pass); returns the source version read and the part.
    async fn copy_into_part(
        &self,
        client: &Client,
        src: &ObjectInfo,
        range: Range<u64>,
        upload: &MultipartUpload,
        number: u32,
    ) -> S3Result<(String, PartInfo)> {
        let len = range.end - range.start;
        if len == 0 {
            let empty = tokio::io::empty();
            return match client
                .upload_part_with(upload, number, empty, 0, PartOptions::default())
                .await
            {
                Ok(p) => Ok((src.version_id.clone(), p)),
                Err(e) => Err(multipart_error(self, upload, e).await),
            };
        }
        let (writer, reader) = tokio::io::duplex(COPY_PIPE_BYTES);
        let opts = GetOptions {
            range: Some(range),
            ..GetOptions::default()
        };
        let get = client.get(&src.bucket, &src.key, writer, opts);
        let put = client.upload_part_with(upload, number, reader, len, PartOptions::default());
        match tokio::join!(get, put) {
            (Ok(read), Ok(part)) => Ok((read.version_id, part)),
            // A write error of the pipe only says the part upload stopped reading (an unknown
            // upload, say): its error is the cause.
            (Err(e), Err(pe)) if e.kind() == ErrorKind::Io => {
                Err(multipart_error(self, upload, pe).await)
            }
            (Err(e), _) => Err(s3_error(client, Subject::Object(&src.bucket, &src.key), e).await),
            (Ok(_), Err(e)) => Err(multipart_error(self, upload, e).await),
        }
    }

    pub(crate) async fn do_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "Conditional writes (If-Match / If-None-Match) are not supported"
            ));
        }
        let upload = MultipartUpload::new(input.bucket, input.key, input.upload_id);
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our \
                 published schema: no parts listed"
            ));
        }
        let mut parts = Vec::with_capacity(listed.len());
        for p in listed {
            let Some(n) = p.part_number else {
                return Err(s3_error!(
                    MalformedXML,
                    "a listed part lacks its PartNumber"
                ));
            };
            let Some(etag) = p.e_tag else {
                return Err(s3_error!(MalformedXML, "part {n} lacks its ETag"));
            };
            parts.push(CompletedPart {
                part_number: part_number(n)?,
                etag: bare_etag(etag),
            });
        }
        let span = info_span!("complete_multipart_upload", bucket = %upload.bucket,
            key = %upload.key, upload_id = %upload.upload_id, parts = parts.len());
        let info = match client
            .complete_multipart(&upload, &parts)
            .instrument(span)
            .await
        {
            Ok(i) => i,
            Err(e) => return Err(multipart_error(self, &upload, e).await),
        };
        debug!(bucket = %upload.bucket, key = %upload.key, etag = %info.etag, "multipart upload completed");
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", upload.bucket, upload.key)),
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            e_tag: Some(ETag::Strong(info.etag)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    pub(crate) async fn do_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        if input.if_match_initiated_time.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "x-amz-if-match-initiated-time is not supported"
            ));
        }
        let upload = MultipartUpload::new(input.bucket, input.key, input.upload_id);
        let span = info_span!("abort_multipart_upload", bucket = %upload.bucket,
            key = %upload.key, upload_id = %upload.upload_id);
        match client.abort_multipart(&upload).instrument(span).await {
            Ok(()) => Ok(S3Response::new(AbortMultipartUploadOutput::default())),
            Err(e) => Err(multipart_error(self, &upload, e).await),
        }
    }

    pub(crate) async fn do_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let max = page_size(input.max_parts, "max-parts")?;
        let marker = match input.part_number_marker {
            None => 0,
            Some(m) if m >= 0 => m.unsigned_abs(),
            Some(_) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "part-number-marker must be non-negative"
                ));
            }
        };
        let upload = MultipartUpload::new(input.bucket, input.key, input.upload_id);
        let span = info_span!("list_parts", bucket = %upload.bucket, key = %upload.key,
            upload_id = %upload.upload_id);
        let page = match client
            .list_parts(&upload, marker, max)
            .instrument(span)
            .await
        {
            Ok(p) => p,
            Err(e) => return Err(multipart_error(self, &upload, e).await),
        };
        let parts: Vec<Part> = page
            .parts
            .into_iter()
            .map(|p| Part {
                e_tag: Some(ETag::Strong(p.etag)),
                last_modified: Some(timestamp(p.last_modified_unix)),
                part_number: i32::try_from(p.part_number).ok(),
                size: i64::try_from(p.size).ok(),
                ..Part::default()
            })
            .collect();
        let next = page.truncated.then_some(page.next_part_number_marker);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.upload_id),
            is_truncated: Some(page.truncated),
            max_parts: Some(max.map_or(MAX_PAGE, |m| i32::try_from(m).unwrap_or(MAX_PAGE))),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next.and_then(|n| i32::try_from(n).ok()),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(parts),
            ..ListPartsOutput::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_numbers_and_pages() {
        assert_eq!(part_number(1).unwrap(), 1);
        assert_eq!(part_number(10_000).unwrap(), 10_000);
        assert!(part_number(0).is_err());
        assert!(part_number(10_001).is_err());
        assert_eq!(page_size(None, "x").unwrap(), None);
        assert_eq!(page_size(Some(5000), "x").unwrap(), Some(1000));
        assert!(page_size(Some(-1), "x").is_err());
        assert_eq!(bare_etag(ETag::Strong("\"abc\"".into())), "abc".to_owned());
    }
}
