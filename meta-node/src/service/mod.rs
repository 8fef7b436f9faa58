//! The gRPC services of a metadata node (meta.proto): [`meta`] (objects and buckets),
//! [`registry`] (chunk servers), [`admin`], and the node-to-node [`internal`] service, all on
//! the node's one gRPC port beside the Raft service.
//!
//! Every call finds its group and goes through [`Core::route`]: served here when this node
//! leads the group; otherwise forwarded once to the leader (header `x-dogfs-forwarded`), or
//! refused with UNAVAILABLE and the leader's address in `x-dogfs-leader`. Reads are
//! linearizable through openraft's read index ([`Core::read_barrier`]) unless the caller asks
//! for a stale read. Writes are catalogue builders committed conditionally; a
//! [`CatalogError::Conflict`] reruns the whole operation ([`MAX_ATTEMPTS`]).

pub mod admin;
pub mod convert;
mod grants;
pub mod internal;
mod limits;
pub mod meta;
pub mod multipart;
pub mod registry;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dogfs_core::names::BucketName;
use dogfs_core::placement::PlacementError;
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::meta::meta_internal_client::MetaInternalClient;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_proto::meta::{HeadBucketRequest, ProposeRequest};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::Instrument;

use crate::catalog::{self, CatalogError, Prepared};
use crate::config::MetaConfig;
use crate::metrics::Metrics;
use crate::raft::{Command, KvReader, NodeError, RaftHandle, Response, SledSpace, TransportError};
use crate::registry::rebalance::RebalanceError;
use crate::registry::{RegistryError, Usage};

/// Request header marking a call forwarded by another metadata node.
pub const FORWARDED_HEADER: &str = "x-dogfs-forwarded";
/// Response header (on UNAVAILABLE) with the group leader's gRPC address, when known.
pub const LEADER_HEADER: &str = "x-dogfs-leader";
/// Largest gRPC message: inline objects are small, but a GetObject of a huge object lists
/// every shard (a 1 TiB object at 64 MiB segments and 4+2 is ~100k shard locations).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Reruns of an operation whose conditional commit lost a race.
pub const MAX_ATTEMPTS: usize = 8;
/// Timeout of calls between metadata nodes.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every way a call can fail; converted to a gRPC status in one place ([`From`] below).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Rebalance(#[from] RebalanceError),
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenStoreError),
    #[error("group {group}: this node is not the leader (leader: {})", leader_addr.as_deref().unwrap_or("unknown, election in progress"))]
    NotLeader {
        group: u64,
        leader_addr: Option<String>,
    },
    #[error("group {group}: raft: {reason}")]
    Raft { group: u64, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("reaching another metadata node: {0}")]
    Transport(#[from] TransportError),
    #[error("{}", .0.message())]
    Remote(Status),
    #[error("decoding a peer's answer: {0}")]
    Decode(String),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// A copy for every waiter of a failed batch (the variants a proposal can fail with keep
    /// their kind; others become `Internal` with the same message).
    fn duplicate(&self) -> ServiceError {
        match self {
            ServiceError::NotLeader { group, leader_addr } => ServiceError::NotLeader {
                group: *group,
                leader_addr: leader_addr.clone(),
            },
            ServiceError::Raft { group, reason } => ServiceError::Raft {
                group: *group,
                reason: reason.clone(),
            },
            other => ServiceError::Internal(other.to_string()),
        }
    }

    /// Worth rerunning the whole operation (read again, build again).
    fn retryable(&self) -> bool {
        matches!(self, ServiceError::Catalog(CatalogError::Conflict { .. }))
    }
}

impl From<NodeError> for ServiceError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotLeader {
                group, leader_addr, ..
            } => ServiceError::NotLeader { group, leader_addr },
            NodeError::ClientWrite { group, source } => ServiceError::Raft {
                group,
                reason: source.to_string(),
            },
            e @ NodeError::RestoredLog { group, .. } => ServiceError::Raft {
                group,
                reason: e.to_string(),
            },
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

