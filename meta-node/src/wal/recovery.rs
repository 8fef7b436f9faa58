//! Recovery on open: scan the segments in order, cut a torn tail, replay into a [`LogState`].
//!
//! Rules (the reasons are in `docs/wal.md`):
//! 1. Segment numbers must be contiguous; a hole means a segment holding records is missing,
//!    and the WAL refuses to open rather than replay across it.
//! 2. Scanning stops at the first segment with a bad header or a record that does not decode
//!    (short, impossible length, checksum mismatch, unknown kind): the *stop point*.
//! 3. Every segment after the stop point must hold no valid record (only a header, a partial
//!    header, or nothing). The writer fsyncs a segment before creating the next, so a crash
//!    can only tear the last segment; valid records after a bad spot mean real corruption, and
//!    cutting there would drop acknowledged records, so the WAL refuses to open.
//! 4. A bad header is a torn segment creation only if nothing but zeroes follows the header's
//!    place (segments are preallocated, so a torn creation can be long and blank); such a file
//!    is deleted. A file with a bad header and other bytes after it is corruption: refuse.
//! 5. Otherwise the stop segment is truncated at the end of its last valid record (fsynced),
//!    the empty segments after it are deleted (directory fsynced), and a warning is logged.
//!
//! Zeroes from the end of the last record to the end of a segment are its preallocated,
//! unwritten space, not a torn tail: scanning ends there cleanly (zeroes never decode as a
//! record: the checksum of a zero header is not zero).

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::segment::{self, SegmentError, Stop};
use super::state::{LogState, StateError};

/// Recovery failures, each naming the file and offset.
#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("segment {missing} is missing between {before} and {after} in {dir}")]
    SegmentGap {
        dir: PathBuf,
        before: PathBuf,
        after: PathBuf,
        missing: u64,
    },
    #[error("segment {file} has a damaged header but holds {len} bytes; refusing to drop them")]
    CorruptHeader { file: PathBuf, len: u64 },
    #[error(
        "segment {file} is damaged at offset {offset} ({reason}) but later segment {later} \
         holds records; refusing to drop acknowledged records"
    )]
    CorruptMiddle {
        file: PathBuf,
        offset: u64,
        reason: String,
        later: PathBuf,
    },
    #[error("replaying segment {file} at offset {offset}: {source}")]
    Replay {
        file: PathBuf,
        offset: u64,
        source: StateError,
    },
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments replayed.
    pub segments: usize,
    /// Records replayed.
    pub records: usize,
    /// A torn tail that was cut: the file and the offset it was cut at.
    pub truncated: Option<(PathBuf, u64)>,
    /// Bytes dropped by that cut.
    pub dropped_bytes: u64,
    /// Segment files deleted (torn creations, empty segments after the stop point).
    pub removed: Vec<PathBuf>,
}

/// The recovered state and where appends continue.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub state: LogState,
    /// The segment to append to and its length, or `None` when a new one must be created
    /// with the given sequence number.
    pub tail: Result<(u64, PathBuf, u64), u64>,
    pub report: RecoveryReport,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, RecoveryError> {
    std::fs::create_dir_all(dir).map_err(|source| SegmentError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let listed = segment::list(dir)?;
    for w in listed.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            return Err(RecoveryError::SegmentGap {
                dir: dir.to_path_buf(),
                before: w[0].1.clone(),
                after: w[1].1.clone(),
                missing: w[0].0 + 1,
            });
        }
    }
    let mut scans = Vec::with_capacity(listed.len());
    for (seq, file) in &listed {
        scans.push((*seq, file.clone(), segment::scan(file, *seq)?));
    }
    let mut report = RecoveryReport::default();
    let mut keep = scans.len();
    if let Some(k) = scans.iter().position(|(_, _, s)| s.stop.is_some()) {
        let (_, file, scan) = &scans[k];
        if let Some((_, later, _)) = scans[k + 1..]
            .iter()
            .find(|(_, _, s)| !s.records.is_empty())
        {
            let (offset, reason) = match &scan.stop {
                Some(Stop::Record { offset, error }) => (*offset, error.to_string()),
                _ => (0, "bad segment header".to_string()),
            };
            return Err(RecoveryError::CorruptMiddle {
                file: file.clone(),
                offset,
                reason,
                later: later.clone(),
            });
        }
        match &scan.stop {
            Some(Stop::Header { blank }) => {
                if !blank {
                    return Err(RecoveryError::CorruptHeader {
                        file: file.clone(),
                        len: scan.file_len,
                    });
                }
                tracing::warn!(file = %file.display(), len = scan.file_len,
                    "removing WAL segment with a torn header (interrupted creation)");
                keep = k;
            }
            Some(Stop::Record { offset, error }) => {
                tracing::warn!(file = %file.display(), offset, %error,
                    dropped = scan.file_len - offset,
                    "truncating torn tail of WAL segment");
                segment::truncate(file, *offset)?;
                report.truncated = Some((file.clone(), *offset));
                report.dropped_bytes = scan.file_len - offset;
                keep = k + 1;
            }
            None => {}
        }
        // Delete newest first, so a crash in between leaves a contiguous run.
        for (_, later, _) in scans[keep..].iter().rev() {
            tracing::warn!(file = %later.display(), "removing empty WAL segment after the torn tail");
            segment::remove(later)?;
            segment::sync_dir(dir)?;
            report.removed.push(later.clone());
        }
        report.removed.reverse();
        scans.truncate(keep);
    }
    let mut state = LogState::default();
    for (seq, file, scan) in &scans {
        state.add_segment(*seq);
        for (offset, rec) in &scan.records {
            state
                .apply(rec, *seq)
                .map_err(|source| RecoveryError::Replay {
                    file: file.clone(),
                    offset: *offset,
                    source,
                })?;
            report.records += 1;
        }
        report.segments += 1;
    }
    let tail = match scans.last() {
        Some((seq, file, scan)) => Ok((*seq, file.clone(), scan.valid_len)),
        None => Err(listed.first().map_or(1, |(seq, _)| *seq)),
    };
    Ok(Recovered {
        state,
        tail,
        report,
    })
}
