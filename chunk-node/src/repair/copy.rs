//! `CopyShard` (DESIGN §6, §7): this server pulls one whole shard from a peer and stores it
//! under `target_shard_id` (empty: the source's id), for the mover (drain, rebalance). The
//! simpler sibling of `ReconstructShard`: one source, no decoding.
//!
//! How a copy runs (docs/chunk-server.md, "Copy"):
//!
//! 1. **Validate** the shard ids and the source address.
//! 2. **Existing**: the same shard (target id, size, CRC32C) already stored here is success at
//!    once (a retried copy whose answer was lost); a different one is ALREADY_EXISTS.
//! 3. **Admit** under the repair concurrency limit: copies and repairs write the same disk
//!    and read the same network, so they share `--repair-concurrency` slots, the
//!    `--repair-bandwidth` bucket and the channels to peers.
//! 4. **Reserve** the shard's space and open a temp file (`Store::begin_put`).
//! 5. **Fetch** one `GetShard` stream of the whole shard, every message within
//!    `--repair-source-timeout-ms`. The first message must report the expected size and
//!    CRC32C; the source's server checks every block before sending it; the CRC32C of what
//!    arrives is computed as it streams. Data goes to the temp file on a blocking thread.
//! 6. **Verify and store**: exactly `expected_size` bytes whose CRC32C is `expected_crc32c`,
//!    then the same commit as an upload (fsync, link, folder fsync). Anything else drops the
//!    temp file: nothing is stored.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::{CopyShardRequest, CopyShardResponse, GetShardRequest};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tracing::{Instrument, field, info, info_span, warn};

use super::Repairer;
use super::source::{ReadCtx, ReadFault, SourceReader, status_reason};
use crate::convert::shard_info;
use crate::heartbeat::check_host_port;
use crate::store::{ShardMeta, ShardWriter, StoreError};

/// Messages queued between the stream and the writer thread, so receiving the next message
/// overlaps with writing and checksumming this one (as for `PutShard`).
const WRITE_AHEAD: usize = 4;

/// Errors of a copy, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{field}: {reason}")]
    Validate { field: &'static str, reason: String },
    #[error(
        "{limit} copies and repairs are already running, the limit set by --repair-concurrency \
         (DOGFS_REPAIR_CONCURRENCY)"
    )]
    Admit { limit: usize },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("shard {id} could not be read from {address}: {reason}; nothing stored")]
    Fetch {
        id: ShardId,
        address: String,
        reason: String,
    },
    #[error("shard {id} from {address} failed verification: {reason}; nothing stored")]
    Verify {
        id: ShardId,
        address: String,
        reason: String,
    },
    #[error("copy task: {0}")]
    Task(String),
}

impl From<CopyError> for Status {
    fn from(e: CopyError) -> Self {
        let msg = e.to_string();
        match e {
            CopyError::Validate { .. } => Status::invalid_argument(msg),
            CopyError::Admit { .. } => Status::resource_exhausted(msg),
            CopyError::Store(e) => Status::from(e),
            CopyError::Fetch { .. } => Status::failed_precondition(msg),
            CopyError::Verify { .. } => Status::data_loss(msg),
            CopyError::Task(_) => Status::internal(msg),
        }
    }
}

/// A validated request.
#[derive(Debug)]
struct Plan {
    /// The shard's id on the source.
    id: ShardId,
    /// The id the copy is stored under here.
    target: ShardId,
    address: String,
    crc: u32,
    size: u64,
}

fn validate(req: &CopyShardRequest) -> Result<Plan, CopyError> {
    let id: ShardId = req.shard_id.parse().map_err(|e| CopyError::Validate {
        field: "shard_id",
        reason: format!("{e}"),
    })?;
    // Empty keeps today's behaviour (and old callers'): the copy keeps the source's id.
    let target = if req.target_shard_id.is_empty() {
        id
    } else {
        req.target_shard_id
            .parse()
            .map_err(|e| CopyError::Validate {
                field: "target_shard_id",
                reason: format!("{e}"),
            })?
    };
    check_host_port("source_address", &req.source_address).map_err(|e| CopyError::Validate {
        field: "source_address",
        reason: e.to_string(),
    })?;
    Ok(Plan {
        id,
        target,
        address: req.source_address.clone(),
        crc: req.expected_crc32c,
        size: req.expected_size,
    })
}

