//! [`LogStore`]: openraft's `RaftLogStorage` for one Raft group over the node's shared
//! [`Wal`].
//!
//! Mapping (payloads are bincode): an entry is one WAL entry record at its index; the vote is
//! `save_vote`; the committed log id is `save_committed`; `truncate(log_id)` is
//! `truncate(group, log_id.index)`; `purge(log_id)` is `purge(group, log_id.index,
//! ser(log_id))`, so `get_log_state` finds the last purged log id in [`Wal::bounds`]. `append`
//! hands the entries to the WAL (readable at once) and calls openraft's [`LogFlushed`] callback
//! from a task that awaits the WAL's `Ack`, i.e. only once the entries are `fdatasync`ed.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use thiserror::Error;

use super::types::TypeConfig;
use crate::wal::{GroupId, Wal, WalError, WriterError};

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Errors of the log store (converted into openraft's `StorageError` at the trait boundary).
#[derive(Debug, Error)]
pub enum LogStoreError {
    #[error("group {group}: encoding entry {index}: {source}")]
    EncodeEntry {
        group: GroupId,
        index: u64,
        source: bincode::Error,
    },
    #[error("group {group}: decoding entry {index}: {source}")]
    DecodeEntry {
        group: GroupId,
        index: u64,
        source: bincode::Error,
    },
    #[error("group {group}: entry at WAL index {index} holds log id index {found}")]
    EntryIndexMismatch {
        group: GroupId,
        index: u64,
        found: u64,
    },
    #[error("group {group}: submitting entries from {first} to the WAL: {source}")]
    AppendEntries {
        group: GroupId,
        first: u64,
        source: Box<WalError>,
    },
    #[error("group {group}: asking the WAL for a flush: {source}")]
    Flush {
        group: GroupId,
        source: Box<WalError>,
    },
    #[error("group {group}: making appended entries durable: {source}")]
    FlushEntries {
        group: GroupId,
        source: Box<WriterError>,
    },
    #[error("group {group}: encoding {what}: {source}")]
    Encode {
        group: GroupId,
        what: &'static str,
        source: bincode::Error,
    },
    #[error("group {group}: decoding {what}: {source}")]
    Decode {
        group: GroupId,
        what: &'static str,
        source: bincode::Error,
    },
    #[error("group {group}: saving the vote: {source}")]
    SaveVote {
        group: GroupId,
        source: Box<WalError>,
    },
    #[error("group {group}: making the vote durable: {source}")]
    FlushVote {
        group: GroupId,
        source: Box<WriterError>,
    },
    #[error("group {group}: saving the committed log id: {source}")]
    SaveCommitted {
        group: GroupId,
        source: Box<WalError>,
    },
    #[error("group {group}: truncating the log since {since}: {source}")]
    Truncate {
        group: GroupId,
        since: u64,
        source: Box<WalError>,
    },
    #[error("group {group}: making the truncation since {since} durable: {source}")]
    FlushTruncate {
        group: GroupId,
        since: u64,
        source: Box<WriterError>,
    },
    #[error("group {group}: purging the log up to {up_to}: {source}")]
    Purge {
        group: GroupId,
        up_to: u64,
        source: Box<WalError>,
    },
    #[error("group {group}: making the purge up to {up_to} durable: {source}")]
    FlushPurge {
        group: GroupId,
        up_to: u64,
        source: Box<WriterError>,
    },
}

/// The Raft log, vote and committed marker of one group, in the node's shared WAL. Cheap to
/// clone (it is its own log reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    group: GroupId,
    /// The latest committed marker not yet handed to the WAL: it rides with the group's next
    /// append instead of costing a sync of its own (shared by this store's clones).
    pending_committed: Arc<std::sync::Mutex<Option<Bytes>>>,
}

impl LogStore {
    /// The log store of `group` in `wal`.
    pub fn new(wal: Arc<Wal>, group: GroupId) -> LogStore {
        LogStore {
            wal,
            group,
            pending_committed: Arc::default(),
        }
    }

