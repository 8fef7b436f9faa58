//! [`MultiRaft`]: every Raft group of one metadata node (DESIGN §5, `docs/raft-network.md`).
//!
//! One node opens ONE [`Wal`] (log, vote and committed marker of every group) and ONE sled
//! database ([`SledEngine`], one tree per group), creates a [`LogStore`], a [`StateMachine`] and
//! an [`openraft::Raft`] per group, and serves the gRPC `RaftService` for all of them on one
//! listener. Outgoing messages go through one pooled channel per peer ([`Connections`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dogfs_security::{AuthLayer, ClientTls, PolicyLayer, ServerTls};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;

use super::engine::{EngineError, SledEngine, SledSpace};
use super::frame::TransportCounts;
use super::log_store::{LogStore, LogStoreError};
use super::network::{Connections, NetworkFactory, TransportMode};
use super::restored::{self, RestoredLead};
use super::server::{RaftRegistry, RaftServer, ServerError};
use super::state_machine::{KvReader, StateMachine, StateMachineError};
use super::types::{Command, Response, TypeConfig};
use crate::wal::{GroupId, SyncObserver, Wal, WalConfig, WalError, WalStats};

type NodeId = u64;

/// How long [`MultiRaft::start`] retries opening a WAL or database still locked by a previous
/// incarnation of the node in the same process (its tasks release them asynchronously).
const OPEN_RETRY: Duration = Duration::from_secs(10);
/// How long [`MultiRaft::shutdown`] waits for the gRPC server to drain and for the WAL to be
/// released.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Errors of a [`MultiRaft`] node.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory could not be created.
    #[error("creating data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Raft configuration is invalid.
    #[error("invalid raft config: {0}")]
    Config(Box<openraft::ConfigError>),
    /// The WAL did not open.
    #[error("opening the WAL: {0}")]
    Wal(#[from] WalError),
    /// The sled database did not open.
    #[error("opening the state machine database: {0}")]
    Engine(#[from] EngineError),
    /// A group's state machine did not open.
    #[error("opening a state machine: {0}")]
    StateMachine(#[from] StateMachineError),
    /// A blocking task failed.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// openraft failed to start or stopped.
    #[error("group {group}: raft fatal error: {reason}")]
    Fatal {
        /// The group.
        group: GroupId,
        /// The error.
        reason: String,
    },
    /// The node does not host the group.
    #[error("group {0} is not hosted on this node")]
    UnknownGroup(GroupId),
    /// Initializing a group failed.
    #[error("group {group}: initialize: {source}")]
    Initialize {
        /// The group.
        group: GroupId,
        /// The cause.
        source: Box<RaftError<NodeId, InitializeError<NodeId, BasicNode>>>,
    },
    /// This node is not the group's leader.
    #[error("group {group}: not the leader; leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader, if known.
        leader_id: Option<NodeId>,
        /// The leader's address, if known.
        leader_addr: Option<String>,
    },
    /// A client write failed otherwise.
    #[error("group {group}: client write: {source}")]
    ClientWrite {
        /// The group.
        group: GroupId,
        /// The cause.
        source: Box<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    },
    /// The Raft registry failed.
    #[error(transparent)]
    Registry(#[from] ServerError),
    /// The gRPC server failed.
    #[error("raft gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The listener's address is unknown.
    #[error("listener address: {0}")]
    Listener(std::io::Error),
    /// A read on a leadership resumed at startup could not see the restored log applied.
    #[error("group {group}: the restored log up to index {index} was not applied: {reason}")]
    RestoredLog {
        /// The group.
        group: GroupId,
        /// The index the state machine had to reach.
        index: u64,
        /// Why it did not (a timeout, or the group stopping).
        reason: String,
    },
    /// Reading a group's saved vote or log end at startup failed.
    #[error("group {group}: reading the saved vote and log end: {source}")]
    LogState {
        /// The group.
        group: GroupId,
        /// The cause.
        source: LogStoreError,
    },
    /// A previous incarnation still held the WAL after shutdown.
    #[error("the WAL was not released within {0:?} after shutdown")]
    WalStillHeld(Duration),
}

/// The settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Every node of the cluster (this one included): id → gRPC address (`host:port`).
    pub peers: BTreeMap<NodeId, String>,
    /// The node's data directory: `wal/`, `sled/`, `snapshots/`.
    pub data_dir: PathBuf,
    /// The groups the node hosts (every node hosts every group).
    pub groups: Vec<GroupId>,
    /// openraft settings, shared by every group.
    pub raft: openraft::Config,
    /// WAL settings.
    pub wal: WalConfig,
    /// How often the WAL's dead segments are reclaimed (`Wal::reclaim`).
    pub reclaim_interval: Duration,
    /// Connect timeout of the peer channels.
    pub connect_timeout: Duration,
    /// TLS of the listener (with the component policy: Raft and internal calls only from
    /// metadata nodes); none: plain text.
    pub server_tls: Option<Arc<ServerTls>>,
    /// TLS of the node's connections to peers and chunk servers; none: plain text.
    pub client_tls: Option<Arc<ClientTls>>,
    /// Called with the duration of every WAL `fdatasync` (metrics).
    pub sync_observer: Option<SyncObserver>,
    /// Groups that open with no state (no vote, no log) refuse votes until something lifts
    /// the guard ([`RaftHandle::lift_vote_guard`]; the metadata service's `vote_guard` task).
    /// Off by default: whoever turns it on must run something that lifts it.
    pub amnesia_guard: bool,
    /// How Vote and AppendEntries travel to peers (the node-pair stream by default).
    pub transport: TransportMode,
    /// One heartbeat tick for every group the node leads, instead of a timer per group, so the
    /// heartbeats of all groups to a peer leave together and share frames (on by default).
    pub coalesce_heartbeats: bool,
}

impl NodeConfig {
    /// A configuration with [`default_raft_config`] and default WAL settings.
    pub fn new(
        node_id: NodeId,
        peers: BTreeMap<NodeId, String>,
        data_dir: impl Into<PathBuf>,
        groups: Vec<GroupId>,
    ) -> NodeConfig {
        NodeConfig {
            node_id,
            peers,
            data_dir: data_dir.into(),
            groups,
            raft: default_raft_config(),
            wal: WalConfig::default(),
            reclaim_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            server_tls: None,
            client_tls: None,
            sync_observer: None,
            amnesia_guard: false,
            transport: TransportMode::default(),
            coalesce_heartbeats: true,
        }
    }
}

/// The openraft settings of the metadata service: 100 ms heartbeats, elections after 0.5–1 s
/// without a leader, a snapshot every 10,000 entries, and 1,000 entries kept behind it (so a
/// briefly lagging follower catches up from the log, a long-gone one by snapshot).
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "dogfs-meta".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 256,
        ..openraft::Config::default()
    }
}

