//! Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since and
//! their `x-amz-copy-source-if-*` forms), evaluated in RFC 9110 §13.2.2 order, and byte
//! ranges.

use std::ops::Range as ByteRange;

use http::{HeaderMap, HeaderValue};
use s3s::dto::{ETag, ETagCondition, Range, Timestamp};
use s3s::{S3Error, S3ErrorCode, s3_error};

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
}