fn unavailable(msg: String, leader_addr: Option<&str>) -> Status {
    let mut s = Status::unavailable(msg);
    if let Some(addr) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
        s.metadata_mut().insert(LEADER_HEADER, addr);
    }
    s
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        use CatalogError as C;
        let msg = e.to_string();
        match e {
            ServiceError::Catalog(c) => match c {
                C::NoSuchBucket { .. } | C::NoSuchKey { .. } | C::NoSuchUpload { .. } => {
                    Status::not_found(msg)
                }
                C::BucketExists { .. } | C::UploadAlreadyCommitted { .. } => {
                    Status::already_exists(msg)
                }
                C::BucketNotEmpty { .. } | C::UploadExpired { .. } => {
                    Status::failed_precondition(msg)
                }
                C::Conflict { .. } | C::BucketBusy { .. } | C::UploadIdInUse { .. } => {
                    Status::aborted(msg)
                }
                C::Corrupt { .. } => Status::data_loss(msg),
                C::Storage(_)
                | C::Rejected { .. }
                | C::UnexpectedResponse { .. }
                | C::Encode { .. } => Status::internal(msg),
                _ => Status::invalid_argument(msg),
            },
            ServiceError::Registry(RegistryError::NoSuchNode { .. }) => Status::not_found(msg),
            ServiceError::Registry(
                RegistryError::Removed { .. }
                | RegistryError::RegisterRemoved { .. }
                | RegistryError::RemoveActive { .. }
                | RegistryError::RemoveNotEmpty { .. },
            ) => Status::failed_precondition(msg),
            ServiceError::Rebalance(RebalanceError::Spread { .. }) => Status::invalid_argument(msg),
            ServiceError::Tokens(crate::tokens::TokenStoreError::Catalog(c)) => {
                Status::from(ServiceError::Catalog(c))
            }
            ServiceError::Tokens(crate::tokens::TokenStoreError::NoSuchToken(_)) => {
                Status::not_found(msg)
            }
            ServiceError::Tokens(crate::tokens::TokenStoreError::Full) => {
                Status::resource_exhausted(msg)
            }
            ServiceError::Tokens(_) => Status::invalid_argument(msg),
            ServiceError::Rebalance(RebalanceError::Catalog(c)) => {
                Status::from(ServiceError::Catalog(c))
            }
            ServiceError::Registry(RegistryError::InvalidNodeId { .. }) => {
                Status::invalid_argument(msg)
            }
            ServiceError::Registry(RegistryError::Catalog(c)) => {
                Status::from(ServiceError::Catalog(c))
            }
            ServiceError::Placement(
                PlacementError::NotEnoughNodes { .. }
                | PlacementError::NoReplacement { .. }
                | PlacementError::BelowWriteQuorum { .. },
            ) => Status::resource_exhausted(msg),
            ServiceError::Placement(_) | ServiceError::Invalid(_) => Status::invalid_argument(msg),
            ServiceError::NotLeader { leader_addr, .. } => unavailable(msg, leader_addr.as_deref()),
            ServiceError::Raft { .. } => Status::unavailable(msg),
            ServiceError::Remote(s) => s,
            ServiceError::Transport(_) => Status::unavailable(msg),
            ServiceError::Decode(_) | ServiceError::Internal(_) => Status::internal(msg),
        }
    }
}

/// Where a call is served.
#[derive(Debug)]
pub(crate) enum Route {
    /// This node leads the group.
    Local,
    /// Forward to the leader over this channel.
    Forward(Channel),
}

/// In-memory liveness of chunk servers, meaningful on the system group's leader only.
#[derive(Debug, Default)]
pub(crate) struct LivenessTable {
    /// Last heartbeat (or registration) per node.
    pub last: HashMap<u128, (Instant, SystemTime)>,
    /// (term, since) of this node's current leadership of the system group.
    pub leader_since: Option<(u64, Instant)>,
    /// Scrubber passes and progress through the current pass, as last heartbeated.
    pub scrub: HashMap<u128, (u64, f64)>,
    /// Usage as last heartbeated and when it arrived: fresher than the registry's copy, which
    /// is persisted only when it moved meaningfully (the mover plans with it).
    pub usage: HashMap<u128, (Usage, Instant)>,
}

/// The state shared by the services and background tasks of one node.
#[derive(Debug)]
pub struct Core {
    pub(crate) node_id: u64,
    pub(crate) cfg: MetaConfig,
    pub(crate) scheme: ErasureScheme,
    pub(crate) raft: RaftHandle,
    pub(crate) peers: BTreeMap<u64, String>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) liveness: Mutex<LivenessTable>,
    /// Bucket → incarnation. Safe to be stale: a deleted incarnation stays sealed in every
    /// partition, so a write with a stale one fails (BucketBusy) and reruns with a fresh read.
    buckets: Mutex<HashMap<String, u64>>,
    /// Per group, the queue of the proposer task that batches commands into Raft entries.
    proposers: BTreeMap<u64, mpsc::Sender<Proposal>>,
    /// Per group, this node's read lease as the group's leader ([`Core::read_barrier`]).
    leases: Mutex<HashMap<u64, ReadLease>>,
    /// Repairs this node runs as a partition leader, and their figures.
    pub(crate) repair: crate::repair::RepairState,
    /// Drains and rebalancing this node runs as the system group's leader.
    pub(crate) mover: crate::mover::MoverState,
    /// Shard-grant keys (`--grant-key-file`): locations handed out carry grants.
    pub(crate) grants: Option<dogfs_security::GrantKeyFile>,
}

