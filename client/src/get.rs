//! The read path's data plane: object bytes from the shards of a layout (DESIGN §4 GET).
//!
//! The requested range is cut into *windows* of whole stripes (about `window_bytes` of
//! data each, one segment at a time). For a window, each data shard is asked for exactly the
//! bytes of its cells the range touches (one `GetShard` per shard), all in parallel; up to
//! `read_ahead` windows are fetched ahead of the one being written, each in its own task, so
//! fetching overlaps writing. Memory: `read_ahead + 1` windows (plus decode buffers of a
//! degraded window), whatever the object size.
//!
//! Which shards a window reads: the k best by rank — shards recorded `missing`, on a server
//! that failed during this read, or that failed themselves are never asked; shards on servers
//! the layout shows DOWN, SUSPECT or REMOVED, or that were hedged around during this read, are
//! asked only when no healthy shard is left; data shards before parity. Needed data shards
//! left out are decoded from the others.
//!
//! Hedging: a request that has delivered nothing (or nothing more) for longer than the
//! adaptive hedge delay (crate::hedge) is read around while it keeps running, as long as some
//! shard not yet hedged around in this window is left to ask: its shard drops to the last rank,
//! the plan is recomputed (so another shard is asked at once) and whichever k verified shards
//! arrive first are used. Its server is avoided for the rest of the read.
//!
//! A shard that fails (error, no progress for `shard_timeout`, DATA_LOSS from the server's
//! block checks, a size or CRC32C in the first message that differs from what metadata
//! recorded) is excluded for the rest of the read — and so is its server, for transport
//! failures and timeouts. Only the missing cells' byte columns are decoded (Reed-Solomon works
//! per byte column, so the same shard offsets of any k good shards rebuild them).
//!
//! Every shard the read could not use is kept, once, for `ReportShards` (crate::report).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::iter::Peekable;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::{ObjectLayout, Piece, Pieces, SegmentLayout};
use dogfs_core::scheme::MAX_TOTAL_SHARDS;
use dogfs_proto::chunk::GetShardRequest;
use dogfs_proto::meta::{NodeState, Segment, ShardLocation, ShardProblem};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::Code;
use tracing::{debug, warn};

use crate::error::Error;
use crate::hedge::Hedger;
use crate::pool::ChunkPool;
use crate::types::Progress;

/// Default data bytes per read window: each shard request carries ~1 MiB with 4+2 and 1 MiB
/// cells, and `read_ahead` windows stay a few stripes of memory. (8 MiB measured no faster.)
pub const WINDOW_DATA_BYTES: u64 = 4 * 1024 * 1024;

/// Why one shard read failed, and whether its server should be avoided for the rest of the
/// operation (transport failure, timeout) or only that shard (corrupt, missing).
#[derive(Debug)]
pub(crate) struct ShardFailure {
    pub node_down: bool,
    /// The shard itself is bad (DATA_LOSS, NOT_FOUND, a size or CRC32C other than metadata
    /// recorded): repair should rebuild it, whatever the server's health.
    pub corrupt: bool,
    pub message: String,
}

fn describe(loc: &ShardLocation) -> String {
    format!(
        "shard {} (index {}) on {}",
        loc.shard_id, loc.index, loc.address
    )
}

/// Progress of one shard request, shared by the request and the window waiting on it.
#[derive(Debug)]
pub(crate) struct Watch {
    started: Instant,
    /// Nanoseconds after `started` of the first and of the latest message; 0: none yet.
    first: AtomicU64,
    last: AtomicU64,
}

