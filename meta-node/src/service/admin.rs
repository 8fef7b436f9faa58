//! AdminService: cluster status (answered by the node asked, never forwarded, so it also
//! serves the bootstrap probe), the chunk-server list, drain/undrain/remove through Raft, and
//! the rebalance (`docs/elasticity.md`). Everything else is served by the system group's
//! leader, which runs the mover.

use std::sync::Arc;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::admin_service_server::AdminService;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use super::convert;
use super::{Core, Route, ServiceError, now_unix, observe, peer_request, with_retries};
use crate::catalog::index;
use crate::registry::rebalance;
use crate::registry::{self, AdminState, NodeRecord};

/// The AdminService of one node.
#[derive(Debug, Clone)]
pub struct AdminSvc {
    core: Arc<Core>,
}

impl AdminSvc {
    pub fn new(core: Arc<Core>) -> AdminSvc {
        AdminSvc { core }
    }
}

/// Whether a peer answers a cheap local call (GetClusterMap) within [`PROBE_TIMEOUT`].
async fn reachable(core: &Core, peer: u64, addr: &str) -> bool {
    if peer == core.node_id {
        return true;
    }
    let Ok(channel) = core.raft.connections().channel(addr) else {
        return false;
    };
    let mut client = core.meta_client(channel);
    let call = client.get_cluster_map(peer_request(pb::GetClusterMapRequest {}));
    matches!(tokio::time::timeout(PROBE_TIMEOUT, call).await, Ok(Ok(_)))
}

const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The chunk servers for ClusterStatus, as the system group's leader sees them: only the
/// leader hears heartbeats, so a follower's own liveness table has no (or, after losing the
/// leadership, a frozen) last heartbeat. Falls back to the local view when the leader is
/// unknown or slow, or when the call itself came from a peer (the bootstrap probe must not
/// depend on the leader).
async fn chunk_nodes_for_status<T>(
    core: &Core,
    req: &Request<T>,
) -> Result<Vec<pb::ChunkNode>, ServiceError> {
    if let Ok(Route::Forward(ch)) = core.route(0, req) {
        let mut client = AdminServiceClient::new(ch);
        let call = client.list_nodes(peer_request(pb::ListNodesRequest {}));
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(r)) => return Ok(r.into_inner().nodes),
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "chunk server list from the system leader failed; answering the local view");
            }
            Err(_) => {
                tracing::debug!(
                    "chunk server list from the system leader timed out; answering the local view"
                );
            }
        }
    }
    let nodes = registry::list_nodes(&core.reader(0)?)?;
    Ok(nodes.iter().map(|n| core.chunk_node(n)).collect())
}

/// The rebalance for ClusterStatus: from the system group's leader (it has the live figures),
/// else the answering node's replica of the record.
async fn rebalance_for_status<T>(core: &Core, req: &Request<T>) -> Option<pb::RebalanceStatus> {
    if let Ok(Route::Forward(ch)) = core.route(0, req) {
        let mut client = AdminServiceClient::new(ch);
        let call = client.rebalance_status(peer_request(pb::RebalanceStatusRequest {}));
        if let Ok(Ok(r)) = tokio::time::timeout(PROBE_TIMEOUT, call).await {
            return r.into_inner().status;
        }
    }
    crate::mover::rebalance_status(core).ok()
}

impl Core {
    fn chunk_node(&self, r: &NodeRecord) -> pb::ChunkNode {
        let mut n = convert::chunk_node(r, self.last_heartbeat_unix(r.id));
        if let Some((passes, progress)) = self
            .liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .scrub
            .get(&r.id)
        {
            n.scrub_passes = *passes;
            n.scrub_progress = *progress;
        }
        if r.liveness == registry::Liveness::Down
            && let Ok(reader) = self.reader(0)
            && let Ok(Some(down)) = registry::down_since(&reader, r.id)
        {
            n.down_since_unix = i64::try_from(down).unwrap_or(i64::MAX);
        }
        // Only the system group's leader runs the mover; a follower's figures would be zeros
        // that look like an empty server, so it leaves them out.
        if r.admin == AdminState::Draining && self.is_leader(0) {
            n.drain = Some(self.mover.drain_progress(r.id));
        }
        n
    }