#[derive(Clone)]
struct Group {
    raft: Raft<TypeConfig>,
    reader: KvReader<SledSpace>,
    restored: Option<RestoredLead>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// Every Raft group of one metadata node, with its gRPC Raft service.
#[derive(Debug)]
pub struct MultiRaft {
    handle: RaftHandle,
    addr: SocketAddr,
    listener: Option<tokio::net::TcpListener>,
    server_tls: Option<Arc<ServerTls>>,
    registry: RaftRegistry,
    wal: Weak<Wal>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    reclaimer: Option<JoinHandle<()>>,
    heartbeats: Option<JoinHandle<()>>,
}

/// Runs `open` on the blocking pool, retrying while `locked` says the error is a lock still
/// held by a previous incarnation in this process, for at most [`OPEN_RETRY`].
async fn open_retrying<T, E, F>(open: F, locked: fn(&E) -> bool) -> Result<Result<T, E>, NodeError>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Fn() -> Result<T, E> + Send + Sync + Clone + 'static,
{
    let deadline = Instant::now() + OPEN_RETRY;
    loop {
        let f = open.clone();
        let res = tokio::task::spawn_blocking(f).await?;
        match res {
            Err(e) if locked(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other),
        }
    }
}

impl MultiRaft {
    /// Opens the node's WAL and database in `config.data_dir`, starts every group's Raft and
    /// serves the Raft service on `listener`.
    pub async fn start(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<MultiRaft, NodeError> {
        let mut node = MultiRaft::open(config, listener).await?;
        node.serve(
            tonic::service::Routes::default(),
            AuthLayer::new(None, Vec::new(), ""),
        );
        Ok(node)
    }

    /// Like [`MultiRaft::start`], but does not serve yet: the caller adds its own services with
    /// [`MultiRaft::serve`] (they need the node's [`RaftHandle`] first).
    pub async fn open(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<MultiRaft, NodeError> {
        let addr = listener.local_addr().map_err(NodeError::Listener)?;
        let mut raft_config = config.raft.clone();
        let heartbeat = Duration::from_millis(raft_config.heartbeat_interval);
        if config.coalesce_heartbeats {
            // The node's heartbeat loop sends them instead (`heartbeat_loop`).
            raft_config.enable_heartbeat = false;
        }
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| NodeError::Config(Box::new(e)))?,
        );
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
            dir: dir.clone(),
            source,
        })?;

