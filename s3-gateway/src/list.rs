//! ListObjectsV2, ListObjects (V1) and ListObjectVersions (unversioned: every object is its
//! one, latest, `null` version), one DogFS page per request; ListMultipartUploads, whose
//! `delimiter` the gateway rolls up itself (the metadata service lists uploads by prefix only).

use dogfs_client::{
    Client, ListEntry, ListPage, ListQuery, MultipartUploadInfo, ObjectSummary, UploadsQuery,
};
use s3s::dto::{
    CommonPrefix, ETag, EncodingType, ListMultipartUploadsInput, ListMultipartUploadsOutput,
    ListObjectVersionsInput, ListObjectVersionsOutput, ListObjectsInput, ListObjectsOutput,
    ListObjectsV2Input, ListObjectsV2Output, Object, ObjectStorageClass, ObjectVersion,
    ObjectVersionStorageClass, StorageClass,
};
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tracing::{Instrument, info_span};

use crate::errors::{Subject, s3_error};
use crate::metadata::timestamp;
use crate::multipart::{MAX_PAGE, page_size};
use crate::service::DogS3;

/// S3's default and largest page.
const MAX_KEYS: i32 = 1000;

/// `encoding-type=url`: names are percent-encoded (all but unreserved characters and `/`),
/// so keys with control characters survive XML. Clients decode with `unquote_plus`, so `+`
/// and space are encoded too.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes names when the request asked for `url`; refuses any other encoding.
#[derive(Debug, Clone, Copy)]
struct Encoder {
    url: bool,
}

impl Encoder {
    fn new(e: Option<&EncodingType>) -> S3Result<Self> {
        match e.map(EncodingType::as_str) {
            None => Ok(Encoder { url: false }),
            Some(s) if s.eq_ignore_ascii_case(EncodingType::URL) => Ok(Encoder { url: true }),
            Some(other) => Err(s3_error!(
                InvalidArgument,
                "Invalid Encoding Method specified in Request: {other}"
            )),
        }
    }

    fn name(self, s: String) -> String {
        if self.url { url_encode(&s) } else { s }
    }

    fn opt(self, s: Option<String>) -> Option<String> {
        s.map(|s| self.name(s))
    }
}

fn max_keys(m: Option<i32>) -> S3Result<u32> {
    match m {
        None => Ok(MAX_KEYS as u32),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be >= 0, got {n}")),
        Some(n) => Ok(n.min(MAX_KEYS) as u32),
    }
}

fn object(o: ObjectSummary, enc: Encoder) -> Object {
    Object {
        key: Some(enc.name(o.key)),
        size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
        e_tag: Some(ETag::Strong(o.etag)),
        last_modified: Some(timestamp(o.created_unix)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Object::default()
    }
}

/// A page's objects and common prefixes, apart.
fn split(entries: Vec<ListEntry>, enc: Encoder) -> (Vec<Object>, Vec<CommonPrefix>) {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for e in entries {
        match e {
            ListEntry::Object(o) => objects.push(object(o, enc)),
            ListEntry::CommonPrefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc.name(p)),
            }),
        }
    }
    (objects, prefixes)
}

/// Keys are at most this long (DogFS, as S3).
const MAX_KEY_BYTES: usize = 1024;

/// The V1 `marker` (or `key-marker`) as a start position. A marker naming a common prefix
/// (NextMarker when the page ended on one) means "past every key under it", as in S3; a
/// plain start-after would list the prefix again. No key (at most 1024 bytes of UTF-8) under
/// the prefix sorts after the prefix followed by more U+10FFFF (the largest scalar, bytes F4
/// 8F BF BF) than a key can hold, so that string is the exact position.
fn start_of_marker(marker: &str, prefix: &str, delimiter: &str) -> String {
    let rolled_up = !delimiter.is_empty()
        && marker.len() > prefix.len()
        && marker.starts_with(prefix)
        && marker[prefix.len()..].find(delimiter)
            == Some(marker.len() - prefix.len() - delimiter.len());
    if !rolled_up {
        return marker.to_owned();
    }
    let pad = (MAX_KEY_BYTES + 1).saturating_sub(marker.len()).div_ceil(4) + 1;
    let mut s = String::with_capacity(marker.len() + 4 * pad);
    s.push_str(marker);
    s.extend(std::iter::repeat_n(char::MAX, pad));
    s
}

