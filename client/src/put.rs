//! The write path's data plane: a reader's bytes erasure-coded into the shards of a layout
//! (DESIGN §4 PUT steps 2-3).
//!
//! Per segment, one `PutShard` stream per shard, all k + m in parallel over the pooled
//! connections. The segment is read from the reader one stripe at a time into a k·cell buffer,
//! parity is computed, and each cell is queued (in ≤ 1 MiB messages) on its shard's bounded
//! queue of [`SHARD_QUEUE`] messages. Memory is therefore a few stripes per segment being
//! streamed, whatever the object size. Each shard's CRC32C is computed while its cells are
//! queued and sent in the trailer; the server's acknowledged CRC32C and size must match.
//!
//! **Failures.** A shard whose stream fails, or that accepts nothing for `shard_timeout`, is
//! dropped for the rest of the segment and the other shards carry on. When the segment's
//! streams are done, each failed shard is *rebuilt*: the client asks metadata for a
//! replacement target (`ReplaceTarget`, excluding every server that failed in this upload),
//! reads back k of the shards just stored, decodes the lost shard window by window and
//! uploads it — so nothing beyond a few windows is ever held, and a stream that cannot be
//! replayed is never needed again. The rebuilt bytes must have the CRC32C computed during
//! the upload. If no replacement exists, or rebuilding fails, the shard is reported missing,
//! which is allowed while at least k + 1 shards of the segment are stored (DESIGN §4 step 3).
//! Servers that failed are replaced up front in later segments of the same upload.
//!
//! The next segment starts streaming while the previous one's servers fsync and answer, so
//! durable uploads are not serialised on a per-segment fsync.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::{ObjectLayout, SegmentLayout};
use dogfs_core::scheme::MAX_TOTAL_SHARDS;
use dogfs_core::transport::DATA_MESSAGE_BYTES;
use dogfs_proto::chunk::put_shard_request::Msg;
use dogfs_proto::chunk::{PutShardHeader, PutShardRequest, PutShardTrailer, ShardInfo};
use dogfs_proto::meta::{Segment, SegmentReport, ShardLocation, ShardReport};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::get::{AbortOnDrop, DataPlaneConfig, fetch_range, sorted_locations, stripes_for};
use crate::pool::ChunkPool;
use crate::types::Progress;

/// Messages (≤ 1 MiB each) queued per shard stream ahead of the network.
pub const SHARD_QUEUE: usize = 2;

/// Attempts at finding a replacement target and rebuilding one lost shard onto it.
const REPLACE_ATTEMPTS: usize = 3;

/// Finds a new target for one shard of an upload (metadata's `ReplaceTarget`). `Ok(None)`:
/// no server can take it (the shard will be reported missing).
pub trait TargetReplacer: Send + Sync {
    fn replace<'a>(
        &'a self,
        segment: u64,
        shard_index: u32,
        exclude_node_ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Option<ShardLocation>, Error>>;
}

/// For uploads without a metadata service: a failed shard is always reported missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplacement;

impl TargetReplacer for NoReplacement {
    fn replace<'a>(
        &'a self,
        _segment: u64,
        _shard_index: u32,
        _exclude: Vec<String>,
    ) -> BoxFuture<'a, Result<Option<ShardLocation>, Error>> {
        Box::pin(async { Ok(None) })
    }
}

/// The result of streaming an object's segments.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    /// Per segment, the k + m shard reports for `CommitObject`.
    pub reports: Vec<SegmentReport>,
    /// Where every shard ended up (replacements included), with sizes and CRC32Cs filled in
    /// and `missing` set for shards that could not be stored: a layout a read can use.
    pub locations: Vec<Segment>,
    /// CRC32C of the object's bytes.
    pub crc32c: u32,
    pub etag: String,
}

/// `hex(CRC32C)` of the object, with `-<segments>` for objects of more than one segment.
pub fn etag(crc: u32, segments: u64) -> String {
    if segments > 1 {
        format!("{crc:08x}-{segments}")
    } else {
        format!("{crc:08x}")
    }
}

