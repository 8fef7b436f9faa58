//! `ReconstructShard` (DESIGN §6, §7): rebuild one shard of a segment on this server from k
//! verified shards held by peers, and store it exactly as `PutShard` would.
//!
//! How a repair runs (docs/chunk-server.md, "Repair"):
//!
//! 1. **Validate** the request and derive the segment's geometry with `dogfs_core::layout`
//!    (effective cell size, stripes, shard length) from `segment_len` and the scheme alone.
//! 2. **Admit** it under `--repair-concurrency` (RESOURCE_EXHAUSTED when full), reserve the
//!    shard's space and open a temp file (`Store::begin_put`).
//! 3. **Fetch** the first k usable sources with one `GetShard` stream each, consumed in windows
//!    of `WINDOW_BYTES` of shard bytes. Reed-Solomon works per byte column and every shard of a
//!    segment has the same layout, so byte range `[p, p + w)` of any k shards rebuilds the same
//!    range of the target: windows need not follow cell boundaries, and memory stays at a few
//!    windows per source whatever the cell size. Each source's first message must report the
//!    expected size and the recorded CRC32C; its server verifies every block before sending
//!    it; and the whole-shard CRC32C of what arrives is computed as it streams and checked
//!    against the recorded one at the end.
//! 4. **Decode** each window on a blocking thread (only the target shard is computed) and
//!    append it to the temp file.
//! 5. **Verify and store**: every source's running CRC must equal its recorded CRC, and the
//!    rebuilt shard's CRC must equal `expected_crc32c` when given (DATA_LOSS otherwise); only
//!    then is the file committed (fsync, link, folder fsync).
//!
//! A source that fails (error, timeout, wrong size or CRC) before any of its bytes reached the
//! decoder is swapped for the next spare at once; the spare's stream starts at offset 0 so its
//! whole-shard CRC can still be checked, and the prefix already rebuilt is skipped. A source
//! that fails after its bytes were decoded (a bad block deep in the file, a whole-shard CRC
//! mismatch at the end) taints what was rebuilt: the temp file is discarded and the repair
//! starts over without it. Every restart excludes at least one more source, so a repair ends.
//!
//! The submodules: `plan` validates a request and derives the segment's geometry; `source`
//! reads one source's `GetShard` stream and keeps the channels to peers; `throttle` is the
//! token bucket behind `--repair-bandwidth`; `copy` is `CopyShard`, the one-source sibling
//! sharing this service's slots, bucket and peers. This file holds the service itself:
//! admission, the fetch/decode/store loop and its restarts.

mod copy;
mod plan;
mod source;
mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_core::codec::{CodecError, ErasureCodec, codec_for};
use dogfs_core::ids::ShardId;
use dogfs_core::layout::LayoutError;
use dogfs_core::scheme::MAX_TOTAL_SHARDS;
use dogfs_proto::chunk::{GetShardRequest, ReconstructShardRequest, ReconstructShardResponse};
use dogfs_security::ClientTls;
use futures::future::join_all;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;
use tracing::{Instrument, field, info, info_span, warn};

use crate::convert::shard_info;
use crate::metrics::Metrics;
use crate::store::{ShardMeta, ShardWriter, Store, StoreError};
use plan::{Plan, validate};
use source::{PeerPool, ReadCtx, SourceReader, status_reason};
use throttle::TokenBucket;

pub use copy::CopyError;

/// Largest `segment_len` accepted: 64 × the default segment size. Memory does not grow with
/// it (windows are fixed), but a shard of segment_len / k bytes is reserved on disk, and a
/// wild value from a confused caller must not reserve terabytes.
pub const MAX_SEGMENT_LEN: u64 = 4 * 1024 * 1024 * 1024;

/// Shard bytes per decode window: one `GetShard` data message (they are 1 MiB, on 1 MiB
/// boundaries), so a window is normally one message copied once.
const WINDOW_BYTES: u64 = 1024 * 1024;

/// Decoded-but-unwritten windows queued ahead of the decode/writer thread; with the window
/// being read that makes `(DECODE_AHEAD + 2) × k × WINDOW_BYTES` per repair at most, plus what
/// HTTP/2 flow control lets each source stream buffer (`STREAM_WINDOW_BYTES`).
const DECODE_AHEAD: usize = 2;

