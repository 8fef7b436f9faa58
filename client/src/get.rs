//! The read path's data plane: object bytes from the shards of a layout (DESIGN §4 GET).
//!
//! The requested range is cut into *windows* of whole stripes (about `window_bytes` of
//! data each, one segment at a time). For a window, each data shard is asked for exactly the
//! bytes of its cells the range touches (one `GetShard` per shard), all in parallel; up to
//! `read_ahead` windows are fetched ahead of the one being written, each in its own task, so
//! fetching overlaps writing. Memory: `read_ahead + 1` windows (plus decode buffers of a
//! degraded window), whatever the object size.
//!
//! A shard that fails (error, no progress for `shard_timeout`, DATA_LOSS from the server's
//! block checks, a size or CRC32C in the first message that differs from what metadata
//! recorded) is marked bad for the rest of the read — and so is its server, for transport
//! failures and timeouts, so a stopped server costs one `shard_timeout`, not one per window.
//! The window is then fetched again with parity shards in place of the bad ones, and only the
//! missing cells' byte columns are decoded (Reed-Solomon works per byte column, so the same
//! shard offsets of any k good shards rebuild them).

use std::collections::HashSet;
use std::future::Future;
use std::iter::Peekable;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::{ObjectLayout, Piece, Pieces, SegmentLayout};
use dogfs_core::scheme::MAX_TOTAL_SHARDS;
use dogfs_proto::chunk::GetShardRequest;
use dogfs_proto::meta::{Segment, ShardLocation};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::Code;
use tracing::{debug, warn};

use crate::error::Error;
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
    pub message: String,
}

