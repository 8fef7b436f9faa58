//! The writer thread and group commit.
//!
//! Submitters encode their records, apply them to the in-memory state and push them onto one
//! queue, all under one lock, so the queue order is the file order is the state order. The
//! writer thread takes *everything* queued, writes it with one `write` per segment, calls
//! `fdatasync` once, and only then completes the batch's acknowledgements. While it syncs, new
//! submissions pile up and become the next batch: one sync covers many appends from all groups.
//!
//! After a write or sync error the WAL is failed for good: the error is returned to the
//! batch's waiters and to every later submission. A failed `fdatasync` is never retried: the
//! kernel may have dropped the dirty pages, so a retry that "succeeds" proves nothing.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use thiserror::Error;
use tokio::sync::oneshot;

use super::GroupId;
use super::segment::{self, SegmentError};
use super::state::LogState;

/// A failure of the writer thread, reported to every waiter it affects (hence `Clone`).
#[derive(Debug, Clone, Error)]
pub enum WriterError {
    #[error("writing segment {file} at offset {offset}: {source}")]
    Write {
        file: PathBuf,
        offset: u64,
        source: Arc<io::Error>,
    },
    #[error("fdatasync of segment {file} (length {offset}): {source}")]
    Sync {
        file: PathBuf,
        offset: u64,
        source: Arc<io::Error>,
    },
    #[error("rolling to segment {seq}: {source}")]
    Roll { seq: u64, source: Arc<SegmentError> },
    #[error("deleting dead segment {seq}: {source}")]
    Delete { seq: u64, source: Arc<SegmentError> },
    #[error("the WAL failed earlier and accepts no more writes: {0}")]
    Failed(Box<WriterError>),
    #[error("the WAL writer has stopped")]
    Closed,
}

/// One queued step, in file order.
#[derive(Debug)]
pub(crate) enum Item {
    /// Encoded records for the current segment, and the group that submitted them.
    Records(Vec<u8>, GroupId),
    /// Close the current segment (after syncing it) and start segment `seq`.
    Roll(u64),
    /// Acknowledge once everything before it is synced.
    Done(Done),
}

/// What completes a submission once it is durable (or the WAL failed).
pub(crate) enum Done {
    /// Resolves an [`Ack`] (someone awaits or waits on it).
    Ack(oneshot::Sender<Result<(), WriterError>>),
    /// Called on the writer thread right after the `fdatasync`: the waiter is woken directly,
    /// without a task in between that awaits an [`Ack`] only to pass the result on.
    Call(Callback),
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Ack(_) => f.write_str("Done::Ack"),
            Done::Call(_) => f.write_str("Done::Call"),
        }
    }
}

impl Done {
    /// Drops it without completing it (the submission was refused and the caller told so).
    pub(crate) fn defuse(self) {
        if let Done::Call(mut c) = self {
            drop(c.0.take());
        }
    }

    pub(crate) fn complete(self, result: Result<(), WriterError>) {
        match self {
            Done::Ack(tx) => {
                let _ = tx.send(result);
            }
            Done::Call(mut c) => {
                if let Some(f) = c.0.take() {
                    f(result);
                }
            }
        }
    }
}

/// A completion callback; one dropped uncalled (the writer stopped) is called with
/// [`WriterError::Closed`], as a dropped [`Ack`] sender resolves its `Ack` with it.
pub(crate) struct Callback(Option<CallbackFn>);

type CallbackFn = Box<dyn FnOnce(Result<(), WriterError>) + Send>;

impl Callback {
    pub(crate) fn new(f: impl FnOnce(Result<(), WriterError>) + Send + 'static) -> Callback {
        Callback(Some(Box::new(f)))
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(WriterError::Closed));
        }
    }
}

/// Counters, readable at any time.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub synced_groups: AtomicU64,
    pub synced_submissions: AtomicU64,
    pub batches: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
}

