//! One shard range over `GetShard`: every message's offset, the total length and the shard's
//! recorded size and CRC32C are checked, and a [`Watch`] records its progress for hedging.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dogfs_proto::chunk::GetShardRequest;
use dogfs_proto::meta::ShardLocation;
use tonic::Code;

use crate::pool::ChunkPool;

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

pub(super) fn describe(loc: &ShardLocation) -> String {
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
    pub(super) fn ttfb(&self) -> Option<Duration> {
        match self.first.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_nanos(t)),
        }
    }

    /// When the request last made progress: its start until a message arrives.
    pub(super) fn last_progress(&self) -> Instant {
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
pub(super) async fn fetch_watched(
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
    let req = GetShardRequest {
        shard_id: loc.shard_id.clone(),
        offset: range.start,
        length: Some(len),
        grant: loc.grant.clone(),
    };
    // A refused connection is tried once more on a new connection: the cached one may only
    // be replaying the failure of a connect made while the server was down (`ChunkPool::forget`).
    let mut fresh = false;
    let mut stream = loop {
        let mut client = pool
            .client(&loc.address)
            .map_err(|e| fail(true, false, e.to_string()))?;
        match tokio::time::timeout(shard_timeout, client.get_shard(req.clone())).await {
            Err(_) => {
                return Err(fail(
                    true,
                    false,
                    format!("no answer within {shard_timeout:?}"),
                ));
            }
            Ok(Err(st)) if !fresh && crate::pool::never_sent(&st) => {
                pool.forget(&loc.address);
                fresh = true;
            }
            Ok(Err(st)) => return Err(status_fail(st)),
            Ok(Ok(r)) => break r.into_inner(),
        }
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
