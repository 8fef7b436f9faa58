//! The metadata service's admin API as the operator uses it: what it reads (chunk servers with
//! their drain progress, the rebalance, redundancy and usage) and what it asks (drain, undrain,
//! remove, start a rebalance).
//!
//! [`Admin`] is the seam: [`GrpcAdmin`] speaks gRPC to a cluster's metadata Service (any
//! metadata node answers and forwards to the leader); tests put a fake with the same semantics
//! behind [`Connector`]. The conversions from the wire types live here and nowhere else, so the
//! planner ([`crate::scale`]) and the status ([`crate::status`]) only see the types below.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{Instrument, debug_span};

use crate::build::Names;

/// Time to open a connection to the metadata Service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for one admin call, forwarding to the leader included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Response header in which a metadata node names the leader when it cannot forward.
const LEADER_HEADER: &str = "x-dogfs-leader";

/// A chunk server's state in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Suspect,
    Down,
    Draining,
    Removed,
    /// A value this operator does not know (a newer server); treated as not usable.
    Unknown,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
            NodeState::Unknown => "unknown",
        }
    }
}

/// What is left on a draining (or drained) server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    pub shards_left: u64,
    pub bytes_left: u64,
    pub shards_moved: u64,
    pub bytes_moved: u64,
    pub shards_stuck: u64,
    pub failures: u64,
    /// The figures come from a survey; until the first one they mean nothing.
    pub surveyed: bool,
}

impl Drain {
    /// Nothing references a shard on the server any more: it may be shut down and removed.
    pub fn is_empty(&self) -> bool {
        self.surveyed && self.shards_left == 0
    }
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// The address the server advertises; for chunk pods it names the pod.
    pub address: String,
    pub state: NodeState,
    pub registered_unix: i64,
    /// Present while the server drains, and after, until it is removed.
    pub drain: Option<Drain>,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
}

impl Node {
    /// Draining, or drained and not yet removed.
    pub fn is_draining(&self) -> bool {
        self.state == NodeState::Draining || self.drain.is_some()
    }

    /// Drained to nothing (see [`Drain::is_empty`]).
    pub fn is_empty(&self) -> bool {
        self.drain.is_some_and(|d| d.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceState {
    Idle,
    Running,
    Stopped,
    Done,
    Unknown,
}

impl RebalanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            RebalanceState::Idle => "Idle",
            RebalanceState::Running => "Running",
            RebalanceState::Stopped => "Stopped",
            RebalanceState::Done => "Done",
            RebalanceState::Unknown => "Unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebalance {
    pub state: RebalanceState,
    /// Why it started: `admin` or `server joined`.
    pub reason: String,
    pub shards_moved: u64,
    pub bytes_moved: u64,
    /// Still planned by the current round (an estimate).
    pub bytes_planned: u64,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            state: RebalanceState::Idle,
            reason: String::new(),
            shards_moved: 0,
            bytes_moved: 0,
            bytes_planned: 0,
        }
    }
}

/// Redundancy and usage from `ClusterStatus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub backlog_segments: u64,
    pub unreadable_segments: u64,
    pub waiting_segments: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

/// Everything the operator reads from the admin API in one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub nodes: Vec<Node>,
    pub rebalance: Rebalance,
    pub health: Health,
}