/// The CRC32C an ETag of ours carries; `None` for any other form (so an ETag written by
/// something else is never mistaken for a checksum).
pub fn etag_crc(etag: &str) -> Option<u32> {
    let etag = etag.trim_matches('"');
    let (hex, segments) = match etag.split_once('-') {
        Some((h, n)) => (h, Some(n)),
        None => (etag, None),
    };
    let hex_ok = hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let segments_ok = segments.is_none_or(|n| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && n.parse::<u64>().is_ok_and(|n| n > 1)
    });
    if !(hex_ok && segments_ok) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

fn now_ms(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One shard's upload stream: its queue, the task driving the RPC, and when the network last
/// took a message from the queue.
struct ShardStream {
    tx: Option<mpsc::Sender<PutShardRequest>>,
    task: AbortOnDrop<Result<ShardInfo, tonic::Status>>,
    last_pull: Arc<AtomicU64>,
    base: Instant,
}

impl ShardStream {
    fn start(pool: &ChunkPool, loc: &ShardLocation, size: u64) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<PutShardRequest>(SHARD_QUEUE);
        let header = PutShardRequest {
            msg: Some(Msg::Header(PutShardHeader {
                shard_id: loc.shard_id.clone(),
                size,
                grant: loc.grant.clone(),
            })),
        };
        // Cannot be full: the queue is new.
        tx.try_send(header)
            .map_err(|_| Error::protocol("new shard queue refused its header"))?;
        let base = Instant::now();
        let last_pull = Arc::new(AtomicU64::new(0));
        let pulled = Arc::clone(&last_pull);
        let body = tokio_stream::wrappers::ReceiverStream::new(rx).inspect(move |_| {
            pulled.store(now_ms(base), Ordering::Relaxed);
        });
        let mut client = pool.client(&loc.address)?;
        let task = tokio::spawn(async move {
            let resp = client.put_shard(body).await?;
            resp.into_inner()
                .shard
                .ok_or_else(|| tonic::Status::internal("PutShard answer without shard info"))
        });
        Ok(ShardStream {
            tx: Some(tx),
            task: AbortOnDrop(task),
            last_pull,
            base,
        })
    }

    /// Queues one message; `false` when the stream failed or took nothing for `timeout`.
    async fn send(&mut self, msg: PutShardRequest, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tokio::time::timeout(timeout, tx.send(msg)).await {
            Ok(Ok(())) => true,
            _ => {
                self.tx = None;
                false
            }
        }
    }

    /// Closes the queue and waits for the server's answer, failing when the network takes
    /// nothing and the server answers nothing for `timeout`.
    async fn finish(mut self, timeout: Duration) -> Result<ShardInfo, String> {
        self.tx = None;
        loop {
            let last = self.last_pull.load(Ordering::Relaxed);
            let idle = Duration::from_millis(now_ms(self.base).saturating_sub(last));
            let wait = timeout.saturating_sub(idle);
            tokio::select! {
                r = &mut self.task => {
                    return match r {
                        Ok(Ok(info)) => Ok(info),
                        Ok(Err(st)) => Err(format!("{}: {}", st.code(), st.message())),
                        Err(e) => Err(e.to_string()),
                    };
                }
                _ = tokio::time::sleep(wait) => {
                    if self.last_pull.load(Ordering::Relaxed) == last {
                        return Err(format!("no progress for {timeout:?}"));
                    }
                }
            }
        }
    }
}

/// A segment whose bytes are all queued; its servers may still be writing.
struct Pending {
    seg: SegmentLayout,
    locs: Vec<ShardLocation>,
    streams: Vec<Option<ShardStream>>,
    /// Why a shard already failed while streaming.
    failed: Vec<Option<String>>,
    /// No server was placed for the shard at BeginPut (fewer eligible than k+m): it is
    /// reported missing without asking for a replacement.
    unplaced: Vec<bool>,
    crcs: Vec<u32>,
}

struct Uploader<'a> {
    pool: &'a ChunkPool,
    cfg: &'a DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    replacer: &'a dyn TargetReplacer,
    /// Servers that failed during this upload: node ids (what metadata excludes) and
    /// addresses (a target of a later segment may carry either).
    failed_ids: Mutex<HashSet<String>>,
    failed_addrs: Mutex<HashSet<String>>,
    /// The cluster's `min_write_shards` from BeginPut (0: k+1).
    min_write_shards: usize,
}