        let wal_dir = dir.join("wal");
        let wal_config = config.wal.clone();
        let (wal, report) = open_retrying(
            move || Wal::open(&wal_dir, wal_config.clone()),
            |e| matches!(e, WalError::Lock(_)),
        )
        .await??;
        tracing::info!(node = config.node_id, ?report, "WAL opened");
        if let Some(observer) = &config.sync_observer {
            wal.set_sync_observer(observer.clone());
        }
        let wal = Arc::new(wal);
        let sled_dir = dir.join("sled");
        let engine = open_retrying(
            move || SledEngine::open(&sled_dir),
            |e| matches!(e, EngineError::Open { .. }),
        )
        .await??;

        let connections = Connections::new(config.connect_timeout, config.client_tls.clone())
            .with_transport(config.transport);
        let registry = RaftRegistry::new();
        let snapshot_root = dir.join("snapshots");
        let mut groups = BTreeMap::new();
        let ids: BTreeSet<GroupId> = config.groups.iter().copied().collect();
        for group in ids {
            let log_store = LogStore::new(Arc::clone(&wal), group);
            let state = |source| NodeError::LogState { group, source };
            let vote = log_store.vote().map_err(state)?;
            let log = log_store.log_state().map_err(state)?;
            let restored =
                restored::restored_lead(config.node_id, vote.as_ref(), log.last_log_id.as_ref());
            if config.amnesia_guard
                && vote.is_none()
                && log.last_log_id.is_none()
                && log.last_purged_log_id.is_none()
            {
                // A member that lost its disk must not vote before it has caught up: it may
                // have acknowledged entries that a leader counted as committed.
                registry.guard_votes(group)?;
                tracing::warn!(
                    group,
                    "no state for the group: not voting until caught up (amnesia guard)"
                );
            }
            if let Some(r) = restored {
                tracing::info!(
                    group,
                    term = r.term,
                    last_log_index = r.last_log_index,
                    "resuming leadership: reads wait for the restored log"
                );
            }
            let engine2 = engine.clone();
            let root = snapshot_root.clone();
            let sm = tokio::task::spawn_blocking(move || StateMachine::open(&engine2, group, root))
                .await??;
            let reader = sm.reader();
            let network = NetworkFactory::new(config.node_id, group, connections.clone());
            let raft = Raft::new(
                config.node_id,
                Arc::clone(&raft_config),
                network,
                log_store,
                sm,
            )
            .await
            .map_err(|e| NodeError::Fatal {
                group,
                reason: e.to_string(),
            })?;
            registry.insert(group, raft.clone())?;
            groups.insert(
                group,
                Group {
                    raft,
                    reader,
                    restored,
                },
            );
        }

