//! Background tasks of a metadata node (`docs/meta-service.md`): the bootstrap guard, chunk
//! server liveness (on the system group's leader), and per-partition maintenance — upload expiry
//! and garbage collection (on each partition's leader).

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::DeleteShardRequest;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::meta::ClusterStatusRequest;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use tokio::sync::watch;

use crate::catalog::{CatalogError, ops};
use crate::registry::{self, AdminState, ClusterConfig, Liveness};
use crate::service::{Core, ServiceError, now_unix, peer_request};

const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);
/// Uploads expired per partition per pass.
const EXPIRE_BATCH: usize = 256;

/// Sleeps `d`, or returns false when the node stops.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// What a peer says about its groups: `Some(true)` when it is part of an initialized cluster.
async fn peer_initialized(core: &Core, addr: &str) -> Option<bool> {
    let channel = core.raft.connections().channel(addr).ok()?;
    let mut client = AdminServiceClient::new(channel);
    let call = client.cluster_status(peer_request(ClusterStatusRequest {}));
    let status = tokio::time::timeout(PROBE_TIMEOUT, call).await.ok()?.ok()?;
    Some(
        status.into_inner().groups.iter().any(|g| {
            g.term > 0 || g.leader_id.is_some() || g.applied_index > 0 || g.commit_index > 0
        }),
    )
}

/// The bootstrap guard. Only the lowest node id initializes, and only when (1) none of its own
/// groups was ever initialized and (2) every peer answers and none is part of a cluster. A
/// wiped node 0 thus finds initialized peers and waits to be caught up (by snapshot) instead
/// of starting a second cluster. Then records the cluster config in the system group.
pub(crate) async fn bootstrap(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    if core.peers.keys().next() != Some(&core.node_id) {
        return;
    }
    loop {
        match bootstrap_once(&core).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "bootstrap step failed; retrying"),
        }
        if !pause(&mut stop, BOOTSTRAP_RETRY).await {
            return;
        }
    }
    // The cluster config, once; every later start compares its --partitions with it.
    loop {
        let done = async {
            if registry::get_config(&core.reader(0)?)?.is_some() {
                return Ok::<_, ServiceError>(true);
            }
            let config = ClusterConfig {
                partitions: core.partitions(),
                partition_hash: "fnv1a64".into(),
                created_unix: now_unix(),
            };
            match core
                .propose_anywhere(0, &registry::init_config(&config)?)
                .await
            {
                Ok(_) | Err(ServiceError::Catalog(CatalogError::Conflict { .. })) => Ok(true),
                Err(e) => Err(e),
            }
        }
        .await;
        match done {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "recording the cluster config; retrying"),
        }
        if !pause(&mut stop, BOOTSTRAP_RETRY).await {
            return;
        }
    }
}

/// One bootstrap attempt: `Ok(true)` when there is nothing (more) to do.
async fn bootstrap_once(core: &Core) -> Result<bool, ServiceError> {
    for g in core.raft.group_ids() {
        let raft = core.raft.raft(g)?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        if initialized {
            return Ok(true);
        }
    }
    for (id, addr) in &core.peers {
        if *id == core.node_id {
            continue;
        }
        match peer_initialized(core, addr).await {
            Some(true) => {
                tracing::warn!(peer = id, %addr, "peers already form a cluster; not bootstrapping (this node will be caught up by its leaders)");
                return Ok(true);
            }
            Some(false) => {}
            None => {
                tracing::info!(peer = id, %addr, "waiting for every peer to answer before bootstrapping");
                return Ok(false);
            }
        }
    }
    let groups = core.raft.initialize(&core.peers).await?;
    tracing::info!(?groups, "bootstrapped a new cluster");
    Ok(true)
}

/// On the system group's leader: marks chunk servers suspect, then down, when their
/// heartbeats stop. After winning leadership every node gets a full `suspect_after` of grace
/// (the new leader has no heartbeat history).
pub(crate) async fn liveness(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let tick =
        (core.cfg.suspect_after() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if !pause(&mut stop, tick).await {
            return;
        }
        if let Err(e) = liveness_pass(&core).await {
            tracing::debug!(error = %e, "liveness pass failed");
        }
    }
}