fn describe(loc: &ShardLocation) -> String {
    format!(
        "shard {} (index {}) on {}",
        loc.shard_id, loc.index, loc.address
    )
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
    let len = range.end - range.start;
    if len == 0 {
        return Ok(Bytes::new());
    }
    let fail = |node_down: bool, what: String| ShardFailure {
        node_down,
        message: format!("{}: {what}", describe(loc)),
    };
    let status_fail = |st: tonic::Status| {
        let node_down = matches!(
            st.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        );
        fail(node_down, format!("{}: {}", st.code(), st.message()))
    };
    let mut client = pool
        .client(&loc.address)
        .map_err(|e| fail(true, e.to_string()))?;
    let req = GetShardRequest {
        shard_id: loc.shard_id.clone(),
        offset: range.start,
        length: Some(len),
    };
    let mut stream = match tokio::time::timeout(shard_timeout, client.get_shard(req)).await {
        Err(_) => return Err(fail(true, format!("no answer within {shard_timeout:?}"))),
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
                    format!("no progress for {shard_timeout:?} after {got} of {len} bytes"),
                ));
            }
            Ok(Err(st)) => return Err(status_fail(st)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        if first {
            first = false;
            if let Some(info) = &msg.shard {
                // Size 0 means metadata recorded nothing to compare (a shard still being
                // rebuilt during an upload's own read-back).
                if loc.size != 0 && (info.size != loc.size || info.crc32c != loc.crc32c) {
                    return Err(fail(
                        false,
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
                format!(
                    "message at offset {} where {} was expected",
                    msg.offset,
                    range.start + got
                ),
            ));
        }
        got += msg.data.len() as u64;
        if got > len {
            return Err(fail(false, format!("more than the {len} bytes asked for")));
        }
        if !msg.data.is_empty() {
            chunks.push(msg.data);
        }
    }
    if got != len {
        return Err(fail(
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

/// Shards and servers found bad during one operation, shared by its window tasks.
#[derive(Debug, Default)]
pub(crate) struct Health {
    bad_nodes: HashSet<String>,
    bad_shards: HashSet<(u64, u32)>,
    failures: Vec<String>,
}

impl Health {
    fn is_bad(&self, segment: u64, loc: &ShardLocation) -> bool {
        loc.missing
            || loc.address.is_empty()
            || self.bad_nodes.contains(&loc.address)
            || self.bad_shards.contains(&(segment, loc.index))
    }

    fn mark(&mut self, segment: u64, loc: &ShardLocation, f: &ShardFailure) {
        warn!(segment, shard = loc.index, address = %loc.address, error = %f.message,
            "shard read failed; using parity");
        self.bad_shards.insert((segment, loc.index));
        if f.node_down {
            self.bad_nodes.insert(loc.address.clone());
        }
        if self.failures.len() < 16 {
            self.failures.push(f.message.clone());
        }
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
}

/// Bytes of the window's data shards: `(shard offset of the first byte, bytes)` per index.
type ShardBufs = Vec<Option<(u64, Bytes)>>;

fn hull(a: Option<Range<u64>>, b: &Range<u64>) -> Range<u64> {
    match a {
        Some(a) => a.start.min(b.start)..a.end.max(b.end),
        None => b.clone(),
    }
}

fn lock(h: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    // A panic elsewhere while holding the lock leaves only a set of bad shards behind; the
    // data is still valid to read.
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReadCtx {
    fn locations(&self, segment: u64, n: usize) -> Result<Vec<ShardLocation>, Error> {
        let seg = usize::try_from(segment)
            .ok()
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| Error::protocol(format!("layout lacks segment {segment}")))?;
        sorted_locations(seg, n)
    }

    /// Fetches one window, decoding around bad shards; returns the window's bytes in order.
    async fn fetch_window(self, window: Window) -> Result<Vec<Bytes>, Error> {
        let seg = window.seg;
        let (k, n) = (seg.k(), seg.total_shards());
        let segment = seg.index();
        let locs = self.locations(segment, n)?;
        // The shard bytes each data shard must supply: contiguous, since a window's cells of
        // one shard are consecutive stripes.
        let mut need: Vec<Option<Range<u64>>> = vec![None; k];
        for p in &window.pieces {
            let r = p.shard_offset..p.shard_offset + p.len;
            need[p.shard] = Some(hull(need[p.shard].clone(), &r));
        }
        // Fetched bytes kept across attempts, so a retry only fetches what changed.
        let mut have: Vec<Option<(Range<u64>, Bytes)>> = vec![None; n];
        loop {
            let bad: Vec<bool> = {
                let h = lock(&self.health);
                locs.iter().map(|l| h.is_bad(segment, l)).collect()
            };
            let bad_needed: Vec<usize> = (0..k).filter(|&i| bad[i] && need[i].is_some()).collect();
            // Which shards to read, and which bytes of each.
            let mut plan: Vec<(usize, Range<u64>)> = Vec::new();
            let mut decode: Option<Range<u64>> = None;
            if bad_needed.is_empty() {
                for (i, r) in need.iter().enumerate() {
                    if let Some(r) = r {
                        plan.push((i, r.clone()));
                    }
                }
            } else {
                let d = bad_needed
                    .iter()
                    .filter_map(|&i| need[i].clone())
                    .reduce(|a, b| hull(Some(a), &b))
                    .unwrap_or_default();
                let good_data: Vec<usize> = (0..k).filter(|&i| !bad[i]).collect();
                let parity: Vec<usize> = (k..n).filter(|&i| !bad[i]).collect();
                let want_parity = k - good_data.len();
                if parity.len() < want_parity {
                    let h = lock(&self.health);
                    return Err(Error::data_loss(format!(
                        "segment {segment}: fewer than {k} of {n} shards readable; \
                         failures: {}",
                        h.failures.join("; ")
                    )));
                }
                for &i in &good_data {
                    plan.push((i, hull(need[i].clone(), &d)));
                }
                for &i in parity.iter().take(want_parity) {
                    plan.push((i, d.clone()));
                }
                decode = Some(d);
            }
            // Fetch what we do not hold yet, all in parallel.
            let fetches = plan.iter().filter_map(|(i, r)| {
                let held = have[*i]
                    .as_ref()
                    .is_some_and(|(hr, _)| hr.start <= r.start && r.end <= hr.end);
                (!held).then(|| {
                    let loc = locs[*i].clone();
                    let r = r.clone();
                    let ctx = self.clone();
                    async move {
                        let res = fetch_range(&ctx.pool, &loc, r.clone(), ctx.shard_timeout).await;
                        (loc, r, res)
                    }
                })
            });
            let results = futures::future::join_all(fetches).await;
            let mut failed = false;
            for (loc, r, res) in results {
                match res {
                    Ok(b) => have[loc.index as usize] = Some((r, b)),
                    Err(f) => {
                        lock(&self.health).mark(segment, &loc, &f);
                        failed = true;
                    }
                }
            }
            if failed {
                continue;
            }
            let mut bufs: ShardBufs = vec![None; k];
            for (i, r) in need.iter().enumerate() {
                if r.is_some()
                    && !bad[i]
                    && let Some((hr, b)) = &have[i]
                {
                    bufs[i] = Some((hr.start, b.clone()));
                }
            }
            if let Some(d) = decode {
                let planned: Vec<usize> = plan.iter().map(|(i, _)| *i).collect();
                let rebuilt = self.decode(&have, &planned, &bad_needed, &d, n)?;
                for (i, b) in rebuilt {
                    bufs[i] = Some((d.start, b));
                }
            }
            return window
                .pieces
                .iter()
                .map(|p| {
                    let (base, b) = bufs[p.shard].as_ref().ok_or_else(|| {
                        Error::protocol(format!(
                            "segment {segment}: no bytes for shard {}",
                            p.shard
                        ))
                    })?;
                    let start = (p.shard_offset - base) as usize;
                    b.get(start..start + p.len as usize)
                        .map(|_| b.slice(start..start + p.len as usize))
                        .ok_or_else(|| {
                            Error::protocol(format!("segment {segment}: short shard buffer"))
                        })
                })
                .collect();
        }
    }

    /// Rebuilds shard bytes `d` of each `wanted` data shard from the `inputs` (k shards, each
    /// holding at least `d`). Runs on the blocking pool: a decode is CPU work.
    fn decode(
        &self,
        have: &[Option<(Range<u64>, Bytes)>],
        inputs: &[usize],
        wanted: &[usize],
        d: &Range<u64>,
        n: usize,
    ) -> Result<Vec<(usize, Bytes)>, Error> {
        let len = (d.end - d.start) as usize;
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut present = [false; MAX_TOTAL_SHARDS];
        let mut want = [false; MAX_TOTAL_SHARDS];
        for &i in inputs {
            let (hr, b) = have[i]
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
        self.codec
            .reconstruct_some(&mut refs, &present[..n], &want[..n])
            .map_err(|e| Error::data_loss(format!("decode failed: {e}")))?;
        Ok(wanted
            .iter()
            .map(|&i| (i, Bytes::from(std::mem::take(&mut bufs[i]))))
            .collect())
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
        health: Arc::default(),
        shard_timeout: cfg.shard_timeout,
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
