//! One HTTP/2 connection (tonic `Channel`) per chunk server address, shared by every shard
//! stream of the client: k + m streams of a stripe and the read-ahead windows of a GET are
//! multiplexed on it instead of each paying a TCP and HTTP/2 handshake.

use std::sync::Arc;
use std::time::Duration;

use dogfs_core::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_security::{Channels, ClientTls};
use tonic::transport::Channel;

use crate::config::normalize_endpoint;
use crate::error::Error;

/// The connection could not be made: the request never left this process.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[derive(Debug, Clone)]
pub struct ChunkPool {
    channels: Channels,
}

impl ChunkPool {
    pub fn new(connect_timeout: Duration, tls: Option<Arc<ClientTls>>) -> Self {
        let channels = Channels::new(tls, move |e| {
            e.connect_timeout(connect_timeout)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        });
        ChunkPool { channels }
    }

    /// A client for the server at `address` (`host:port`). Connects lazily: a dead server
    /// costs the first call a refused connection, not this function.
    pub fn client(&self, address: &str) -> Result<ChunkServiceClient<Channel>, Error> {
        let tls = self.channels.tls().is_some();
        normalize_endpoint(address, tls).map_err(|_| {
            Error::protocol(format!("chunk server address {address:?} is not host:port"))
        })?;
        let channel = self
            .channels
            .get(address)
            .map_err(|e| Error::protocol(format!("chunk server address {address:?}: {e}")))?;
        Ok(ChunkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Drops the cached connection to `address`, so the next call makes a new one. tonic's
    /// lazy channel keeps a failed connect's error and hands it to the next call even when the
    /// server is back by then (a restarted server then looks down for one more request).
    pub fn forget(&self, address: &str) {
        self.channels.forget(address);
    }
}