impl Watch {
    pub(crate) fn new() -> Self {
        Watch {
            started: Instant::now(),
            first: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let t = u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        // Only the first touch sets `first`; a lost race means another touch already did.
        let _ = self
            .first
            .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
        self.last.store(t, Ordering::Relaxed);
    }

    /// Time to the first message, once it arrived.
    fn ttfb(&self) -> Option<Duration> {
        match self.first.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_nanos(t)),
        }
    }

    /// When the request last made progress: its start until a message arrives.
    fn last_progress(&self) -> Instant {
        self.started + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// Reads `range` of one shard, checking every message's offset, the total length and (when
/// metadata recorded them) the shard's size and whole-shard CRC32C in the stream's first
/// message. The server checks every 64 KiB block before sending it.
pub(crate) async fn fetch_range(
    pool: &ChunkPool,
    loc: &ShardLocation,
    range: Range<u64>,
    shard_timeout: Duration,
) -> Result<Bytes, ShardFailure> {
    fetch_watched(pool, loc, range, shard_timeout, &Watch::new()).await
}

/// [`fetch_range`], touching `watch` on every message (for hedging).
async fn fetch_watched(
    pool: &ChunkPool,
    loc: &ShardLocation,
    range: Range<u64>,
    shard_timeout: Duration,
    watch: &Watch,
) -> Result<Bytes, ShardFailure> {
    let len = range.end - range.start;
    if len == 0 {
        return Ok(Bytes::new());
    }
    let fail = |node_down: bool, corrupt: bool, what: String| ShardFailure {
        node_down,
        corrupt,
        message: format!("{}: {what}", describe(loc)),
    };
    let status_fail = |st: tonic::Status| {
        let node_down = matches!(
            st.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        );
        // DATA_LOSS: a block failed its checksum on the server; NOT_FOUND: the server does
        // not hold the shard metadata says it does.
        let corrupt = matches!(st.code(), Code::DataLoss | Code::NotFound);
        fail(
            node_down,
            corrupt,
            format!("{}: {}", st.code(), st.message()),
        )
    };
    let mut client = pool
        .client(&loc.address)
        .map_err(|e| fail(true, false, e.to_string()))?;
    let req = GetShardRequest {
        shard_id: loc.shard_id.clone(),
        offset: range.start,
        length: Some(len),
    };
    let mut stream = match tokio::time::timeout(shard_timeout, client.get_shard(req)).await {
        Err(_) => {
            return Err(fail(
                true,
                false,
                format!("no answer within {shard_timeout:?}"),
            ));
        }
        Ok(Err(st)) => return Err(status_fail(st)),
        Ok(Ok(r)) => r.into_inner(),
    };
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut got: u64 = 0;
    let mut first = true;
    loop {
        let msg = match tokio::time::timeout(shard_timeout, stream.message()).await {
            Err(_) => {
                return Err(fail(
                    true,
                    false,
                    format!("no progress for {shard_timeout:?} after {got} of {len} bytes"),
                ));
            }
            Ok(Err(st)) => return Err(status_fail(st)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        watch.touch();
        if first {
            first = false;
            if let Some(info) = &msg.shard {
                // Size 0 means metadata recorded nothing to compare (a shard still being
                // rebuilt during an upload's own read-back).
                if loc.size != 0 && (info.size != loc.size || info.crc32c != loc.crc32c) {
                    return Err(fail(
                        false,
                        true,
                        format!(
                            "stored shard has size {} and CRC32C {:08x}, metadata recorded \
                             {} and {:08x}",
                            info.size, info.crc32c, loc.size, loc.crc32c
                        ),
                    ));
                }
            }
        }
        if msg.offset != range.start + got {
            return Err(fail(
                false,
                false,
                format!(
                    "message at offset {} where {} was expected",
                    msg.offset,
                    range.start + got
                ),
            ));
        }
        got += msg.data.len() as u64;
        if got > len {
            return Err(fail(
                false,
                false,
                format!("more than the {len} bytes asked for"),
            ));
        }
        if !msg.data.is_empty() {
            chunks.push(msg.data);
        }
    }
    if got != len {
        return Err(fail(
            false,
            false,
            format!("stream ended after {got} of {len} bytes"),
        ));
    }
    Ok(match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(len as usize);
            for c in &chunks {
                b.extend_from_slice(c);
            }
            b.freeze()
        }
    })
}

/// A shard this read could not use, for the report and for error messages.
#[derive(Debug, Clone)]
struct Problem {
    shard_id: String,
    corrupt: bool,
    /// Only read around for being slow; dropped if the shard delivers after all.
    hedged: bool,
    reason: String,
}

/// Shards and servers found bad or slow during one operation, shared by its window tasks.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Transport failures and timeouts: not asked again during this read.
    bad_nodes: HashSet<String>,
    /// Hedged around: asked only when no healthy shard is left.
    slow_nodes: HashSet<String>,
    bad_shards: HashSet<(u64, u32)>,
    /// One entry per shard, in (segment, index) order.
    problems: BTreeMap<(u64, u32), Problem>,
}

