//! The client side of the Raft transport over gRPC (`proto/raft.proto`, `docs/raft-network.md`).
//!
//! One [`Connections`] pool per node holds one lazily connected tonic [`Channel`] per peer
//! address, shared by every group; a [`NetworkFactory`] per group hands openraft a
//! [`GroupClient`] per target, which stamps the group id on every request.
//!
//! Error mapping (openraft's [`RPCError`]):
//! - the request did not get an answer from the peer's Raft (connection refused or reset,
//!   peer not hosting the group yet or any more, peer's Raft stopped): [`Unreachable`] — openraft
//!   backs off;
//! - no answer within [`RPCOption::hard_ttl`]: [`Timeout`];
//! - any other transport or codec failure: [`NetworkError`];
//! - the peer's Raft answered with an error (e.g. a higher vote): [`RemoteError`] — only then.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dogfs_proto::raft::RaftRequest;
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use dogfs_security::{Channels, ClientTls};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::types::TypeConfig;
use crate::wal::GroupId;

type NodeId = u64;

/// Largest gRPC message the Raft transport sends or accepts (entries batches, snapshot chunks).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// Errors of the Raft transport, client and server side.
#[derive(Debug, Error)]
pub enum TransportError {
    /// A peer address that is not a valid URI.
    #[error("invalid peer address {addr:?}: {source}")]
    InvalidAddress {
        /// The address.
        addr: String,
        /// The cause.
        source: dogfs_security::client::ClientTlsError,
    },
    /// The connection pool's lock was poisoned.
    #[error("connection pool lock poisoned")]
    Poisoned,
    /// A message could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The cause.
        source: bincode::Error,
    },
    /// A message could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// The cause.
        source: bincode::Error,
    },
    /// The gRPC call failed.
    #[error("raft rpc to node {target} ({addr}) for group {group} failed: {status}")]
    Rpc {
        /// The target node.
        target: NodeId,
        /// Its address.
        addr: String,
        /// The group.
        group: GroupId,
        /// The gRPC status.
        status: Status,
    },
}

/// The node's pool of gRPC channels, one per peer address, shared by every group. Channels
/// connect lazily and reconnect by themselves after a peer comes back; over TLS they are
/// made anew after the certificate files change.
#[derive(Debug, Clone)]
pub struct Connections {
    channels: Channels,
}

impl Default for Connections {
    fn default() -> Self {
        Connections::new(Duration::from_secs(1), None)
    }
}

impl Connections {
    /// An empty pool whose channels give up connecting after `connect_timeout`, over TLS
    /// (this node's certificate as client identity) when `tls` is given.
    pub fn new(connect_timeout: Duration, tls: Option<Arc<ClientTls>>) -> Connections {
        let channels = Channels::new(tls, move |e| {
            e.connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
        });
        Connections { channels }
    }

    /// The channel to `addr` (`host:port`, or a URI with a scheme), created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        self.channels
            .get(addr)
            .map_err(|source| TransportError::InvalidAddress {
                addr: addr.to_string(),
                source,
            })
    }

    /// Number of pooled channels (one per distinct peer address).
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether the pool holds no channel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// openraft's network factory for one group of one node.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    node_id: NodeId,
    group: GroupId,
    connections: Connections,
}

impl NetworkFactory {
    /// The factory of `group` on node `node_id`, using the node's shared pool.
    pub fn new(node_id: NodeId, group: GroupId, connections: Connections) -> NetworkFactory {
        NetworkFactory {
            node_id,
            group,
            connections,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupClient {
        let client = self
            .connections
            .channel(&node.addr)
            .map(|ch| {
                RaftServiceClient::new(ch)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            })
            .map_err(Arc::new);
        GroupClient {
            source: self.node_id,
            group: self.group,
            target,
            node: node.clone(),
            client,
        }
    }
}

/// The connection of one group to one target node.
#[derive(Debug)]
pub struct GroupClient {
    source: NodeId,
    group: GroupId,
    target: NodeId,
    node: BasicNode,
    client: Result<RaftServiceClient<Channel>, Arc<TransportError>>,
}

/// How a failed call failed, before it is typed for the RPC's error.
enum CallError {
    Unreachable(Unreachable),
    Timeout(Duration),
    Network(NetworkError),
}

fn is_unreachable(code: Code) -> bool {
    // UNAVAILABLE: connection refused/reset, or the peer's Raft stopped; NOT_FOUND: the peer does
    // not host the group (yet, or any more); CANCELLED: the connection went away mid-call.
    matches!(code, Code::Unavailable | Code::NotFound | Code::Cancelled)
}

impl GroupClient {
    /// Sends `req` with `call` and decodes the reply as openraft's `Result<Resp, E>`.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        what: &'static str,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Result<Resp, E>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, tonic::Request<RaftRequest>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<dogfs_proto::raft::RaftReply>, Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(CallError::Unreachable(Unreachable::new(e.as_ref()))),
        };
        let payload = bincode::serialize(req).map_err(|source| {
            CallError::Network(NetworkError::new(&TransportError::Encode { what, source }))
        })?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftRequest {
            group_id: self.group,
            payload: Bytes::from(payload),
        });
        request.set_timeout(ttl);
        let reply = match tokio::time::timeout(ttl, call(client, request)).await {
            Err(_elapsed) => return Err(CallError::Timeout(ttl)),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => {
                return Err(CallError::Timeout(ttl));
            }
            Ok(Err(status)) => {
                let code = status.code();
                let err = TransportError::Rpc {
                    target: self.target,
                    addr: self.node.addr.clone(),
                    group: self.group,
                    status,
                };
                return Err(if is_unreachable(code) {
                    CallError::Unreachable(Unreachable::new(&err))
                } else {
                    CallError::Network(NetworkError::new(&err))
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        bincode::deserialize::<Result<Resp, E>>(&reply.payload).map_err(|source| {
            CallError::Network(NetworkError::new(&TransportError::Decode { what, source }))
        })
    }

    /// Types a call's outcome as openraft's [`RPCError`]: only an error the peer's Raft itself
    /// returned becomes a [`RemoteError`].
    #[allow(clippy::result_large_err)] // the error type is openraft's
    fn finish<T, E: StdError>(
        &self,
        action: RPCTypes,
        res: Result<Result<T, E>, CallError>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            Err(CallError::Unreachable(u)) => Err(RPCError::Unreachable(u)),
            Err(CallError::Network(n)) => Err(RPCError::Network(n)),
            Err(CallError::Timeout(timeout)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.source,
                target: self.target,
                timeout,
            })),
        }
    }
}

impl RaftNetwork<TypeConfig> for GroupClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res = self
            .call::<_, AppendEntriesResponse<NodeId>, RaftError<NodeId>, _, _>(
                "AppendEntries",
                &rpc,
                &option,
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await;
        self.finish(RPCTypes::AppendEntries, res)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let res = self
            .call::<_, InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>, _, _>(
                "InstallSnapshot",
                &rpc,
                &option,
                |mut c, r| async move { c.install_snapshot(r).await },
            )
            .await;
        self.finish(RPCTypes::InstallSnapshot, res)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res = self
            .call::<_, VoteResponse<NodeId>, RaftError<NodeId>, _, _>(
                "Vote",
                &rpc,
                &option,
                |mut c, r| async move { c.vote(r).await },
            )
            .await;
        self.finish(RPCTypes::Vote, res)
    }
}
