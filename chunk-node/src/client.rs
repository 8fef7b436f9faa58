//! A minimal typed client for one chunk server, with the transport tuned for shard
//! streams. Used by tests, benchmarks and tools; the SDK has its own pooled client.

use bytes::Bytes;
use dogfs_core::checksum::crc32c;
use dogfs_core::ids::ShardId;
use dogfs_core::transport::{
    CONNECTION_WINDOW_BYTES, DATA_MESSAGE_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES,
    STREAM_WINDOW_BYTES,
};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::put_shard_request::Msg;
use dogfs_proto::chunk::{
    GetShardRequest, PutShardHeader, PutShardRequest, PutShardTrailer, ShardInfo,
};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Connects to `http://host:port` with large HTTP/2 windows and frames.
pub async fn connect(addr: &str) -> Result<ChunkServiceClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?;
    connect_endpoint(channel).await
}

/// [`connect`], over TLS when `tls` is given (`https://host:port`).
pub async fn connect_with(
    addr: &str,
    tls: Option<&dogfs_security::ClientTls>,
) -> Result<ChunkServiceClient<Channel>, ConnectError> {
    let uri = dogfs_security::client::uri(addr, tls)?;
    let (endpoint, _) = dogfs_security::client::endpoint(&uri, tls)?;
    Ok(connect_endpoint(endpoint).await?)
}

/// Why [`connect_with`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] dogfs_security::client::ClientTlsError),
    #[error(transparent)]
    Connect(#[from] tonic::transport::Error),
}

async fn connect_endpoint(
    endpoint: Endpoint,
) -> Result<ChunkServiceClient<Channel>, tonic::transport::Error> {
    let channel = endpoint
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(ChunkServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The messages of a well-formed upload of `data`, in `DATA_MESSAGE_BYTES` pieces.
pub fn put_messages(id: ShardId, data: &Bytes) -> Vec<PutShardRequest> {
    let mut msgs = vec![PutShardRequest {
        msg: Some(Msg::Header(PutShardHeader {
            shard_id: id.to_string(),
            size: data.len() as u64,
            // Tools and tests call as components or against servers without grants.
            grant: Vec::new().into(),
        })),
    }];
    let mut off = 0;
    while off < data.len() {
        let end = (off + DATA_MESSAGE_BYTES).min(data.len());
        msgs.push(PutShardRequest {
            msg: Some(Msg::Data(data.slice(off..end))),
        });
        off = end;
    }
    msgs.push(PutShardRequest {
        msg: Some(Msg::Trailer(PutShardTrailer {
            crc32c: crc32c(data),
        })),
    });
    msgs
}

/// Uploads a whole shard from memory.
pub async fn put_shard(
    client: &mut ChunkServiceClient<Channel>,
    id: ShardId,
    data: &Bytes,
) -> Result<ShardInfo, Status> {
    let msgs = put_messages(id, data);
    let resp = client.put_shard(tokio_stream::iter(msgs)).await?;
    resp.into_inner()
        .shard
        .ok_or_else(|| Status::internal("PutShard response without shard info"))
}

/// Reads `[offset, offset+length)` (or to the end) into memory.
pub async fn get_shard(
    client: &mut ChunkServiceClient<Channel>,
    id: ShardId,
    offset: u64,
    length: Option<u64>,
) -> Result<Vec<u8>, Status> {
    let mut stream = client
        .get_shard(GetShardRequest {
            shard_id: id.to_string(),
            offset,
            length,
            grant: Default::default(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.extend_from_slice(&msg.data);
    }
    Ok(out)
}