    /// The group id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The shared WAL.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    fn decode_entry(&self, index: u64, payload: &[u8]) -> Result<Entry<TypeConfig>, LogStoreError> {
        let entry: Entry<TypeConfig> =
            bincode::deserialize(payload).map_err(|source| LogStoreError::DecodeEntry {
                group: self.group,
                index,
                source,
            })?;
        if entry.log_id.index != index {
            return Err(LogStoreError::EntryIndexMismatch {
                group: self.group,
                index,
                found: entry.log_id.index,
            });
        }
        Ok(entry)
    }

    fn encode<T: serde::Serialize>(
        &self,
        what: &'static str,
        v: &T,
    ) -> Result<Bytes, LogStoreError> {
        bincode::serialize(v)
            .map(Bytes::from)
            .map_err(|source| LogStoreError::Encode {
                group: self.group,
                what,
                source,
            })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        b: &[u8],
    ) -> Result<T, LogStoreError> {
        bincode::deserialize(b).map_err(|source| LogStoreError::Decode {
            group: self.group,
            what,
            source,
        })
    }

    /// The log state (see `RaftLogStorage::get_log_state`).
    pub fn log_state(&self) -> Result<LogState<TypeConfig>, LogStoreError> {
        let bounds = self.wal.bounds(self.group);
        let last_purged_log_id: Option<LogId<NodeId>> = match &bounds.purged {
            Some((_, payload)) => Some(self.decode("the last purged log id", payload)?),
            None => None,
        };
        let last_log_id = match bounds.last {
            Some(last) => match self.wal.entry(self.group, last) {
                Some(payload) => Some(self.decode_entry(last, &payload)?.log_id),
                // Raced with a truncate or purge: fall back to the purge point.
                None => last_purged_log_id,
            },
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// The entries in `range` that are present (see `RaftLogReader::try_get_log_entries`).
    pub fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, LogStoreError> {
        self.wal
            .entries(self.group, range)
            .into_iter()
            .map(|(i, p)| self.decode_entry(i, &p))
            .collect()
    }

    /// The saved vote.
    pub fn vote(&self) -> Result<Option<Vote<NodeId>>, LogStoreError> {
        self.wal
            .vote(self.group)
            .map(|b| self.decode("the vote", &b))
            .transpose()
    }

    /// The saved committed log id.
    pub fn committed(&self) -> Result<Option<LogId<NodeId>>, LogStoreError> {
        let pending = self
            .pending_committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match pending.or_else(|| self.wal.committed(self.group)) {
            Some(b) => self.decode("the committed log id", &b),
            None => Ok(None),
        }
    }
}

fn read_err(e: LogStoreError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: LogStoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.read_entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.log_state().map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let group = self.group;
        let res = async {
            let payload = self.encode("the vote", vote)?;
            let ack = self
                .wal
                .save_vote(group, payload)
                .map_err(Box::new)
                .map_err(|source| LogStoreError::SaveVote { group, source })?;
            // The vote must be durable before this returns.
            ack.await
                .map_err(Box::new)
                .map_err(|source| LogStoreError::FlushVote { group, source })
        }
        .await;
        res.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.vote()
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let group = self.group;
        let payload = self
            .encode("the committed log id", &committed)
            .map_err(write_err)?;
        // Not written now: the committed marker is an optimisation (entries up to it are
        // re-applied on restart), not needed for safety, and a WAL submission of its own would
        // cost a sync per commit. It is submitted just before the group's next append, so it
        // shares that append's sync; the WAL writes records in submission order, so once it is
        // durable so are the entries it points to.
        let _ = group;
        *self
            .pending_committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(payload);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        self.committed().map_err(read_err)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let group = self.group;
        let committed = self
            .pending_committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(payload) = committed {
            // Its Ack is not awaited (see `save_committed`).
            let _ack = self
                .wal
                .save_committed(group, payload)
                .map_err(Box::new)
                .map_err(|source| write_err(LogStoreError::SaveCommitted { group, source }))?;
        }
        // Entries at or below the purge point are covered by the snapshot (committed, hence
        // equal to what was purged) and are skipped, as Raft followers skip entries already in
        // their snapshot. This only happens on an empty log (the WAL keeps entries above the
        // purge point), e.g. after the "clean the hole" purge of `get_initial_state`.
        let bounds = self.wal.bounds(group);
        let skip_to = match (bounds.last, bounds.purged) {
            (None, Some((purged, _))) => Some(purged),
            _ => None,
        };
        let mut first = None;
        let mut payloads = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if skip_to.is_some_and(|p| index <= p) {
                tracing::debug!(
                    group,
                    index,
                    "skipping an entry at or below the purge point"
                );
                continue;
            }
            first.get_or_insert(index);
            let payload = bincode::serialize(&entry).map_err(|source| {
                write_err(LogStoreError::EncodeEntry {
                    group,
                    index,
                    source,
                })
            })?;
            payloads.push(Bytes::from(payload));
        }
        // The WAL's writer thread tells openraft as soon as the `fdatasync` covering the
        // entries returned: no task in between awaits an acknowledgement to pass it on. The
        // entries are readable now; openraft learns they are durable only then.
        let on_durable = move |res: Result<(), WriterError>| {
            let res = res.map_err(|e| {
                io::Error::other(LogStoreError::FlushEntries {
                    group,
                    source: Box::new(e),
                })
            });
            callback.log_io_completed(res);
        };
        match first {
            Some(first) => self
                .wal
                .append_entries_then(group, first, payloads, on_durable)
                .map_err(Box::new)
                .map_err(|source| {
                    write_err(LogStoreError::AppendEntries {
                        group,
                        first,
                        source,
                    })
                })?,
            // Nothing to append: report once everything submitted so far is durable.
            None => self
                .wal
                .flush_then(on_durable)
                .map_err(Box::new)
                .map_err(|source| write_err(LogStoreError::Flush { group, source }))?,
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let group = self.group;
        let since = log_id.index;
        let res = async {
            let ack = self
                .wal
                .truncate(group, since)
                .map_err(Box::new)
                .map_err(|source| LogStoreError::Truncate {
                    group,
                    since,
                    source,
                })?;
            ack.await
                .map_err(Box::new)
                .map_err(|source| LogStoreError::FlushTruncate {
                    group,
                    since,
                    source,
                })
        }
        .await;
        res.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let group = self.group;
        let up_to = log_id.index;
        let res = async {
            let payload = self.encode("the last purged log id", &log_id)?;
            let ack = self
                .wal
                .purge(group, up_to, payload)
                .map_err(Box::new)
                .map_err(|source| LogStoreError::Purge {
                    group,
                    up_to,
                    source,
                })?;
            ack.await
                .map_err(Box::new)
                .map_err(|source| LogStoreError::FlushPurge {
                    group,
                    up_to,
                    source,
                })
        }
        .await;
        res.map_err(write_err)
    }
}