impl Health {
    /// Never asked during this read.
    fn excluded(&self, segment: u64, loc: &ShardLocation) -> bool {
        loc.missing
            || loc.address.is_empty()
            || self.bad_nodes.contains(&loc.address)
            || self.bad_shards.contains(&(segment, loc.index))
    }

    /// Asked only after every healthy shard. UNSPECIFIED (a layout from a metadata service
    /// that does not fill the state) and DRAINING (still serving) count as up.
    fn avoided(&self, loc: &ShardLocation) -> bool {
        self.slow_nodes.contains(&loc.address)
            || matches!(
                NodeState::try_from(loc.node_state),
                Ok(NodeState::Down | NodeState::Suspect | NodeState::Removed)
            )
    }

    fn mark(&mut self, segment: u64, loc: &ShardLocation, f: &ShardFailure) {
        warn!(segment, shard = loc.index, address = %loc.address, corrupt = f.corrupt,
            error = %f.message, "shard read failed; using parity");
        self.bad_shards.insert((segment, loc.index));
        if f.node_down {
            self.bad_nodes.insert(loc.address.clone());
        }
        let p = self
            .problems
            .entry((segment, loc.index))
            .or_insert_with(|| Problem {
                shard_id: loc.shard_id.clone(),
                corrupt: false,
                hedged: false,
                reason: String::new(),
            });
        // A corrupt verdict is kept over a later transport failure of the same shard.
        if !p.corrupt || f.corrupt {
            p.corrupt = f.corrupt;
            p.reason.clone_from(&f.message);
        }
        p.hedged = false;
    }

    fn hedged(&mut self, segment: u64, loc: &ShardLocation, idle: Duration, delay: Duration) {
        if self.slow_nodes.insert(loc.address.clone()) {
            warn!(segment, shard = loc.index, address = %loc.address, ?idle, ?delay,
                "shard read slow; reading around its server for the rest of this read");
        } else {
            debug!(segment, shard = loc.index, address = %loc.address, ?idle, "hedged");
        }
        self.problems
            .entry((segment, loc.index))
            .or_insert_with(|| Problem {
                shard_id: loc.shard_id.clone(),
                corrupt: false,
                hedged: true,
                reason: format!(
                    "{}: no data for {idle:?} (hedge delay {delay:?}); read around",
                    describe(loc)
                ),
            });
    }

    /// A hedged-around shard delivered after all: slow, not unusable.
    fn delivered(&mut self, segment: u64, index: u32) {
        if self
            .problems
            .get(&(segment, index))
            .is_some_and(|p| p.hedged)
        {
            self.problems.remove(&(segment, index));
        }
    }

    /// Why shard `loc` of `segment` is not readable, for a data-loss message.
    fn why(&self, segment: u64, loc: &ShardLocation) -> String {
        if let Some(p) = self.problems.get(&(segment, loc.index)) {
            return p.reason.clone();
        }
        if loc.missing {
            format!(
                "shard {} (index {}) recorded missing",
                loc.shard_id, loc.index
            )
        } else if loc.address.is_empty() {
            format!("shard {} (index {}) has no server", loc.shard_id, loc.index)
        } else {
            format!("{}: its server failed earlier in this read", describe(loc))
        }
    }