/// A leader's read lease on one group: until `until`, a linearizable read in `term` needs no
/// quorum round.
#[derive(Debug, Clone, Copy)]
struct ReadLease {
    term: u64,
    until: Instant,
}

/// A command waiting for its group's proposer.
#[derive(Debug)]
pub(crate) struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<Response, ServiceError>>,
}

/// Most commands in one batch entry.
const MAX_BATCH: usize = 512;

/// The proposer of one group (group commit at the proposer). openraft 0.9 handles client
/// writes one at a time and awaits each append's `fdatasync` before taking the next, so one
/// `client_write` per request costs a sync per request per group. Instead, commands that arrive
/// while an entry is in flight are proposed together as one batch entry
/// ([`Command::batch`]), each still with its own conditions and response.
pub(crate) async fn proposer(
    raft: RaftHandle,
    group: u64,
    max_in_flight: usize,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let max_in_flight = max_in_flight.max(1);
    use futures::StreamExt;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            first = rx.recv(), if open && in_flight.len() < max_in_flight => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                in_flight.push(propose_batch(raft.clone(), group, batch));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

async fn propose_batch(raft: RaftHandle, group: u64, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let r = raft.client_write(group, p.command).await;
            let _ = p.reply.send(r.map_err(ServiceError::from));
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let n = replies.len();
    match raft.client_write(group, Command::batch(commands)).await {
        Ok(Response::Batch(rs)) if rs.len() == n => {
            for (r, tx) in rs.into_iter().zip(replies) {
                let _ = tx.send(Ok(r));
            }
        }
        Ok(other) => {
            for tx in replies {
                let _ = tx.send(Err(ServiceError::Internal(format!(
                    "group {group}: unexpected response to a batch of {n}: {other:?}"
                ))));
            }
        }
        Err(e) => {
            let e = ServiceError::from(e);
            for tx in replies {
                let _ = tx.send(Err(e.duplicate()));
            }
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

/// A request to another metadata node, marked as forwarded.
pub(crate) fn peer_request<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    r.set_timeout(PEER_TIMEOUT);
    r
}

impl Core {
    /// The core and, per group, the receiving end of its proposer queue (run each with
    /// [`proposer`]).
    pub(crate) fn new(
        cfg: MetaConfig,
        scheme: ErasureScheme,
        raft: RaftHandle,
        metrics: Arc<Metrics>,
        grants: Option<dogfs_security::GrantKeyFile>,
    ) -> (Core, Vec<(u64, mpsc::Receiver<Proposal>)>) {
        let repair_concurrency = cfg.repair_concurrency;
        let mover_concurrency = cfg.mover_concurrency;
        let mut proposers = BTreeMap::new();
        let mut receivers = Vec::new();
        for g in raft.group_ids() {
            let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
            proposers.insert(g, tx);
            receivers.push((g, rx));
        }
        let core = Core {
            proposers,
            node_id: cfg.node_id,
            peers: cfg.peer_map(),
            cfg,
            scheme,
            raft,
            metrics,
            liveness: Mutex::new(LivenessTable::default()),
            buckets: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            repair: crate::repair::RepairState::new(repair_concurrency),
            mover: crate::mover::MoverState::new(mover_concurrency),
            grants,
        };
        (core, receivers)
    }

    pub(crate) fn partitions(&self) -> u64 {
        self.cfg.partitions
    }

    pub(crate) fn inline_max(&self) -> u64 {
        self.cfg.inline_max.0
    }

    pub(crate) fn reader(&self, group: u64) -> Result<KvReader<SledSpace>, ServiceError> {
        Ok(self.raft.reader(group)?)
    }

    /// The group's leader (id, address) as this node sees it.
    pub(crate) fn leader(&self, group: u64) -> Result<(Option<u64>, Option<String>), ServiceError> {
        let raft = self.raft.raft(group)?;
        let m = raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader;
        let addr = leader.and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        });
        Ok((leader, addr))
    }

    pub(crate) fn is_leader(&self, group: u64) -> bool {
        matches!(self.leader(group), Ok((Some(id), _)) if id == self.node_id)
    }

    /// Where a call for `group` is served (module docs).
    pub(crate) fn route<T>(&self, group: u64, req: &Request<T>) -> Result<Route, ServiceError> {
        tracing::Span::current().record("group", group);
        let (leader, addr) = self.leader(group)?;
        match leader {
            Some(id) if id == self.node_id => Ok(Route::Local),
            Some(_) if !forwarded(req) => match addr {
                Some(a) => {
                    self.metrics.forwarded.inc();
                    Ok(Route::Forward(self.raft.connections().channel(&a)?))
                }
                None => Err(ServiceError::NotLeader {
                    group,
                    leader_addr: None,
                }),
            },
            _ => Err(ServiceError::NotLeader {
                group,
                leader_addr: addr,
            }),
        }
    }

    /// A channel to the group's leader (for node-to-node calls), or NotLeader.
    pub(crate) fn leader_channel(&self, group: u64) -> Result<Channel, ServiceError> {
        let (leader, addr) = self.leader(group)?;
        match (leader, addr) {
            (Some(_), Some(a)) => Ok(self.raft.connections().channel(&a)?),
            _ => Err(ServiceError::NotLeader {
                group,
                leader_addr: None,
            }),
        }
    }

    pub(crate) fn meta_client(&self, channel: Channel) -> MetaServiceClient<Channel> {
        MetaServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Makes a local read of `group` linearizable: afterwards this node's state machine holds
    /// every write acknowledged before the call.
    ///
    /// Normally served by the leader's read lease, without network traffic; otherwise by
    /// openraft's read index (a heartbeat round to a quorum, then waiting until the state
    /// machine applied everything committed), which also renews the lease. Why a lease is safe:
    ///
    /// - A read-index round that started at `t` proves a quorum accepted this leader's term
    ///   at or after `t`. openraft's followers refuse to vote for 1 `leader_lease`
    ///   (= `election_timeout_max`) after they last heard from their leader, so no other
    ///   leader can be elected, and nothing can be committed by anyone else, before
    ///   `t + election_timeout_max`. The lease ends at `t + election_timeout_min / 2`, leaving
    ///   more than half of that window as margin for clock-rate drift between the nodes.
    /// - Every write this leader acknowledged was applied here before the acknowledgement
    ///   (openraft answers a client write after applying it), and the round that opened the
    ///   lease waited for every earlier commit to be applied.
    /// - The lease is only used while this node is still leader in the same term, as checked
    ///   inside openraft's core (a step-down there precedes any vote this node gives another
    ///   candidate, and any append from a newer leader it accepts).
    pub(crate) async fn read_barrier(&self, group: u64) -> Result<(), ServiceError> {
        let raft = self.raft.raft(group)?;
        let term = self.leading_term(raft);
        if let Some(term) = term {
            let leased = {
                let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
                leases
                    .get(&group)
                    .is_some_and(|l| l.term == term && Instant::now() < l.until)
            };
            // The metrics above are published once per turn of openraft's core loop, so they
            // may lag a step-down; the state inside the core does not.
            if leased
                && raft
                    .with_raft_state(move |st| {
                        st.server_state == openraft::ServerState::Leader
                            && st.vote_ref().leader_id().get_term() == term
                    })
                    .await
                    .unwrap_or(false)
            {
                self.metrics.lease_reads.inc();
                return Ok(());
            }
        }
        let started = Instant::now();
        self.metrics.read_index_rounds.inc();
        match raft.ensure_linearizable().await {
            Ok(read_log_id) => {
                // A leadership resumed at startup may hold acknowledged entries past the read
                // index (raft/restored.rs); the wait is bounded like an election, after which
                // the caller retries.
                let bound = Duration::from_millis(raft.config().election_timeout_max * 2);
                self.raft
                    .await_restored_log(group, read_log_id.as_ref(), bound)
                    .await?;
                // Only a round that ran wholly inside one term of this node's leadership
                // opens a lease for that term.
                if let (Some(t), Some(after)) = (term, self.leading_term(raft))
                    && t == after
                {
                    let period = Duration::from_millis(raft.config().election_timeout_min / 2);
                    let lease = ReadLease {
                        term: t,
                        until: started + period,
                    };
                    self.leases
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(group, lease);
                }
                Ok(())
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ServiceError::NotLeader {
                    group,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(ServiceError::Raft {
                group,
                reason: e.to_string(),
            }),
        }
    }

    /// The term in which this node leads `group`, if it does.
    fn leading_term(&self, raft: &openraft::Raft<crate::raft::TypeConfig>) -> Option<u64> {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == openraft::ServerState::Leader && m.current_leader == Some(self.node_id))
            .then_some(m.current_term)
    }

    /// Commits a prepared command through this node (the group's leader) and interprets it.
    pub(crate) async fn propose(&self, group: u64, p: &Prepared) -> Result<u64, ServiceError> {
        let queue = self
            .proposers
            .get(&group)
            .ok_or_else(|| ServiceError::Internal(format!("group {group} is not hosted")))?;
        let (reply, rx) = oneshot::channel();
        let stopped = || ServiceError::Raft {
            group,
            reason: "the node is shutting down".into(),
        };
        queue
            .send(Proposal {
                command: p.command.clone(),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let resp = rx.await.map_err(|_| stopped())??;
        Ok(p.interpret(&resp)?)
    }

    /// Commits through whichever node leads the group (drivers spanning groups).
    pub(crate) async fn propose_anywhere(
        &self,
        group: u64,
        p: &Prepared,
    ) -> Result<u64, ServiceError> {
        if self.is_leader(group) {
            return self.propose(group, p).await;
        }
        let channel = self.leader_channel(group)?;
        let command = bincode::serialize(&p.command)
            .map_err(|e| ServiceError::Internal(format!("encoding a command: {e}")))?;
        let reply = MetaInternalClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .propose(peer_request(ProposeRequest {
                group_id: group,
                command: command.into(),
            }))
            .await
            .map_err(ServiceError::Remote)?
            .into_inner();
        let resp: Response = bincode::deserialize(&reply.response)
            .map_err(|e| ServiceError::Decode(e.to_string()))?;
        Ok(p.interpret(&resp)?)
    }

    /// The bucket's incarnation: from the cache, or a linearizable read of the system group
    /// (here when this node leads it, else through HeadBucket on its leader).
    pub(crate) async fn incarnation(
        &self,
        bucket: &BucketName,
        fresh: bool,
    ) -> Result<u64, ServiceError> {
        if !fresh {
            let cached = self
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(bucket.as_str())
                .copied();
            if let Some(inc) = cached {
                return Ok(inc);
            }
        }
        let inc = if self.is_leader(0) {
            self.read_barrier(0).await?;
            catalog::ops::get_bucket(&self.reader(0)?, bucket)?.1
        } else {
            let channel = self.leader_channel(0)?;
            self.meta_client(channel)
                .head_bucket(peer_request(HeadBucketRequest {
                    bucket: bucket.to_string(),
                    consistency: 0,
                }))
                .await
                .map_err(ServiceError::Remote)?
                .into_inner()
                .incarnation
        };
        self.remember_bucket(bucket.as_str(), Some(inc));
        Ok(inc)
    }

    pub(crate) fn remember_bucket(&self, bucket: &str, incarnation: Option<u64>) {
        let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match incarnation {
            Some(i) => b.insert(bucket.to_owned(), i),
            None => b.remove(bucket),
        };
    }

    /// Records a heartbeat (or registration) in the in-memory liveness table.
    pub(crate) fn heard_from(&self, node: u128) {
        self.liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .insert(node, (Instant::now(), SystemTime::now()));
    }

    pub(crate) fn last_heartbeat_unix(&self, node: u128) -> i64 {
        self.liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .get(&node)
            .and_then(|(_, t)| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Runs `op` until it succeeds or fails for a reason other than a lost race, at most
/// [`MAX_ATTEMPTS`] times. `op` gets the attempt number (0 first), so it can bypass caches on
/// a rerun.
pub(crate) async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, ServiceError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Err(e) if attempt + 1 < MAX_ATTEMPTS && e.retryable() => attempt += 1,
            // A cached bucket incarnation may be one that was deleted: rerun once, reading it.
            Err(ServiceError::Catalog(CatalogError::BucketBusy { .. })) if attempt == 0 => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs one RPC inside its span, counting it by method and status code.
pub(crate) async fn observe<T, Fut>(
    metrics: &Metrics,
    method: &'static str,
    span: tracing::Span,
    fut: Fut,
) -> Result<tonic::Response<T>, Status>
where
    Fut: Future<Output = Result<tonic::Response<T>, ServiceError>>,
{
    let started = Instant::now();
    let result = async {
        let r = fut.await;
        if let Err(e) = &r {
            tracing::debug!(error = %e, "request failed");
        }
        r
    }
    .instrument(span)
    .await
    .map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    metrics.rpc(method, code, started.elapsed());
    result
}

/// Usage from the wire.
pub(crate) fn usage_of(u: Option<&dogfs_proto::meta::NodeUsage>) -> Usage {
    u.map(|u| Usage {
        capacity_bytes: u.capacity_bytes,
        used_bytes: u.used_bytes,
        available_bytes: u.available_bytes,
        shard_count: u.shard_count,
        corrupt_shards: u.corrupt_shards,
        io_errors: u.io_errors,
    })
    .unwrap_or_default()
}
