//! Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since and
//! their `x-amz-copy-source-if-*` forms), evaluated in RFC 9110 §13.2.2 order, and the bytes
//! a request selects: a Range, a `partNumber`'s part, an `x-amz-copy-source-range`.

use std::ops::Range as ByteRange;

use dogfs_client::ObjectParts;
use http::{HeaderMap, HeaderValue};
use s3s::dto::{ETag, ETagCondition, Range, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

/// S3's part numbers.
pub(crate) const MAX_PART_NUMBER: i32 = 10_000;

/// The conditions of one request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// What the conditions decide.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    /// 304 (GET and HEAD only).
    NotModified,
    /// 412.
    PreconditionFailed,
}

fn unix(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        // S3 compares the opaque values; a weak tag matches its value.
        ETagCondition::ETag(t) => t.value() == etag,
    }
}

impl Conditions {
    /// Evaluates against an object with `etag` (unquoted) last modified at `modified_unix`.
    pub(crate) fn evaluate(&self, etag: &str, modified_unix: i64) -> Verdict {
        match &self.if_match {
            Some(c) if !matches(c, etag) => return Verdict::PreconditionFailed,
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_unmodified_since
                    && modified_unix > unix(t)
                {
                    return Verdict::PreconditionFailed;
                }
            }
        }
        match &self.if_none_match {
            Some(c) if matches(c, etag) => return Verdict::NotModified,
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_modified_since
                    && modified_unix <= unix(t)
                {
                    return Verdict::NotModified;
                }
            }
        }
        Verdict::Proceed
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }
}

/// The error answering a verdict; a 304 carries the ETag and Last-Modified, as S3's does.
pub(crate) fn verdict_error(v: &Verdict, etag: &str, last_modified: &str) -> Option<S3Error> {
    match v {
        Verdict::Proceed => None,
        Verdict::PreconditionFailed => Some(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        )),
        Verdict::NotModified => {
            let mut e = S3Error::with_message(S3ErrorCode::NotModified, "Not Modified");
            let mut h = HeaderMap::new();
            if let Ok(v) = ETag::Strong(etag.to_owned()).to_http_header() {
                h.insert(http::header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(last_modified) {
                h.insert(http::header::LAST_MODIFIED, v);
            }
            e.set_headers(h);
            Some(e)
        }
    }
}

/// The bytes a Range header selects of an object of `size` bytes (416 when none).
pub(crate) fn byte_range(
    range: Option<&Range>,
    size: u64,
) -> Result<Option<ByteRange<u64>>, S3Error> {
    let Some(r) = range else { return Ok(None) };
    match r.check(size) {
        Ok(r) => Ok(Some(r)),
        Err(_) => Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable (object size {size})"
        )),
    }
}

/// `partNumber` with a Range, or outside S3's part numbers, is refused before any look-up.
pub(crate) fn check_part_number(part: Option<i32>, has_range: bool) -> S3Result<()> {
    match part {
        None => Ok(()),
        Some(_) if has_range => Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        )),
        Some(n) if !(1..=MAX_PART_NUMBER).contains(&n) => Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )),
        Some(_) => Ok(()),
    }
}

/// The bytes of one part of an object (GetObject and HeadObject `partNumber`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRead {
    pub range: ByteRange<u64>,
    /// `x-amz-mp-parts-count`: only objects completed from parts have one.
    pub parts_count: Option<i32>,
}

impl PartRead {
    /// `Content-Range` of the part within an object of `size` bytes (none for an empty part:
    /// `bytes 0--1` names nothing).
    pub(crate) fn content_range(&self, size: u64) -> Option<String> {
        (self.range.end > self.range.start)
            .then(|| format!("bytes {}-{}/{size}", self.range.start, self.range.end - 1))
    }
}