/// Settings of the repair service (`--repair-*` flags).
#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// Repairs running at once; more get RESOURCE_EXHAUSTED.
    pub concurrency: usize,
    /// Source bytes per second over all repairs; 0 = unlimited.
    pub bandwidth: u64,
    /// Longest wait for a source to connect, answer, or send its next message.
    pub source_timeout: Duration,
    /// TLS to peer chunk servers (this server's certificate as client identity).
    pub tls: Option<Arc<ClientTls>>,
}

/// Errors of a repair, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("{field}: {reason}")]
    Validate { field: String, reason: String },
    #[error(
        "{limit} repairs and copies are already running, the limit set by \
         --repair-concurrency (DOGFS_REPAIR_CONCURRENCY)"
    )]
    Admit { limit: usize },
    #[error("segment geometry: {0}")]
    Layout(#[from] LayoutError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "fewer than k = {needed} sources could be read and verified ({good} usable); bad sources: {}",
        bad.join("; ")
    )]
    Sources {
        needed: usize,
        good: usize,
        bad: Vec<String>,
    },
    #[error("decoding: {0}")]
    Decode(#[from] CodecError),
    #[error(
        "rebuilt shard {id} has crc32c {actual:08x} but {expected:08x} was recorded; nothing stored"
    )]
    Verify {
        id: ShardId,
        expected: u32,
        actual: u32,
    },
    #[error("repair task: {0}")]
    Task(String),
}

impl From<RepairError> for Status {
    fn from(e: RepairError) -> Self {
        let msg = e.to_string();
        match e {
            RepairError::Validate { .. } | RepairError::Layout(_) => Status::invalid_argument(msg),
            RepairError::Admit { .. } => Status::resource_exhausted(msg),
            RepairError::Store(e) => Status::from(e),
            RepairError::Sources { .. } => Status::failed_precondition(msg),
            RepairError::Verify { .. } => Status::data_loss(msg),
            RepairError::Decode(_) | RepairError::Task(_) => Status::internal(msg),
        }
    }
}

/// The repair service of one chunk server.
#[derive(Debug)]
pub struct Repairer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    limit: usize,
    bucket: Option<TokenBucket>,
    peers: PeerPool,
    source_timeout: Duration,
}

/// A repair's bookkeeping across restarts.
#[derive(Debug)]
struct Progress {
    /// Sources not to be used again, by position in the request.
    excluded: Vec<bool>,
    /// "shard id: reason" for each of them.
    bad: Vec<String>,
    fetched: AtomicU64,
}

/// A source stream with the window it has delivered for the current position.
#[derive(Debug)]
struct Active {
    reader: SourceReader,
    window: Option<Vec<u8>>,
    failed: Option<String>,
}

/// How feeding the decoder ended.
#[derive(Debug)]
enum Fed {
    /// Every window was sent; the readers whose bytes were used, for the final CRC check.
    Complete(Vec<SourceReader>),
    /// A source whose bytes were already decoded failed: start over without it.
    Restart,
    /// The decode/writer thread stopped (its result says why).
    DecoderStopped,
}

/// One window of the k sources, for the decode thread.
#[derive(Debug)]
struct Window {
    inputs: Vec<(usize, Vec<u8>)>,
}