/// What a reclaim pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Segments deleted.
    pub deleted: Vec<u64>,
    /// Groups whose live records were rewritten to the head of the log.
    pub rewritten_groups: Vec<u64>,
    /// Bytes of payload rewritten.
    pub rewritten_bytes: u64,
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub state: LogState,
    /// The segment new records go to (on the submit side; the writer catches up via `Roll`).
    pub active_seq: u64,
    /// Its length once every queued record is written.
    pub active_len: u64,
    pub queue: Vec<Item>,
    /// Reclaim passes waiting for the next batch.
    pub reclaim: Vec<(
        ReclaimReport,
        mpsc::Sender<Result<ReclaimReport, WriterError>>,
    )>,
    pub failed: Option<WriterError>,
    pub shutdown: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub inner: Mutex<Inner>,
    pub wake: Condvar,
    pub counters: Counters,
    /// Told the duration of every `fdatasync` (metrics); set once, after open.
    pub sync_observer: std::sync::OnceLock<SyncObserver>,
}

/// A callback told the duration of every WAL `fdatasync` (e.g. a latency histogram).
#[derive(Clone)]
pub struct SyncObserver(pub Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An acknowledgement: resolves once the records it covers are durable (or the WAL failed).
///
/// Block on it with [`Ack::wait`] from a plain thread, or `.await` it from async code.
#[derive(Debug)]
#[must_use = "a write is durable only once its Ack resolves"]
pub struct Ack {
    rx: oneshot::Receiver<Result<(), WriterError>>,
}

impl Ack {
    pub(crate) fn new() -> (Ack, Done) {
        let (tx, rx) = oneshot::channel();
        (Ack { rx }, Done::Ack(tx))
    }

    /// Blocks until the covered records are durable. Must not be called from inside an async
    /// runtime (await the `Ack` there).
    pub fn wait(self) -> Result<(), WriterError> {
        self.rx.blocking_recv().unwrap_or(Err(WriterError::Closed))
    }
}

impl Future for Ack {
    type Output = Result<(), WriterError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WriterError::Closed)))
    }
}

/// The writer thread's own state: the segment it writes to and where its records end.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub file: File,
    pub seq: u64,
    pub len: u64,
    /// Size new segments are created with (0: no preallocation).
    pub prealloc: u64,
}

impl Writer {
    fn path(&self) -> PathBuf {
        segment::path(&self.shared.dir, self.seq)
    }

    fn write(&mut self, buf: &mut Vec<u8>) -> Result<(), WriterError> {
        if buf.is_empty() {
            return Ok(());
        }
        // At an explicit offset: the file is longer than its records (preallocated).
        self.file
            .write_all_at(buf, self.len)
            .map_err(|source| WriterError::Write {
                file: self.path(),
                offset: self.len,
                source: Arc::new(source),
            })?;
        self.len += buf.len() as u64;
        self.shared
            .counters
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        buf.clear();
        Ok(())
    }

