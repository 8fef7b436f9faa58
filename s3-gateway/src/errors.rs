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

/// A human message for an S3 error code, for the errors `s3s` raises itself without one
/// (signature checks, path and header parsing): every error body carries a `<Message>`, as
/// S3's do. The wording follows S3's where it has one.
pub(crate) fn default_message(code: &str) -> String {
    let known = match code {
        "AccessDenied" => "Access Denied",
        "AuthorizationHeaderMalformed" => "The authorization header you provided is not valid.",
        "AuthorizationQueryParametersError" => {
            "The query parameters that authenticate the request are not valid."
        }
        "BadDigest" => "The Content-MD5 or checksum you specified did not match what we received.",
        "EntityTooLarge" => "Your proposed upload exceeds the maximum allowed object size.",
        "ExpiredToken" => "The provided token has expired.",
        "IncompleteBody" => {
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        }
        "InternalError" => "We encountered an internal error. Please try again.",
        "InvalidAccessKeyId" => "The AWS Access Key Id you provided does not exist in our records.",
        "InvalidArgument" => "Invalid Argument",
        "InvalidBucketName" => "The specified bucket is not valid.",
        "InvalidDigest" => "The Content-MD5 or checksum you specified is not valid.",
        "InvalidPartNumber" => "The requested partnumber is not satisfiable",
        "InvalidRange" => "The requested range is not satisfiable",
        "InvalidRequest" => "Invalid Request",
        "InvalidURI" => "Couldn't parse the specified URI.",
        "KeyTooLongError" => "Your key is too long.",
        "MalformedXML" => {
            "The XML you provided was not well-formed or did not validate against our published \
             schema."
        }
        "MaxMessageLengthExceeded" => "Your request was too big.",
        "MethodNotAllowed" => "The specified method is not allowed against this resource.",
        "MissingContentLength" => "You must provide the Content-Length HTTP header.",
        "MissingSecurityHeader" => "Your request is missing a required header.",
        "NoSuchBucket" => "The specified bucket does not exist.",
        "NoSuchKey" => "The specified key does not exist.",
        "NoSuchUpload" => "The specified multipart upload does not exist.",
        "NotImplemented" => {
            "A header or query you provided implies functionality that is not implemented."
        }
        "PreconditionFailed" => "At least one of the pre-conditions you specified did not hold",
        "RequestTimeTooSkewed" => {
            "The difference between the request time and the server's time is too large."
        }
        "ServiceUnavailable" => "Service is unable to handle request.",
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method."
        }
        "XAmzContentSHA256Mismatch" => {
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        }
        _ => return spelled_out(code),
    };
    known.to_owned()
}

/// `SomeErrorCode` as "Some error code" (codes without a message of their own).
fn spelled_out(code: &str) -> String {
    let mut out = String::with_capacity(code.len() + 8);
    for (i, c) in code.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        "The request failed.".to_owned()
    } else {
        out
    }
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

    #[test]
    fn every_code_gets_a_message() {
        assert!(default_message("SignatureDoesNotMatch").starts_with("The request signature"));
        assert_eq!(default_message("AccessDenied"), "Access Denied");
        assert_eq!(
            default_message("InvalidStorageClass"),
            "Invalid storage class"
        );
        assert!(!default_message("").is_empty());
    }
}
