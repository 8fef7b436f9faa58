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

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use dogfs_proto::raft::{RaftMessageKind, RaftRequest};
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

use super::frame::{STREAM_MAX_REQUEST_BYTES, TransportStats, kind_to_proto};
use super::link::{Link, LinkError};
use super::server::CallKind;
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

/// The node-pair streams by peer address, with the certificate generation each was made with.
type Links = HashMap<String, (Arc<Link>, u64)>;

/// How the node sends Vote and AppendEntries to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportMode {
    /// One node-pair stream per peer carrying every group's calls, framed together
    /// ([`super::link`]); snapshot chunks and large requests stay unary.
    #[default]
    Stream,
    /// One unary gRPC call per message (what nodes before the stream did; for comparison).
    Unary,
}

impl std::str::FromStr for TransportMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stream" => Ok(TransportMode::Stream),
            "unary" => Ok(TransportMode::Unary),
            other => Err(format!(
                "unknown raft transport {other:?} (expected stream or unary)"
            )),
        }
    }
}

/// The node's pool of gRPC channels, one per peer address, shared by every group, and its
/// node-pair streams ([`Link`]), one per peer. Channels connect lazily and reconnect by
/// themselves after a peer comes back; over TLS they are made anew after the certificate
/// files change, and so are the streams.
#[derive(Debug, Clone)]
pub struct Connections {
    channels: Channels,
    tls: Option<Arc<ClientTls>>,
    mode: TransportMode,
    links: Arc<Mutex<Links>>,
    stats: Arc<TransportStats>,
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
        let channels = Channels::new(tls.clone(), move |e| {
            e.connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
        });
        Connections {
            channels,
            tls,
            mode: TransportMode::default(),
            links: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The same pool sending Raft messages the `mode` way.
    pub fn with_transport(mut self, mode: TransportMode) -> Connections {
        self.mode = mode;
        self
    }

    /// How Raft messages are sent.
    pub fn transport(&self) -> TransportMode {
        self.mode
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

    /// The Raft client for `addr`, with the transport's message limits.
    fn raft_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, TransportError> {
        Ok(RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// The node-pair stream to `addr`, made on first use and again after the certificates
    /// changed.
    pub fn link(&self, addr: &str) -> Result<Arc<Link>, TransportError> {
        let generation = self.tls.as_ref().map_or(0, |t| t.generation());
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((link, made)) = links.get(addr)
            && *made == generation
        {
            return Ok(Arc::clone(link));
        }
        let link = Arc::new(Link::new(
            addr.to_string(),
            self.raft_client(addr)?,
            Arc::clone(&self.stats),
        ));
        links.insert(addr.to_string(), (Arc::clone(&link), generation));
        Ok(link)
    }

    /// Holds every node-pair stream's next frame for `d` ([`Link::hold_until`]).
    pub fn hold_links(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        for (link, _) in links.values() {
            link.hold_until(until);
        }
    }

    /// The counters of this node's outgoing Raft traffic.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
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
        GroupClient {
            source: self.node_id,
            group: self.group,
            target,
            node: node.clone(),
            connections: self.connections.clone(),
        }
    }
}

/// The connection of one group to one target node. The channel and stream are looked up per
/// call, so a client openraft keeps for long follows reconnections and certificate changes.
#[derive(Debug)]
pub struct GroupClient {
    source: NodeId,
    group: GroupId,
    target: NodeId,
    node: BasicNode,
    connections: Connections,
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
    /// Sends `req` as a `kind` call and decodes the reply as openraft's `Result<Resp, E>`:
    /// over the node-pair stream when the kind travels there, the request is small enough and
    /// the peer serves it; else as a unary call.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: CallKind,
        req: &Req,
        option: &RPCOption,
        urgent: bool,
    ) -> Result<Result<Resp, E>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let what = kind.name();
        let payload = bincode::serialize(req).map_err(|source| {
            CallError::Network(NetworkError::new(&TransportError::Encode { what, source }))
        })?;
        let payload = Bytes::from(payload);
        let ttl = option.hard_ttl();
        let stream_kind = match self.connections.mode {
            TransportMode::Stream if payload.len() <= STREAM_MAX_REQUEST_BYTES => {
                kind_to_proto(kind)
            }
            _ => None,
        };
        let reply = match stream_kind {
            Some(sk) => match self.streamed(sk, payload.clone(), ttl, urgent).await {
                Err(LinkError::Unsupported { .. }) => self.unary(kind, payload, ttl).await?,
                other => other.map_err(|e| self.link_error(e, ttl))?,
            },
            None => self.unary(kind, payload, ttl).await?,
        };
        bincode::deserialize::<Result<Resp, E>>(&reply).map_err(|source| {
            CallError::Network(NetworkError::new(&TransportError::Decode { what, source }))
        })
    }

    async fn streamed(
        &self,
        kind: RaftMessageKind,
        payload: Bytes,
        ttl: Duration,
        urgent: bool,
    ) -> Result<Bytes, LinkError> {
        let link = self
            .connections
            .link(&self.node.addr)
            .map_err(|e| LinkError::Unreachable {
                addr: self.node.addr.clone(),
                reason: e.to_string(),
            })?;
        if !link.streams() {
            return Err(LinkError::Unsupported {
                addr: self.node.addr.clone(),
            });
        }
        link.call(self.group, kind, payload, ttl, urgent).await
    }

    fn link_error(&self, e: LinkError, ttl: Duration) -> CallError {
        match e {
            LinkError::Timeout { ttl, .. } => CallError::Timeout(ttl),
            // The stream's open timed out on the peer's side: the call's own time ran out too.
            LinkError::Status { status, .. } if status.code() == Code::DeadlineExceeded => {
                CallError::Timeout(ttl)
            }
            LinkError::Status { status, .. } => self.status_error(status),
            other => CallError::Unreachable(Unreachable::new(&other)),
        }
    }

    fn status_error(&self, status: Status) -> CallError {
        let code = status.code();
        let err = TransportError::Rpc {
            target: self.target,
            addr: self.node.addr.clone(),
            group: self.group,
            status,
        };
        if is_unreachable(code) {
            CallError::Unreachable(Unreachable::new(&err))
        } else {
            CallError::Network(NetworkError::new(&err))
        }
    }

    /// One unary call.
    async fn unary(
        &self,
        kind: CallKind,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<Bytes, CallError> {
        let mut client = self
            .connections
            .raft_client(&self.node.addr)
            .map_err(|e| CallError::Unreachable(Unreachable::new(&e)))?;
        self.connections.stats.unary_call();
        let mut request = tonic::Request::new(RaftRequest {
            group_id: self.group,
            payload,
        });
        request.set_timeout(ttl);
        let call = async move {
            match kind {
                CallKind::Vote => client.vote(request).await,
                CallKind::AppendEntries => client.append_entries(request).await,
                CallKind::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        match tokio::time::timeout(ttl, call).await {
            Err(_elapsed) => Err(CallError::Timeout(ttl)),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => {
                Err(CallError::Timeout(ttl))
            }
            Ok(Err(status)) => Err(self.status_error(status)),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload),
        }
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
        // Entries are urgent (a commit waits for them); a heartbeat or a commit-index update
        // may wait for the heartbeat tick's frame.
        let urgent = !rpc.entries.is_empty();
        let res = self
            .call(CallKind::AppendEntries, &rpc, &option, urgent)
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
            .call(CallKind::InstallSnapshot, &rpc, &option, true)
            .await;
        self.finish(RPCTypes::InstallSnapshot, res)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let res = self.call(CallKind::Vote, &rpc, &option, true).await;
        self.finish(RPCTypes::Vote, res)
    }
}