async fn liveness_pass(core: &Core) -> Result<(), ServiceError> {
    let term = core.raft.raft(0)?.metrics().borrow().current_term;
    let since = {
        let mut t = core.liveness.lock().unwrap_or_else(PoisonError::into_inner);
        if !core.is_leader(0) {
            t.leader_since = None;
            return Ok(());
        }
        match t.leader_since {
            Some((tm, since)) if tm == term => since,
            _ => {
                let now = Instant::now();
                t.leader_since = Some((term, now));
                now
            }
        }
    };
    let reader = core.reader(0)?;
    for node in registry::list_nodes(&reader)? {
        if node.admin == AdminState::Removed || node.liveness == Liveness::Down {
            continue;
        }
        let heard = core
            .liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .get(&node.id)
            .map(|(i, _)| *i);
        let last = heard.map_or(since, |h| h.max(since));
        let silent = last.elapsed();
        let target = if silent >= core.cfg.down_after() {
            Liveness::Down
        } else if silent >= core.cfg.suspect_after() {
            Liveness::Suspect
        } else {
            continue;
        };
        if target == node.liveness {
            continue;
        }
        if let Some((p, _)) = registry::update_node(&reader, node.id, |n| n.liveness = target)? {
            match core.propose(0, &p).await {
                Ok(_) => {
                    tracing::info!(node = %registry::format_node_id(node.id), state = ?target, silent_secs = silent.as_secs(), "chunk server missed its heartbeats")
                }
                // A heartbeat raced with us; the next pass looks again.
                Err(ServiceError::Catalog(CatalogError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// On each partition's leader, every `gc_interval`: expire uploads, then delete up to
/// `gc_batch` queued shards from their chunk servers and drop them from the queue.
pub(crate) async fn maintenance(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(core.cfg.gc_interval_ms.max(10));
    loop {
        if !pause(&mut stop, every).await {
            return;
        }
        for p in 1..=core.partitions() {
            if !core.is_leader(p) {
                continue;
            }
            if let Err(e) = expire(&core, p).await {
                tracing::debug!(partition = p, error = %e, "upload expiry failed");
            }
            if let Err(e) = collect(&core, p).await {
                tracing::debug!(partition = p, error = %e, "garbage collection failed");
            }
        }
    }
}

async fn expire(core: &Core, p: u64) -> Result<(), ServiceError> {
    let Some(prepared) = ops::expire_uploads(&core.reader(p)?, now_unix(), EXPIRE_BATCH)? else {
        return Ok(());
    };
    let n = prepared.command.conditions.len();
    core.propose(p, &prepared).await?;
    core.metrics.uploads_expired.inc_by(n as u64);
    tracing::info!(partition = p, uploads = n, "expired uploads");
    Ok(())
}

async fn collect(core: &Core, p: u64) -> Result<(), ServiceError> {
    let pending = ops::gc_pending(&core.reader(p)?, core.cfg.gc_batch)?;
    if pending.is_empty() {
        return Ok(());
    }
    let system = core.reader(0)?;
    let mut done = Vec::new();
    for entry in pending {
        let shard = ShardId::from_u128(entry.shard_id);
        let Some((node, _)) = registry::get_node(&system, entry.node)? else {
            tracing::warn!(%shard, node = %registry::format_node_id(entry.node), "gc: shard on an unregistered chunk server; left queued");
            continue;
        };
        if node.liveness == Liveness::Down || node.admin == AdminState::Removed {
            // Retried once it is back; a removed node's files are gone with it.
            if node.admin == AdminState::Removed {
                done.push(shard);
            }
            continue;
        }
        let channel = core.raft.connections().channel(&node.address)?;
        let mut req = tonic::Request::new(DeleteShardRequest {
            shard_id: shard.to_string(),
        });
        req.set_timeout(DELETE_TIMEOUT);
        match ChunkServiceClient::new(channel).delete_shard(req).await {
            Ok(r) => {
                tracing::debug!(%shard, node = %node.address, existed = r.get_ref().existed, reason = ?entry.reason, "gc: shard deleted");
                done.push(shard);
            }
            Err(e) => {
                tracing::debug!(%shard, node = %node.address, error = %e, "gc: delete failed; retried later");
            }
        }
    }
    if !done.is_empty() {
        core.propose(p, &ops::gc_done(&done)).await?;
        core.metrics.gc_deleted.inc_by(done.len() as u64);
    }
    Ok(())
}