    /// Every shard the read could not use, once each.
    pub(crate) fn problems(&self) -> Vec<ShardProblem> {
        self.problems
            .iter()
            .map(|(&(segment, index), p)| ShardProblem {
                segment,
                index,
                shard_id: p.shard_id.clone(),
                corrupt: p.corrupt,
                reason: p.reason.clone(),
            })
            .collect()
    }
}

/// Stripes `[stripes.start, stripes.end)` of one segment and the pieces of the range in them.
#[derive(Debug)]
struct Window {
    seg: SegmentLayout,
    pieces: Vec<Piece>,
}

/// Groups the range's pieces into windows, lazily.
struct Windows {
    layout: ObjectLayout,
    pieces: Peekable<Pieces>,
    window_bytes: u64,
}

pub(crate) fn stripes_for(seg: &SegmentLayout, window_bytes: u64) -> u64 {
    (window_bytes / seg.stripe_data_size().max(1)).max(1)
}

impl Iterator for Windows {
    type Item = Result<Window, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.pieces.next()?;
        let seg = match self.layout.segment(first.segment) {
            Ok(s) => s,
            Err(e) => return Some(Err(Error::protocol(e.to_string()))),
        };
        let w = stripes_for(&seg, self.window_bytes);
        let key = first.stripe / w;
        let mut pieces = vec![first];
        while let Some(p) = self
            .pieces
            .next_if(|p| p.segment == first.segment && p.stripe / w == key)
        {
            pieces.push(p);
        }
        Some(Ok(Window { seg, pieces }))
    }
}

/// What a window task needs; cheap to clone.
#[derive(Clone)]
struct ReadCtx {
    pool: ChunkPool,
    codec: Arc<dyn ErasureCodec>,
    segments: Arc<Vec<Segment>>,
    health: Arc<Mutex<Health>>,
    shard_timeout: Duration,
    hedge: Hedger,
}

fn hull(a: Option<Range<u64>>, b: &Range<u64>) -> Range<u64> {
    match a {
        Some(a) => a.start.min(b.start)..a.end.max(b.end),
        None => b.clone(),
    }
}

