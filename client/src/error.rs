//! The SDK's one error type. Every message names the bucket, key, value or server involved.

use tonic::{Code, Status};

/// What went wrong, for callers that branch on the kind rather than the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    NotFound,
    InvalidInput,
    AlreadyExists,
    /// The state does not allow the call (bucket not empty, upload expired) or changed under it.
    Precondition,
    /// Not enough chunk servers or space for the k + m shards.
    ResourceExhausted,
    /// No server answered in time (retried up to the deadline).
    Unavailable,
    /// Stored bytes are lost or corrupt beyond what the erasure code can repair.
    DataLoss,
    Io,
    PermissionDenied,
    /// The server broke the protocol, or reported an internal error.
    Protocol,
    /// A change (commit, inline put, delete) was sent but never answered: it may or may not
    /// have been applied. Not `Unavailable`, because retrying blindly or assuming nothing
    /// happened are both wrong; look at the object to find out.
    OutcomeUnknown,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not found: {what}")]
    NotFound { what: String },
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    #[error("already exists: {what}")]
    AlreadyExists { what: String },
    #[error("precondition failed: {message}")]
    Precondition { message: String },
    #[error("not enough capacity: {message}")]
    ResourceExhausted { message: String },
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    #[error("data loss: {message}")]
    DataLoss { message: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("permission denied: {message}")]
    PermissionDenied { message: String },
    #[error("protocol error: {message}")]
    Protocol { message: String },
    /// The request was sent and no answer came (deadline, connection cut after sending).
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Precondition { .. } => ErrorKind::Precondition,
            Error::ResourceExhausted { .. } => ErrorKind::ResourceExhausted,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::DataLoss { .. } => ErrorKind::DataLoss,
            Error::Io(_) => ErrorKind::Io,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::OutcomeUnknown { .. } => ErrorKind::OutcomeUnknown,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
        }
    }

    pub(crate) fn outcome_unknown(message: impl Into<String>) -> Self {
        Error::OutcomeUnknown {
            message: message.into(),
        }
    }

    pub(crate) fn data_loss(message: impl Into<String>) -> Self {
        Error::DataLoss {
            message: message.into(),
        }
    }

    /// Maps a gRPC status; `what` names the subject of the call (`bucket "b"`, `object "b/k"`)
    /// and is prepended to the server's message.
    pub(crate) fn from_status(what: &str, status: &Status) -> Self {
        let msg = status.message();
        let message = if msg.is_empty() {
            format!("{what}: {}", status.code())
        } else {
            format!("{what}: {msg}")
        };
        match status.code() {
            Code::NotFound => Error::NotFound { what: message },
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput { message },
            Code::AlreadyExists => Error::AlreadyExists { what: message },
            Code::FailedPrecondition | Code::Aborted => Error::Precondition { message },
            Code::ResourceExhausted => Error::ResourceExhausted { message },
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable { message }
            }
            Code::DataLoss => Error::DataLoss { message },
            Code::PermissionDenied | Code::Unauthenticated => Error::PermissionDenied { message },
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal => Error::Protocol {
                message: format!("{message} ({})", status.code()),
            },
        }
    }
}

impl From<dogfs_core::names::NameError> for Error {
    fn from(e: dogfs_core::names::NameError) -> Self {
        Error::invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_keep_the_subject() {
        let cases = [
            (Code::NotFound, ErrorKind::NotFound),
            (Code::InvalidArgument, ErrorKind::InvalidInput),
            (Code::AlreadyExists, ErrorKind::AlreadyExists),
            (Code::FailedPrecondition, ErrorKind::Precondition),
            (Code::ResourceExhausted, ErrorKind::ResourceExhausted),
            (Code::Unavailable, ErrorKind::Unavailable),
            (Code::DataLoss, ErrorKind::DataLoss),
            (Code::Internal, ErrorKind::Protocol),
        ];
        for (code, kind) in cases {
            let e = Error::from_status("bucket \"b\"", &Status::new(code, "why"));
            assert_eq!(e.kind(), kind, "{code:?}");
            assert!(e.to_string().contains("bucket \"b\": why"), "{e}");
        }
    }
}