/// Why a call failed, in the terms the status reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("metadata service unreachable: {0}")]
    Unreachable(String),
    #[error("no metadata leader: {0}")]
    NoLeader(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// FAILED_PRECONDITION: the server said why (for RemoveNode, what is left on the node).
    #[error("refused: {0}")]
    Refused(String),
    #[error("not supported by this metadata service: {0}")]
    Unsupported(String),
    #[error("{code}: {message}")]
    Status { code: String, message: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl Failure {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "Unreachable",
            Failure::NoLeader(_) => "NoLeader",
            Failure::Timeout(_) => "Timeout",
            Failure::Refused(_) => "Refused",
            Failure::Unsupported(_) => "Unsupported",
            Failure::Status { .. } | Failure::Malformed(_) => "AdminError",
        }
    }

    fn of(status: &Status) -> Failure {
        let message = status.message().to_string();
        match status.code() {
            // Both a dead connection and "no leader" are UNAVAILABLE; only a metadata node
            // names (or fails to name) a leader.
            Code::Unavailable
                if status.metadata().get(LEADER_HEADER).is_some() || message.contains("leader") =>
            {
                Failure::NoLeader(message)
            }
            Code::Unavailable => Failure::Unreachable(message),
            Code::DeadlineExceeded | Code::Cancelled => Failure::Timeout(CALL_TIMEOUT),
            Code::FailedPrecondition => Failure::Refused(message),
            Code::Unimplemented => Failure::Unsupported(message),
            code => Failure::Status {
                code: format!("{code:?}"),
                message,
            },
        }
    }
}

/// An admin call that failed, named after the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("admin endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("ListNodes: {0}")]
    ListNodes(Failure),
    #[error("RebalanceStatus: {0}")]
    RebalanceStatus(Failure),
    #[error("ClusterStatus: {0}")]
    ClusterStatus(Failure),
    #[error("DrainNode {node}: {source}")]
    DrainNode { node: String, source: Failure },
    #[error("UndrainNode {node}: {source}")]
    UndrainNode { node: String, source: Failure },
    #[error("RemoveNode {node}: {source}")]
    RemoveNode { node: String, source: Failure },
    #[error("Rebalance START: {0}")]
    StartRebalance(Failure),
}

impl Error {
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Error::Endpoint { .. } => None,
            Error::ListNodes(f)
            | Error::RebalanceStatus(f)
            | Error::ClusterStatus(f)
            | Error::StartRebalance(f)
            | Error::DrainNode { source: f, .. }
            | Error::UndrainNode { source: f, .. }
            | Error::RemoveNode { source: f, .. } => Some(f),
        }
    }

    /// Condition reason: why the admin API could not be used.
    pub fn reason(&self) -> &'static str {
        self.failure().map_or("BadEndpoint", Failure::reason)
    }

    /// The server refused this call for a reason of its own (not reachability).
    pub fn is_refusal(&self) -> bool {
        matches!(self.failure(), Some(Failure::Refused(_)))
    }
}

/// The admin calls the operator makes. Object-safe (boxed futures) so the reconcile holds any
/// implementation behind `Arc<dyn Admin>`.
pub trait Admin: Send + Sync + Debug {
    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, Error>>;
    fn rebalance_status(&self) -> BoxFuture<'_, Result<Rebalance, Error>>;
    fn cluster_health(&self) -> BoxFuture<'_, Result<Health, Error>>;
    fn drain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn undrain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn remove_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn start_rebalance(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// Reads everything the operator needs, leader-backed calls first: a cluster without a leader
/// fails here rather than yielding a half view.
pub async fn observe(admin: &dyn Admin) -> Result<View, Error> {
    let nodes = admin.list_nodes().await?;
    let rebalance = admin.rebalance_status().await?;
    let health = admin.cluster_health().await?;
    Ok(View {
        nodes,
        rebalance,
        health,
    })
}

/// Hands out an [`Admin`] for a cluster; the [`crate::reconcile::Context`] holds one.
pub trait Connector: Send + Sync + Debug {
    fn connect(&self, names: &Names) -> Result<Arc<dyn Admin>, Error>;
}

/// Connects over gRPC to `Names::admin_endpoint`, one lazily connected channel per cluster,
/// reused across reconciles (tonic reconnects it when it breaks).
#[derive(Debug, Default)]
pub struct GrpcConnector {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Connector for GrpcConnector {
    fn connect(&self, names: &Names) -> Result<Arc<dyn Admin>, Error> {
        let endpoint = names.admin_endpoint();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(&endpoint) {
            Some(channel) => channel.clone(),
            None => {
                let channel = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| Error::Endpoint {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy();
                channels.insert(endpoint.clone(), channel.clone());
                channel
            }
        };
        Ok(Arc::new(GrpcAdmin {
            endpoint,
            client: AdminServiceClient::new(channel),
        }))
    }
}

/// The admin API of one cluster over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcAdmin {
    endpoint: String,
    client: AdminServiceClient<Channel>,
}

/// Runs one call with [`CALL_TIMEOUT`] (also when the channel's own timeout does not fire,
/// e.g. while connecting) and classifies its failure.
async fn call<T>(
    method: &'static str,
    endpoint: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Failure> {
    let span = debug_span!("admin", method, endpoint);
    match tokio::time::timeout(CALL_TIMEOUT, fut.instrument(span)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Failure::of(&status)),
        Err(_) => Err(Failure::Timeout(CALL_TIMEOUT)),
    }
}

impl Admin for GrpcAdmin {
    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let reply = call(
                "ListNodes",
                &self.endpoint,
                client.list_nodes(pb::ListNodesRequest {}),
            )
            .await
            .map_err(Error::ListNodes)?;
            Ok(reply.nodes.iter().map(node_from_pb).collect())
        })
    }