        let (shutdown, rx) = watch::channel(false);
        let weak = Arc::downgrade(&wal);
        drop(wal);
        let reclaimer = tokio::spawn(reclaim_loop(weak.clone(), config.reclaim_interval, rx));
        let heartbeats = config.coalesce_heartbeats.then(|| {
            let rafts: Vec<Raft<TypeConfig>> = groups.values().map(|g| g.raft.clone()).collect();
            tokio::spawn(heartbeat_loop(
                config.node_id,
                rafts,
                connections.clone(),
                heartbeat,
                shutdown.subscribe(),
            ))
        });
        Ok(MultiRaft {
            handle: RaftHandle {
                node_id: config.node_id,
                groups: Arc::new(groups),
                connections,
                wal: weak.clone(),
                registry: registry.clone(),
            },
            addr,
            listener: Some(listener),
            server_tls: config.server_tls.clone(),
            registry,
            wal: weak,
            shutdown,
            server: None,
            reclaimer: Some(reclaimer),
            heartbeats,
        })
    }

    /// Serves the Raft service plus `routes` (the caller's services) on the listener given to
    /// [`MultiRaft::open`]. Does nothing when already serving.
    pub fn serve(&mut self, routes: tonic::service::Routes, auth: AuthLayer) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let routes = routes.add_service(RaftServer::new(self.registry.clone()).into_service());
        let mut server_rx = self.shutdown.subscribe();
        let tls = self.server_tls.clone();
        self.server = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_rx.wait_for(|s| *s).await;
            };
            // Certificates give identities only over TLS; plain text was asked for.
            let policy = tls.as_ref().map(|_| crate::access::policy());
            let router = tonic::transport::Server::builder()
                .max_concurrent_streams(dogfs_security::server::MAX_CONCURRENT_STREAMS)
                .http2_max_header_list_size(dogfs_security::server::MAX_HEADER_LIST_BYTES)
                .layer(PolicyLayer::new(policy))
                .layer(auth)
                .add_routes(routes);
            match tls {
                Some(tls) => {
                    router
                        .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                        .await
                }
                None => {
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
            }
        }));
        tracing::info!(node = self.handle.node_id, addr = %self.addr, groups = ?self.registry.group_ids(), "raft node serving");
    }

    /// The groups the node's Raft service routes to (tests add and remove groups under a
    /// running stream with it).
    pub fn registry(&self) -> &RaftRegistry {
        &self.registry
    }

    /// A cheap, cloneable handle on the groups (for request handlers and background tasks).
    /// Drop every handle before reopening the node in the same process: its readers keep the
    /// database open.
    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.handle.node_id
    }

    /// The address the Raft service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hosted group ids.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.handle.group_ids()
    }

    /// The group's Raft.
    pub fn raft(&self, group: GroupId) -> Result<&Raft<TypeConfig>, NodeError> {
        self.handle.raft(group)
    }

    /// A reader on the group's applied state (local, not linearizable by itself).
    pub fn reader(&self, group: GroupId) -> Result<KvReader<SledSpace>, NodeError> {
        self.handle.reader(group)
    }

    /// The pool of peer channels.
    pub fn connections(&self) -> &Connections {
        &self.handle.connections
    }

    /// See [`RaftHandle::initialize`].
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<Vec<GroupId>, NodeError> {
        self.handle.initialize(members).await
    }

    /// See [`RaftHandle::client_write`].
    pub async fn client_write(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Response, NodeError> {
        self.handle.client_write(group, command).await
    }

    /// Stops every group (its messages then get `NOT_FOUND`), the gRPC server and the
    /// reclaimer, and waits until the WAL is released, so the node can be reopened from the
    /// same directory. Readers handed out keep the database open until dropped.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        // Peers' streams into this node end now rather than at the server's shutdown timeout.
        self.registry.close();
        if let Some(h) = self.heartbeats.take() {
            let _ = h.await;
        }
        let ids: Vec<GroupId> = self.handle.group_ids();
        for group in &ids {
            self.registry.remove(*group)?;
        }
        let mut first_err = None;
        let groups: Vec<(GroupId, Raft<TypeConfig>)> = self
            .handle
            .groups
            .iter()
            .map(|(id, g)| (*id, g.raft.clone()))
            .collect();
        self.handle.groups = Arc::new(BTreeMap::new());
        drop(self.listener.take());
        for (group, raft) in groups {
            if let Err(e) = raft.shutdown().await {
                first_err.get_or_insert(NodeError::Fatal {
                    group,
                    reason: e.to_string(),
                });
            }
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            match tokio::time::timeout(SHUTDOWN_WAIT, server).await {
                Ok(Ok(Err(e))) => {
                    first_err.get_or_insert(NodeError::Server(e));
                }
                Ok(_) => {}
                Err(_) => abort.abort(),
            }
        }
        if let Some(reclaimer) = self.reclaimer.take() {
            reclaimer.abort();
            let _ = reclaimer.await;
        }
        // openraft's tasks (state-machine worker, replication streams, log-flush waiters) drop
        // their storage handles asynchronously after the core stopped.
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.wal.strong_count() > 0 {
            if Instant::now() >= deadline {
                first_err.get_or_insert(NodeError::WalStillHeld(SHUTDOWN_WAIT));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node = self.handle.node_id, "raft node stopped");
        first_err.map_or(Ok(()), Err)
    }
}