impl Repairer {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, opts: RepairOptions) -> Self {
        let limit = opts.concurrency.min(Semaphore::MAX_PERMITS);
        Repairer {
            store,
            metrics,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            bucket: (opts.bandwidth > 0).then(|| TokenBucket::new(opts.bandwidth)),
            peers: PeerPool::new(opts.source_timeout, opts.tls.clone()),
            source_timeout: opts.source_timeout,
        }
    }

    /// Runs one `ReconstructShard` call.
    pub async fn reconstruct(
        &self,
        req: ReconstructShardRequest,
    ) -> Result<ReconstructShardResponse, RepairError> {
        let plan = validate(&req)?;
        tracing::Span::current().record("shard_id", field::display(plan.id));
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(RepairError::Admit { limit: self.limit });
        };
        let span = info_span!(
            "repair",
            shard_id = %plan.id,
            index = plan.index,
            scheme = %plan.scheme,
            segment_len = plan.segment.data_len(),
            shard_len = plan.shard_len(),
            sources = plan.sources.len(),
            bytes_fetched = field::Empty,
            bad_sources = field::Empty,
        );
        self.metrics.repairs_started.inc();
        // Decremented however the call ends, also when the caller goes away mid-repair and
        // this future is dropped.
        let _running = Running::new(&self.metrics);
        let started = Instant::now();
        let mut progress = Progress {
            excluded: vec![false; plan.sources.len()],
            bad: Vec::new(),
            fetched: AtomicU64::new(0),
        };
        let result = self
            .run(&plan, &mut progress)
            .instrument(span.clone())
            .await;
        let fetched = progress.fetched.load(Ordering::Relaxed);
        span.record("bytes_fetched", fetched);
        span.record("bad_sources", progress.bad.len());
        let _e = span.enter();
        match result {
            Ok(meta) => {
                self.metrics.repairs_succeeded.inc();
                let secs = started.elapsed().as_secs_f64();
                info!(
                    elapsed_ms = (secs * 1000.0) as u64,
                    mb_per_s = meta.size as f64 / 1e6 / secs.max(1e-9),
                    crc32c = format_args!("{:08x}", meta.crc32c),
                    "shard rebuilt"
                );
                Ok(ReconstructShardResponse {
                    shard: Some(shard_info(&meta)),
                    bytes_fetched: fetched,
                    bad_sources: progress.bad,
                })
            }
            Err(e) => {
                self.metrics.repairs_failed.inc();
                warn!(error = %e, "repair failed");
                Err(e)
            }
        }
    }

    async fn run(&self, plan: &Plan, progress: &mut Progress) -> Result<ShardMeta, RepairError> {
        if let Some(existing) = self.existing(plan).await? {
            return Ok(existing);
        }
        let codec = codec_for(&plan.scheme)?;
        loop {
            if let Some(meta) = self.attempt(plan, &codec, progress).await? {
                return Ok(meta);
            }
        }
    }

    /// The same rules as `PutShard` for an id that is already stored: the same shard again
    /// succeeds, a different one is ALREADY_EXISTS. Decided here without fetching anything
    /// when the answer is certain (a different size, or a recorded CRC to compare with);
    /// otherwise the rebuilt bytes are compared when they are committed.
    async fn existing(&self, plan: &Plan) -> Result<Option<ShardMeta>, RepairError> {
        let store = Arc::clone(&self.store);
        let id = plan.id;
        let meta = match blocking(move || store.stat(id)).await? {
            Ok(m) => m,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let clash = || StoreError::AlreadyExists {
            id,
            size: meta.size,
            crc: meta.crc32c,
        };
        if meta.size != plan.shard_len() {
            return Err(clash().into());
        }
        match plan.expected {
            Some(crc) if crc == meta.crc32c => Ok(Some(meta)),
            Some(_) => Err(clash().into()),
            None => Ok(None),
        }
    }

    /// One pass over the shard. `Ok(None)`: a source whose bytes were used failed; it is
    /// excluded now and the caller starts over.
    async fn attempt(
        &self,
        plan: &Plan,
        codec: &Arc<dyn ErasureCodec>,
        progress: &mut Progress,
    ) -> Result<Option<ShardMeta>, RepairError> {
        let store = Arc::clone(&self.store);
        let (id, len) = (plan.id, plan.shard_len());
        let writer = blocking(move || store.begin_put(id, len)).await??;
        let (tx, rx) = mpsc::channel(DECODE_AHEAD);
        let decoder = {
            let codec = Arc::clone(codec);
            let target = plan.index;
            tokio::task::spawn_blocking(move || decode_loop(writer, codec.as_ref(), target, rx))
        };
        let fed = self.feed(plan, progress, tx).await;
        let decoded = decoder
            .await
            .map_err(|e| RepairError::Task(format!("decoder: {e}")))?;
        let readers = match fed {
            Ok(Fed::Complete(readers)) => readers,
            Ok(Fed::Restart) => {
                // A write error is the better answer than a retry that would meet it again.
                discard(decoded?).await;
                return Ok(None);
            }
            Ok(Fed::DecoderStopped) => {
                discard(decoded?).await;
                return Err(RepairError::Task("decoder stopped".into()));
            }
            Err(e) => {
                if let Ok(w) = decoded {
                    discard(w).await;
                }
                return Err(e);
            }
        };
        let writer = decoded?;
        // Every source whose bytes went into the shard must match its recorded CRC as a
        // whole; one that does not is excluded and the shard rebuilt without it.
        let mut restart = false;
        for r in &readers {
            if let Err(reason) = r.finish(len) {
                self.reject(plan, progress, r.slot, &reason);
                restart = true;
            }
        }
        if restart {
            discard(writer).await;
            return Ok(None);
        }
        let actual = writer.checksum();
        if let Some(expected) = plan.expected
            && expected != actual
        {
            discard(writer).await;
            return Err(RepairError::Verify {
                id,
                expected,
                actual,
            });
        }
        let meta = blocking(move || writer.commit(actual)).await??;
        self.metrics.bytes_written.inc_by(meta.size);
        self.metrics.repair_written_bytes.inc_by(meta.size);
        Ok(Some(meta))
    }

    /// Streams the sources window by window into the decoder. Consumes `tx`, so the decoder
    /// sees the end of input whenever this returns.
    async fn feed(
        &self,
        plan: &Plan,
        progress: &mut Progress,
        tx: mpsc::Sender<Window>,
    ) -> Result<Fed, RepairError> {
        let k = plan.k();
        let len = plan.shard_len();
        let mut active: Vec<Active> = Vec::with_capacity(k);
        let mut next = 0;
        let mut pos = 0;
        while pos < len {
            let n = WINDOW_BYTES.min(len - pos);
            loop {
                self.refill(plan, progress, &mut next, &mut active).await?;
                let ctx = ReadCtx {
                    timeout: self.source_timeout,
                    bucket: self.bucket.as_ref(),
                    fetched: &progress.fetched,
                    fetched_total: &self.metrics.repair_fetched_bytes,
                    shard_len: len,
                };
                join_all(active.iter_mut().filter(|a| a.window.is_none()).map(|a| {
                    let ctx = &ctx;
                    async move {
                        match a.reader.read(pos, n, ctx).await {
                            Ok(w) => a.window = Some(w),
                            Err(reason) => a.failed = Some(reason),
                        }
                    }
                }))
                .await;
                let mut restart = false;
                for a in &active {
                    if let Some(reason) = &a.failed {
                        self.reject(plan, progress, a.reader.slot, reason);
                        restart |= a.reader.used;
                    }
                }
                if restart {
                    return Ok(Fed::Restart);
                }
                active.retain(|a| a.failed.is_none());
                if active.len() == k {
                    break;
                }
            }
            let inputs = active
                .iter_mut()
                .map(|a| {
                    a.reader.used = true;
                    // Every active source holds this window (the loop above).
                    (a.reader.index, a.window.take().unwrap_or_default())
                })
                .collect();
            if tx.send(Window { inputs }).await.is_err() {
                return Ok(Fed::DecoderStopped);
            }
            pos += n;
        }
        Ok(Fed::Complete(
            active.into_iter().map(|a| a.reader).collect(),
        ))
    }

    /// Opens spares, in request order, until k sources are active; FAILED_PRECONDITION when
    /// the request runs out of them.
    async fn refill(
        &self,
        plan: &Plan,
        progress: &mut Progress,
        next: &mut usize,
        active: &mut Vec<Active>,
    ) -> Result<(), RepairError> {
        let k = plan.k();
        while active.len() < k {
            let candidates: Vec<usize> = (*next..plan.sources.len())
                .filter(|&i| !progress.excluded[i])
                .take(k - active.len())
                .collect();
            let Some(&last) = candidates.last() else {
                return Err(RepairError::Sources {
                    needed: k,
                    good: active.len(),
                    bad: progress.bad.clone(),
                });
            };
            *next = last + 1;
            let opened = join_all(candidates.iter().map(|&i| self.open(plan, i, progress))).await;
            for (i, r) in candidates.into_iter().zip(opened) {
                match r {
                    Ok(reader) => active.push(Active {
                        reader,
                        window: None,
                        failed: None,
                    }),
                    Err(reason) => self.reject(plan, progress, i, &reason),
                }
            }
        }
        Ok(())
    }

    /// Starts reading source `slot` from offset 0 and checks its first message.
    async fn open(
        &self,
        plan: &Plan,
        slot: usize,
        progress: &Progress,
    ) -> Result<SourceReader, String> {
        let src = plan
            .sources
            .get(slot)
            .ok_or_else(|| format!("no source {slot}"))?;
        let len = plan.shard_len();
        let t = self.source_timeout;
        let mut client = self.peers.client(&src.address)?;
        let req = GetShardRequest {
            shard_id: src.id.to_string(),
            offset: 0,
            length: Some(len),
            // This server is a component (chunk role): its certificate stands in for a grant.
            grant: Default::default(),
        };
        let stream = match tokio::time::timeout(t, client.get_shard(req)).await {
            Err(_) => return Err(format!("no answer within {} ms", t.as_millis())),
            Ok(Err(s)) => return Err(status_reason(&s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let mut reader = SourceReader {
            slot,
            index: src.index,
            stream,
            pending: Bytes::new(),
            received: 0,
            consumed: 0,
            crc: 0,
            recorded: src.crc32c,
            used: false,
        };
        let ctx = ReadCtx {
            timeout: t,
            bucket: self.bucket.as_ref(),
            fetched: &progress.fetched,
            fetched_total: &self.metrics.repair_fetched_bytes,
            shard_len: len,
        };
        let info = reader
            .next_message(&ctx)
            .await?
            .ok_or_else(|| "the first message carries no shard info".to_owned())?;
        if info.shard_id != src.id.to_string() {
            return Err(format!("the server answered for shard {:?}", info.shard_id));
        }
        if info.size != len {
            return Err(format!(
                "stored size {} is not the segment's shard length {len}",
                info.size
            ));
        }
        if info.crc32c != src.crc32c {
            return Err(format!(
                "stored crc32c {:08x} is not the recorded {:08x}",
                info.crc32c, src.crc32c
            ));
        }
        Ok(reader)
    }

    fn reject(&self, plan: &Plan, progress: &mut Progress, slot: usize, reason: &str) {
        let Some(src) = plan.sources.get(slot) else {
            return;
        };
        if let Some(x) = progress.excluded.get_mut(slot) {
            *x = true;
        }
        self.metrics.repair_bad_sources.inc();
        warn!(source = %src.id, index = src.index, address = %src.address, reason,
            "repair source rejected");
        progress
            .bad
            .push(format!("{}: {reason} (at {})", src.id, src.address));
    }
}

/// One repair in the `repairs_running` gauge while it lives.
#[derive(Debug)]
struct Running<'a>(&'a Metrics);

impl<'a> Running<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.repairs_running.inc();
        Running(metrics)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.repairs_running.dec();
    }
}

