//! The metadata service's admin API as the operator uses it: what it reads (chunk servers with
//! their drain progress, the rebalance, redundancy and usage) and what it asks (drain, undrain,
//! remove, start a rebalance).
//!
//! [`Admin`] is the seam: [`GrpcAdmin`] speaks gRPC to a cluster's metadata Service (any
//! metadata node answers and forwards to the leader), over TLS trusting the cluster's CA
//! bundle when it has `spec.tls`; tests put a fake with the same semantics behind
//! [`Connector`]. The conversions from the wire types live here and nowhere else, so the
//! planner ([`crate::scale`]) and the status ([`crate::status`]) only see the types below.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use futures::future::BoxFuture;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
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
        let no_leader =
            status.metadata().get(LEADER_HEADER).is_some() || status.message().contains("leader");
        // A connection failure's cause (refused, a TLS certificate not trusted) is in the
        // sources, not in the message.
        let message = with_sources(status.message(), std::error::Error::source(status));
        match status.code() {
            // Both a dead connection and "no leader" are UNAVAILABLE; only a metadata node
            // names (or fails to name) a leader.
            Code::Unavailable if no_leader => Failure::NoLeader(message),
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

/// `message` followed by each source's text that it does not already contain, `a: b: c`.
fn with_sources(message: &str, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = message.to_string();
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = error.source();
    }
    text
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
///
/// `ca` is the cluster's CA bundle, given exactly when the cluster has TLS: the admin API is
/// then reached over TLS, trusting only that bundle. `None`: plaintext. `token`: the bootstrap
/// admin token, sent as `authorization: Bearer` on every call when the cluster has auth.
pub trait Connector: Send + Sync + Debug {
    fn connect(
        &self,
        names: &Names,
        ca: Option<&str>,
        token: Option<&str>,
    ) -> Result<Arc<dyn Admin>, Error>;
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_tuple("Bearer").field(&self.0.is_some()).finish()
    }
}

impl Bearer {
    /// `None` sends no header; a token that is not a valid header value is an error.
    pub fn new(token: Option<&str>) -> Result<Bearer, Error> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Endpoint {
                        endpoint: String::new(),
                        message: "the admin token is not a valid header value".to_string(),
                    })
            })
            .transpose()
            .map(Bearer)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Connects over gRPC to `Names::admin_endpoint`, one lazily connected channel per cluster,
/// reused across reconciles (tonic reconnects it when it breaks) until the endpoint or the CA
/// bundle changes: a renewed or replaced `ca.crt` gets a new channel at the next reconcile.
///
/// The operator is an ordinary TLS client here (no certificate of its own): the admin API is
/// open to any client that trusts the cluster's CA.
#[derive(Debug, Default)]
pub struct GrpcConnector {
    /// Per cluster (`namespace/name`).
    channels: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    endpoint: String,
    ca: Option<String>,
    channel: Channel,
}

impl Connector for GrpcConnector {
    fn connect(
        &self,
        names: &Names,
        ca: Option<&str>,
        token: Option<&str>,
    ) -> Result<Arc<dyn Admin>, Error> {
        let bearer = Bearer::new(token)?;
        let endpoint = names.admin_endpoint(ca.is_some());
        let key = format!("{}/{}", names.namespace, names.cluster);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(&key) {
            Some(cached) if cached.endpoint == endpoint && cached.ca.as_deref() == ca => {
                cached.channel.clone()
            }
            _ => {
                let channel = channel(&endpoint, ca)?;
                channels.insert(
                    key,
                    Cached {
                        endpoint: endpoint.clone(),
                        ca: ca.map(str::to_string),
                        channel: channel.clone(),
                    },
                );
                channel
            }
        };
        Ok(Arc::new(GrpcAdmin {
            endpoint,
            client: AdminServiceClient::with_interceptor(channel, bearer),
        }))
    }
}

/// A lazily connected channel to `endpoint`; with `ca`, TLS that trusts only that bundle
/// (the server's certificate must name the endpoint's host, `<c>-meta.<ns>.svc`).
fn channel(endpoint: &str, ca: Option<&str>) -> Result<Channel, Error> {
    let bad = |message: String| Error::Endpoint {
        endpoint: endpoint.to_string(),
        message,
    };
    let mut builder = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| bad(with_sources(&e.to_string(), std::error::Error::source(&e))))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(ca) = ca {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            // gRPC is HTTP/2 only; do not depend on the server's ALPN answer.
            .assume_http2(true);
        builder = builder.tls_config(tls).map_err(|e| {
            bad(with_sources(
                "TLS settings from the CA bundle",
                std::error::Error::source(&e),
            ))
        })?;
    }
    Ok(builder.connect_lazy())
}

