//! The `ChunkService` gRPC handlers: thin wrappers that validate the request, run the store
//! call on the blocking pool, and map errors to statuses (`convert`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use dogfs_core::transport::DATA_MESSAGE_BYTES;
use dogfs_proto::chunk::chunk_service_server::ChunkService;
use dogfs_proto::chunk::put_shard_request::Msg;
use dogfs_proto::chunk::{
    CopyShardRequest, CopyShardResponse, DeleteShardRequest, DeleteShardResponse, GetShardRequest,
    GetShardResponse, ListShardsRequest, ListShardsResponse, NodeInfoRequest, NodeInfoResponse,
    PutShardRequest, PutShardResponse, ReconstructShardRequest, ReconstructShardResponse,
    StatShardRequest, StatShardResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, debug, field, info_span, warn};

use crate::convert::{parse_shard_id, shard_info};
use crate::grants::{self, GrantCheck};
use crate::metrics::Metrics;
use crate::repair::Repairer;
use crate::store::{ShardMeta, ShardWriter, Store, StoreError};
use dogfs_security::GrantOp;

/// Default and largest page of `ListShards`.
pub const LIST_DEFAULT: u32 = 1000;
pub const LIST_MAX: u32 = 10_000;

/// Messages of a `GetShard` stream read ahead of the client.
const READ_AHEAD: usize = 4;

/// Messages of a `PutShard` stream queued ahead of the writer thread.
const WRITE_AHEAD: usize = 4;

#[derive(Debug, Clone)]
pub struct ChunkServiceImpl {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    repair: Arc<Repairer>,
    grants: Option<Arc<GrantCheck>>,
}

impl ChunkServiceImpl {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        repair: Arc<Repairer>,
        grants: Option<Arc<GrantCheck>>,
    ) -> Self {
        Self {
            store,
            metrics,
            repair,
            grants,
        }
    }

    /// Runs one unary handler body inside a span, recording its status and latency.
    async fn observe<T>(
        &self,
        method: &'static str,
        body: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let span = info_span!("rpc", method, shard_id = field::Empty);
        let result = body.instrument(span.clone()).await;
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        self.metrics.rpc(method, code, start.elapsed());
        if let Err(s) = &result {
            log_status(&span, method, s);
        }
        result.map(Response::new)
    }

    async fn put(
        &self,
        component: bool,
        mut stream: Streaming<PutShardRequest>,
    ) -> Result<PutShardResponse, Status> {
        let header = match stream.message().await {
            Ok(Some(PutShardRequest {
                msg: Some(Msg::Header(h)),
            })) => h,
            Ok(Some(_)) => {
                return Err(Status::invalid_argument(
                    "the first PutShard message must be a header",
                ));
            }
            Ok(None) => {
                return Err(Status::invalid_argument(
                    "empty upload stream: the first PutShard message must be a header",
                ));
            }
            Err(s) => return Err(stream_error(&s, "upload stream broke".into())),
        };
        let id = parse_shard_id("header.shard_id", &header.shard_id)?;
        tracing::Span::current().record("shard_id", field::display(id));
        grants::check(
            self.grants.as_deref(),
            component,
            GrantOp::Put,
            id,
            &header.grant,
        )?;
        let store = Arc::clone(&self.store);
        let declared = header.size;
        let writer = blocking(move || store.begin_put(id, declared)).await?;
        // The file is written on a blocking thread fed through a short queue, so receiving
        // and decoding the next messages overlaps with writing and checksumming this one.
        let (tx, rx) = mpsc::channel(WRITE_AHEAD);
        let write_task = tokio::task::spawn_blocking(move || write_loop(writer, rx));
        let mut received = 0u64;
        let failure = loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.msg,
                Ok(None) => {
                    break Status::aborted(format!(
                        "upload of shard {id} ended after {received} of {declared} bytes without a trailer; nothing was stored"
                    ));
                }
                Err(s) => {
                    let what = format!(
                        "upload of shard {id} broke after {received} bytes; nothing was stored"
                    );
                    break stream_error(&s, what);
                }
            };
            match msg {
                Some(Msg::Data(data)) => {
                    // Refuse before writing, so nothing past the declared size touches disk.
                    received += data.len() as u64;
                    if received > declared {
                        break StoreError::TooMuchData { id, declared }.into();
                    }
                    if tx.send(WriteCmd::Data(data)).await.is_err() {
                        // The writer stopped on an error; its result says which.
                        break Status::internal("shard writer stopped");
                    }
                }
                Some(Msg::Trailer(t)) => {
                    if tx.send(WriteCmd::Commit(t.crc32c)).await.is_err() {
                        break Status::internal("shard writer stopped");
                    }
                    drop(tx);
                    let meta = match write_task.await {
                        Ok(Ok(Some(meta))) => meta,
                        Ok(Ok(None)) => return Err(Status::internal("shard writer ended early")),
                        Ok(Err(e)) => return Err(e.into()),
                        Err(e) => return Err(Status::internal(format!("shard writer: {e}"))),
                    };
                    self.metrics.bytes_written.inc_by(meta.size);
                    return Ok(PutShardResponse {
                        shard: Some(shard_info(&meta)),
                    });
                }
                Some(Msg::Header(_)) => {
                    break Status::invalid_argument(format!(
                        "upload of shard {id}: a second header in one stream"
                    ));
                }
                None => {
                    break Status::invalid_argument(
                        "empty PutShard message: set one of header, data or trailer",
                    );
                }
            }
        };
        // Close the queue and wait for the writer to drop its temp file, so that when the
        // client hears of the failure nothing of the upload remains. A store error (disk
        // full, I/O) is the more precise answer when there is one.
        drop(tx);
        match write_task.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(failure),
        }
    }
}