fn covers(outer: &Range<u64>, inner: &Range<u64>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn lock(h: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    // A panic elsewhere while holding the lock leaves only a set of bad shards behind; the
    // data is still valid to read.
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One `GetShard` of a window.
struct Req {
    shard: usize,
    range: Range<u64>,
    watch: Arc<Watch>,
    done: bool,
}

type ReqResult = (usize, Result<Bytes, ShardFailure>);

/// Which shards a window reads, and which bytes of each.
struct Plan {
    /// (shard index, shard byte range) to hold before the window can be assembled.
    reads: Vec<(usize, Range<u64>)>,
    /// Needed data shards to decode, over shard bytes `decode`, from the shards in `reads`.
    lost: Vec<usize>,
    decode: Option<Range<u64>>,
    /// A shard outside the plan that was not hedged around in this window exists, so a slow
    /// read can be hedged.
    spare: bool,
}

/// The state of one window's reads.
struct WindowRead {
    ctx: ReadCtx,
    segment: u64,
    k: usize,
    n: usize,
    locs: Vec<ShardLocation>,
    /// The shard bytes each data shard must supply: contiguous, since a window's cells of one
    /// shard are consecutive stripes.
    need: Vec<Option<Range<u64>>>,
    /// Verified bytes per shard, kept across plan changes.
    have: Vec<Option<(Range<u64>, Bytes)>>,
    reqs: Vec<Req>,
    /// Shards hedged around in this window.
    slow: Vec<bool>,
}

impl WindowRead {
    /// Rank of each shard for this window, best first: `None` never asked, 0 healthy, 1 on a
    /// server to avoid (node state, or hedged around by another window), 2 hedged around in
    /// this window (its request may still deliver, but anything else is asked first).
    fn ranks(&self) -> Vec<Option<u8>> {
        let h = lock(&self.ctx.health);
        (0..self.n)
            .map(|i| {
                let loc = &self.locs[i];
                if h.excluded(self.segment, loc) {
                    None
                } else if self.have[i].is_some() {
                    Some(0)
                } else if self.slow[i] {
                    Some(2)
                } else if self.reqs.iter().any(|q| q.shard == i && !q.done) {
                    // Already asked in this window: its own hedge timer judges it, not another
                    // window's verdict on its server.
                    Some(0)
                } else if h.avoided(loc) {
                    Some(1)
                } else {
                    Some(0)
                }
            })
            .collect()
    }

    fn plan(&self) -> Result<Plan, Error> {
        let ranks = self.ranks();
        let (k, n) = (self.k, self.n);
        // Best first: healthy before last-resort, data (no decode needed) before parity.
        let mut order: Vec<usize> = (0..n).filter(|&i| ranks[i].is_some()).collect();
        order.sort_by_key(|&i| (ranks[i], i));
        if order.len() < k {
            let h = lock(&self.ctx.health);
            let why: Vec<String> = (0..n)
                .filter(|&i| ranks[i].is_none())
                .map(|i| h.why(self.segment, &self.locs[i]))
                .collect();
            return Err(Error::data_loss(format!(
                "segment {}: fewer than {k} of {n} shards readable; failures: {}",
                self.segment,
                why.join("; ")
            )));
        }
        let inputs = &order[..k];
        let spare = order[k..]
            .iter()
            .any(|&i| matches!(ranks[i], Some(r) if r < 2));
        let lost: Vec<usize> = (0..k)
            .filter(|&i| self.need[i].is_some() && !inputs.contains(&i))
            .collect();
        if lost.is_empty() {
            let reads = (0..k)
                .filter_map(|i| self.need[i].clone().map(|r| (i, r)))
                .collect();
            return Ok(Plan {
                reads,
                lost,
                decode: None,
                spare,
            });
        }
        let d = lost
            .iter()
            .filter_map(|&i| self.need[i].clone())
            .reduce(|a, b| hull(Some(a), &b))
            .unwrap_or_default();
        let reads = inputs
            .iter()
            .map(|&i| {
                let r = if i < k {
                    hull(self.need[i].clone(), &d)
                } else {
                    d.clone()
                };
                (i, r)
            })
            .collect();
        Ok(Plan {
            reads,
            lost,
            decode: Some(d),
            spare,
        })
    }

    fn held(&self, i: usize, r: &Range<u64>) -> bool {
        self.have[i].as_ref().is_some_and(|(hr, _)| covers(hr, r))
    }

    fn start(&mut self, i: usize, r: Range<u64>) -> BoxFuture<'static, ReqResult> {
        let id = self.reqs.len();
        let watch = Arc::new(Watch::new());
        self.reqs.push(Req {
            shard: i,
            range: r.clone(),
            watch: Arc::clone(&watch),
            done: false,
        });
        let loc = self.locs[i].clone();
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let res = fetch_watched(&ctx.pool, &loc, r, ctx.shard_timeout, &watch).await;
            (id, res)
        })
    }

    fn complete(&mut self, id: usize, res: Result<Bytes, ShardFailure>) {
        let Some(q) = self.reqs.get_mut(id) else {
            return;
        };
        q.done = true;
        let (i, r) = (q.shard, q.range.clone());
        if let Some(t) = q.watch.ttfb() {
            self.ctx.hedge.record(t);
        }
        match res {
            Ok(b) => {
                // One range per shard: a read already holding this one stays, otherwise the
                // newer read (what the current plan asked for) replaces it.
                let keep_old = self.have[i].as_ref().is_some_and(|(hr, _)| covers(hr, &r));
                if !keep_old {
                    self.have[i] = Some((r, b));
                }
                if self.slow[i] {
                    lock(&self.ctx.health).delivered(self.segment, self.locs[i].index);
                }
            }
            Err(f) => {
                self.have[i] = None;
                lock(&self.ctx.health).mark(self.segment, &self.locs[i], &f);
            }
        }
    }

    /// The earliest time an awaited, hedgeable request becomes late.
    fn next_hedge(&self, plan: &Plan, delay: Duration) -> Option<Instant> {
        if !plan.spare {
            return None;
        }
        self.awaited(plan)
            .map(|q| q.watch.last_progress() + delay)
            .min()
    }

    /// Requests the plan waits for whose shards are not hedged around yet.
    fn awaited<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = &'a Req> + 'a {
        self.reqs.iter().filter(move |q| {
            !q.done
                && !self.slow[q.shard]
                && plan
                    .reads
                    .iter()
                    .any(|(i, r)| *i == q.shard && covers(&q.range, r) && !self.held(*i, r))
        })
    }

    /// Marks every awaited request idle for `delay` or more as slow.
    fn hedge_late(&mut self, plan: &Plan, delay: Duration) {
        let now = Instant::now();
        let late: Vec<(usize, Duration)> = self
            .awaited(plan)
            .filter_map(|q| {
                let idle = now.saturating_duration_since(q.watch.last_progress());
                (idle >= delay).then_some((q.shard, idle))
            })
            .collect();
        for (i, idle) in late {
            self.slow[i] = true;
            lock(&self.ctx.health).hedged(self.segment, &self.locs[i], idle, delay);
        }
    }

    /// The window's bytes, in order, once `plan`'s reads are held.
    fn assemble(&self, window: &Window, plan: &Plan) -> Result<Vec<Bytes>, Error> {
        let segment = self.segment;
        let mut bufs: Vec<Option<(u64, Bytes)>> = vec![None; self.k];
        for (i, r) in self.need.iter().enumerate() {
            if r.is_some()
                && !plan.lost.contains(&i)
                && let Some((hr, b)) = &self.have[i]
            {
                bufs[i] = Some((hr.start, b.clone()));
            }
        }
        if let Some(d) = &plan.decode {
            let inputs: Vec<usize> = plan.reads.iter().map(|(i, _)| *i).collect();
            for (i, b) in self.decode(&inputs, &plan.lost, d)? {
                bufs[i] = Some((d.start, b));
            }
        }
        window
            .pieces
            .iter()
            .map(|p| {
                let (base, b) = bufs[p.shard].as_ref().ok_or_else(|| {
                    Error::protocol(format!("segment {segment}: no bytes for shard {}", p.shard))
                })?;
                let start = (p.shard_offset - base) as usize;
                b.get(start..start + p.len as usize)
                    .map(|_| b.slice(start..start + p.len as usize))
                    .ok_or_else(|| {
                        Error::protocol(format!("segment {segment}: short shard buffer"))
                    })
            })
            .collect()
    }

    /// Rebuilds shard bytes `d` of each `wanted` data shard from the `inputs` (k shards, each
    /// holding at least `d`). CPU work on the window's task: one window's missing cells.
    fn decode(
        &self,
        inputs: &[usize],
        wanted: &[usize],
        d: &Range<u64>,
    ) -> Result<Vec<(usize, Bytes)>, Error> {
        let n = self.n;
        let len = (d.end - d.start) as usize;
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut present = [false; MAX_TOTAL_SHARDS];
        let mut want = [false; MAX_TOTAL_SHARDS];
        for &i in inputs {
            let (hr, b) = self.have[i]
                .as_ref()
                .ok_or_else(|| Error::protocol("decode input not fetched"))?;
            let s = (d.start - hr.start) as usize;
            bufs[i] = b
                .get(s..s + len)
                .ok_or_else(|| Error::protocol("decode input too short"))?
                .to_vec();
            present[i] = true;
        }
        for &i in wanted {
            bufs[i] = vec![0; len];
            want[i] = true;
        }
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        self.ctx
            .codec
            .reconstruct_some(&mut refs, &present[..n], &want[..n])
            .map_err(|e| Error::data_loss(format!("decode failed: {e}")))?;
        Ok(wanted
            .iter()
            .map(|&i| (i, Bytes::from(std::mem::take(&mut bufs[i]))))
            .collect())
    }
}

