//! The write-ahead log holding the Raft log and vote of every group on this node.
//!
//! One directory of append-only segment files shared by all groups ([`segment`]); framed,
//! checksummed records ([`record`]); one writer thread that batches the appends of all groups
//! into one `fdatasync` ([`writer`]); torn-tail recovery on open ([`recovery`]). The whole
//! unpurged log is also kept in memory ([`state`]), so reads never touch the disk and see
//! submitted entries at once (openraft replicates entries before the local flush completes).
//!
//! Every write returns an [`Ack`] that resolves only after the `fdatasync` covering it.
//! Format, rules and reasoning: `docs/wal.md`.

pub mod record;
pub mod recovery;
pub mod segment;
pub mod state;
pub mod writer;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use thiserror::Error;

use record::{Kind, Record, RecordError};
pub use recovery::{RecoveryError, RecoveryReport};
use segment::SegmentError;
use state::StateError;
pub use writer::{Ack, ReclaimReport, SyncObserver, WriterError};
use writer::{Callback, Done, Inner, Item, Shared, Writer};

/// A Raft group id.
pub type GroupId = u64;

/// WAL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Roll to a new segment once the current one would grow past this many bytes.
    pub segment_size: u64,
    /// Create segments at `segment_size` bytes up front, so a group commit's `fdatasync` does
    /// not also persist a new file size (docs/wal.md, "Preallocated segments").
    pub preallocate: bool,
    /// [`Wal::reclaim`] rewrites a group that pins the oldest segment only when its live
    /// payload is at most this many bytes (idle groups); larger logs are expected to be
    /// purged behind snapshots by the Raft layer.
    pub rewrite_limit: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size: 64 << 20,
            preallocate: true,
            rewrite_limit: 1 << 20,
        }
    }
}

/// Errors of the WAL's public operations.
#[derive(Debug, Error)]
pub enum WalError {
    #[error(transparent)]
    Lock(SegmentError),
    #[error("recovering WAL in {dir}: {source}")]
    Recover { dir: PathBuf, source: RecoveryError },
    #[error("creating the first segment in {dir}: {source}")]
    CreateSegment { dir: PathBuf, source: SegmentError },
    #[error("starting the WAL writer thread for {dir}: {source}")]
    SpawnWriter {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a record for group {group}: {source}")]
    Encode { group: GroupId, source: RecordError },
    #[error(transparent)]
    Rejected(#[from] StateError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("the WAL writer thread is gone")]
    WriterGone,
}

/// A group's log bounds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogBounds {
    /// First entry present, if any.
    pub first: Option<u64>,
    /// Last entry present, if any.
    pub last: Option<u64>,
    /// Last purged index and the payload given to [`Wal::purge`].
    pub purged: Option<(u64, Bytes)>,
}

/// Counters since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Records written.
    pub records: u64,
    /// Bytes written (records, not segment headers).
    pub bytes: u64,
    /// `fdatasync` calls on segments (group commits plus the sync before each roll).
    pub syncs: u64,
    /// Over every sync, the number of distinct Raft groups whose records it made durable: over
    /// `syncs`, how many groups one `fdatasync` serves (the WAL's batching across groups).
    pub synced_groups: u64,
    /// Over every sync, the number of record submissions (appends, votes, truncations) it
    /// made durable.
    pub synced_submissions: u64,
    /// Batches the writer took.
    pub batches: u64,
    /// Segments created since open.
    pub segments_created: u64,
    /// Segments deleted since open.
    pub segments_deleted: u64,
    /// Segments now on disk.
    pub segments: u64,
}