/// Part `n` (1-based position, as S3 and its clients count) of `object`. An object written in
/// one PUT is its only part, as in S3; past the last part is `416 InvalidPartNumber`.
pub(crate) fn part_read(n: i32, object: &ObjectParts) -> S3Result<PartRead> {
    let invalid = || {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        // s3s knows no status for a code it does not know (it would be a 500).
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    let n = u32::try_from(n).map_err(|_| invalid())?;
    if object.parts.is_empty() {
        return match n {
            1 => Ok(PartRead {
                range: 0..object.info.size,
                parts_count: None,
            }),
            _ => Err(invalid()),
        };
    }
    let part = object.nth(n).ok_or_else(invalid)?;
    Ok(PartRead {
        range: part.offset..part.offset + part.size,
        parts_count: Some(i32::try_from(object.parts.len()).unwrap_or(MAX_PART_NUMBER)),
    })
}

/// The bytes `x-amz-copy-source-range: bytes=first-last` names in a source of `size` bytes.
/// S3 answers `InvalidArgument` both for a malformed value and for one outside the source.
pub(crate) fn copy_source_range(value: &str, size: u64) -> S3Result<ByteRange<u64>> {
    let malformed = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first \
             and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(malformed)?;
    let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return Err(malformed());
    }
    let first: u64 = first.parse().map_err(|_| malformed())?;
    let last: u64 = last.parse().map_err(|_| malformed())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidArgument,
            "Range specified is not valid for source object of size: {size}"
        ));
    }
    Ok(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::TimestampFormat;

    fn ts(unix: i64) -> Timestamp {
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(unix).unwrap())
    }

    fn tag(s: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(s.to_owned()))
    }

    #[test]
    fn rfc_order_and_s3_answers() {
        let c = |f: fn(&mut Conditions)| {
            let mut c = Conditions::default();
            f(&mut c);
            c.evaluate("abc", 1000)
        };
        assert_eq!(c(|_| {}), Verdict::Proceed);
        assert_eq!(c(|c| c.if_match = Some(tag("abc"))), Verdict::Proceed);
        assert_eq!(
            c(|c| c.if_match = Some(tag("x"))),
            Verdict::PreconditionFailed
        );
        assert_eq!(
            c(|c| c.if_match = Some(ETagCondition::Any)),
            Verdict::Proceed
        );
        assert_eq!(
            c(|c| c.if_none_match = Some(tag("abc"))),
            Verdict::NotModified
        );
        assert_eq!(
            c(|c| c.if_none_match = Some(ETagCondition::Any)),
            Verdict::NotModified
        );
        assert_eq!(c(|c| c.if_none_match = Some(tag("x"))), Verdict::Proceed);
        assert_eq!(
            c(|c| c.if_modified_since = Some(ts(1000))),
            Verdict::NotModified
        );
        assert_eq!(c(|c| c.if_modified_since = Some(ts(999))), Verdict::Proceed);
        assert_eq!(
            c(|c| c.if_unmodified_since = Some(ts(999))),
            Verdict::PreconditionFailed
        );
        assert_eq!(
            c(|c| c.if_unmodified_since = Some(ts(1000))),
            Verdict::Proceed
        );
        // If-Match true overrides If-Unmodified-Since false (S3 and RFC 9110 agree).
        assert_eq!(
            c(|c| {
                c.if_match = Some(tag("abc"));
                c.if_unmodified_since = Some(ts(1));
            }),
            Verdict::Proceed
        );
        // If-None-Match decides alone when present.
        assert_eq!(
            c(|c| {
                c.if_none_match = Some(tag("x"));
                c.if_modified_since = Some(ts(5000));
            }),
            Verdict::Proceed
        );
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |s: &str, size| byte_range(Some(&Range::parse(s).unwrap()), size);
        assert_eq!(r("bytes=0-0", 10).unwrap(), Some(0..1));
        assert_eq!(r("bytes=5-", 10).unwrap(), Some(5..10));
        assert_eq!(r("bytes=-3", 10).unwrap(), Some(7..10));
        assert_eq!(r("bytes=-30", 10).unwrap(), Some(0..10));
        assert_eq!(r("bytes=2-100", 10).unwrap(), Some(2..10));
        assert_eq!(
            r("bytes=10-", 10).unwrap_err().code().as_str(),
            "InvalidRange"
        );
        assert!(byte_range(None, 10).unwrap().is_none());
        let _ = TimestampFormat::HttpDate;
    }

    #[test]
    fn part_numbers_are_checked_before_look_ups() {
        assert!(check_part_number(None, true).is_ok());
        assert!(check_part_number(Some(1), false).is_ok());
        assert!(check_part_number(Some(2), false).is_ok());
        assert_eq!(
            check_part_number(Some(1), true)
                .unwrap_err()
                .code()
                .as_str(),
            "InvalidRequest"
        );
        assert_eq!(
            check_part_number(Some(0), false)
                .unwrap_err()
                .code()
                .as_str(),
            "InvalidArgument"
        );
        assert!(check_part_number(Some(10_001), false).is_err());
    }

    #[test]
    fn past_the_last_part_is_416() {
        let info = dogfs_client::ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 15,
            etag: "e-2".into(),
            content_type: String::new(),
            user_metadata: Default::default(),
            created_unix: 0,
            version_id: "v".into(),
            scheme: dogfs_client::Scheme {
                k: 2,
                m: 1,
                cell_size: 4096,
            },
            segment_size: 1 << 20,
            inline: false,
        };
        let part = |part_number, offset, size| dogfs_client::ObjectPart {
            part_number,
            offset,
            size,
        };
        let object = ObjectParts {
            info,
            parts: vec![part(1, 0, 10), part(3, 10, 5)],
        };
        let p = part_read(2, &object).unwrap();
        assert_eq!((p.range, p.parts_count), (10..15, Some(2)));
        let e = part_read(3, &object).unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidPartNumber");
        assert_eq!(e.status_code().map(|s| s.as_u16()), Some(416));
        let single = ObjectParts {
            parts: Vec::new(),
            ..object
        };
        assert_eq!(part_read(1, &single).unwrap().range, 0..15);
        assert!(part_read(2, &single).is_err());
    }

    #[test]
    fn copy_source_ranges_as_s3() {
        assert_eq!(copy_source_range("bytes=0-0", 10).unwrap(), 0..1);
        assert_eq!(copy_source_range("bytes=2-9", 10).unwrap(), 2..10);
        for bad in [
            "bytes=2-10",
            "bytes=5-4",
            "0-3",
            "bytes=-3",
            "bytes=3-",
            "bytes=a-b",
        ] {
            let e = copy_source_range(bad, 10).unwrap_err();
            assert_eq!(e.code().as_str(), "InvalidArgument", "{bad}");
        }
    }
}
