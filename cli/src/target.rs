//! `bucket/key` arguments: split at the first `/`, both halves validated by `dogfs_core::names`
//! so a bad value is refused before any network call, with a message that names it.

use std::fmt;

use dogfs_core::names::{BucketName, NameError, ObjectKey};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{arg:?} is not of the form bucket/key")]
    MissingKey { arg: String },
    #[error("{arg:?} names a folder; stdin has no file name to put in it, so give a full key")]
    StdinNeedsKey { arg: String },
    #[error("{arg:?}: {source}")]
    BadBucket { arg: String, source: NameError },
    #[error("{arg:?}: {source}")]
    BadKey { arg: String, source: NameError },
}

/// `bucket/key`: one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTarget {
    pub bucket: BucketName,
    pub key: ObjectKey,
}

/// `bucket[/prefix]`: a bucket, optionally narrowed to a key prefix (which may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixTarget {
    pub bucket: BucketName,
    pub prefix: String,
}

/// Parses a bucket name alone (`mb`, `rb`).
pub fn parse_bucket(arg: &str) -> Result<BucketName, TargetError> {
    // `mb demo/` is a common slip; one trailing slash is harmless.
    let name = arg.strip_suffix('/').unwrap_or(arg);
    BucketName::parse(name).map_err(|source| TargetError::BadBucket {
        arg: arg.to_owned(),
        source,
    })
}

/// Parses `bucket/key`; the key is everything after the first `/` (it may contain more).
pub fn parse_object(arg: &str) -> Result<ObjectTarget, TargetError> {
    let Some((bucket, key)) = arg.split_once('/') else {
        return Err(TargetError::MissingKey {
            arg: arg.to_owned(),
        });
    };
    let bucket = BucketName::parse(bucket).map_err(|source| TargetError::BadBucket {
        arg: arg.to_owned(),
        source,
    })?;
    if key.is_empty() {
        return Err(TargetError::MissingKey {
            arg: arg.to_owned(),
        });
    }
    let key = ObjectKey::parse(key).map_err(|source| TargetError::BadKey {
        arg: arg.to_owned(),
        source,
    })?;
    Ok(ObjectTarget { bucket, key })
}

/// Parses `bucket/key`, where a key ending in `/` (or empty) is a folder the file's name is
/// appended to, as `cp FILE DIR/` does. `file_name` is `None` for stdin.
pub fn parse_put_target(arg: &str, file_name: Option<&str>) -> Result<ObjectTarget, TargetError> {
    match (arg.split_once('/'), file_name) {
        (Some((bucket, folder)), Some(name)) if folder.is_empty() || folder.ends_with('/') => {
            parse_object(&format!("{bucket}/{folder}{name}"))
        }
        (None, Some(name)) => parse_object(&format!("{arg}/{name}")),
        (Some((_, folder)), None) if folder.is_empty() || folder.ends_with('/') => {
            Err(TargetError::StdinNeedsKey {
                arg: arg.to_owned(),
            })
        }
        _ => parse_object(arg),
    }
}

/// Parses `bucket` or `bucket/prefix` (`ls`).
pub fn parse_prefix(arg: &str) -> Result<PrefixTarget, TargetError> {
    let (bucket, prefix) = arg.split_once('/').unwrap_or((arg, ""));
    let bucket = BucketName::parse(bucket).map_err(|source| TargetError::BadBucket {
        arg: arg.to_owned(),
        source,
    })?;
    if !prefix.is_empty() {
        // A prefix obeys the key rules (length, no NUL) too.
        ObjectKey::parse(prefix).map_err(|source| TargetError::BadKey {
            arg: arg.to_owned(),
            source,
        })?;
    }
    Ok(PrefixTarget {
        bucket,
        prefix: prefix.to_owned(),
    })
}

/// For people (messages, notes): control characters in the key are escaped
/// ([`crate::human::escape`]), so one target is one line.
impl fmt::Display for ObjectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.bucket.as_str(),
            crate::human::escape(self.key.as_str())
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn splits_at_the_first_slash() {
        let t = parse_object("photos/2026/11/cat.jpg").unwrap();
        assert_eq!(t.bucket.as_str(), "photos");
        assert_eq!(t.key.as_str(), "2026/11/cat.jpg");
        assert_eq!(t.to_string(), "photos/2026/11/cat.jpg");
    }

    #[test]
    fn errors_name_the_bad_value() {
        let e = parse_object("Bad_Bucket/k").unwrap_err();
        assert!(matches!(e, TargetError::BadBucket { .. }));
        assert!(e.to_string().contains("Bad_Bucket"), "{e}");

        let e = parse_object("bucket").unwrap_err();
        assert!(matches!(e, TargetError::MissingKey { .. }));
        assert!(e.to_string().contains("\"bucket\""), "{e}");

        let e = parse_object("bucket/").unwrap_err();
        assert!(matches!(e, TargetError::MissingKey { .. }));

        let e = parse_object("bucket/a\0b").unwrap_err();
        assert!(matches!(e, TargetError::BadKey { .. }));

        let long = format!("bucket/{}", "x".repeat(2000));
        assert!(matches!(
            parse_object(&long).unwrap_err(),
            TargetError::BadKey { .. }
        ));
    }

    #[test]
    fn put_into_a_folder_appends_the_file_name() {
        let t = parse_put_target("bkt/dir/", Some("a.txt")).unwrap();
        assert_eq!(t.key.as_str(), "dir/a.txt");
        let t = parse_put_target("bkt/", Some("a.txt")).unwrap();
        assert_eq!(t.key.as_str(), "a.txt");
        let t = parse_put_target("bkt", Some("a.txt")).unwrap();
        assert_eq!(t.key.as_str(), "a.txt");
        let t = parse_put_target("bkt/name", Some("a.txt")).unwrap();
        assert_eq!(t.key.as_str(), "name");
        assert!(matches!(
            parse_put_target("bkt/", None),
            Err(TargetError::StdinNeedsKey { .. })
        ));
        assert!(matches!(
            parse_put_target("bkt/dir/", None),
            Err(TargetError::StdinNeedsKey { .. })
        ));
        assert_eq!(parse_put_target("bkt/k", None).unwrap().key.as_str(), "k");
    }

    #[test]
    fn prefixes_may_be_empty() {
        let t = parse_prefix("bkt").unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("bkt", ""));
        let t = parse_prefix("bkt/a/b/").unwrap();
        assert_eq!(t.prefix, "a/b/");
        assert!(parse_prefix("B").is_err());
    }

    #[test]
    fn bucket_accepts_one_trailing_slash() {
        assert_eq!(parse_bucket("demo/").unwrap().as_str(), "demo");
        assert!(parse_bucket("x").is_err());
    }
}
