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
//!
//! The submodules: `fetch` reads one shard range with its checks; `health` keeps the shards and
//! servers found bad or slow during a read, and what is reported; `window` cuts the range into
//! windows and plans, hedges and assembles each window's shard reads. This file holds the
//! entry points (`download`, `download_reporting`) and what the write path shares.

mod fetch;
mod health;
mod parts;
mod window;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::ObjectLayout;
use dogfs_proto::meta::{Segment, ShardLocation, ShardProblem};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::error::Error;
use crate::hedge::Hedger;
use crate::pool::ChunkPool;
use crate::types::Progress;
use health::{Health, lock};
use window::{ReadCtx, Windows};

pub(crate) use fetch::fetch_range;
pub(crate) use parts::download_parts;
pub(crate) use window::stripes_for;

/// Default data bytes per read window: each shard request carries ~1 MiB with 4+2 and 1 MiB
/// cells, and `read_ahead` windows stay a few stripes of memory. (8 MiB measured no faster.)
pub const WINDOW_DATA_BYTES: u64 = 4 * 1024 * 1024;

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
    download_reporting(
        pool,
        cfg,
        codec,
        layout,
        segments,
        range,
        writer,
        progress,
        expected_crc,
    )
    .await
    .0
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