impl ReadCtx {
    fn locations(&self, segment: u64, n: usize) -> Result<Vec<ShardLocation>, Error> {
        let seg = usize::try_from(segment)
            .ok()
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| Error::protocol(format!("layout lacks segment {segment}")))?;
        sorted_locations(seg, n)
    }

    /// Fetches one window, reading around bad and slow shards; returns its bytes in order.
    async fn fetch_window(self, window: Window) -> Result<Vec<Bytes>, Error> {
        let seg = window.seg;
        let (k, n) = (seg.k(), seg.total_shards());
        let segment = seg.index();
        let locs = self.locations(segment, n)?;
        let mut need: Vec<Option<Range<u64>>> = vec![None; k];
        for p in &window.pieces {
            let r = p.shard_offset..p.shard_offset + p.len;
            need[p.shard] = Some(hull(need[p.shard].clone(), &r));
        }
        let mut w = WindowRead {
            ctx: self,
            segment,
            k,
            n,
            locs,
            need,
            have: vec![None; n],
            reqs: Vec::new(),
            slow: vec![false; n],
        };
        // Requests of this window; dropped (cancelled) when the window is done, slow ones
        // included.
        let mut inflight: FuturesUnordered<BoxFuture<'static, ReqResult>> = FuturesUnordered::new();
        loop {
            let plan = w.plan()?;
            let mut waiting = false;
            for (i, r) in plan.reads.clone() {
                if w.held(i, &r) {
                    continue;
                }
                waiting = true;
                let asked = w
                    .reqs
                    .iter()
                    .any(|q| q.shard == i && !q.done && covers(&q.range, &r));
                if !asked {
                    inflight.push(w.start(i, r));
                }
            }
            if !waiting {
                return w.assemble(&window, &plan);
            }
            let delay = w.ctx.hedge.delay();
            let hedge_at = w.next_hedge(&plan, delay);
            tokio::select! {
                // Completions first: a request that delivered is not late.
                biased;
                Some((id, res)) = inflight.next() => w.complete(id, res),
                () = sleep_until(hedge_at), if hedge_at.is_some() => w.hedge_late(&plan, delay),
                else => {
                    return Err(Error::protocol(format!(
                        "segment {segment}: a window waits on no shard request"
                    )));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The k + m locations of a segment in index order, checked.
pub(crate) fn sorted_locations(seg: &Segment, n: usize) -> Result<Vec<ShardLocation>, Error> {
    let mut locs = seg.shards.clone();
    locs.sort_by_key(|l| l.index);
    let ok = locs.len() == n && locs.iter().enumerate().all(|(i, l)| l.index as usize == i);
    if !ok {
        return Err(Error::protocol(format!(
            "segment {} lists shard indices {:?}, expected 0..{n}",
            seg.index,
            locs.iter().map(|l| l.index).collect::<Vec<_>>()
        )));
    }
    Ok(locs)
}

/// A task handle that aborts the task when dropped, so an abandoned read stops its fetches.
pub(crate) struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|e| Error::protocol(format!("read task failed: {e}"))))
    }
}

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    pub shard_timeout: Duration,
    pub read_ahead: usize,
    /// Data bytes per read window ([`WINDOW_DATA_BYTES`] by default); also the step of a
    /// shard rebuild.
    pub window_bytes: u64,
    /// Hedge delay bounds and this client's shard latency estimate (shared by clones).
    pub hedge: Hedger,
}