/// Messages from an upload's handler to its writer thread.
#[derive(Debug)]
enum WriteCmd {
    Data(bytes::Bytes),
    Commit(u32),
}

/// Writes an upload's data as it arrives; returns the stored shard after a commit, or
/// `None` when the queue closed first (the writer, dropped, removes its temp file).
fn write_loop(
    mut writer: ShardWriter,
    mut rx: mpsc::Receiver<WriteCmd>,
) -> Result<Option<ShardMeta>, StoreError> {
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            WriteCmd::Data(d) => writer.write(&d)?,
            WriteCmd::Commit(crc) => return writer.commit(crc).map(Some),
        }
    }
    Ok(None)
}

#[tonic::async_trait]
impl ChunkService for ChunkServiceImpl {
    async fn put_shard(
        &self,
        request: Request<Streaming<PutShardRequest>>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let component = grants::is_component(request.extensions());
        self.observe("PutShard", self.put(component, request.into_inner()))
            .await
    }

    type GetShardStream = ReceiverStream<Result<GetShardResponse, Status>>;

    async fn get_shard(
        &self,
        request: Request<GetShardRequest>,
    ) -> Result<Response<Self::GetShardStream>, Status> {
        let start = Instant::now();
        let component = grants::is_component(request.extensions());
        let req = request.into_inner();
        let metrics = Arc::clone(&self.metrics);
        let store = Arc::clone(&self.store);
        let grant_check = self.grants.clone();
        // The stream's outcome is only known when the reader finishes; the setup is
        // observed here and the stream's end in the reader task.
        let setup = async move {
            let id = parse_shard_id("shard_id", &req.shard_id)?;
            tracing::Span::current().record("shard_id", field::display(id));
            grants::check(
                grant_check.as_deref(),
                component,
                GrantOp::Get,
                id,
                &req.grant,
            )?;
            let reader = blocking(move || store.reader(id)).await?;
            let size = reader.meta().size;
            let length = req.length.unwrap_or(size.saturating_sub(req.offset));
            reader.check_range(req.offset, length)?;
            Ok::<_, Status>((reader, req.offset, length))
        };
        let span = info_span!("rpc", method = "GetShard", shard_id = field::Empty);
        let (reader, offset, length) = match setup.instrument(span.clone()).await {
            Ok(v) => v,
            Err(s) => {
                metrics.rpc("GetShard", s.code(), start.elapsed());
                log_status(&span, "GetShard", &s);
                return Err(s);
            }
        };
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let info = shard_info(&reader.meta());
            let end = offset + length;
            let msg = DATA_MESSAGE_BYTES as u64;
            let mut off = offset;
            let mut first = true;
            let code = loop {
                // Pieces end on message boundaries (multiples of the checksum block), so
                // each block is read and verified once.
                let piece_end = end.min((off / msg + 1) * msg);
                let item = match reader.read(off, piece_end - off) {
                    Ok(data) => {
                        metrics.bytes_read.inc_by(data.len() as u64);
                        Ok(GetShardResponse {
                            shard: first.then(|| info.clone()),
                            offset: off,
                            data,
                        })
                    }
                    Err(e) => Err(Status::from(e)),
                };
                let failed = item.as_ref().err().map(Status::code);
                if let Err(s) = &item {
                    log_status(&span, "GetShard", s);
                }
                if tx.blocking_send(item).is_err() {
                    // The client went away; stop reading.
                    break Code::Cancelled;
                }
                if let Some(code) = failed {
                    break code;
                }
                first = false;
                off = piece_end;
                if off >= end {
                    break Code::Ok;
                }
            };
            metrics.rpc("GetShard", code, start.elapsed());
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete_shard(
        &self,
        request: Request<DeleteShardRequest>,
    ) -> Result<Response<DeleteShardResponse>, Status> {
        let store = Arc::clone(&self.store);
        let component = grants::is_component(request.extensions());
        self.observe("DeleteShard", async move {
            let id = parse_shard_id("shard_id", &request.get_ref().shard_id)?;
            tracing::Span::current().record("shard_id", field::display(id));
            grants::check(
                self.grants.as_deref(),
                component,
                GrantOp::Delete,
                id,
                &request.get_ref().grant,
            )?;
            let existed = blocking(move || store.delete(id)).await?;
            Ok(DeleteShardResponse { existed })
        })
        .await
    }

    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let store = Arc::clone(&self.store);
        self.observe("ListShards", async move {
            let req = request.into_inner();
            let limit = match req.limit {
                0 => LIST_DEFAULT,
                n if n > LIST_MAX => {
                    return Err(Status::invalid_argument(format!(
                        "limit {n} is over the maximum of {LIST_MAX}"
                    )));
                }
                n => n,
            } as usize;
            let start_after = if req.start_after.is_empty() {
                None
            } else {
                Some(parse_shard_id("start_after", &req.start_after)?)
            };
            let shards = blocking(move || store.list(start_after, limit)).await?;
            let next_start_after = match shards.last() {
                Some(last) if shards.len() == limit => last.id.to_string(),
                _ => String::new(),
            };
            Ok(ListShardsResponse {
                shards: shards.iter().map(shard_info).collect(),
                next_start_after,
            })
        })
        .await
    }

