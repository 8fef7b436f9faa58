//! The server side of the Raft transport (`proto/raft.proto`): one tonic `RaftService` per node
//! that routes each message by its group id to that group's [`openraft::Raft`].
//!
//! Status codes: an unknown group is `NOT_FOUND`, a payload that does not decode is
//! `INVALID_ARGUMENT`, a stopped Raft (shutdown or fatal error) and a vote asked of a group
//! under the amnesia guard ([`RaftRegistry::guard_votes`]) are `UNAVAILABLE`; every other
//! outcome, including the Raft's own errors, is the bincode of openraft's `Result` in the reply.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dogfs_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use dogfs_proto::raft::{RaftFrame, RaftReply, RaftRequest};
use openraft::Raft;
use openraft::error::RaftError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::frame::TransportStats;
use super::network::MAX_RAFT_MESSAGE_BYTES;
use super::types::TypeConfig;
use crate::wal::GroupId;

/// Errors of the Raft service (turned into gRPC statuses).
#[derive(Debug, Error)]
pub enum ServerError {
    /// The node does not host the group.
    #[error("raft group {0} is not hosted on this node")]
    UnknownGroup(GroupId),
    /// The payload is not the expected openraft request.
    #[error("group {group}: cannot decode {what} payload: {source}")]
    Decode {
        /// The group.
        group: GroupId,
        /// The RPC.
        what: &'static str,
        /// The cause.
        source: bincode::Error,
    },
    /// The reply could not be encoded.
    #[error("group {group}: cannot encode {what} reply: {source}")]
    Encode {
        /// The group.
        group: GroupId,
        /// The RPC.
        what: &'static str,
        /// The cause.
        source: bincode::Error,
    },
    /// The group's Raft has stopped.
    #[error("group {group}: raft stopped: {reason}")]
    Stopped {
        /// The group.
        group: GroupId,
        /// The fatal error.
        reason: String,
    },
    /// The group started with no state and has not caught up yet: it does not vote.
    #[error(
        "group {0}: this node started with no state for the group and does not vote until it \
         has caught up with a leader (amnesia guard)"
    )]
    VoteGuarded(GroupId),
    /// A stream message of a kind this node does not know.
    #[error("group {group}: unknown raft message kind {kind}")]
    UnknownKind {
        /// The group.
        group: GroupId,
        /// The kind as sent.
        kind: i32,
    },
    /// The registry lock was poisoned.
    #[error("raft registry lock poisoned")]
    Poisoned,
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let msg = e.to_string();
        match e {
            ServerError::UnknownGroup(_) => Status::not_found(msg),
            ServerError::Decode { .. } | ServerError::UnknownKind { .. } => {
                Status::invalid_argument(msg)
            }
            ServerError::Stopped { .. } | ServerError::VoteGuarded(_) => Status::unavailable(msg),
            ServerError::Encode { .. } | ServerError::Poisoned => Status::internal(msg),
        }
    }
}

/// The groups a node hosts, by id; shared by the server and the node.
#[derive(Clone)]
pub struct RaftRegistry {
    groups: Arc<RwLock<HashMap<GroupId, Raft<TypeConfig>>>>,
    /// Groups that refuse to vote (the amnesia guard, docs/meta-service.md).
    vote_guarded: Arc<RwLock<BTreeSet<GroupId>>>,
    /// Set when the node shuts down: node-pair streams end (they would otherwise hold the
    /// server's graceful shutdown open for as long as the peer keeps them).
    closing: Arc<watch::Sender<bool>>,
    /// The server side's stream counters.
    stats: Arc<TransportStats>,
}

impl Default for RaftRegistry {
    fn default() -> Self {
        RaftRegistry {
            groups: Arc::default(),
            vote_guarded: Arc::default(),
            closing: Arc::new(watch::Sender::new(false)),
            stats: Arc::default(),
        }
    }
}

impl std::fmt::Debug for RaftRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftRegistry")
            .field("groups", &self.group_ids())
            .finish()
    }
}

impl RaftRegistry {
    /// An empty registry.
    pub fn new() -> RaftRegistry {
        RaftRegistry::default()
    }

    /// Adds (or replaces) a group's Raft.
    pub fn insert(&self, group: GroupId, raft: Raft<TypeConfig>) -> Result<(), ServerError> {
        self.groups
            .write()
            .map_err(|_| ServerError::Poisoned)?
            .insert(group, raft);
        Ok(())
    }

    /// Removes a group; later messages for it get `NOT_FOUND`.
    pub fn remove(&self, group: GroupId) -> Result<Option<Raft<TypeConfig>>, ServerError> {
        Ok(self
            .groups
            .write()
            .map_err(|_| ServerError::Poisoned)?
            .remove(&group))
    }

    /// The group's Raft.
    pub fn get(&self, group: GroupId) -> Result<Raft<TypeConfig>, ServerError> {
        self.groups
            .read()
            .map_err(|_| ServerError::Poisoned)?
            .get(&group)
            .cloned()
            .ok_or(ServerError::UnknownGroup(group))
    }