    fn rebalance_status(&self) -> BoxFuture<'_, Result<Rebalance, Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let reply = call(
                "RebalanceStatus",
                &self.endpoint,
                client.rebalance_status(pb::RebalanceStatusRequest {}),
            )
            .await
            .map_err(Error::RebalanceStatus)?;
            let status = reply.status.ok_or_else(|| {
                Error::RebalanceStatus(Failure::Malformed("no status in the answer".into()))
            })?;
            Ok(rebalance_from_pb(&status))
        })
    }

    fn cluster_health(&self) -> BoxFuture<'_, Result<Health, Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let reply = call(
                "ClusterStatus",
                &self.endpoint,
                client.cluster_status(pb::ClusterStatusRequest {}),
            )
            .await
            .map_err(Error::ClusterStatus)?;
            Ok(health_from_pb(&reply))
        })
    }

    fn drain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let request = pb::DrainNodeRequest {
                node_id: node_id.to_string(),
            };
            call("DrainNode", &self.endpoint, client.drain_node(request))
                .await
                .map(drop)
                .map_err(|source| Error::DrainNode {
                    node: node_id.to_string(),
                    source,
                })
        })
    }

    fn undrain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let request = pb::UndrainNodeRequest {
                node_id: node_id.to_string(),
            };
            call("UndrainNode", &self.endpoint, client.undrain_node(request))
                .await
                .map(drop)
                .map_err(|source| Error::UndrainNode {
                    node: node_id.to_string(),
                    source,
                })
        })
    }

    fn remove_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let request = pb::RemoveNodeRequest {
                node_id: node_id.to_string(),
            };
            call("RemoveNode", &self.endpoint, client.remove_node(request))
                .await
                .map(drop)
                .map_err(|source| Error::RemoveNode {
                    node: node_id.to_string(),
                    source,
                })
        })
    }

    fn start_rebalance(&self) -> BoxFuture<'_, Result<(), Error>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let request = pb::RebalanceRequest {
                action: pb::RebalanceAction::Start as i32,
                // 0: the cluster's configured spread.
                spread_percent: 0.0,
            };
            call("Rebalance", &self.endpoint, client.rebalance(request))
                .await
                .map(drop)
                .map_err(Error::StartRebalance)
        })
    }
}