    async fn stat_shard(
        &self,
        request: Request<StatShardRequest>,
    ) -> Result<Response<StatShardResponse>, Status> {
        let store = Arc::clone(&self.store);
        let component = grants::is_component(request.extensions());
        self.observe("StatShard", async move {
            let id = parse_shard_id("shard_id", &request.get_ref().shard_id)?;
            tracing::Span::current().record("shard_id", field::display(id));
            grants::check(
                self.grants.as_deref(),
                component,
                GrantOp::Get,
                id,
                &request.get_ref().grant,
            )?;
            let meta = blocking(move || store.stat(id)).await?;
            Ok(StatShardResponse {
                shard: Some(shard_info(&meta)),
            })
        })
        .await
    }

    async fn node_info(
        &self,
        _request: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoResponse>, Status> {
        let store = Arc::clone(&self.store);
        let scrub_passes = self.metrics.scrub_passes.get();
        self.observe("NodeInfo", async move {
            let space = blocking({
                let store = Arc::clone(&store);
                move || store.space()
            })
            .await?;
            use std::sync::atomic::Ordering::Relaxed;
            Ok(NodeInfoResponse {
                node_id: store.node_id().to_string(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                capacity_bytes: space.capacity,
                used_bytes: space.used,
                available_bytes: space.available,
                reserve_bytes: space.reserve,
                shard_count: store.shard_count(),
                checksum_errors: store.faults.checksum_errors.load(Relaxed),
                io_errors: store.faults.io_errors.load(Relaxed),
                corrupt_shards: store
                    .corrupt_shards()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                scrub_passes,
            })
        })
        .await
    }

    async fn reconstruct_shard(
        &self,
        request: Request<ReconstructShardRequest>,
    ) -> Result<Response<ReconstructShardResponse>, Status> {
        let repair = Arc::clone(&self.repair);
        self.observe("ReconstructShard", async move {
            repair
                .reconstruct(request.into_inner())
                .await
                .map_err(Status::from)
        })
        .await
    }

    async fn copy_shard(
        &self,
        request: Request<CopyShardRequest>,
    ) -> Result<Response<CopyShardResponse>, Status> {
        let repair = Arc::clone(&self.repair);
        self.observe("CopyShard", async move {
            repair
                .copy(request.into_inner())
                .await
                .map_err(Status::from)
        })
        .await
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("storage task failed: {e}"))),
    }
}

/// A failed upload stream: a message over the size limit (tonic reports OUT_OF_RANGE while
/// decoding) is RESOURCE_EXHAUSTED, as documented in chunk.proto; anything else (a reset,
/// a broken connection) is ABORTED.
fn stream_error(s: &Status, what: String) -> Status {
    let code = match s.code() {
        Code::OutOfRange | Code::ResourceExhausted => Code::ResourceExhausted,
        _ => Code::Aborted,
    };
    Status::new(code, format!("{what}: {}", s.message()))
}

/// Client mistakes are debug-level; faults on our side are warnings.
fn log_status(span: &tracing::Span, method: &'static str, s: &Status) {
    let _e = span.enter();
    match s.code() {
        Code::Internal | Code::DataLoss | Code::Unknown => {
            warn!(method, code = ?s.code(), message = s.message(), "request failed")
        }
        _ => debug!(method, code = ?s.code(), message = s.message(), "request refused"),
    }
}