/// Writes object bytes `range` to `writer`. `segments` is the layout from metadata (with
/// each shard's recorded size and CRC32C). `expected_crc`: CRC32C of the whole object,
/// checked after the last byte when the whole object is read. Returns the bytes written.
#[allow(clippy::too_many_arguments)]
pub async fn download<W: AsyncWrite + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
    segments: Arc<Vec<Segment>>,
    range: Range<u64>,
    writer: &mut W,
    progress: Option<&Progress>,
    expected_crc: Option<u32>,
) -> Result<u64, Error> {
    let health = Arc::default();
    download_inner(
        pool,
        cfg,
        codec,
        layout,
        segments,
        range,
        writer,
        progress,
        expected_crc,
        &health,
    )
    .await
}

/// [`download`], also returning every shard the read could not use (once each, in segment
/// and index order), whether it succeeded or not: what `ReportShards` sends.
#[allow(clippy::too_many_arguments)]
pub async fn download_reporting<W: AsyncWrite + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
    segments: Arc<Vec<Segment>>,
    range: Range<u64>,
    writer: &mut W,
    progress: Option<&Progress>,
    expected_crc: Option<u32>,
) -> (Result<u64, Error>, Vec<ShardProblem>) {
    let health = Arc::default();
    let r = download_inner(
        pool,
        cfg,
        codec,
        layout,
        segments,
        range,
        writer,
        progress,
        expected_crc,
        &health,
    )
    .await;
    let problems = lock(&health).problems();
    (r, problems)
}

