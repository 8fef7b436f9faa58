//! Chunk server administration through `AdminService` (DESIGN §7): one server's status, drain,
//! undrain and removal, and the rebalance. `cluster_status` and `list_nodes` live beside the
//! other calls in `client.rs`.
//!
//! The server makes every change here idempotent (draining a draining server, removing a removed
//! one, starting a running rebalance all answer the current state), so each is retried like a
//! read; only when every attempt failed and one of them may have been applied is the error
//! `OutcomeUnknown`, saying how to find out.

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use tracing::{Instrument, info_span};

use crate::client::Client;
use crate::error::Error;
use crate::meta::Route;

fn node_what(node_id: &str) -> String {
    format!("chunk server {node_id:?}")
}

/// The node a node call answered with; its absence breaks the protocol.
fn answered_node(
    node: Option<pb::ChunkNode>,
    op: &str,
    what: &str,
) -> Result<pb::ChunkNode, Error> {
    node.ok_or_else(|| Error::protocol(format!("{what}: {op} answered without the node")))
}

fn answered_status(
    status: Option<pb::RebalanceStatus>,
    op: &str,
) -> Result<pb::RebalanceStatus, Error> {
    status.ok_or_else(|| Error::protocol(format!("rebalance: {op} answered without a status")))
}

impl Client {
    /// One chunk server as the registry has it, with its drain progress when draining.
    pub async fn node_status(&self, node_id: &str) -> Result<pb::ChunkNode, Error> {
        let what = node_what(node_id);
        let req = pb::NodeStatusRequest {
            node_id: node_id.to_owned(),
        };
        let r = self
            .meta()
            .call("NodeStatus", &what, Route::System, self.deadline(), |ch| {
                let req = req.clone();
                async move { AdminServiceClient::new(ch).node_status(req).await }
            })
            .instrument(info_span!("node_status", node = node_id))
            .await?;
        answered_node(r.node, "NodeStatus", &what)
    }

    /// Starts draining a chunk server (no new shards; every shard moved away); answers the node
    /// with its drain progress.
    pub async fn drain_node(&self, node_id: &str) -> Result<pb::ChunkNode, Error> {
        let what = node_what(node_id);
        let req = pb::DrainNodeRequest {
            node_id: node_id.to_owned(),
        };
        let done = self
            .meta()
            .call_write(
                "DrainNode",
                &what,
                Route::System,
                self.deadline(),
                "the drain may or may not have started: look at the node (NodeStatus) to find out",
                |ch| {
                    let req = req.clone();
                    async move { AdminServiceClient::new(ch).drain_node(req).await }
                },
            )
            .instrument(info_span!("drain_node", node = node_id))
            .await;
        answered_node(done.result?.node, "DrainNode", &what)
    }

    /// Ends a drain: the server takes new shards again; what was moved stays moved.
    pub async fn undrain_node(&self, node_id: &str) -> Result<pb::ChunkNode, Error> {
        let what = node_what(node_id);
        let req = pb::UndrainNodeRequest {
            node_id: node_id.to_owned(),
        };
        let done = self
            .meta()
            .call_write(
                "UndrainNode",
                &what,
                Route::System,
                self.deadline(),
                "the drain may or may not have been cancelled: look at the node (NodeStatus) to \
                 find out",
                |ch| {
                    let req = req.clone();
                    async move { AdminServiceClient::new(ch).undrain_node(req).await }
                },
            )
            .instrument(info_span!("undrain_node", node = node_id))
            .await;
        answered_node(done.result?.node, "UndrainNode", &what)
    }

    /// Removes a chunk server from the registry for good: `Precondition` unless it is empty,
    /// or down with every shard it held rebuilt elsewhere (the message says what is left).
    pub async fn remove_node(&self, node_id: &str) -> Result<pb::ChunkNode, Error> {
        let what = node_what(node_id);
        let req = pb::RemoveNodeRequest {
            node_id: node_id.to_owned(),
        };
        let done = self
            .meta()
            .call_write(
                "RemoveNode",
                &what,
                Route::System,
                self.deadline(),
                "the server may or may not have been removed: look at the node (NodeStatus) to \
                 find out",
                |ch| {
                    let req = req.clone();
                    async move { AdminServiceClient::new(ch).remove_node(req).await }
                },
            )
            .instrument(info_span!("remove_node", node = node_id))
            .await;
        answered_node(done.result?.node, "RemoveNode", &what)
    }

    /// Starts a rebalance; `spread_percent` is the allowed distance of a server's usage ratio
    /// from the mean in percentage points (`None`: the cluster's setting).
    pub async fn start_rebalance(
        &self,
        spread_percent: Option<f64>,
    ) -> Result<pb::RebalanceStatus, Error> {
        self.rebalance(pb::RebalanceAction::Start, spread_percent.unwrap_or(0.0))
            .await
    }

    /// Stops a running rebalance; what was moved stays moved.
    pub async fn stop_rebalance(&self) -> Result<pb::RebalanceStatus, Error> {
        self.rebalance(pb::RebalanceAction::Stop, 0.0).await
    }

    async fn rebalance(
        &self,
        action: pb::RebalanceAction,
        spread_percent: f64,
    ) -> Result<pb::RebalanceStatus, Error> {
        let req = pb::RebalanceRequest {
            action: action as i32,
            spread_percent,
        };
        let done = self
            .meta()
            .call_write(
                "Rebalance",
                "rebalance",
                Route::System,
                self.deadline(),
                "the rebalance may or may not have been started or stopped: look at it \
                 (RebalanceStatus) to find out",
                // The request is `Copy`.
                |ch| async move { AdminServiceClient::new(ch).rebalance(req).await },
            )
            .instrument(info_span!("rebalance", ?action))
            .await;
        answered_status(done.result?.status, "Rebalance")
    }

    pub async fn rebalance_status(&self) -> Result<pb::RebalanceStatus, Error> {
        let r = self
            .meta()
            .call(
                "RebalanceStatus",
                "rebalance",
                Route::System,
                self.deadline(),
                |ch| async move {
                    AdminServiceClient::new(ch)
                        .rebalance_status(pb::RebalanceStatusRequest {})
                        .await
                },
            )
            .await?;
        answered_status(r.status, "RebalanceStatus")
    }
}
