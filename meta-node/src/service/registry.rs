//! ChunkRegistry: Register and Heartbeat, served by the system group's leader. Heartbeats
//! update the leader's in-memory liveness table; Raft sees a heartbeat only when it changes
//! something: the node comes back up, or its usage moved meaningfully or was last persisted
//! more than [`USAGE_PERSIST_EVERY_SECS`] ago.

use std::sync::Arc;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::chunk_registry_server::ChunkRegistry;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use super::convert;
use super::{Core, Route, ServiceError, now_unix, observe, peer_request, usage_of, with_retries};
use crate::registry::{self, Liveness, rebalance};

/// Usage is persisted at least this often while it changes at all.
pub const USAGE_PERSIST_EVERY_SECS: u64 = 60;

/// The ChunkRegistry service of one node.
#[derive(Debug, Clone)]
pub struct RegistrySvc {
    core: Arc<Core>,
}

impl RegistrySvc {
    pub fn new(core: Arc<Core>) -> RegistrySvc {
        RegistrySvc { core }
    }
}

async fn forward<T, R, F, Fut>(
    core: &Core,
    ch: tonic::transport::Channel,
    msg: T,
    call: F,
) -> Result<Response<R>, ServiceError>
where
    F: FnOnce(
        dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient<tonic::transport::Channel>,
        Request<T>,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, Status>>,
{
    let _ = core;
    let client = dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient::new(ch);
    let reply = call(client, peer_request(msg))
        .await
        .map_err(ServiceError::Remote)?;
    Ok(Response::new(reply.into_inner()))
}

/// A new server spreads the data: start a rebalance (best effort; an admin call can start one
/// too). One already running keeps going.
async fn start_rebalance_on_join(core: &Core) {
    let result = with_retries(|_| async {
        let spread = rebalance::spread_fraction(core.cfg.rebalance_spread_percent)?;
        let reader = core.reader(0)?;
        if let Some((p, _)) =
            rebalance::start(&reader, rebalance::Trigger::NodeJoined, spread, now_unix())?
        {
            core.propose(0, &p).await?;
            tracing::info!("a chunk server joined: rebalance started");
        }
        Ok(())
    })
    .await;
    core.mover.wake();
    if let Err(e) = result {
        tracing::warn!(error = %e, "starting a rebalance for a new chunk server failed");
    }
}

#[tonic::async_trait]
impl ChunkRegistry for RegistrySvc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "Register", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "Register", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            if id == crate::catalog::index::UNPLACED {
                return Err(ServiceError::Invalid(
                    "register: the nil node id is reserved; a chunk server's id is a random UUID"
                        .into(),
                ));
            }
            if req.get_ref().address.is_empty() {
                return Err(ServiceError::Invalid(
                    "register: the address is empty; send the host:port clients reach the \
                     chunk server at"
                        .into(),
                ));
            }
            if let Route::Forward(ch) = c.route(0, &req)? {
                return forward(c, ch, req.into_inner(), |mut cl, r| async move {
                    cl.register(r).await
                })
                .await;
            }
            let r = req.into_inner();
            let usage = usage_of(r.usage.as_ref());
            let (record, joined) = with_retries(|_| async {
                let reader = c.reader(0)?;
                let known = registry::get_node(&reader, id)?;
                // A removed server's shards are no longer referenced and its id is not reused:
                // it must join as a new server (docs/elasticity.md).
                if known
                    .as_ref()
                    .is_some_and(|(n, _)| n.admin == registry::AdminState::Removed)
                {
                    return Err(registry::RegistryError::RegisterRemoved { id }.into());
                }
                let (p, record) =
                    registry::register(&reader, id, &r.address, &r.zone, usage, now_unix())?;
                c.propose(0, &p).await?;
                Ok((record, known.is_none()))
            })
            .await?;
            c.heard_from(id);
            if joined && c.cfg.rebalance_on_join {
                start_rebalance_on_join(c).await;
            }
            tracing::info!(node = %registry::format_node_id(id), address = %r.address, zone = %r.zone, "chunk server registered");
            Ok(Response::new(pb::RegisterResponse {
                state: convert::node_state(record.state()) as i32,
                heartbeat_interval_ms: c.cfg.heartbeat_interval_ms,
            }))
        })
        .await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let c = &self.core;
        let span = tracing::debug_span!("rpc", method = "Heartbeat", node = %req.get_ref().node_id, group = Empty);
        observe(&c.metrics, "Heartbeat", span, async move {
            let id = registry::parse_node_id(&req.get_ref().node_id)?;
            if let Route::Forward(ch) = c.route(0, &req)? {
                return forward(c, ch, req.into_inner(), |mut cl, r| async move {
                    cl.heartbeat(r).await
                })
                .await;
            }
            let usage = usage_of(req.get_ref().usage.as_ref());
            {
                let mut table = c
                    .liveness
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                table.usage.insert(id, (usage, std::time::Instant::now()));
                table.scrub.insert(
                    id,
                    (
                        req.get_ref().scrub_passes,
                        req.get_ref().scrub_progress.clamp(0.0, 1.0),
                    ),
                );
            }
            if !req.get_ref().corrupt_shard_ids.is_empty() {
                // Off the heartbeat's path: finding the partitions takes index reads and
                // proposals, and a heartbeat must stay cheap.
                tokio::spawn(crate::repair::on_corrupt_shards(
                    std::sync::Arc::clone(c),
                    id,
                    req.get_ref().corrupt_shard_ids.clone(),
                ));
            }
            let record = with_retries(|_| async {
                let reader = c.reader(0)?;
                let now = now_unix();
                let update = registry::update_node(&reader, id, |n| {
                    if n.liveness != Liveness::Up {
                        tracing::info!(node = %registry::format_node_id(id), from = ?n.liveness, "chunk server up again");
                        n.liveness = Liveness::Up;
                    }
                    let due = now.saturating_sub(n.usage_unix) >= USAGE_PERSIST_EVERY_SECS
                        && n.usage != usage;
                    if due || n.usage.differs_meaningfully(&usage) {
                        n.usage = usage;
                        n.usage_unix = now;
                    }
                })?;
                match update {
                    Some((p, record)) => {
                        c.propose(0, &p).await?;
                        Ok(record)
                    }
                    None => Ok(registry::get_node(&reader, id)?
                        .ok_or(registry::RegistryError::NoSuchNode { id })?
                        .0),
                }
            })
            .await?;
            c.heard_from(id);
            Ok(Response::new(pb::HeartbeatResponse {
                state: convert::node_state(record.state()) as i32,
                heartbeat_interval_ms: c.cfg.heartbeat_interval_ms,
            }))
        })
        .await
    }
}