    /// Syncs what was written and counts the groups and submissions it covered.
    fn sync_covering(
        &mut self,
        groups: &mut Vec<GroupId>,
        submissions: &mut u64,
    ) -> Result<(), WriterError> {
        self.sync()?;
        groups.sort_unstable();
        groups.dedup();
        let c = &self.shared.counters;
        c.synced_groups
            .fetch_add(groups.len() as u64, Ordering::Relaxed);
        c.synced_submissions
            .fetch_add(*submissions, Ordering::Relaxed);
        groups.clear();
        *submissions = 0;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WriterError> {
        let started = std::time::Instant::now();
        self.file.sync_data().map_err(|source| WriterError::Sync {
            file: self.path(),
            offset: self.len,
            source: Arc::new(source),
        })?;
        if let Some(observer) = self.shared.sync_observer.get() {
            (observer.0)(started.elapsed());
        }
        self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes and syncs one batch; returns the acknowledgements it holds.
    fn process(&mut self, items: Vec<Item>, acks: &mut Vec<Done>) -> Result<(), WriterError> {
        let mut buf = Vec::new();
        let mut dirty = false;
        let mut groups = Vec::new();
        let mut submissions = 0u64;
        for item in items {
            match item {
                Item::Records(bytes, group) => {
                    if buf.is_empty() {
                        buf = bytes;
                    } else {
                        buf.extend_from_slice(&bytes);
                    }
                    groups.push(group);
                    submissions += 1;
                    dirty = true;
                }
                Item::Roll(seq) => {
                    self.write(&mut buf)?;
                    if dirty {
                        self.sync_covering(&mut groups, &mut submissions)?;
                        dirty = false;
                    }
                    let file =
                        segment::create(&self.shared.dir, seq, self.prealloc).map_err(|e| {
                            WriterError::Roll {
                                seq,
                                source: Arc::new(e),
                            }
                        })?;
                    self.shared
                        .counters
                        .segments_created
                        .fetch_add(1, Ordering::Relaxed);
                    self.file = file;
                    self.seq = seq;
                    self.len = segment::HEADER_LEN;
                }
                Item::Done(tx) => acks.push(tx),
            }
        }
        self.write(&mut buf)?;
        if dirty {
            self.sync_covering(&mut groups, &mut submissions)?;
        }
        Ok(())
    }

    /// The thread body: batch, write, sync, acknowledge, until shut down and drained.
    pub fn run(mut self) {
        loop {
            let (items, reclaim, dead) = {
                let mut g = self.shared.lock();
                while g.queue.is_empty() && g.reclaim.is_empty() && !g.shutdown {
                    g = self
                        .shared
                        .wake
                        .wait(g)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if g.queue.is_empty() && g.reclaim.is_empty() {
                    return;
                }
                let items = std::mem::take(&mut g.queue);
                let reclaim = std::mem::take(&mut g.reclaim);
                // Segments dead now stay dead; the records that killed them are all in this
                // batch or earlier ones, so they are durable once this batch is synced.
                let dead = if reclaim.is_empty() {
                    Vec::new()
                } else {
                    let active = g.active_seq;
                    g.state.take_dead_prefix(active)
                };
                (items, reclaim, dead)
            };
            self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
            let mut acks = Vec::new();
            let failed = self.shared.lock().failed.clone();
            let result = match failed {
                Some(e) => {
                    for item in items {
                        if let Item::Done(tx) = item {
                            acks.push(tx);
                        }
                    }
                    Err(e)
                }
                None => self.process(items, &mut acks).inspect_err(|e| {
                    tracing::error!(error = %e, "WAL write failed; the WAL accepts no more writes");
                    self.shared.lock().failed = Some(WriterError::Failed(Box::new(e.clone())));
                }),
            };
            for done in acks {
                done.complete(result.clone());
            }
            let reclaimed = match result {
                Ok(()) => self.delete(&dead),
                Err(e) => Err(e),
            };
            for (mut report, tx) in reclaim {
                let _ = tx.send(reclaimed.clone().map(|deleted| {
                    report.deleted = deleted;
                    report
                }));
            }
        }
    }

    /// Deletes dead segments oldest first, fsyncing the directory after each, so a crash
    /// leaves a contiguous run of segments. Returns those deleted.
    fn delete(&self, dead: &[u64]) -> Result<Vec<u64>, WriterError> {
        let dir: &Path = &self.shared.dir;
        let mut deleted = Vec::new();
        for &seq in dead {
            let file = segment::path(dir, seq);
            let step = segment::remove(&file).and_then(|()| segment::sync_dir(dir));
            if let Err(e) = step {
                // Not fatal for writes: this and later dead segments stay on disk (a
                // contiguous run, holding no live records) until a reclaim after a restart.
                tracing::warn!(error = %e, "could not delete dead WAL segment");
                return Err(WriterError::Delete {
                    seq,
                    source: Arc::new(e),
                });
            }
            self.shared
                .counters
                .segments_deleted
                .fetch_add(1, Ordering::Relaxed);
            deleted.push(seq);
        }
        Ok(deleted)
    }
}