/// The write-ahead log. `Send + Sync`: share it with an `Arc`.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    config: WalConfig,
    thread: Option<JoinHandle<()>>,
    /// The directory's `flock`, released when the WAL is dropped.
    _lock: std::fs::File,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, recovering its contents.
    pub fn open(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let dir = dir.as_ref().to_path_buf();
        let lock = segment::lock_dir(&dir).map_err(WalError::Lock)?;
        let rec = recovery::recover(&dir).map_err(|source| WalError::Recover {
            dir: dir.clone(),
            source,
        })?;
        let mut state = rec.state;
        let prealloc = if config.preallocate {
            config.segment_size
        } else {
            0
        };
        let (seq, file, len) = match rec.tail {
            Ok((seq, path, len)) => {
                let file =
                    segment::open_tail(&path, prealloc).map_err(|source| WalError::Recover {
                        dir: dir.clone(),
                        source: source.into(),
                    })?;
                (seq, file, len)
            }
            Err(seq) => {
                let file = segment::create(&dir, seq, prealloc).map_err(|source| {
                    WalError::CreateSegment {
                        dir: dir.clone(),
                        source,
                    }
                })?;
                state.add_segment(seq);
                (seq, file, segment::HEADER_LEN)
            }
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            inner: Mutex::new(Inner {
                state,
                active_seq: seq,
                active_len: len,
                queue: Vec::new(),
                reclaim: Vec::new(),
                failed: None,
                shutdown: false,
            }),
            wake: Condvar::new(),
            counters: Default::default(),
            sync_observer: std::sync::OnceLock::new(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            file,
            seq,
            len,
            prealloc,
        };
        let thread = std::thread::Builder::new()
            .name("dogfs-wal".into())
            .spawn(move || writer.run())
            .map_err(|source| WalError::SpawnWriter { dir, source })?;
        Ok((
            Wal {
                shared,
                config,
                thread: Some(thread),
                _lock: lock,
            },
            rec.report,
        ))
    }

    /// Tells `observer` the duration of every later `fdatasync` (first call wins).
    pub fn set_sync_observer(&self, observer: SyncObserver) {
        let _ = self.shared.sync_observer.set(observer);
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends entries `first, first + 1, ...` to `group`'s log. `first` must follow the last
    /// entry, or, on an empty log, lie above the purged index. The entries are readable at
    /// once; the [`Ack`] resolves when they are durable.
    pub fn append_entries<I>(
        &self,
        group: GroupId,
        first: u64,
        payloads: I,
    ) -> Result<Ack, WalError>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let records = Self::entry_records(group, first, payloads)?;
        self.submit(records)
    }

    /// Like [`Wal::append_entries`], but instead of an [`Ack`], `on_durable` is called on the
    /// writer thread once the entries are durable (or with the error that stopped them; with
    /// [`WriterError::Closed`] if the WAL shut down first). Not called when this returns an
    /// error. For callers that would only pass the result on: it saves a task and a wake-up.
    pub fn append_entries_then<I>(
        &self,
        group: GroupId,
        first: u64,
        payloads: I,
        on_durable: impl FnOnce(Result<(), WriterError>) + Send + 'static,
    ) -> Result<(), WalError>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let records = Self::entry_records(group, first, payloads)?;
        self.submit_done(records, Done::Call(Callback::new(on_durable)))
    }

    /// Like [`Wal::flush`], with a callback as in [`Wal::append_entries_then`].
    pub fn flush_then(
        &self,
        on_durable: impl FnOnce(Result<(), WriterError>) + Send + 'static,
    ) -> Result<(), WalError> {
        self.submit_done(Vec::new(), Done::Call(Callback::new(on_durable)))
    }

    fn entry_records<I>(group: GroupId, first: u64, payloads: I) -> Result<Vec<Record>, WalError>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let payloads: Vec<Bytes> = payloads.into_iter().collect();
        if first.checked_add(payloads.len() as u64).is_none() {
            return Err(StateError::IndexOverflow {
                group,
                first,
                count: payloads.len(),
            }
            .into());
        }
        let records = (first..)
            .zip(payloads)
            .map(|(index, payload)| Record {
                group,
                kind: Kind::Entry,
                index,
                payload,
            })
            .collect();
        Ok(records)
    }

    /// Removes `group`'s entries with index `>= since` (a conflicting suffix). `since` is
    /// inclusive, like openraft's `truncate(log_id)`.
    pub fn truncate(&self, group: GroupId, since: u64) -> Result<Ack, WalError> {
        self.submit(vec![Record {
            group,
            kind: Kind::Truncate,
            index: since,
            payload: Bytes::new(),
        }])
    }

    /// Removes `group`'s entries with index `<= up_to` (behind a snapshot) and records
    /// `payload` (e.g. the serialized last purged log id), returned by [`Wal::bounds`].
    /// Purging below the current purged index is a no-op.
    pub fn purge(&self, group: GroupId, up_to: u64, payload: Bytes) -> Result<Ack, WalError> {
        self.submit(vec![Record {
            group,
            kind: Kind::Purge,
            index: up_to,
            payload,
        }])
    }

    /// Saves `group`'s vote (opaque bytes); the latest one wins.
    pub fn save_vote(&self, group: GroupId, vote: Bytes) -> Result<Ack, WalError> {
        self.submit(vec![Record {
            group,
            kind: Kind::Vote,
            index: 0,
            payload: vote,
        }])
    }

    /// Saves `group`'s committed log id (opaque bytes); the latest one wins.
    pub fn save_committed(&self, group: GroupId, committed: Bytes) -> Result<Ack, WalError> {
        self.submit(vec![Record {
            group,
            kind: Kind::Committed,
            index: 0,
            payload: committed,
        }])
    }

    /// Resolves once everything submitted before it is durable.
    pub fn flush(&self) -> Result<Ack, WalError> {
        self.submit(Vec::new())
    }

    /// The latest vote of `group`.
    pub fn vote(&self, group: GroupId) -> Option<Bytes> {
        let g = self.shared.lock();
        g.state
            .groups
            .get(&group)?
            .vote
            .as_ref()
            .map(|s| s.payload.clone())
    }

    /// The latest committed marker of `group`.
    pub fn committed(&self, group: GroupId) -> Option<Bytes> {
        let g = self.shared.lock();
        let s = g.state.groups.get(&group)?.committed.as_ref()?;
        Some(s.payload.clone())
    }

    /// First and last entry and the purge point of `group`.
    pub fn bounds(&self, group: GroupId) -> LogBounds {
        let g = self.shared.lock();
        let Some(st) = g.state.groups.get(&group) else {
            return LogBounds::default();
        };
        LogBounds {
            first: st.last().map(|_| st.first),
            last: st.last(),
            purged: st.purged.as_ref().map(|(i, s)| (*i, s.payload.clone())),
        }
    }

    /// The last entry index of `group`, if it has entries.
    pub fn last_index(&self, group: GroupId) -> Option<u64> {
        self.shared.lock().state.groups.get(&group)?.last()
    }

    /// One entry.
    pub fn entry(&self, group: GroupId, index: u64) -> Option<Bytes> {
        self.shared
            .lock()
            .state
            .groups
            .get(&group)?
            .entry(index)
            .cloned()
    }

    /// The entries of `group` whose indexes lie in `range` (those present), in order.
    pub fn entries(&self, group: GroupId, range: impl RangeBounds<u64>) -> Vec<(u64, Bytes)> {
        let g = self.shared.lock();
        let Some(st) = g.state.groups.get(&group) else {
            return Vec::new();
        };
        let Some(last) = st.last() else {
            return Vec::new();
        };
        let lo = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(st.first);
        let hi = match range.end_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_sub(1) {
                Some(i) => i,
                None => return Vec::new(),
            },
            Bound::Unbounded => u64::MAX,
        }
        .min(last);
        if lo > hi {
            return Vec::new();
        }
        (lo..=hi)
            .filter_map(|i| st.entry(i).map(|p| (i, p.clone())))
            .collect()
    }

    /// Groups with any state.
    pub fn groups(&self) -> Vec<GroupId> {
        self.shared.lock().state.groups.keys().copied().collect()
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        let segments = self.shared.lock().state.segs.len() as u64;
        WalStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            synced_groups: c.synced_groups.load(Ordering::Relaxed),
            synced_submissions: c.synced_submissions.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            segments,
        }
    }

    /// Reclaims space; blocks until done.
    ///
    /// 1. If the oldest segment still holds live records and at least one whole segment lies
    ///    between it and the active one, every group pinning it whose live payload is at most `rewrite_limit` is rewritten: its
    ///    entries (as truncate + re-append), purge point, vote and committed marker are
    ///    appended again, which makes the old copies dead.
    /// 2. After the next group commit (so the records that made old records dead are durable),
    ///    the leading run of segments without live records is deleted, oldest first, with a
    ///    directory fsync after each.
    pub fn reclaim(&self) -> Result<ReclaimReport, WalError> {
        let rx = {
            let mut g = self.shared.lock();
            if let Some(e) = &g.failed {
                return Err(e.clone().into());
            }
            let mut report = ReclaimReport::default();
            let active = g.active_seq;
            let pinned = g
                .state
                .segs
                .iter()
                .find(|&(&seq, &live)| live > 0 && seq < active)
                .map(|(&seq, _)| seq)
                // Leave the segment just before the active one alone: rewriting it would
                // only churn (its records are recent), and it will be purged or become old.
                .filter(|&seq| seq + 1 < active);
            if let Some(pinned) = pinned {
                let rewrite: Vec<(GroupId, Record)> = g
                    .state
                    .groups
                    .iter()
                    .filter(|(_, st)| st.oldest_segment() == Some(pinned))
                    .filter(|(_, st)| st.live_bytes() <= self.config.rewrite_limit)
                    .map(|(&id, st)| (id, st.image(id)))
                    .filter(|(_, rec)| rec.payload.len() <= record::MAX_PAYLOAD)
                    .collect();
                for (id, image) in rewrite {
                    report.rewritten_groups.push(id);
                    report.rewritten_bytes += image.payload.len() as u64;
                    // The reclaim below waits for the same batch, so this Ack is redundant.
                    let (_ack, done) = Ack::new();
                    self.submit_locked(&mut g, vec![image], &mut Some(done))?;
                }
            }
            let (tx, rx) = mpsc::channel();
            g.reclaim.push((report, tx));
            rx
        };
        self.shared.wake.notify_one();
        Ok(rx.recv().map_err(|_| WalError::WriterGone)??)
    }

    fn submit(&self, records: Vec<Record>) -> Result<Ack, WalError> {
        let (ack, done) = Ack::new();
        self.submit_done(records, done)?;
        Ok(ack)
    }

    fn submit_done(&self, records: Vec<Record>, done: Done) -> Result<(), WalError> {
        {
            let mut g = self.shared.lock();
            let mut done = Some(done);
            if let Err(e) = self.submit_locked(&mut g, records, &mut done) {
                // Not queued: a callback must not run (the caller gets the error instead).
                if let Some(d) = done {
                    d.defuse();
                }
                return Err(e);
            }
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Applies, encodes and queues `records` (rolling segments as needed), followed by an
    /// acknowledgement. On a rejected record nothing after it is applied or queued; records
    /// before it stay (they are valid and already in the state).
    fn submit_locked(
        &self,
        g: &mut Inner,
        records: Vec<Record>,
        done: &mut Option<Done>,
    ) -> Result<(), WalError> {
        if let Some(e) = &g.failed {
            return Err(e.clone().into());
        }
        let mut buf = Vec::new();
        let mut written = 0u64;
        let mut outcome = Ok(());
        // Submissions are per group; the writer counts how many groups each sync covers.
        let group = records.first().map_or(0, |r| r.group);
        for rec in records {
            match g.state.check(&rec) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    outcome = Err(e.into());
                    break;
                }
            }
            let len = rec.payload.len();
            if len > record::MAX_PAYLOAD {
                outcome = Err(WalError::Encode {
                    group: rec.group,
                    source: RecordError::PayloadTooLarge { len },
                });
                break;
            }
            let size = rec.encoded_len() as u64;
            if g.active_len + size > self.config.segment_size && g.active_len > segment::HEADER_LEN
            {
                if !buf.is_empty() {
                    g.queue.push(Item::Records(std::mem::take(&mut buf), group));
                }
                let next = g.active_seq + 1;
                g.queue.push(Item::Roll(next));
                g.state.add_segment(next);
                g.active_seq = next;
                g.active_len = segment::HEADER_LEN;
            }
            if let Err(source) = rec.encode_into(&mut buf) {
                outcome = Err(WalError::Encode {
                    group: rec.group,
                    source,
                });
                break;
            }
            let seq = g.active_seq;
            // `check` passed, so `apply` cannot fail.
            g.state.apply(&rec, seq)?;
            g.active_len += size;
            written += 1;
        }
        if !buf.is_empty() {
            g.queue.push(Item::Records(buf, group));
        }
        self.shared
            .counters
            .records
            .fetch_add(written, Ordering::Relaxed);
        outcome?;
        // Even with nothing written (a no-op, or `flush`), the acknowledgement goes through the
        // queue: it must wait for a batch that may be in flight.
        if let Some(done) = done.take() {
            g.queue.push(Item::Done(done));
        }
        Ok(())
    }
}

impl Drop for Wal {
    /// Stops the writer after it has written and synced everything queued.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
