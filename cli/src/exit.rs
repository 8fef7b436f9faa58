//! Exit codes (documented in `dogfs --help` and docs/cli.md), and how each module's errors
//! map onto them.

/// What went wrong, as far as a script calling `dogfs` needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Other = 1,
    Usage = 2,
    NotFound = 3,
    InvalidInput = 4,
    Unavailable = 5,
    DataLoss = 6,
    Conflict = 7,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// How an SDK error maps onto exit codes.
    pub fn of_client(e: &dogfs_client::Error) -> Self {
        use dogfs_client::ErrorKind as K;
        match e.kind() {
            K::NotFound => ExitKind::NotFound,
            K::InvalidInput => ExitKind::InvalidInput,
            K::AlreadyExists | K::Precondition => ExitKind::Conflict,
            K::Unavailable => ExitKind::Unavailable,
            K::DataLoss => ExitKind::DataLoss,
            _ => ExitKind::Other,
        }
    }
}

/// Implemented by every error `main` may see.
pub trait Classify {
    fn exit_kind(&self) -> ExitKind;
}