/// A cloneable handle on a node's groups: their Raft handles, readers and the peer channels.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    node_id: NodeId,
    groups: Arc<BTreeMap<GroupId, Group>>,
    connections: Connections,
    wal: Weak<Wal>,
    registry: RaftRegistry,
}

impl RaftHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The hosted group ids.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    /// The group's Raft.
    pub fn raft(&self, group: GroupId) -> Result<&Raft<TypeConfig>, NodeError> {
        self.groups
            .get(&group)
            .map(|g| &g.raft)
            .ok_or(NodeError::UnknownGroup(group))
    }

    /// A reader on the group's applied state (local, not linearizable by itself).
    pub fn reader(&self, group: GroupId) -> Result<KvReader<SledSpace>, NodeError> {
        self.groups
            .get(&group)
            .map(|g| g.reader.clone())
            .ok_or(NodeError::UnknownGroup(group))
    }

    /// For a read whose read index openraft returned as `read_log_id` (and already waited for),
    /// waits until the log this node restarted with is applied too, if it resumed the
    /// leadership of the term being read in ([`restored`](super::restored)), for at most
    /// `timeout`.
    pub async fn await_restored_log(
        &self,
        group: GroupId,
        read_log_id: Option<&openraft::LogId<NodeId>>,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let g = self
            .groups
            .get(&group)
            .ok_or(NodeError::UnknownGroup(group))?;
        let Some(index) = restored::extra_read_point(read_log_id, g.restored) else {
            return Ok(());
        };
        g.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "the restored log applied")
            .await
            .map(|_| ())
            .map_err(|e| NodeError::RestoredLog {
                group,
                index,
                reason: e.to_string(),
            })
    }

    /// The pool of peer channels.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The Raft transport's counters: this node's outgoing calls, and the streams it serves.
    pub fn transport_counts(&self) -> (TransportCounts, TransportCounts) {
        (
            self.connections.stats().counts(),
            self.registry.stream_stats().counts(),
        )
    }

    /// The WAL's counters (none once the node has shut down).
    pub fn wal_stats(&self) -> Option<WalStats> {
        self.wal.upgrade().map(|w| w.stats())
    }

    /// The groups under the amnesia guard ([`NodeConfig::amnesia_guard`]).
    pub fn vote_guarded(&self) -> Vec<GroupId> {
        self.registry.vote_guarded()
    }

    /// Lets `group` vote again.
    pub fn lift_vote_guard(&self, group: GroupId) -> Result<(), NodeError> {
        Ok(self.registry.lift_vote_guard(group)?)
    }

    /// Bootstraps every group with `members` (id → address) as voters, if this node has the
    /// lowest id among them and the group was never initialized (no vote, no log, no
    /// membership) — so a restart never re-initializes. Returns the groups initialized now.
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, String>,
    ) -> Result<Vec<GroupId>, NodeError> {
        if members.keys().next() != Some(&self.node_id) {
            return Ok(Vec::new());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        let mut done = Vec::new();
        for (&group, g) in self.groups.iter() {
            let initialized = g
                .raft
                .is_initialized()
                .await
                .map_err(|e| NodeError::Fatal {
                    group,
                    reason: e.to_string(),
                })?;
            if initialized {
                continue;
            }
            match g.raft.initialize(nodes.clone()).await {
                Ok(()) => done.push(group),
                // Raced with a vote or entries from a peer: initialized meanwhile.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(source) => {
                    return Err(NodeError::Initialize {
                        group,
                        source: Box::new(source),
                    });
                }
            }
        }
        if !done.is_empty() {
            tracing::info!(node = self.node_id, groups = ?done, "initialized raft groups");
        }
        Ok(done)
    }

    /// Proposes `command` to `group` through this node, which must be the group's leader;
    /// returns the state machine's response once the entry is committed and applied here.
    pub async fn client_write(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Response, NodeError> {
        let raft = self.raft(group)?;
        match raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(NodeError::NotLeader {
                    group,
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(source) => Err(NodeError::ClientWrite {
                group,
                source: Box::new(source),
            }),
        }
    }
}

/// How long the heartbeat tick holds the node-pair streams' next frames.
const HEARTBEAT_GATHER: Duration = Duration::from_millis(1);

/// Sends a heartbeat for every group this node leads, all in the same instant, every
/// `interval` until shutdown. openraft's own per-group heartbeat timer is off
/// ([`NodeConfig::coalesce_heartbeats`]): its timers drift apart, so each group's heartbeats
/// would travel alone; triggered together they share the node-pair streams' frames.
async fn heartbeat_loop(
    node_id: NodeId,
    rafts: Vec<Raft<TypeConfig>>,
    connections: Connections,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leading: Vec<&Raft<TypeConfig>> = rafts
            .iter()
            .filter(|raft| {
                let m = raft.metrics();
                let m = m.borrow();
                m.current_leader == Some(node_id) && m.state.is_leader()
            })
            .collect();
        if leading.is_empty() {
            continue;
        }
        // The triggered heartbeats reach the streams from each group's replication task over a
        // few hundred microseconds; the frames wait for them (tokio's timer granularity is 1 ms).
        connections.hold_links(HEARTBEAT_GATHER);
        for raft in leading {
            // A stopped Raft answers Fatal; shutdown ends the loop soon after.
            if raft.trigger().heartbeat().await.is_err() {
                tracing::debug!(node = node_id, "heartbeat trigger on a stopped raft");
            }
        }
    }
}

/// Reclaims the WAL's dead segments every `interval` until shutdown.
async fn reclaim_loop(wal: Weak<Wal>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(w) = wal.upgrade() else { return };
        match tokio::task::spawn_blocking(move || w.reclaim()).await {
            Ok(Ok(report)) => tracing::debug!(?report, "WAL reclaimed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "WAL reclaim failed"),
            Err(e) => tracing::warn!(error = %e, "WAL reclaim task failed"),
        }
    }
}
