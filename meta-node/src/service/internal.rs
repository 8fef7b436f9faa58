//! MetaInternal: node-to-node calls. `Propose` commits a command built by another node's
//! driver (e.g. DeleteBucket's seals) through this node, the group's leader.

use std::sync::Arc;

use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_internal_client::MetaInternalClient;
use dogfs_proto::meta::meta_internal_server::MetaInternal;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use super::{Core, Route, ServiceError, observe, peer_request};
use crate::raft::Command;

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
        _req: Request<pb::CheckShardRefsRequest>,
    ) -> Result<Response<pb::CheckShardRefsResponse>, Status> {
        Err(Status::unimplemented("CheckShardRefs: being built"))
    }
}