    /// RemoveNode (see the proto): only a server nothing references any more.
    async fn remove_node(&self, id: u128) -> Result<NodeRecord, ServiceError> {
        with_retries(|_| async {
            self.read_barrier(0).await?;
            let reader = self.reader(0)?;
            let (n, _) =
                registry::get_node(&reader, id)?.ok_or(registry::RegistryError::NoSuchNode { id })?;
            if n.admin == AdminState::Removed {
                return Ok(n);
            }
            let down = n.liveness == registry::Liveness::Down;
            if n.admin == AdminState::Active && !down {
                return Err(registry::RegistryError::RemoveActive { id }.into());
            }
            // Upload targets do not hold a removal back: an upload that commits onto a
            // removed server has that shard rebuilt at once (docs/elasticity.md), and an
            // abandoned one would otherwise block it until the upload expires.
            let mut shards = 0u64;
            for p in 1..=self.partitions() {
                if self.is_leader(p) {
                    self.read_barrier(p).await?;
                }
                shards += index::count_on_node(&self.reader(p)?, id)?.0;
            }
            if shards > 0 {
                return Err(registry::RegistryError::RemoveNotEmpty { id, shards, down }.into());
            }
            match registry::remove(&reader, id)? {
                Some((p, record)) => {
                    self.propose(0, &p).await?;
                    tracing::info!(node = %registry::format_node_id(id), address = %record.address, "chunk server removed");
                    Ok(record)
                }
                None => Ok(n),
            }
        })
        .await
    }

    /// Rebalance START/STOP.
    async fn rebalance_action(&self, req: &pb::RebalanceRequest) -> Result<(), ServiceError> {
        let action = pb::RebalanceAction::try_from(req.action).unwrap_or_default();
        let spread = if req.spread_percent == 0.0 {
            self.cfg.rebalance_spread_percent
        } else {
            req.spread_percent
        };
        let spread = rebalance::spread_fraction(spread)?;
        with_retries(|_| async {
            self.read_barrier(0).await?;
            let reader = self.reader(0)?;
            let prepared = match action {
                pb::RebalanceAction::Start => {
                    rebalance::start(&reader, rebalance::Trigger::Admin, spread, now_unix())?
                }
                pb::RebalanceAction::Stop => {
                    rebalance::finish(&reader, rebalance::Phase::Stopped, now_unix())?
                }
                pb::RebalanceAction::Unspecified => {
                    return Err(ServiceError::Invalid(
                        "Rebalance: action is unspecified; send START or STOP".into(),
                    ));
                }
            };
            if let Some((p, r)) = prepared {
                self.propose(0, &p).await?;
                tracing::info!(?action, phase = ?r.phase, spread = r.spread, "rebalance changed");
            }
            Ok(())
        })
        .await?;
        self.mover.wake();
        Ok(())
    }

    async fn set_admin(&self, id: u128, state: AdminState) -> Result<NodeRecord, ServiceError> {
        with_retries(|_| async {
            self.read_barrier(0).await?;
            let reader = self.reader(0)?;
            if let Some((n, _)) = registry::get_node(&reader, id)?
                && n.admin == AdminState::Removed
            {
                return Err(registry::RegistryError::Removed { id }.into());
            }
            match registry::update_node(&reader, id, |n| n.admin = state)? {
                Some((p, record)) => {
                    self.propose(0, &p).await?;
                    tracing::info!(node = %registry::format_node_id(id), ?state, "chunk server admin state changed");
                    Ok(record)
                }
                None => Ok(registry::get_node(&reader, id)?
                    .ok_or(registry::RegistryError::NoSuchNode { id })?
                    .0),
            }
        })
        .await
    }
}

