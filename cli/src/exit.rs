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
    /// A change (put, rm) was sent and never answered: it may or may not have happened.
    OutcomeUnknown = 8,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name `--json` error documents carry (`"kind"`), stable for scripts.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Other => "other",
            ExitKind::Usage => "usage",
            ExitKind::NotFound => "not_found",
            ExitKind::InvalidInput => "invalid_input",
            ExitKind::Unavailable => "unavailable",
            ExitKind::DataLoss => "data_loss",
            ExitKind::Conflict => "conflict",
            ExitKind::OutcomeUnknown => "outcome_unknown",
        }
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
            K::OutcomeUnknown => ExitKind::OutcomeUnknown,
            _ => ExitKind::Other,
        }
    }
}

/// Implemented by every error `main` may see.
pub trait Classify {
    fn exit_kind(&self) -> ExitKind;
}