/// The admin API of one cluster over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcAdmin {
    endpoint: String,
    client: AdminServiceClient<InterceptedService<Channel, Bearer>>,
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

    /// Stands in for a CA bundle: parses as PEM (so the TLS settings build) but holds no
    /// usable certificate, so no server is trusted. The tests only look at what the client
    /// sends first.
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn names() -> Names {
        Names {
            cluster: "demo".into(),
            namespace: "storage".into(),
        }
    }

    /// The first bytes a client sends to a listener at `endpoint` (with `{port}` in it) when
    /// it makes a ListNodes call over [`channel`], and how the call failed.
    async fn first_bytes(endpoint: &str, ca: Option<&str>) -> (Vec<u8>, Failure) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16];
            let n = stream.read(&mut buf).await.unwrap();
            buf.truncate(n);
            // Dropping the stream fails the call: no TLS or HTTP/2 answer ever comes.
            buf
        });
        let endpoint = endpoint.replace("{port}", &port.to_string());
        let mut client = AdminServiceClient::new(channel(&endpoint, ca).unwrap());
        let failure = call(
            "ListNodes",
            &endpoint,
            client.list_nodes(pb::ListNodesRequest {}),
        )
        .await
        .unwrap_err();
        (server.await.unwrap(), failure)
    }

    #[tokio::test]
    async fn with_a_ca_bundle_the_admin_client_speaks_tls_and_without_it_plaintext() {
        // A TLS handshake record (0x16) of TLS 1.x (0x03 ..): a ClientHello.
        let (tls, failure) = first_bytes("https://127.0.0.1:{port}", Some(CA)).await;
        assert_eq!(&tls[..2], &[0x16, 0x03], "{tls:?}");
        assert_eq!(failure.reason(), "Unreachable", "{failure}");
        // The HTTP/2 connection preface, in the clear.
        let (plain, _) = first_bytes("http://127.0.0.1:{port}", None).await;
        assert!(plain.starts_with(b"PRI * HTTP/2.0"), "{plain:?}");
    }

    #[tokio::test]
    async fn the_connector_dials_https_with_the_ca_and_makes_a_new_channel_when_it_changes() {
        let connector = GrpcConnector::default();
        let names = names();
        let cached = |connector: &GrpcConnector| {
            let channels = connector.channels.lock().unwrap();
            assert_eq!(channels.len(), 1, "one channel per cluster");
            let c = &channels["storage/demo"];
            (c.endpoint.clone(), c.ca.clone())
        };
        connector.connect(&names, None, None).unwrap();
        assert_eq!(
            cached(&connector),
            ("http://demo-meta.storage.svc:7000".to_string(), None)
        );
        connector
            .connect(&names, Some(CA), Some("dogfs_test-token-0123456789"))
            .unwrap();
        assert_eq!(
            cached(&connector),
            (
                "https://demo-meta.storage.svc:7000".to_string(),
                Some(CA.to_string())
            )
        );
        // A renewed CA (another bundle) replaces the channel rather than adding one.
        let renewed = format!("{CA}{CA}");
        connector.connect(&names, Some(&renewed), None).unwrap();
        assert_eq!(cached(&connector).1.as_deref(), Some(renewed.as_str()));
    }

    #[test]
    fn the_bearer_interceptor_adds_the_token_to_every_call_and_hides_it() {
        let mut bearer = Bearer::new(Some("dogfs_secret-token-123")).unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer dogfs_secret-token-123"
        );
        assert!(!format!("{bearer:?}").contains("secret"));
        let mut none = Bearer::new(None).unwrap();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        // A newline cannot go into a header.
        assert!(Bearer::new(Some("bad\ntoken")).is_err());
    }

    #[tokio::test]
    async fn a_ca_bundle_that_is_not_pem_is_an_endpoint_error() {
        let error = GrpcConnector::default()
            .connect(
                &names(),
                Some("-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n"),
                None,
            )
            .unwrap_err();
        assert_eq!(error.reason(), "BadEndpoint", "{error}");
        assert!(
            error
                .to_string()
                .contains("https://demo-meta.storage.svc:7000"),
            "{error}"
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
