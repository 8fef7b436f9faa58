//! Background tasks of a metadata node (`docs/meta-service.md`): the bootstrap guard, chunk
//! server liveness (on the system group's leader), per-partition maintenance — upload expiry
//! and garbage collection (on each partition's leader) — and leader spreading.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::DeleteShardRequest;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::meta::ClusterStatusRequest;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use openraft::ServerState;
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
    let groups = crate::vote_guard::peer_groups(core, addr).await?;
    Some(
        groups.iter().any(|g| {
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
        if let Some((mut p, _)) = registry::update_node(&reader, node.id, |n| n.liveness = target)?
        {
            if target == Liveness::Down {
                registry::record_down_since(&mut p, node.id, now_unix());
            }
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
    // Abandoned multipart uploads expire like uploads; their completed parts are collected.
    if let Some(prepared) =
        crate::catalog::multipart::expire_multipart(&core.reader(p)?, now_unix(), EXPIRE_BATCH)?
    {
        let n = prepared.command.conditions.len();
        core.propose(p, &prepared).await?;
        tracing::info!(partition = p, uploads = n, "expired multipart uploads");
    }
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
            // Metadata nodes are components: their certificate stands in for a grant.
            grant: Default::default(),
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

/// How often each node looks at the groups it is the preferred leader of.
const BALANCE_TICK: Duration = Duration::from_secs(1);
/// A group's leader and term must have stayed the same this long, as this node sees them,
/// before it campaigns: right after a failover or a restart the group is left alone, so
/// spreading never fights an election in progress.
pub const BALANCE_STABLE_FOR: Duration = Duration::from_secs(5);
/// At most one election attempt per group this often: a failed or contested attempt costs
/// the group a short leaderless window, which must stay rare.
pub const BALANCE_RETRY_EVERY: Duration = Duration::from_secs(10);
/// How many entries this node's log may trail the leader's for it to campaign. A candidate
/// that is further behind loses the vote anyway (Raft's up-to-date check), after it already
/// unsettled the group.
const BALANCE_MAX_LAG: u64 = 8;

/// The node that should lead `group` (DESIGN §5, "leaders spread over the meta nodes"): the
/// `group mod N`-th of the N peer ids in ascending order — with ids 0..N, node `group mod N`.
pub fn preferred_leader(peer_ids: &[u64], group: u64) -> Option<u64> {
    let n = u64::try_from(peer_ids.len()).ok().filter(|n| *n > 0)?;
    let i = usize::try_from(group % n).ok()?;
    peer_ids.get(i).copied()
}

/// What this node last saw of one group it prefers to lead.
#[derive(Debug)]
struct Watched {
    /// (leader, term) as last seen; `None` while there is no leader.
    seen: Option<(u64, u64)>,
    since: Instant,
    last_attempt: Option<Instant>,
}

/// Leader spreading: for each group this node is the preferred leader of, when another node
/// has led it stably for [`BALANCE_STABLE_FOR`], this node is a voter and its log is caught up
/// with the leader's, trigger an election here (at most every [`BALANCE_RETRY_EVERY`]). Only
/// the preferred node ever campaigns, so a down node's groups stay wherever they failed over
/// to until it is back, caught up and stable; nothing is pushed towards a dead node.
pub(crate) async fn leader_balance(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let peer_ids: Vec<u64> = core.peers.keys().copied().collect();
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    loop {
        if !pause(&mut stop, BALANCE_TICK).await {
            return;
        }
        for g in core.raft.group_ids() {
            if preferred_leader(&peer_ids, g) != Some(core.node_id) {
                continue;
            }
            if let Err(e) = balance_group(&core, g, &mut watched).await {
                tracing::debug!(group = g, error = %e, "leader spreading check failed");
            }
        }
    }
}

async fn balance_group(
    core: &Core,
    group: u64,
    watched: &mut HashMap<u64, Watched>,
) -> Result<(), ServiceError> {
    let raft = core.raft.raft(group)?;
    let m = raft.metrics().borrow().clone();
    let seen = m.current_leader.map(|l| (l, m.current_term));
    let w = watched.entry(group).or_insert_with(|| Watched {
        seen,
        since: Instant::now(),
        last_attempt: None,
    });
    if w.seen != seen {
        w.seen = seen;
        w.since = Instant::now();
    }
    let Some(leader) = m.current_leader else {
        return Ok(());
    };
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == core.node_id);
    if leader == core.node_id
        || m.running_state.is_err()
        || m.state != ServerState::Follower
        || !voter
        || w.since.elapsed() < BALANCE_STABLE_FOR
        || w.last_attempt
            .is_some_and(|t| t.elapsed() < BALANCE_RETRY_EVERY)
    {
        return Ok(());
    }
    let Some(addr) = core.peers.get(&leader) else {
        return Ok(());
    };
    // The leader's own view: a follower's metrics do not carry the leader's log position.
    let Some(leader_last) = leader_log_index(core, addr, group, leader, m.current_term).await
    else {
        return Ok(());
    };
    let own_last = m.last_log_index.unwrap_or(0);
    let own_applied = m.last_applied.map_or(0, |l| l.index);
    if own_last.saturating_add(BALANCE_MAX_LAG) < leader_last
        || own_applied.saturating_add(BALANCE_MAX_LAG) < leader_last
    {
        tracing::debug!(
            group,
            leader,
            leader_last,
            own_last,
            own_applied,
            "preferred leader still catching up; not campaigning yet"
        );
        return Ok(());
    }
    w.last_attempt = Some(Instant::now());
    tracing::info!(
        group,
        from = leader,
        term = m.current_term,
        own_last,
        leader_last,
        "taking back the leadership of a group this node is the preferred leader of"
    );
    raft.trigger()
        .elect()
        .await
        .map_err(|e| ServiceError::Internal(format!("triggering an election: {e}")))
}

/// The last log index of `group` at `leader`, when it still leads it in `term`; `None` when
/// it cannot tell (unreachable, or leadership moved meanwhile).
async fn leader_log_index(
    core: &Core,
    addr: &str,
    group: u64,
    leader: u64,
    term: u64,
) -> Option<u64> {
    let channel = core.raft.connections().channel(addr).ok()?;
    let mut client = AdminServiceClient::new(channel);
    let call = client.cluster_status(peer_request(ClusterStatusRequest {}));
    let status = tokio::time::timeout(PROBE_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    let g = status.groups.iter().find(|g| g.group_id == group)?;
    (g.leader_id == Some(leader) && g.term == term).then_some(g.commit_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_leaders_cycle_over_the_sorted_peer_ids() {
        let ids = [0, 1, 2];
        let got: Vec<_> = (0..9).map(|g| preferred_leader(&ids, g)).collect();
        assert_eq!(
            got,
            [0, 1, 2, 0, 1, 2, 0, 1, 2].map(Some).to_vec(),
            "group g goes to node g mod 3"
        );
        assert_eq!(preferred_leader(&[3, 7], 1), Some(7));
        assert_eq!(preferred_leader(&[], 1), None);
    }
}