/// The fewest shards of a segment of `total` = k+m that must be stored: the cluster's
/// setting clamped to k+1..=k+m, k+1 when unset (the metadata service applies the same rule).
pub fn write_quorum(setting: usize, k: usize, total: usize) -> usize {
    let floor = (k + 1).min(total);
    if setting == 0 {
        floor
    } else {
        setting.clamp(floor, total)
    }
}

/// Streams `layout.size()` bytes from `reader` into the targets of `segments` (one per
/// segment of `layout`, k + m shard locations each). The reader must yield exactly that many
/// bytes. On error, shards already stored are left for the metadata service's garbage
/// collection of the aborted upload.
#[allow(clippy::too_many_arguments)]
pub async fn upload<R: AsyncRead + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
    segments: &[Segment],
    reader: &mut R,
    replacer: &dyn TargetReplacer,
    progress: Option<&Progress>,
) -> Result<UploadOutcome, Error> {
    upload_with_quorum(
        pool, cfg, codec, layout, segments, reader, replacer, progress, 0,
    )
    .await
}

/// [`upload`] with the cluster's write quorum (`BeginPutResponse.min_write_shards`; 0: k+1).
/// Targets marked `missing` (no eligible server at BeginPut) are reported missing.
#[allow(clippy::too_many_arguments)]
pub async fn upload_with_quorum<R: AsyncRead + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
    segments: &[Segment],
    reader: &mut R,
    replacer: &dyn TargetReplacer,
    progress: Option<&Progress>,
    min_write_shards: usize,
) -> Result<UploadOutcome, Error> {
    if segments.len() as u64 != layout.segment_count() {
        return Err(Error::protocol(format!(
            "upload has {} segments of targets, an object of {} bytes needs {}",
            segments.len(),
            layout.size(),
            layout.segment_count()
        )));
    }
    let up = Uploader {
        pool,
        cfg,
        codec,
        replacer,
        failed_ids: Mutex::default(),
        failed_addrs: Mutex::default(),
        min_write_shards,
    };
    let mut crc = 0u32;
    let mut done = 0u64;
    let mut reports = Vec::with_capacity(segments.len());
    let mut locations = Vec::with_capacity(segments.len());
    let mut pending: Option<Pending> = None;
    for (seg, targets) in layout.segments().zip(segments) {
        let p = up
            .stream_segment(seg, targets, reader, &mut crc, &mut done, progress)
            .await?;
        if let Some(prev) = pending.replace(p) {
            let (r, l) = up.finish_segment(prev).await?;
            reports.push(r);
            locations.push(l);
        }
    }
    if let Some(prev) = pending {
        let (r, l) = up.finish_segment(prev).await?;
        reports.push(r);
        locations.push(l);
    }
    Ok(UploadOutcome {
        reports,
        locations,
        crc32c: crc,
        etag: etag(crc, layout.segment_count()),
    })
}

