//! An object's S3 headers in DogFS's object record: Content-Type in its own field; the other
//! representation headers in the user metadata under reserved names that no `x-amz-meta-*`
//! key can take (a `:` is not allowed in an HTTP header name); `x-amz-meta-*` as is.

use std::collections::BTreeMap;

use dogfs_client::{ObjectInfo, PutOptions};
use s3s::dto::{Metadata, Timestamp, TimestampFormat};

/// Where the headers DogFS has no field for are kept in an object's user metadata.
pub(crate) const RESERVED_PREFIX: &str = "s3:";
const CONTENT_ENCODING: &str = "s3:content-encoding";
const CONTENT_DISPOSITION: &str = "s3:content-disposition";
const CONTENT_LANGUAGE: &str = "s3:content-language";
const CACHE_CONTROL: &str = "s3:cache-control";
const EXPIRES: &str = "s3:expires";

/// S3's Content-Type of an object stored without one.
pub(crate) const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// A DogFS creation time (unix seconds) as an S3 timestamp.
pub(crate) fn timestamp(unix: i64) -> Timestamp {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// `t` as an HTTP date (Last-Modified).
pub(crate) fn http_date(t: &Timestamp) -> String {
    format_http_date(t).unwrap_or_default()
}

/// The headers S3 stores with an object and returns on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
    /// `x-amz-meta-*`, without the prefix.
    pub user: Option<Metadata>,
}

fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

impl ObjectHeaders {
    /// The client's put options storing these headers.
    pub(crate) fn to_put_options(&self) -> PutOptions {
        let mut user_metadata: BTreeMap<String, String> = self
            .user
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        for (name, value) in [
            (CONTENT_ENCODING, &self.content_encoding),
            (CONTENT_DISPOSITION, &self.content_disposition),
            (CONTENT_LANGUAGE, &self.content_language),
            (CACHE_CONTROL, &self.cache_control),
        ] {
            if let Some(v) = value {
                user_metadata.insert(name.to_owned(), v.clone());
            }
        }
        if let Some(s) = self.expires.as_ref().and_then(format_http_date) {
            user_metadata.insert(EXPIRES.to_owned(), s);
        }
        PutOptions {
            content_type: self.content_type.clone(),
            user_metadata,
            ..PutOptions::default()
        }
    }

    /// The headers stored with `info`.
    pub(crate) fn of(info: &ObjectInfo) -> Self {
        let m = &info.user_metadata;
        let get = |name: &str| m.get(name).cloned();
        let user: Metadata = m
            .iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
            // Keys written by other DogFS tools may not be valid header names: S3 clients
            // could not read them back, so they are left out.
            .filter(|(k, v)| {
                http::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()).is_ok()
                    && http::HeaderValue::from_str(v).is_ok()
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ObjectHeaders {
            content_type: Some(if info.content_type.is_empty() {
                DEFAULT_CONTENT_TYPE.to_owned()
            } else {
                info.content_type.clone()
            }),
            content_encoding: get(CONTENT_ENCODING),
            content_disposition: get(CONTENT_DISPOSITION),
            content_language: get(CONTENT_LANGUAGE),
            cache_control: get(CACHE_CONTROL),
            expires: m
                .get(EXPIRES)
                .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok()),
            user: (!user.is_empty()).then_some(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dogfs_client::Scheme;

    fn info(opts: &PutOptions) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 0,
            etag: String::new(),
            content_type: opts.content_type.clone().unwrap_or_default(),
            user_metadata: opts.user_metadata.clone(),
            created_unix: 0,
            version_id: String::new(),
            scheme: Scheme {
                k: 4,
                m: 2,
                cell_size: 1,
            },
            segment_size: 1,
            inline: true,
        }
    }

    #[test]
    fn headers_round_trip_through_the_record() {
        let expires =
            Timestamp::parse(TimestampFormat::HttpDate, "Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = ObjectHeaders {
            content_type: Some("text/plain".into()),
            content_encoding: Some("gzip".into()),
            content_disposition: Some("attachment; filename=\"a.txt\"".into()),
            content_language: Some("en".into()),
            cache_control: Some("no-cache".into()),
            expires: Some(expires),
            user: Some(
                [("color".to_owned(), "blue".to_owned())]
                    .into_iter()
                    .collect(),
            ),
        };
        let opts = h.to_put_options();
        assert_eq!(
            opts.user_metadata.get("s3:content-encoding").unwrap(),
            "gzip"
        );
        assert_eq!(ObjectHeaders::of(&info(&opts)), h);
    }

    #[test]
    fn no_content_type_reads_as_s3s_default() {
        let h = ObjectHeaders::of(&info(&PutOptions::default()));
        assert_eq!(h.content_type.as_deref(), Some(DEFAULT_CONTENT_TYPE));
        assert_eq!(h.user, None);
    }
}