/// A key marker just past every key under the common prefix `cp` that the metadata service
/// accepts (a key of at most 1024 bytes): `cp` and as many U+10FFFF as fit. Keys under `cp`
/// that still sort after it (a last character of 1–3 bytes in the room left) are skipped by
/// the caller.
fn past_uploads_under(cp: &str) -> String {
    let pad = MAX_KEY_BYTES.saturating_sub(cp.len()) / char::MAX.len_utf8();
    let mut s = String::with_capacity(cp.len() + 4 * pad);
    s.push_str(cp);
    s.extend(std::iter::repeat_n(char::MAX, pad));
    s
}

/// The common prefix `key` rolls up to under `prefix` and `delimiter`, if any.
fn rolled_up(key: &str, prefix: &str, delimiter: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(format!("{prefix}{}", &rest[..at + delimiter.len()]))
}

/// One ListMultipartUploads answer before encoding.
#[derive(Debug, Default)]
struct UploadsListing {
    uploads: Vec<MultipartUploadInfo>,
    prefixes: Vec<String>,
    truncated: bool,
    next_key_marker: String,
    next_upload_id_marker: String,
}

impl DogS3 {
    async fn page(&self, client: &Client, bucket: &str, q: &ListQuery) -> S3Result<ListPage> {
        let span = info_span!("list", bucket, prefix = %q.prefix, delimiter = %q.delimiter);
        match client.list_page(bucket, q).instrument(span).await {
            Ok(p) => Ok(p),
            Err(e) => Err(s3_error(client, Subject::Bucket(bucket), e).await),
        }
    }