    /// Ends every node-pair stream this node serves, now and later (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`RaftRegistry::close`] was called.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// The counters of the node-pair streams this node serves.
    pub fn stream_stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Makes this node refuse vote requests for `group` (with `UNAVAILABLE`, which the
    /// candidate counts as no vote) until [`RaftRegistry::lift_vote_guard`].
    pub fn guard_votes(&self, group: GroupId) -> Result<(), ServerError> {
        self.vote_guarded
            .write()
            .map_err(|_| ServerError::Poisoned)?
            .insert(group);
        Ok(())
    }

    /// Lets `group` vote again.
    pub fn lift_vote_guard(&self, group: GroupId) -> Result<(), ServerError> {
        self.vote_guarded
            .write()
            .map_err(|_| ServerError::Poisoned)?
            .remove(&group);
        Ok(())
    }

    /// The groups under the amnesia guard, sorted.
    pub fn vote_guarded(&self) -> Vec<GroupId> {
        self.vote_guarded
            .read()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn check_vote(&self, group: GroupId) -> Result<(), ServerError> {
        if self
            .vote_guarded
            .read()
            .map_err(|_| ServerError::Poisoned)?
            .contains(&group)
        {
            return Err(ServerError::VoteGuarded(group));
        }
        Ok(())
    }

    /// The hosted group ids, sorted.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self
            .groups
            .read()
            .map(|g| g.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
}

/// The tonic `RaftService` implementation.
#[derive(Debug, Clone)]
pub struct RaftServer {
    registry: RaftRegistry,
}

impl RaftServer {
    /// A server routing to the groups of `registry`.
    pub fn new(registry: RaftRegistry) -> RaftServer {
        RaftServer { registry }
    }

    /// The tonic service, with message limits for entry batches and snapshot chunks.
    pub fn into_service(self) -> RaftServiceServer<RaftServer> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }

    /// The registry the server routes to.
    pub fn registry(&self) -> &RaftRegistry {
        &self.registry
    }
}

/// The calls the transport carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `Raft::vote`.
    Vote,
    /// `Raft::append_entries`.
    AppendEntries,
    /// `Raft::install_snapshot` (one chunk; unary only).
    InstallSnapshot,
}

impl CallKind {
    /// The name used in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Vote => "Vote",
            CallKind::AppendEntries => "AppendEntries",
            CallKind::InstallSnapshot => "InstallSnapshot",
        }
    }
}

/// Hands one encoded request to `group`'s Raft and encodes openraft's `Result` — the whole
/// server side of a call, shared by the unary methods and the node-pair stream.
pub async fn dispatch(
    registry: &RaftRegistry,
    group: GroupId,
    kind: CallKind,
    payload: &[u8],
) -> Result<Bytes, ServerError> {
    match kind {
        CallKind::Vote => {
            registry.check_vote(group)?;
            route(registry, group, kind, payload, |raft, req| async move {
                raft.vote(req).await
            })
            .await
        }
        CallKind::AppendEntries => {
            route(registry, group, kind, payload, |raft, req| async move {
                raft.append_entries(req).await
            })
            .await
        }
        CallKind::InstallSnapshot => {
            route(registry, group, kind, payload, |raft, req| async move {
                raft.install_snapshot(req).await
            })
            .await
        }
    }
}

/// Decodes the request, hands it to the group's Raft with `handle`, encodes the result.
async fn route<Req, Resp, E, F, Fut>(
    registry: &RaftRegistry,
    group: GroupId,
    kind: CallKind,
    payload: &[u8],
    handle: F,
) -> Result<Bytes, ServerError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize + std::error::Error,
    F: FnOnce(Raft<TypeConfig>, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, RaftError<u64, E>>>,
{
    let what = kind.name();
    let raft = registry.get(group)?;
    let req: Req = bincode::deserialize(payload).map_err(|source| ServerError::Decode {
        group,
        what,
        source,
    })?;
    let res = handle(raft, req).await;
    if let Err(RaftError::Fatal(fatal)) = &res {
        // A stopped Raft is as good as absent: the caller treats it as unreachable.
        return Err(ServerError::Stopped {
            group,
            reason: fatal.to_string(),
        });
    }
    let bytes = bincode::serialize(&res).map_err(|source| ServerError::Encode {
        group,
        what,
        source,
    })?;
    Ok(Bytes::from(bytes))
}

async fn unary(
    registry: &RaftRegistry,
    kind: CallKind,
    request: Request<RaftRequest>,
) -> Result<Response<RaftReply>, Status> {
    let RaftRequest { group_id, payload } = request.into_inner();
    let payload = dispatch(registry, group_id, kind, &payload).await?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        unary(&self.registry, CallKind::Vote, request).await
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        unary(&self.registry, CallKind::AppendEntries, request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        unary(&self.registry, CallKind::InstallSnapshot, request).await
    }

    type StreamStream = super::stream::ReplyStream;

    async fn stream(
        &self,
        request: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Ok(Response::new(super::stream::serve(
            self.registry.clone(),
            request.into_inner(),
        )))
    }
}