fn lock_set(m: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Uploader<'_> {
    fn node_failed(&self, loc: &ShardLocation) -> bool {
        lock_set(&self.failed_ids).contains(&loc.node_id)
            || lock_set(&self.failed_addrs).contains(&loc.address)
    }

    fn mark_failed(&self, loc: &ShardLocation) {
        if !loc.node_id.is_empty() {
            lock_set(&self.failed_ids).insert(loc.node_id.clone());
        }
        lock_set(&self.failed_addrs).insert(loc.address.clone());
    }

    fn exclude(&self) -> Vec<String> {
        lock_set(&self.failed_ids).iter().cloned().collect()
    }

    async fn stream_segment<R: AsyncRead + Unpin + Send>(
        &self,
        seg: SegmentLayout,
        targets: &Segment,
        reader: &mut R,
        crc: &mut u32,
        done: &mut u64,
        progress: Option<&Progress>,
    ) -> Result<Pending, Error> {
        let (k, m, n) = (seg.k(), seg.m(), seg.total_shards());
        let mut locs = sorted_locations(targets, n)?;
        let segment = seg.index();
        let timeout = self.cfg.shard_timeout;
        let mut failed: Vec<Option<String>> = vec![None; n];
        let unplaced: Vec<bool> = locs.iter().map(|l| l.missing).collect();
        // Servers that already failed in this upload get a replacement before any byte.
        for (i, loc) in locs.iter_mut().enumerate() {
            if unplaced[i] {
                failed[i] = Some(format!("shard {i}: no chunk server was eligible"));
                continue;
            }
            if self.node_failed(loc) {
                match self
                    .replacer
                    .replace(segment, i as u32, self.exclude())
                    .await
                {
                    Ok(Some(t)) => {
                        *loc = ShardLocation {
                            index: i as u32,
                            ..t
                        }
                    }
                    Ok(None) => failed[i] = Some(format!("{} failed earlier", loc.address)),
                    Err(e) => failed[i] = Some(format!("no replacement for {}: {e}", loc.address)),
                }
            }
        }
        let shard_len = seg.shard_len();
        let mut streams: Vec<Option<ShardStream>> = Vec::with_capacity(n);
        for (i, loc) in locs.iter().enumerate() {
            if failed[i].is_some() {
                streams.push(None);
                continue;
            }
            match ShardStream::start(self.pool, loc, shard_len) {
                Ok(s) => streams.push(Some(s)),
                Err(e) => {
                    failed[i] = Some(e.to_string());
                    streams.push(None);
                }
            }
        }
        let cell = seg.cell_size() as usize;
        let mut crcs = vec![0u32; n];
        for stripe in 0..seg.stripe_count() {
            let range = seg
                .stripe_data_range(stripe)
                .map_err(|e| Error::protocol(e.to_string()))?;
            let len = (range.end - range.start) as usize;
            let mut data = BytesMut::zeroed(k * cell);
            read_exact(reader, &mut data[..len], *done).await?;
            *crc = crc32c::crc32c_append(*crc, &data[..len]);
            *done += len as u64;
            let mut parity = BytesMut::zeroed(m * cell);
            self.codec
                .encode_stripe(&data, &mut parity)
                .map_err(|e| Error::protocol(format!("encode: {e}")))?;
            let (data, parity) = (data.freeze(), parity.freeze());
            for (i, slot) in streams.iter_mut().enumerate() {
                let cell_bytes = if i < k {
                    data.slice(i * cell..(i + 1) * cell)
                } else {
                    parity.slice((i - k) * cell..(i - k + 1) * cell)
                };
                crcs[i] = crc32c::crc32c_append(crcs[i], &cell_bytes);
                let Some(s) = slot else { continue };
                let mut ok = true;
                let mut off = 0;
                while ok && off < cell {
                    let end = (off + DATA_MESSAGE_BYTES).min(cell);
                    let msg = PutShardRequest {
                        msg: Some(Msg::Data(cell_bytes.slice(off..end))),
                    };
                    ok = s.send(msg, timeout).await;
                    off = end;
                }
                if !ok {
                    self.drop_stream(segment, &locs[i], slot, &mut failed[i])
                        .await;
                }
            }
            if let Some(p) = progress {
                p(*done);
            }
        }
        for (i, slot) in streams.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let trailer = PutShardRequest {
                msg: Some(Msg::Trailer(PutShardTrailer { crc32c: crcs[i] })),
            };
            if !s.send(trailer, timeout).await {
                self.drop_stream(segment, &locs[i], slot, &mut failed[i])
                    .await;
            }
        }
        Ok(Pending {
            seg,
            locs,
            streams,
            failed,
            unplaced,
            crcs,
        })
    }

    /// A shard's stream stopped taking data: record why (from the RPC when it already ended).
    async fn drop_stream(
        &self,
        segment: u64,
        loc: &ShardLocation,
        slot: &mut Option<ShardStream>,
        failed: &mut Option<String>,
    ) {
        let Some(s) = slot.take() else { return };
        let why = match tokio::time::timeout(Duration::from_millis(50), s.task).await {
            Ok(Ok(Err(st))) => format!("{}: {}", st.code(), st.message()),
            _ => format!("took no data for {:?}", self.cfg.shard_timeout),
        };
        warn!(segment, shard = loc.index, address = %loc.address, error = %why,
            "shard upload failed; continuing without it");
        self.mark_failed(loc);
        *failed = Some(format!("{}: {why}", loc.address));
    }

    async fn finish_segment(&self, p: Pending) -> Result<(SegmentReport, Segment), Error> {
        let Pending {
            seg,
            mut locs,
            streams,
            mut failed,
            unplaced,
            crcs,
        } = p;
        let (k, n) = (seg.k(), seg.total_shards());
        let segment = seg.index();
        let shard_len = seg.shard_len();
        let timeout = self.cfg.shard_timeout;
        let waits = streams.into_iter().map(|s| async move {
            match s {
                Some(s) => Some(s.finish(timeout).await),
                None => None,
            }
        });
        let results = futures::future::join_all(waits).await;
        let mut stored = vec![false; n];
        for (i, r) in results.into_iter().enumerate() {
            match r {
                None => {}
                Some(Ok(info)) if info.crc32c == crcs[i] && info.size == shard_len => {
                    stored[i] = true;
                }
                Some(Ok(info)) => {
                    failed[i] = Some(format!(
                        "{} acknowledged size {} CRC32C {:08x}, sent {} bytes with {:08x}",
                        locs[i].address, info.size, info.crc32c, shard_len, crcs[i]
                    ));
                }
                Some(Err(e)) => {
                    warn!(segment, shard = i, address = %locs[i].address, error = %e,
                        "shard upload failed");
                    self.mark_failed(&locs[i]);
                    failed[i] = Some(format!("{}: {e}", locs[i].address));
                }
            }
        }
        let count = stored.iter().filter(|s| **s).count();
        if count < k {
            return Err(Error::unavailable(format!(
                "segment {segment}: only {count} of {n} shards stored, {k} needed; {}",
                failed
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        for i in 0..n {
            if stored[i] || unplaced[i] {
                continue;
            }
            for attempt in 0..REPLACE_ATTEMPTS {
                let target = match self
                    .replacer
                    .replace(segment, i as u32, self.exclude())
                    .await
                {
                    Ok(Some(t)) => ShardLocation {
                        index: i as u32,
                        ..t
                    },
                    Ok(None) => break,
                    Err(e) => {
                        warn!(segment, shard = i, error = %e, "no replacement target");
                        break;
                    }
                };
                match self
                    .rebuild(&seg, &locs, &stored, i, &target, crcs[i])
                    .await
                {
                    Ok(()) => {
                        info!(segment, shard = i, address = %target.address, attempt,
                            "shard rebuilt on a replacement target");
                        locs[i] = target;
                        stored[i] = true;
                        break;
                    }
                    Err(e) => {
                        warn!(segment, shard = i, address = %target.address, error = %e,
                            "rebuilding shard on replacement failed");
                        self.mark_failed(&target);
                    }
                }
            }
        }
        let missing = stored.iter().filter(|s| !**s).count();
        let quorum = write_quorum(self.min_write_shards, k, n);
        if n - missing < quorum {
            return Err(Error::unavailable(format!(
                "segment {segment}: only {} of {n} shards could be stored, the write quorum \
                 (min_write_shards) is {quorum}; {}",
                n - missing,
                failed
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let mut reports = Vec::with_capacity(n);
        for i in 0..n {
            let ok = stored[i];
            reports.push(ShardReport {
                missing: !ok,
                client_crc32c: if ok { crcs[i] } else { 0 },
                server_crc32c: if ok { crcs[i] } else { 0 },
                size: if ok { shard_len } else { 0 },
            });
            locs[i].missing = !ok;
            locs[i].crc32c = crcs[i];
            locs[i].size = shard_len;
        }
        debug!(segment, missing, "segment stored");
        Ok((
            SegmentReport { shards: reports },
            Segment {
                index: segment,
                shards: locs,
            },
        ))
    }

    /// Decodes shard `lost` of a stored segment from k stored shards, window by window, and
    /// uploads it to `target`; its bytes must have CRC32C `want_crc`.
    async fn rebuild(
        &self,
        seg: &SegmentLayout,
        locs: &[ShardLocation],
        stored: &[bool],
        lost: usize,
        target: &ShardLocation,
        want_crc: u32,
    ) -> Result<(), Error> {
        let (k, n) = (seg.k(), seg.total_shards());
        let sources: Vec<usize> = (0..n).filter(|&i| stored[i]).take(k).collect();
        if sources.len() < k {
            return Err(Error::unavailable("fewer than k shards stored"));
        }
        let timeout = self.cfg.shard_timeout;
        let shard_len = seg.shard_len();
        let mut stream = ShardStream::start(self.pool, target, shard_len)?;
        let mut crc = 0u32;
        let cell = seg.cell_size();
        let step = stripes_for(seg, self.cfg.window_bytes) * cell;
        let mut off = 0u64;
        while off < shard_len {
            let range = off..(off + step).min(shard_len);
            let fetches = sources.iter().map(|&i| {
                // Size 0: the read is not checked against a recorded size and CRC32C; the
                // rebuilt bytes are checked against the CRC32C computed during the upload.
                let loc = ShardLocation {
                    size: 0,
                    ..locs[i].clone()
                };
                let r = range.clone();
                async move { fetch_range(self.pool, &loc, r, timeout).await }
            });
            let mut got = Vec::with_capacity(k);
            for r in futures::future::join_all(fetches).await {
                got.push(r.map_err(|f| Error::unavailable(f.message))?);
            }
            let len = (range.end - range.start) as usize;
            let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); n];
            let mut present = [false; MAX_TOTAL_SHARDS];
            let mut wanted = [false; MAX_TOTAL_SHARDS];
            for (&i, b) in sources.iter().zip(&got) {
                bufs[i] = b.to_vec();
                present[i] = true;
            }
            bufs[lost] = vec![0; len];
            wanted[lost] = true;
            {
                let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
                self.codec
                    .reconstruct_some(&mut refs, &present[..n], &wanted[..n])
                    .map_err(|e| Error::protocol(format!("decode: {e}")))?;
            }
            let out = Bytes::from(std::mem::take(&mut bufs[lost]));
            crc = crc32c::crc32c_append(crc, &out);
            let mut o = 0;
            while o < out.len() {
                let end = (o + DATA_MESSAGE_BYTES).min(out.len());
                let msg = PutShardRequest {
                    msg: Some(Msg::Data(out.slice(o..end))),
                };
                if !stream.send(msg, timeout).await {
                    let why = stream.finish(timeout).await.err().unwrap_or_default();
                    return Err(Error::unavailable(format!(
                        "{} stopped taking data: {why}",
                        target.address
                    )));
                }
                o = end;
            }
            off = range.end;
        }
        if crc != want_crc {
            return Err(Error::data_loss(format!(
                "rebuilt shard has CRC32C {crc:08x}, the upload computed {want_crc:08x}"
            )));
        }
        let trailer = PutShardRequest {
            msg: Some(Msg::Trailer(PutShardTrailer { crc32c: crc })),
        };
        stream.send(trailer, timeout).await;
        let info = stream
            .finish(timeout)
            .await
            .map_err(|e| Error::unavailable(format!("{}: {e}", target.address)))?;
        if info.crc32c != crc || info.size != shard_len {
            return Err(Error::protocol(format!(
                "{} acknowledged size {} CRC32C {:08x} for a rebuilt shard of {shard_len} bytes \
                 with {crc:08x}",
                target.address, info.size, info.crc32c
            )));
        }
        Ok(())
    }
}

/// Fills `buf` from the reader; a short reader is the caller's mistake (wrong size).
async fn read_exact<R: AsyncRead + Unpin + Send>(
    reader: &mut R,
    buf: &mut [u8],
    done: u64,
) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(Error::invalid(format!(
                "the reader ended after {} bytes, before the declared size",
                done + filled as u64
            )));
        }
        filled += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip_and_foreign_ones_are_ignored() {
        assert_eq!(etag(0x1a2b_3c4d, 1), "1a2b3c4d");
        assert_eq!(etag(0x0000_00ff, 3), "000000ff-3");
        assert_eq!(etag_crc("1a2b3c4d"), Some(0x1a2b_3c4d));
        assert_eq!(etag_crc("\"000000ff-3\""), Some(0xff));
        // An S3-style MD5, a multipart MD5, wrong cases and shapes.
        for foreign in [
            "9e107d9d372bb6826bd81d3542a419d6",
            "9e107d9d372bb6826bd81d3542a419d6-2",
            "1A2B3C4D",
            "1a2b3c4d-",
            "1a2b3c4d-1",
            "1a2b3c4d-x",
            "1a2b3c",
            "",
        ] {
            assert_eq!(etag_crc(foreign), None, "{foreign}");
        }
    }
}