/// Decodes each window's target cells and appends them to the temp file; returns the writer
/// (not committed) when the input ends.
fn decode_loop(
    mut writer: ShardWriter,
    codec: &dyn ErasureCodec,
    target: usize,
    mut rx: mpsc::Receiver<Window>,
) -> Result<ShardWriter, RepairError> {
    let total = codec.total_shards();
    let mut out: Vec<u8> = Vec::new();
    while let Some(mut window) = rx.blocking_recv() {
        let len = window.inputs.first().map_or(0, |(_, w)| w.len());
        // Grown (zeroed) only when a window is longer than the last; reconstruct overwrites
        // every byte of the wanted shard, so stale bytes never survive into the file.
        out.resize(len, 0);
        let mut present = [false; MAX_TOTAL_SHARDS];
        let mut wanted = [false; MAX_TOTAL_SHARDS];
        let mut shards: [&mut [u8]; MAX_TOTAL_SHARDS] = Default::default();
        for (index, buf) in window.inputs.iter_mut() {
            if let (Some(p), Some(s)) = (present.get_mut(*index), shards.get_mut(*index)) {
                *p = true;
                *s = buf.as_mut_slice();
            }
        }
        if let (Some(w), Some(s)) = (wanted.get_mut(target), shards.get_mut(target)) {
            *w = true;
            *s = out.as_mut_slice();
        }
        codec.reconstruct_some(&mut shards[..total], &present[..total], &wanted[..total])?;
        writer.write(&out)?;
    }
    Ok(writer)
}

/// Drops an uncommitted writer (removing its temp file) off the async workers, and waits,
/// so a caller told "nothing stored" finds nothing.
async fn discard(writer: ShardWriter) {
    let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
}

/// Runs blocking store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RepairError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RepairError::Task(format!("storage task: {e}")))
}
