//! DogFS client errors as S3 errors: the code and HTTP status S3 clients act on.

use dogfs_client::{Client, Error, ErrorKind};
use s3s::{S3Error, S3ErrorCode};
use tracing::{error, warn};

/// What an operation was about, to choose between NoSuchBucket and NoSuchKey and the like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Service,
    Bucket(&'a str),
    Object(&'a str, &'a str),
}

/// Maps a client error; an object's NotFound asks metadata whether the bucket exists, so a
/// missing bucket answers NoSuchBucket, as S3 does.
pub(crate) async fn s3_error(client: &Client, subject: Subject<'_>, e: Error) -> S3Error {
    if e.kind() == ErrorKind::NotFound
        && let Subject::Object(bucket, key) = subject
    {
        return match client.head_bucket(bucket).await {
            Err(be) if be.kind() == ErrorKind::NotFound => no_such_bucket(bucket),
            _ => S3Error::with_message(
                S3ErrorCode::NoSuchKey,
                format!("The specified key does not exist: {key}"),
            ),
        };
    }
    map_error(subject, &e)
}

pub(crate) fn no_such_bucket(bucket: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchBucket,
        format!("The specified bucket does not exist: {bucket}"),
    )
}

/// The mapping without look-ups.
pub(crate) fn map_error(subject: Subject<'_>, e: &Error) -> S3Error {
    let msg = e.to_string();
    let code = match e.kind() {
        ErrorKind::NotFound => match subject {
            Subject::Object(..) => S3ErrorCode::NoSuchKey,
            Subject::Bucket(b) => return no_such_bucket(b),
            Subject::Service => S3ErrorCode::NoSuchBucket,
        },
        ErrorKind::InvalidInput => match subject {
            Subject::Bucket(_) if msg.contains("bucket") => S3ErrorCode::InvalidBucketName,
            _ => S3ErrorCode::InvalidArgument,
        },
        // A bucket has no owner in DogFS: whoever may create buckets owns them all.
        ErrorKind::AlreadyExists => S3ErrorCode::BucketAlreadyOwnedByYou,
        ErrorKind::Precondition => match subject {
            Subject::Bucket(_) if msg.contains("not empty") => S3ErrorCode::BucketNotEmpty,
            // A bucket being deleted, an upload that expired: the client may retry.
            _ => S3ErrorCode::OperationAborted,
        },
        ErrorKind::PermissionDenied => S3ErrorCode::AccessDenied,
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted => {
            warn!(error = %e, "DogFS unavailable");
            S3ErrorCode::ServiceUnavailable
        }
        ErrorKind::OutcomeUnknown | ErrorKind::DataLoss | ErrorKind::Io | ErrorKind::Protocol => {
            error!(error = %e, "DogFS error");
            S3ErrorCode::InternalError
        }
        _ => {
            error!(error = %e, "DogFS error of an unknown kind");
            S3ErrorCode::InternalError
        }
    };
    S3Error::with_message(code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(subject: Subject<'_>, e: Error) -> String {
        map_error(subject, &e).code().as_str().to_owned()
    }

    #[test]
    fn kinds_map_to_s3_codes() {
        let nf = || Error::NotFound { what: "x".into() };
        assert_eq!(code(Subject::Bucket("b"), nf()), "NoSuchBucket");
        assert_eq!(code(Subject::Object("b", "k"), nf()), "NoSuchKey");
        let exists = Error::AlreadyExists { what: "b".into() };
        assert_eq!(
            code(Subject::Bucket("b"), exists),
            "BucketAlreadyOwnedByYou"
        );
        let full = Error::Precondition {
            message: "bucket \"b\" is not empty: partition 1 still holds object \"k\"".into(),
        };
        assert_eq!(code(Subject::Bucket("b"), full), "BucketNotEmpty");
        let down = Error::Unavailable {
            message: "no leader".into(),
        };
        let e = map_error(Subject::Service, &down);
        assert_eq!(e.code().as_str(), "ServiceUnavailable");
        assert_eq!(e.status_code().map(|s| s.as_u16()), Some(503));
        let lost = Error::DataLoss {
            message: "gone".into(),
        };
        assert_eq!(code(Subject::Object("b", "k"), lost), "InternalError");
    }
}
