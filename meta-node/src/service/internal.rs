//! MetaInternal: node-to-node calls. `Propose` commits a command built by another node's
//! driver (e.g. DeleteBucket's seals) through this node, the group's leader.
//! `CheckShardRefs` answers, for orphan collection (`crate::orphans`), whether a partition's
//! shard index references each of a chunk server's shards, with a linearizable read.

use std::sync::Arc;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_internal_client::MetaInternalClient;
use dogfs_proto::meta::meta_internal_server::MetaInternal;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use super::{Core, Route, ServiceError, observe, peer_request};
use crate::catalog::index;
use crate::raft::Command;
use crate::registry;
use dogfs_core::ids::ShardId;

/// Most shard ids one `CheckShardRefs` call may carry (meta.proto).
pub const MAX_CHECK_SHARDS: usize = 10_000;

/// The MetaInternal service of one node.
#[derive(Debug, Clone)]
pub struct InternalSvc {
    core: Arc<Core>,
}

impl InternalSvc {
    pub fn new(core: Arc<Core>) -> InternalSvc {
        InternalSvc { core }
    }
}

#[tonic::async_trait]
impl MetaInternal for InternalSvc {
    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!("rpc", method = "Propose", group = Empty);
        observe(&c.metrics, "Propose", span, async move {
            let group = req.get_ref().group_id;
            if !c.raft.group_ids().contains(&group) {
                return Err(ServiceError::Invalid(format!(
                    "group {group} does not exist"
                )));
            }
            if let Route::Forward(ch) = c.route(group, &req)? {
                let reply = MetaInternalClient::new(ch)
                    .propose(peer_request(req.into_inner()))
                    .await
                    .map_err(ServiceError::Remote)?;
                return Ok(Response::new(reply.into_inner()));
            }
            let command: Command = bincode::deserialize(&req.get_ref().command)
                .map_err(|e| ServiceError::Invalid(format!("undecodable command: {e}")))?;
            let resp = c.raft.client_write(group, command).await?;
            let response = bincode::serialize(&resp)
                .map_err(|e| ServiceError::Internal(format!("encoding a response: {e}")))?;
            Ok(Response::new(pb::ProposeResponse {
                response: response.into(),
            }))
        })
        .await
    }

    async fn check_shard_refs(
        &self,
        req: Request<pb::CheckShardRefsRequest>,
    ) -> Result<Response<pb::CheckShardRefsResponse>, Status> {
        let c = &self.core;
        let span = tracing::info_span!(
            "rpc",
            method = "CheckShardRefs",
            group = Empty,
            node = %req.get_ref().node_id.chars().take(40).collect::<String>(),
            shards = req.get_ref().shard_ids.len()
        );
        observe(&c.metrics, "CheckShardRefs", span, async move {
            // Validated before routing, so a bad request costs the leader nothing.
            let (group, node, shards) = parse_check(c.partitions(), req.get_ref())?;
            if let Route::Forward(ch) = c.route(group, &req)? {
                let reply = MetaInternalClient::new(ch)
                    .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(super::MAX_MESSAGE_BYTES)
                    .check_shard_refs(peer_request(req.into_inner()))
                    .await
                    .map_err(ServiceError::Remote)?;
                return Ok(Response::new(reply.into_inner()));
            }
            let referenced = check_shard_refs(c, group, node, shards).await?;
            Ok(Response::new(pb::CheckShardRefsResponse { referenced }))
        })
        .await
    }
}

/// A validated `CheckShardRefs` request: (partition, node, shards).
pub(crate) fn parse_check(
    partitions: u64,
    req: &pb::CheckShardRefsRequest,
) -> Result<(u64, u128, Vec<u128>), ServiceError> {
    let group = req.group_id;
    if !(1..=partitions).contains(&group) {
        return Err(ServiceError::Invalid(format!(
            "group {group} is not an object partition (1..={partitions}); only partitions hold \
             shard references"
        )));
    }
    let node = registry::parse_node_id(&req.node_id)?;
    if req.shard_ids.len() > MAX_CHECK_SHARDS {
        return Err(ServiceError::Invalid(format!(
            "{} shard ids in one call; at most {MAX_CHECK_SHARDS}",
            req.shard_ids.len()
        )));
    }
    let shards = req
        .shard_ids
        .iter()
        .map(|s| s.parse::<ShardId>().map(ShardId::as_u128))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    Ok((group, node, shards))
}

/// Whether partition `group`'s shard index references each of `shards` on `node`, read on this
/// node, which must lead the group: the read barrier makes the answer cover every reference
/// committed before the call (orphan collection relies on that; `crate::orphans`). Also called
/// directly by the orphan collector when it leads the partition itself.
pub(crate) async fn check_shard_refs(
    core: &Core,
    group: u64,
    node: u128,
    shards: Vec<u128>,
) -> Result<Vec<bool>, ServiceError> {
    core.read_barrier(group).await?;
    let reader = core.reader(group)?;
    // Up to 10,000 point reads: off the async workers.
    tokio::task::spawn_blocking(move || {
        shards
            .iter()
            .map(|s| Ok(index::get(&reader, node, *s)?.is_some()))
            .collect::<Result<Vec<bool>, ServiceError>>()
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("checking shard references: {e}")))?
}