#[allow(clippy::too_many_arguments)]
async fn download_inner<W: AsyncWrite + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
    segments: Arc<Vec<Segment>>,
    range: Range<u64>,
    writer: &mut W,
    progress: Option<&Progress>,
    expected_crc: Option<u32>,
    health: &Arc<Mutex<Health>>,
) -> Result<u64, Error> {
    if range.start > range.end {
        return Err(Error::invalid(format!(
            "range {}..{} ends before it starts",
            range.start, range.end
        )));
    }
    if (segments.len() as u64) != layout.segment_count() {
        return Err(Error::protocol(format!(
            "layout lists {} segments, an object of {} bytes has {}",
            segments.len(),
            layout.size(),
            layout.segment_count()
        )));
    }
    let pieces = layout
        .pieces(range.start, range.end - range.start)
        .map_err(|e| Error::invalid(e.to_string()))?;
    let ctx = ReadCtx {
        pool: pool.clone(),
        codec,
        segments,
        health: Arc::clone(health),
        shard_timeout: cfg.shard_timeout,
        hedge: cfg.hedge.clone(),
    };
    let windows = Windows {
        layout,
        pieces: pieces.peekable(),
        window_bytes: cfg.window_bytes,
    };
    let mut stream = futures::stream::iter(windows)
        .map(|w| {
            let ctx = ctx.clone();
            AbortOnDrop(tokio::spawn(async move { ctx.fetch_window(w?).await }))
        })
        .buffered(cfg.read_ahead.max(1));
    let whole = range.start == 0 && range.end == layout.size();
    let mut crc = 0u32;
    let mut done = 0u64;
    while let Some(res) = stream.next().await {
        for b in res?? {
            if whole {
                crc = crc32c::crc32c_append(crc, &b);
            }
            writer.write_all(&b).await?;
            done += b.len() as u64;
        }
        if let Some(p) = progress {
            p(done);
        }
    }
    writer.flush().await?;
    if whole
        && let Some(want) = expected_crc
        && want != crc
    {
        return Err(Error::data_loss(format!(
            "object bytes have CRC32C {crc:08x}, its ETag records {want:08x}"
        )));
    }
    debug!(bytes = done, "download done");
    Ok(done)
}
