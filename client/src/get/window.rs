//! The windows of a read and the reads of one window: which k shards to ask (by rank), which
//! bytes of each, when to hedge a slow request, and how the window's bytes are assembled and
//! decoded.

use std::iter::Peekable;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::{ObjectLayout, Piece, Pieces, SegmentLayout};
use dogfs_core::scheme::MAX_TOTAL_SHARDS;
use dogfs_proto::meta::{Segment, ShardLocation};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use super::fetch::{ShardFailure, Watch, fetch_watched};
use super::health::{Health, lock};
use super::sorted_locations;
use crate::error::Error;
use crate::hedge::Hedger;
use crate::pool::ChunkPool;

/// Stripes `[stripes.start, stripes.end)` of one segment and the pieces of the range in them.
#[derive(Debug)]
pub(super) struct Window {
    seg: SegmentLayout,
    pieces: Vec<Piece>,
}

/// Groups the range's pieces into windows, lazily.
pub(super) struct Windows {
    pub(super) layout: ObjectLayout,
    pub(super) pieces: Peekable<Pieces>,
    pub(super) window_bytes: u64,
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
pub(super) struct ReadCtx {
    pub(super) pool: ChunkPool,
    pub(super) codec: Arc<dyn ErasureCodec>,
    pub(super) segments: Arc<Vec<Segment>>,
    pub(super) health: Arc<Mutex<Health>>,
    pub(super) shard_timeout: Duration,
    pub(super) hedge: Hedger,
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
    pub(super) async fn fetch_window(self, window: Window) -> Result<Vec<Bytes>, Error> {
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
