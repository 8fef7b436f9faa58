//! The sources of a repair: one `GetShard` stream per source shard, read a window at a time
//! with its whole-shard CRC32C computed as it streams, and the pool of channels to peer chunk
//! servers the streams run on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dogfs_core::checksum::crc32c_append;
use dogfs_core::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use dogfs_proto::chunk::GetShardResponse;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_security::{Channels, ClientTls};
use prometheus_client::metrics::counter::Counter;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::throttle::TokenBucket;

/// What reading a source needs besides the stream.
#[derive(Debug)]
pub(super) struct ReadCtx<'a> {
    pub(super) timeout: Duration,
    pub(super) bucket: Option<&'a TokenBucket>,
    pub(super) fetched: &'a AtomicU64,
    /// The metric the received bytes count in (repairs and copies have their own).
    pub(super) fetched_total: &'a Counter,
    pub(super) shard_len: u64,
}

/// One source's `GetShard` stream of the whole shard, consumed a window at a time.
#[derive(Debug)]
pub(super) struct SourceReader {
    /// Position in the request's sources.
    pub(super) slot: usize,
    /// Shard index in the segment.
    pub(super) index: usize,
    pub(super) stream: Streaming<GetShardResponse>,
    /// Received bytes not consumed yet.
    pub(super) pending: Bytes,
    pub(super) received: u64,
    pub(super) consumed: u64,
    /// CRC32C of every byte received, for the whole-shard check.
    pub(super) crc: u32,
    /// The CRC32C metadata recorded for the source.
    pub(super) recorded: u32,
    /// Some of its bytes went to the decoder.
    pub(super) used: bool,
}

impl SourceReader {
    /// Waits (within the timeout) for the next message, accounts for it and keeps its data
    /// as `pending`; answers the shard info the message carried, if any.
    pub(super) async fn next_message(
        &mut self,
        ctx: &ReadCtx<'_>,
    ) -> Result<Option<dogfs_proto::chunk::ShardInfo>, String> {
        self.next_message_or_fault(ctx)
            .await
            .map_err(|f| f.to_string())
    }

    /// `next_message`, keeping the source's status when it answered with one: a copy tells a
    /// bad block at the source (DATA_LOSS) from a source it could not read.
    pub(super) async fn next_message_or_fault(
        &mut self,
        ctx: &ReadCtx<'_>,
    ) -> Result<Option<dogfs_proto::chunk::ShardInfo>, ReadFault> {
        let msg = match tokio::time::timeout(ctx.timeout, self.stream.message()).await {
            Err(_) => {
                return Err(ReadFault::Other(format!(
                    "no data for {} ms at byte {}",
                    ctx.timeout.as_millis(),
                    self.received
                )));
            }
            Ok(Err(s)) => return Err(ReadFault::Status(s)),
            Ok(Ok(None)) => {
                return Err(ReadFault::Other(format!(
                    "stream ended at byte {} of {}",
                    self.received, ctx.shard_len
                )));
            }
            Ok(Ok(Some(m))) => m,
        };
        if msg.offset != self.received {
            return Err(ReadFault::Other(format!(
                "message at offset {} where {} was expected",
                msg.offset, self.received
            )));
        }
        let n = msg.data.len() as u64;
        if self.received + n > ctx.shard_len {
            return Err(ReadFault::Other(format!(
                "more than the {} bytes asked for",
                ctx.shard_len
            )));
        }
        if let Some(b) = ctx.bucket {
            b.take(n).await;
        }
        self.crc = crc32c_append(self.crc, &msg.data);
        self.received += n;
        ctx.fetched.fetch_add(n, Ordering::Relaxed);
        ctx.fetched_total.inc_by(n);
        self.pending = msg.data;
        Ok(msg.shard)
    }

    /// Shard bytes `[pos, pos + n)`, skipping (but checksumming) anything before `pos` that
    /// was not consumed yet: a spare joining mid-way reads from the start.
    pub(super) async fn read(
        &mut self,
        pos: u64,
        n: u64,
        ctx: &ReadCtx<'_>,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(usize::try_from(n).map_err(|e| e.to_string())?);
        while self.consumed < pos + n {
            if self.pending.is_empty() {
                // Empty data messages would loop here forever; a server never sends them for
                // a non-empty range, so one is a protocol fault.
                self.next_message(ctx).await?;
                if self.pending.is_empty() {
                    return Err(format!("empty message at byte {}", self.received));
                }
            }
            if self.consumed < pos {
                let skip = (pos - self.consumed).min(self.pending.len() as u64) as usize;
                let _ = self.pending.split_to(skip);
                self.consumed += skip as u64;
                continue;
            }
            let take = (pos + n - self.consumed).min(self.pending.len() as u64) as usize;
            out.extend_from_slice(&self.pending.split_to(take));
            self.consumed += take as u64;
        }
        Ok(out)
    }

    /// After the last window: the whole shard arrived and matches its recorded CRC32C.
    pub(super) fn finish(&self, shard_len: u64) -> Result<(), String> {
        if self.received != shard_len {
            return Err(format!("received {} of {shard_len} bytes", self.received));
        }
        if self.crc != self.recorded {
            return Err(format!(
                "the bytes received have crc32c {:08x}, not the recorded {:08x}",
                self.crc, self.recorded
            ));
        }
        Ok(())
    }
}

/// Why reading the next message of a source failed.
#[derive(Debug)]
pub(super) enum ReadFault {
    /// The source (or the transport) answered with this status.
    Status(Status),
    /// A timeout or a protocol fault: a gap, too many bytes, an early end.
    Other(String),
}

impl std::fmt::Display for ReadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFault::Status(s) => f.write_str(&status_reason(s)),
            ReadFault::Other(r) => f.write_str(r),
        }
    }
}

/// A failed call as a short reason for `bad_sources`.
pub(super) fn status_reason(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Channels to peer chunk servers, one per address, connected lazily and shared by all
/// repairs (HTTP/2 multiplexes their streams).
#[derive(Debug)]
pub(super) struct PeerPool {
    channels: Channels,
}

impl PeerPool {
    pub(super) fn new(connect_timeout: Duration, tls: Option<Arc<ClientTls>>) -> Self {
        let channels = Channels::new(tls, move |e| {
            e.connect_timeout(connect_timeout)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20))
        });
        PeerPool { channels }
    }

    pub(super) fn client(&self, addr: &str) -> Result<ChunkServiceClient<Channel>, String> {
        let channel = self
            .channels
            .get(addr)
            .map_err(|e| format!("address {addr:?}: {e}"))?;
        Ok(ChunkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}