macro_rules! admin_forward {
    ($core:expr, $req:ident, $method:ident) => {
        if let Route::Forward(ch) = $core.route(0, &$req)? {
            let reply = AdminServiceClient::new(ch)
                .$method(peer_request($req.into_inner()))
                .await
                .map_err(ServiceError::Remote)?;
            return Ok(Response::new(reply.into_inner()));
        }
    };
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "ClusterStatus", group = Empty);
        let is_peer = super::forwarded(&req);
        observe(&c.metrics, "ClusterStatus", span, async move {
            let mut groups = Vec::new();
            for g in c.raft.group_ids() {
                let m = c.raft.raft(g)?.metrics().borrow().clone();
                let applied = m.last_applied.map_or(0, |l| l.index);
                groups.push(pb::GroupStatus {
                    group_id: g,
                    leader_id: m.current_leader,
                    term: m.current_term,
                    commit_index: m.last_log_index.unwrap_or(0).max(applied),
                    applied_index: applied,
                });
            }
            let chunk_nodes = chunk_nodes_for_status(c, &req).await?;
            let live = chunk_nodes
                .iter()
                .filter(|n| n.state != pb::NodeState::Removed as i32)
                .filter_map(|n| n.usage.as_ref());
            let (mut capacity, mut used, mut available) = (0u64, 0u64, 0u64);
            for u in live {
                capacity = capacity.saturating_add(u.capacity_bytes);
                used = used.saturating_add(u.used_bytes);
                available = available.saturating_add(u.available_bytes);
            }
            let meta_nodes =
                futures::future::join_all(c.peers.iter().map(|(id, addr)| async move {
                    pb::MetaNodeStatus {
                        node_id: *id,
                        address: addr.clone(),
                        reachable: reachable(c, *id, addr).await,
                    }
                }))
                .await;
            Ok(Response::new(pb::ClusterStatusResponse {
                node_id: c.node_id,
                meta_nodes,
                groups,
                chunk_nodes,
                capacity_bytes: capacity,
                used_bytes: used,
                available_bytes: available,
                default_scheme: Some(convert::scheme_to_pb(&c.scheme)),
                partitions: c.partitions(),
                // Peers probe ClusterStatus for log positions (leader spreading) every
                // second; the survey is for people and tools.
                repair: Some(if is_peer {
                    crate::repair::counters(c)
                } else {
                    crate::repair::status(c).await?
                }),
                rebalance: if is_peer {
                    None
                } else {
                    rebalance_for_status(c, &req).await
                },
            }))
        })
        .await
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "ListNodes", group = Empty);
        observe(&c.metrics, "ListNodes", span, async move {
            admin_forward!(c, req, list_nodes);
            c.read_barrier(0).await?;
            let nodes = registry::list_nodes(&c.reader(0)?)?;
            Ok(Response::new(pb::ListNodesResponse {
                nodes: nodes.iter().map(|n| c.chunk_node(n)).collect(),
            }))
        })
        .await
    }

    async fn node_status(
        &self,
        req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "NodeStatus", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "NodeStatus", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            admin_forward!(c, req, node_status);
            c.read_barrier(0).await?;
            let (n, _) = registry::get_node(&c.reader(0)?, id)?
                .ok_or(registry::RegistryError::NoSuchNode { id })?;
            Ok(Response::new(pb::NodeStatusResponse {
                node: Some(c.chunk_node(&n)),
            }))
        })
        .await
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "DrainNode", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "DrainNode", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            admin_forward!(c, req, drain_node);
            let n = c.set_admin(id, AdminState::Draining).await?;
            c.mover.wake();
            Ok(Response::new(pb::DrainNodeResponse {
                node: Some(c.chunk_node(&n)),
            }))
        })
        .await
    }

    async fn undrain_node(
        &self,
        req: Request<pb::UndrainNodeRequest>,
    ) -> Result<Response<pb::UndrainNodeResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "UndrainNode", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "UndrainNode", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            admin_forward!(c, req, undrain_node);
            let n = c.set_admin(id, AdminState::Active).await?;
            Ok(Response::new(pb::UndrainNodeResponse {
                node: Some(c.chunk_node(&n)),
            }))
        })
        .await
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "RemoveNode", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "RemoveNode", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            admin_forward!(c, req, remove_node);
            let n = c.remove_node(id).await?;
            Ok(Response::new(pb::RemoveNodeResponse {
                node: Some(c.chunk_node(&n)),
            }))
        })
        .await
    }

    async fn rebalance(
        &self,
        req: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!(
            "rpc",
            method = "Rebalance",
            action = req.get_ref().action,
            group = Empty
        );
        observe(&c.metrics, "Rebalance", span, async move {
            admin_forward!(c, req, rebalance);
            c.rebalance_action(req.get_ref()).await?;
            Ok(Response::new(pb::RebalanceResponse {
                status: Some(crate::mover::rebalance_status(c)?),
            }))
        })
        .await
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "CreateToken", name = %req.get_ref().name, group = Empty);
        observe(&c.metrics, "CreateToken", span, async move {
            admin_forward!(c, req, create_token);
            Ok(Response::new(c.create_token(req.get_ref()).await?))
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "ListTokens", group = Empty);
        observe(&c.metrics, "ListTokens", span, async move {
            admin_forward!(c, req, list_tokens);
            Ok(Response::new(pb::ListTokensResponse {
                tokens: c.list_tokens().await?,
            }))
        })
        .await
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "RevokeToken", token = %req.get_ref().id, group = Empty);
        observe(&c.metrics, "RevokeToken", span, async move {
            admin_forward!(c, req, revoke_token);
            Ok(Response::new(pb::RevokeTokenResponse {
                token: Some(c.revoke_token(&req.get_ref().id).await?),
            }))
        })
        .await
    }

    async fn rebalance_status(
        &self,
        req: Request<pb::RebalanceStatusRequest>,
    ) -> Result<Response<pb::RebalanceStatusResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "RebalanceStatus", group = Empty);
        observe(&c.metrics, "RebalanceStatus", span, async move {
            admin_forward!(c, req, rebalance_status);
            c.read_barrier(0).await?;
            Ok(Response::new(pb::RebalanceStatusResponse {
                status: Some(crate::mover::rebalance_status(c)?),
            }))
        })
        .await
    }
}