    pub(crate) async fn do_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let q = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().unwrap_or_default(),
            start_after: input.start_after.clone().unwrap_or_default(),
            max_keys: Some(max),
            continuation_token: input.continuation_token.clone().filter(|t| !t.is_empty()),
        };
        let page = self.page(client, &input.bucket, &q).await?;
        let key_count = i32::try_from(page.entries.len()).unwrap_or(MAX_KEYS);
        let (contents, prefixes) = split(page.entries, enc);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc.name(q.prefix)),
            delimiter: enc.opt(input.delimiter),
            start_after: enc.opt(input.start_after),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max).unwrap_or(MAX_KEYS)),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_token.filter(|_| page.truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            request_charged: None,
        }))
    }

    pub(crate) async fn do_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let marker = input.marker.clone().unwrap_or_default();
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let q = ListQuery {
            start_after: start_of_marker(&marker, &prefix, &delimiter),
            prefix,
            delimiter,
            max_keys: Some(max),
            continuation_token: None,
        };
        let page = self.page(client, &input.bucket, &q).await?;
        // The next marker is the last name listed; S3 sends it only with a delimiter (clients
        // use the last key otherwise), which this follows.
        let next_marker = (page.truncated && !q.delimiter.is_empty())
            .then(|| page.entries.last().map(|e| e.name().to_owned()))
            .flatten();
        let (contents, prefixes) = split(page.entries, enc);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc.name(q.prefix)),
            delimiter: enc.opt(input.delimiter),
            marker: Some(enc.name(marker)),
            next_marker: enc.opt(next_marker),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max).unwrap_or(MAX_KEYS)),
            is_truncated: Some(page.truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            request_charged: None,
        }))
    }

    pub(crate) async fn do_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let marker = input.key_marker.clone().unwrap_or_default();
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let q = ListQuery {
            start_after: start_of_marker(&marker, &prefix, &delimiter),
            prefix,
            delimiter,
            max_keys: Some(max),
            continuation_token: None,
        };
        let page = self.page(client, &input.bucket, &q).await?;
        let next_key_marker = page
            .truncated
            .then(|| page.entries.last().map(|e| e.name().to_owned()))
            .flatten();
        let mut versions = Vec::new();
        let mut prefixes = Vec::new();
        for e in page.entries {
            match e {
                ListEntry::Object(o) => versions.push(ObjectVersion {
                    key: Some(enc.name(o.key)),
                    version_id: Some("null".to_owned()),
                    is_latest: Some(true),
                    size: Some(i64::try_from(o.size).unwrap_or(i64::MAX)),
                    e_tag: Some(ETag::Strong(o.etag)),
                    last_modified: Some(timestamp(o.created_unix)),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..ObjectVersion::default()
                }),
                ListEntry::CommonPrefix(p) => prefixes.push(CommonPrefix {
                    prefix: Some(enc.name(p)),
                }),
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc.name(q.prefix)),
            delimiter: enc.opt(input.delimiter),
            key_marker: Some(enc.name(marker)),
            version_id_marker: input.version_id_marker,
            next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_owned()),
            next_key_marker: enc.opt(next_key_marker),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max).unwrap_or(MAX_KEYS)),
            is_truncated: Some(page.truncated),
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            delete_markers: None,
            request_charged: None,
        }))
    }

    async fn uploads_page(
        &self,
        client: &Client,
        bucket: &str,
        q: &UploadsQuery,
    ) -> S3Result<dogfs_client::UploadsPage> {
        let span = info_span!("list_multipart_uploads", bucket, prefix = %q.prefix);
        match client
            .list_multipart_uploads(bucket, q)
            .instrument(span)
            .await
        {
            Ok(p) => Ok(p),
            Err(e) => Err(s3_error(client, Subject::Bucket(bucket), e).await),
        }
    }

    /// Uploads from `q` on, keys containing `delimiter` after `prefix` rolled up into common
    /// prefixes, at most `max` entries (uploads and prefixes) in all. Pages through the
    /// metadata service, seeking past each common prefix rather than reading its uploads.
    async fn uploads_rolled_up(
        &self,
        client: &Client,
        bucket: &str,
        mut q: UploadsQuery,
        delimiter: &str,
        max: u32,
    ) -> S3Result<UploadsListing> {
        let mut out = UploadsListing::default();
        let mut count = 0u32;
        // A marker naming a common prefix (NextKeyMarker of a page that ended on one) means
        // "past every upload under it".
        let mut last_prefix =
            rolled_up(&q.key_marker, &q.prefix, delimiter).filter(|cp| *cp == q.key_marker);
        if let Some(cp) = &last_prefix {
            q.key_marker = past_uploads_under(cp);
            q.upload_id_marker.clear();
        }
        q.max_uploads = Some(MAX_PAGE.unsigned_abs());
        'pages: loop {
            let page = self.uploads_page(client, bucket, &q).await?;
            let last_key = page.uploads.last().map(|u| u.key.clone());
            for u in page.uploads {
                let cp = rolled_up(&u.key, &q.prefix, delimiter);
                if cp.is_some() && cp == last_prefix {
                    continue;
                }
                if count == max {
                    out.truncated = true;
                    break 'pages;
                }
                count += 1;
                match cp {
                    Some(cp) => {
                        out.next_key_marker.clone_from(&cp);
                        out.next_upload_id_marker.clear();
                        out.prefixes.push(cp.clone());
                        last_prefix = Some(cp);
                    }
                    None => {
                        out.next_key_marker.clone_from(&u.key);
                        out.next_upload_id_marker.clone_from(&u.upload_id);
                        out.uploads.push(u);
                    }
                }
            }
            if !page.truncated {
                break;
            }
            match (&last_prefix, last_key) {
                // The page ended inside a common prefix: skip the rest of it at once.
                (Some(cp), Some(k)) if k.starts_with(cp.as_str()) => {
                    q.key_marker = past_uploads_under(cp);
                    q.upload_id_marker.clear();
                }
                _ => {
                    q.key_marker = page.next_key_marker;
                    q.upload_id_marker = page.next_upload_id_marker;
                }
            }
        }
        if !out.truncated {
            out.next_key_marker.clear();
            out.next_upload_id_marker.clear();
        }
        Ok(out)
    }

    pub(crate) async fn do_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let input = req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = page_size(input.max_uploads, "max-uploads")?;
        let bucket = input.bucket;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let query = UploadsQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            // S3 ignores upload-id-marker without key-marker.
            upload_id_marker: if key_marker.is_empty() {
                String::new()
            } else {
                input.upload_id_marker.clone().unwrap_or_default()
            },
            key_marker,
            max_uploads: max,
        };
        let listing = if delimiter.is_empty() {
            let page = self.uploads_page(client, &bucket, &query).await?;
            UploadsListing {
                uploads: page.uploads,
                prefixes: Vec::new(),
                truncated: page.truncated,
                next_key_marker: page.next_key_marker,
                next_upload_id_marker: page.next_upload_id_marker,
            }
        } else {
            let max = max.unwrap_or(MAX_PAGE.unsigned_abs());
            self.uploads_rolled_up(client, &bucket, query, &delimiter, max)
                .await?
        };
        let uploads = listing
            .uploads
            .into_iter()
            .map(|u| s3s::dto::MultipartUpload {
                initiated: Some(timestamp(u.initiated_unix)),
                key: Some(enc.name(u.key)),
                upload_id: Some(u.upload_id),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..s3s::dto::MultipartUpload::default()
            })
            .collect();
        let prefixes = listing
            .prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc.name(p)),
            })
            .collect();
        let truncated = listing.truncated;
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter),
            key_marker: enc.opt(input.key_marker),
            upload_id_marker: input.upload_id_marker,
            encoding_type: input.encoding_type,
            max_uploads: Some(max.map_or(MAX_PAGE, |m| i32::try_from(m).unwrap_or(MAX_PAGE))),
            is_truncated: Some(truncated),
            next_key_marker: truncated.then(|| enc.name(listing.next_key_marker)),
            next_upload_id_marker: truncated.then_some(listing.next_upload_id_marker),
            uploads: Some(uploads),
            common_prefixes: Some(prefixes),
            ..ListMultipartUploadsOutput::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(url_encode("a/b c+d%é\u{1}"), "a/b%20c%2Bd%25%C3%A9%01");
        assert_eq!(url_encode("plain-key_1.txt~"), "plain-key_1.txt~");
    }

    #[test]
    fn max_keys_clamps_and_refuses_negatives() {
        assert_eq!(max_keys(None).unwrap(), 1000);
        assert_eq!(max_keys(Some(5000)).unwrap(), 1000);
        assert_eq!(max_keys(Some(0)).unwrap(), 0);
        assert!(max_keys(Some(-1)).is_err());
    }

    #[test]
    fn a_marker_naming_a_prefix_starts_past_every_key_under_it() {
        assert_eq!(start_of_marker("a/b", "", "/"), "a/b");
        assert_eq!(start_of_marker("a/b", "", ""), "a/b");
        assert_eq!(start_of_marker("a/", "a/", "/"), "a/");
        let past = start_of_marker("a/", "", "/");
        assert!(past.starts_with("a/") && past.len() > MAX_KEY_BYTES + 1);
        let longest_key = format!("a/{}", "\u{10FFFF}".repeat((MAX_KEY_BYTES - 2) / 4));
        assert!(longest_key.as_str() < past.as_str());
        assert!("a0" > past.as_str());
        let nested = start_of_marker("p/x/", "p/", "/");
        assert!(nested.starts_with("p/x/\u{10FFFF}"));
    }

    #[test]
    fn uploads_roll_up_under_a_delimiter() {
        assert_eq!(rolled_up("a/b/c", "", "/").as_deref(), Some("a/"));
        assert_eq!(rolled_up("a/b/c", "a/", "/").as_deref(), Some("a/b/"));
        assert_eq!(rolled_up("a/b", "a/", "/"), None);
        assert_eq!(rolled_up("x/b", "a/", "/"), None);
        assert_eq!(rolled_up("a::b", "", "::").as_deref(), Some("a::"));
        let past = past_uploads_under("a/");
        assert!(past.len() <= MAX_KEY_BYTES && past.len() > MAX_KEY_BYTES - 4);
        let longest = format!("a/{}", "\u{10FFFF}".repeat((MAX_KEY_BYTES - 2) / 4));
        assert!(longest.as_str() <= past.as_str());
        assert!("a0" > past.as_str());
    }
}