fn node_from_pb(n: &pb::ChunkNode) -> Node {
    let state = match pb::NodeState::try_from(n.state) {
        Ok(pb::NodeState::Up) => NodeState::Up,
        Ok(pb::NodeState::Suspect) => NodeState::Suspect,
        Ok(pb::NodeState::Down) => NodeState::Down,
        Ok(pb::NodeState::Draining) => NodeState::Draining,
        Ok(pb::NodeState::Removed) => NodeState::Removed,
        Ok(pb::NodeState::Unspecified) | Err(_) => NodeState::Unknown,
    };
    let usage = n.usage.unwrap_or_default();
    Node {
        id: n.node_id.clone(),
        address: n.address.clone(),
        state,
        registered_unix: n.registered_unix,
        drain: n.drain.as_ref().map(|d| Drain {
            shards_left: d.shards_left,
            bytes_left: d.bytes_left,
            shards_moved: d.shards_moved,
            bytes_moved: d.bytes_moved,
            shards_stuck: d.shards_stuck,
            failures: d.failures,
            surveyed: d.surveyed_unix != 0,
        }),
        capacity_bytes: usage.capacity_bytes,
        used_bytes: usage.used_bytes,
    }
}

fn rebalance_from_pb(r: &pb::RebalanceStatus) -> Rebalance {
    let state = match pb::RebalanceState::try_from(r.state) {
        Ok(pb::RebalanceState::Idle) => RebalanceState::Idle,
        Ok(pb::RebalanceState::Running) => RebalanceState::Running,
        Ok(pb::RebalanceState::Stopped) => RebalanceState::Stopped,
        Ok(pb::RebalanceState::Done) => RebalanceState::Done,
        Ok(pb::RebalanceState::Unspecified) | Err(_) => RebalanceState::Unknown,
    };
    Rebalance {
        state,
        reason: r.reason.clone(),
        shards_moved: r.shards_moved,
        bytes_moved: r.bytes_moved,
        bytes_planned: r.bytes_planned,
    }
}

fn health_from_pb(s: &pb::ClusterStatusResponse) -> Health {
    let repair = s.repair.clone().unwrap_or_default();
    Health {
        backlog_segments: repair.backlog_segments,
        unreadable_segments: repair.unreadable_segments,
        waiting_segments: repair.waiting_segments,
        capacity_bytes: s.capacity_bytes,
        used_bytes: s.used_bytes,
        available_bytes: s.available_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_for_the_status() {
        let no_leader = Status::unavailable(
            "group 0: this node is not the leader (leader: unknown, election in progress)",
        );
        assert_eq!(Failure::of(&no_leader).reason(), "NoLeader");
        let refused_connection = Status::unavailable("tcp connect error: Connection refused");
        assert_eq!(Failure::of(&refused_connection).reason(), "Unreachable");
        let not_empty = Status::failed_precondition("node abc still holds 3 shards");
        assert_eq!(
            Failure::of(&not_empty),
            Failure::Refused("node abc still holds 3 shards".into())
        );
        assert_eq!(
            Failure::of(&Status::unimplemented("RemoveNode")).reason(),
            "Unsupported"
        );
        assert_eq!(
            Failure::of(&Status::deadline_exceeded("late")).reason(),
            "Timeout"
        );
        let err = Error::RemoveNode {
            node: "abc".into(),
            source: Failure::of(&not_empty),
        };
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "RemoveNode abc: refused: node abc still holds 3 shards"
        );
    }

    #[test]
    fn wire_nodes_convert_with_their_drain_progress() {
        let wire = pb::ChunkNode {
            node_id: "n1".into(),
            address: "demo-chunk-7.demo-chunk-headless.ns.svc.cluster.local:7100".into(),
            state: pb::NodeState::Draining as i32,
            registered_unix: 5,
            drain: Some(pb::DrainProgress {
                shards_left: 0,
                bytes_left: 0,
                surveyed_unix: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = node_from_pb(&wire);
        assert_eq!(node.state, NodeState::Draining);
        // Zero left but never surveyed: not known to be empty.
        assert!(node.is_draining() && !node.is_empty());
        let surveyed = pb::ChunkNode {
            drain: Some(pb::DrainProgress {
                surveyed_unix: 100,
                ..Default::default()
            }),
            ..wire.clone()
        };
        assert!(node_from_pb(&surveyed).is_empty());
        let unknown = pb::ChunkNode { state: 42, ..wire };
        assert_eq!(node_from_pb(&unknown).state, NodeState::Unknown);
    }
}