impl Repairer {
    /// Runs one `CopyShard` call.
    pub async fn copy(&self, req: CopyShardRequest) -> Result<CopyShardResponse, CopyError> {
        let plan = validate(&req)?;
        tracing::Span::current().record("shard_id", field::display(plan.target));
        if let Some(meta) = self.stored_copy(&plan).await? {
            return Ok(CopyShardResponse {
                shard: Some(shard_info(&meta)),
                bytes_fetched: 0,
            });
        }
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(CopyError::Admit { limit: self.limit });
        };
        let span = info_span!(
            "copy",
            shard_id = %plan.id,
            target_shard_id = %plan.target,
            source = %plan.address,
            size = plan.size,
            crc32c = format_args!("{:08x}", plan.crc),
            bytes_fetched = field::Empty,
        );
        self.metrics.copies_started.inc();
        // Decremented however the call ends, also when the caller goes away and this future
        // is dropped.
        let _running = GaugeGuard::new(&self.metrics.copies_running);
        let started = Instant::now();
        let fetched = AtomicU64::new(0);
        let result = self
            .fetch_and_store(&plan, &fetched)
            .instrument(span.clone())
            .await;
        let fetched = fetched.into_inner();
        span.record("bytes_fetched", fetched);
        let _e = span.enter();
        match result {
            Ok(meta) => {
                self.metrics.copies_succeeded.inc();
                let secs = started.elapsed().as_secs_f64();
                info!(
                    elapsed_ms = (secs * 1000.0) as u64,
                    mb_per_s = meta.size as f64 / 1e6 / secs.max(1e-9),
                    "shard copied"
                );
                Ok(CopyShardResponse {
                    shard: Some(shard_info(&meta)),
                    bytes_fetched: fetched,
                })
            }
            Err(e) => {
                self.metrics.copies_failed.inc();
                warn!(error = %e, "copy failed");
                Err(e)
            }
        }
    }

    /// The same rules as `PutShard` for a target id already stored: the same shard succeeds, a
    /// different one is ALREADY_EXISTS. Decided before admission, so a retry whose answer was
    /// lost succeeds even while every slot is busy. (A copy onto the source server under its
    /// own id lands here too: the shard is already stored, so nothing is fetched.)
    async fn stored_copy(&self, plan: &Plan) -> Result<Option<ShardMeta>, CopyError> {
        let store = Arc::clone(&self.store);
        let id = plan.target;
        match blocking(move || store.stat(id)).await? {
            Ok(m) if m.size == plan.size && m.crc32c == plan.crc => Ok(Some(m)),
            Ok(m) => Err(StoreError::AlreadyExists {
                id,
                size: m.size,
                crc: m.crc32c,
            }
            .into()),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn fetch_and_store(
        &self,
        plan: &Plan,
        fetched: &AtomicU64,
    ) -> Result<ShardMeta, CopyError> {
        let store = Arc::clone(&self.store);
        let (id, size) = (plan.target, plan.size);
        let writer = blocking(move || store.begin_put(id, size)).await??;
        let (tx, rx) = mpsc::channel(WRITE_AHEAD);
        let write_task = tokio::task::spawn_blocking(move || write_loop(writer, rx));
        // Consumes `tx`, so the writer sees the end of input whenever this returns.
        let streamed = self.stream_into(plan, fetched, tx).await;
        let written = write_task
            .await
            .map_err(|e| CopyError::Task(format!("writer: {e}")))?;
        let writer = match (streamed, written) {
            (Ok(()), Ok(w)) => w,
            // A fault in the stream is the cause; the writer only saw its input end. A
            // writer error with a healthy stream (disk full, I/O) is the answer otherwise.
            (Err(e), Ok(w)) => {
                discard(w).await;
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
            (Ok(()), Err(e)) => return Err(e.into()),
        };
        // commit() checks length and whole-shard CRC once more against the bytes written,
        // so a fault between the stream and the disk cannot slip through either.
        let crc = plan.crc;
        let meta = match blocking(move || writer.commit(crc)).await? {
            Ok(m) => m,
            Err(StoreError::UploadChecksum { actual, .. }) => {
                return Err(self.verify_err(
                    plan,
                    format!("written bytes have crc32c {actual:08x}, not the expected {crc:08x}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        self.metrics.bytes_written.inc_by(meta.size);
        self.metrics.copy_written_bytes.inc_by(meta.size);
        Ok(meta)
    }

    /// Streams the whole shard from the source into `tx`, checking the first message against
    /// the expected size and CRC and, at the end, the CRC of every byte received.
    async fn stream_into(
        &self,
        plan: &Plan,
        fetched: &AtomicU64,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<(), CopyError> {
        let t = self.source_timeout;
        let mut client = self
            .peers
            .client(&plan.address)
            .map_err(|reason| self.fetch_err(plan, reason))?;
        // The whole shard, whatever its size: asking for `expected_size` bytes of a shorter
        // one would be refused with OUT_OF_RANGE, where its first message tells the size.
        let req = GetShardRequest {
            shard_id: plan.id.to_string(),
            offset: 0,
            length: None,
            // This server is a component (chunk role): its certificate stands in for a grant.
            grant: Default::default(),
        };
        let stream = match tokio::time::timeout(t, client.get_shard(req)).await {
            Err(_) => {
                let reason = format!("no answer within {} ms", t.as_millis());
                return Err(self.fetch_err(plan, reason));
            }
            Ok(Err(s)) => return Err(self.fault(plan, ReadFault::Status(s))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let mut reader = SourceReader {
            slot: 0,
            index: 0,
            stream,
            pending: Bytes::new(),
            received: 0,
            consumed: 0,
            crc: 0,
            recorded: plan.crc,
            used: false,
        };
        let mut ctx = ReadCtx {
            timeout: t,
            bucket: self.bucket.as_ref(),
            fetched,
            fetched_total: &self.metrics.copy_fetched_bytes,
            // Not known before the first message; its data may be longer than expected.
            shard_len: u64::MAX,
        };
        let info = reader
            .next_message_or_fault(&ctx)
            .await
            .map_err(|f| self.fault(plan, f))?
            .ok_or_else(|| self.fetch_err(plan, "the first message carries no shard info"))?;
        if info.shard_id != plan.id.to_string() {
            let reason = format!("the server answered for shard {:?}", info.shard_id);
            return Err(self.fetch_err(plan, reason));
        }
        if info.size != plan.size || info.crc32c != plan.crc {
            return Err(self.verify_err(
                plan,
                format!(
                    "the source holds {} bytes with crc32c {:08x}, not the expected {} bytes \
                     with crc32c {:08x}",
                    info.size, info.crc32c, plan.size, plan.crc
                ),
            ));
        }
        // From here on nothing past the expected size is accepted.
        ctx.shard_len = plan.size;
        loop {
            let data = std::mem::take(&mut reader.pending);
            if !data.is_empty() && tx.send(data).await.is_err() {
                // The writer stopped on an error; the caller reports it.
                return Ok(());
            }
            if reader.received == plan.size {
                break;
            }
            reader
                .next_message_or_fault(&ctx)
                .await
                .map_err(|f| self.fault(plan, f))?;
            // A source never sends an empty message inside a non-empty range; accepting
            // them would let a faulty peer hold the slot forever, one timeout at a time.
            if reader.pending.is_empty() {
                let reason = format!("empty message at byte {}", reader.received);
                return Err(self.fetch_err(plan, reason));
            }
        }
        reader
            .finish(plan.size)
            .map_err(|reason| self.verify_err(plan, reason))
    }

    /// A source failure: its bad block (DATA_LOSS there) is a verification failure here,
    /// anything else means the source could not be read.
    fn fault(&self, plan: &Plan, f: ReadFault) -> CopyError {
        match f {
            ReadFault::Status(s) if s.code() == Code::DataLoss => {
                self.verify_err(plan, status_reason(&s))
            }
            other => self.fetch_err(plan, other.to_string()),
        }
    }

    fn fetch_err(&self, plan: &Plan, reason: impl Into<String>) -> CopyError {
        CopyError::Fetch {
            id: plan.id,
            address: plan.address.clone(),
            reason: reason.into(),
        }
    }

    fn verify_err(&self, plan: &Plan, reason: impl Into<String>) -> CopyError {
        CopyError::Verify {
            id: plan.id,
            address: plan.address.clone(),
            reason: reason.into(),
        }
    }
}

/// Writes the stream's data as it arrives; returns the writer (not committed) when the
/// queue closes.
fn write_loop(
    mut writer: ShardWriter,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<ShardWriter, StoreError> {
    while let Some(data) = rx.blocking_recv() {
        writer.write(&data)?;
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
) -> Result<T, CopyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CopyError::Task(format!("storage task: {e}")))
}

/// One unit of a gauge while it lives.
#[derive(Debug)]
struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
