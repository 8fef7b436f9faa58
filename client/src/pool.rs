//! One HTTP/2 connection (tonic `Channel`) per chunk server address, shared by every shard
//! stream of the client: k + m streams of a stripe and the read-ahead windows of a GET are
//! multiplexed on it instead of each paying a TCP and HTTP/2 handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dogfs_core::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use tonic::transport::{Channel, Endpoint};

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
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
}

impl ChunkPool {
    pub fn new(connect_timeout: Duration) -> Self {
        ChunkPool {
            channels: Arc::default(),
            connect_timeout,
        }
    }

    /// A client for the server at `address` (`host:port`). Connects lazily: a dead server
    /// costs the first call a refused connection, not this function.
    pub fn client(&self, address: &str) -> Result<ChunkServiceClient<Channel>, Error> {
        let channel = {
            let mut map = self
                .channels
                .lock()
                .map_err(|_| Error::protocol("chunk connection pool lock poisoned"))?;
            match map.get(address) {
                Some(c) => c.clone(),
                None => {
                    let c = self.channel(address)?;
                    map.insert(address.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(ChunkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Drops the cached connection to `address`, so the next call makes a new one. tonic's
    /// lazy channel keeps a failed connect's error and hands it to the next call even when the
    /// server is back by then (a restarted server then looks down for one more request).
    pub fn forget(&self, address: &str) {
        if let Ok(mut map) = self.channels.lock() {
            map.remove(address);
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, Error> {
        let uri = normalize_endpoint(address).map_err(|_| {
            Error::protocol(format!("chunk server address {address:?} is not host:port"))
        })?;
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::protocol(format!("chunk server address {address:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }
}
