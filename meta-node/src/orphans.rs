//! Orphan collection (DESIGN §7, issue 12 item 5): shards a chunk server holds that no
//! committed version and no pending upload references, older than `--orphan-grace-secs`, are
//! deleted — never a referenced shard, whatever the timing.
//!
//! Where orphans come from: a client that writes a shard after its upload was aborted or
//! expired (and its targets collected), a shard reported missing at commit whose write did land
//! (the version records it under the index's `UNPLACED`, not on that server), a rebuilt shard
//! whose repair failed to record it and whose discard was lost, files left by a crash between a
//! deletion-queue entry being dropped and the delete reaching the server, a shard written
//! directly to a chunk server.
//!
//! # How
//!
//! On the system group's leader, every `--orphan-interval-ms`: for each chunk server the
//! registry shows up, suspect or draining, page through its inventory (`ListShards`), keep the
//! shards with `created_unix + grace <= now`, and ask every partition (`CheckShardRefs`: a
//! linearizable point read of the shard index, `catalog::index`, on the partition's leader —
//! locally when this node leads it) whether it references each one **on that server**. A shard
//! no partition references is queued for deletion with `catalog::repair::discard(..,
//! GcReason::Unreferenced)` in partition `1 + shard mod P`; the GC of that partition
//! (`tasks::collect`) deletes it like any other queued shard. When any partition cannot answer
//! (no leader, timeout, error), the page's shards are skipped this round. At most
//! [`MAX_LISTED_PER_NODE`] shards are listed per server per round; the position is kept between
//! rounds (in memory: a new leader starts from the beginning, which is only slower).
//!
//! Queueing rather than deleting directly: the decision is recorded through Raft, so it
//! survives a leader change, and the deletion takes the one path every deletion takes (the
//! server's address from the registry, retries while it is unreachable, removed servers
//! dropped, `gc_shards_deleted`), bounded by `--gc-batch` per partition per pass. The delay
//! between the decision and the deletion does not weaken the safety argument below: once no
//! reference exists at the check, none can appear later.
//!
//! # Why a referenced shard is never deleted
//!
//! A shard is deleted only if, at the check (time `t_C`), no partition references it on that
//! server, and it was listed at `t_L < t_C` with `created ≤ t_L − grace`. References are made
//! in exactly three ways:
//!
//! 1. **Upload targets** (BeginPut, ReplaceTarget) are indexed by the entry that creates them,
//!    before the leader hands the target to the client, so a reference always exists before
//!    the shard's first byte is written. While the upload is pending the check sees it, however
//!    old the shard is (a slow client, a long upload TTL). New targets are fresh random 128-bit
//!    ids drawn by the leader, never the id of a file already on a server.
//! 2. **CommitObject** turns an upload's references into the version's in one entry of the same
//!    partition: there is no moment when the shard is referenced by neither.
//! 3. **A repair's commit** references a rebuilt shard written *before* it. The repair refuses
//!    to record a rebuild that ran for half the grace period or more (`crate::repair`), so a
//!    commit referencing a file created at `c` happens before `c + grace/2 < c + grace ≤ t_L <
//!    t_C`: it is visible to the check, which reads every partition after a read barrier. That
//!    is why the index is read *after* the inventory listing: the listing proves the file's age,
//!    and only a check later than that proves no repair can still reference it.
//!
//! So a shard unreferenced at `t_C` stays unreferenced, and deleting it later is safe. The
//! argument assumes that the clocks of chunk servers (which stamp `created_unix`) and metadata
//! nodes differ by less than grace/2, and that the grace period is longer than any repair (the
//! default, an hour, is both). A chunk server that reports no creation time (0 or negative) is
//! never collected from.
//!
//! Shards already queued for deletion are unreferenced too and are found again until the GC
//! deleted them; queueing one twice is harmless (a second delete finds nothing).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dogfs_core::ids::{IdError, ShardId};
use dogfs_core::placement::NodeState;
use dogfs_proto::chunk::ListShardsRequest;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::meta::CheckShardRefsRequest;
use dogfs_proto::meta::meta_internal_client::MetaInternalClient;
use tokio::sync::watch;
use tracing::Instrument;

use crate::catalog::{CatalogError, GcReason, Prepared, repair};
use crate::raft::TransportError;
use crate::registry::{self, NodeRecord};
use crate::service::internal::{self, MAX_CHECK_SHARDS};
use crate::service::{Core, ServiceError, now_unix, peer_request};

/// Shards per `ListShards` page (and so per reference check).
const LIST_PAGE: u32 = 1000;
/// Most shards listed per chunk server per round; the next round continues from there.
pub const MAX_LISTED_PER_NODE: usize = 50_000;
/// Timeout of one `ListShards` page.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step of a round failed. A failed server or page is retried next round.
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    #[error("reading the chunk-server registry: {0}")]
    Registry(#[source] ServiceError),
    #[error("connecting to chunk server {node} at {address}: {source}")]
    Connect {
        node: String,
        address: String,
        source: TransportError,
    },
    #[error("listing the shards of chunk server {node} at {address}: {status}")]
    ListShards {
        node: String,
        address: String,
        status: tonic::Status,
    },
    #[error("building the deletion of {count} orphans: {source}")]
    Build { count: usize, source: CatalogError },
}

/// What one round did, for the log.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    servers: usize,
    listed: usize,
    /// Past the grace period, checked against every partition.
    checked: usize,
    /// Not checked: some partition could not answer.
    skipped: usize,
    found: usize,
    queued: usize,
}

/// The collector: a round every `orphan_interval` while this node leads the system group.
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(core.cfg.orphan_interval_ms.max(10));
    // Per chunk server, where the next round continues its inventory.
    let mut cursors: HashMap<u128, String> = HashMap::new();
    let mut round_no = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !core.is_leader(0) {
            cursors.clear();
            continue;
        }
        round_no += 1;
        let span = tracing::info_span!(
            "orphan_scan",
            round = round_no,
            grace_secs = core.cfg.orphan_grace_secs
        );
        match round(&core, &mut cursors).instrument(span.clone()).await {
            Ok(t) if t.found > 0 || t.skipped > 0 => span.in_scope(|| {
                tracing::info!(
                    servers = t.servers,
                    listed = t.listed,
                    checked = t.checked,
                    skipped = t.skipped,
                    found = t.found,
                    queued = t.queued,
                    "orphan scan round"
                );
            }),
            Ok(t) => span.in_scope(|| {
                tracing::debug!(
                    servers = t.servers,
                    listed = t.listed,
                    checked = t.checked,
                    "orphan scan round: nothing found"
                );
            }),
            Err(e) => span.in_scope(|| tracing::debug!(error = %e, "orphan scan round failed")),
        }
    }
}

async fn round(core: &Core, cursors: &mut HashMap<u128, String>) -> Result<Tally, OrphanError> {
    // The leader's own view, not a linearizable read: a stale view only scans a server that
    // just went down (its listing fails) or skips one that just came up (next round).
    let nodes = core
        .reader(0)
        .and_then(|r| Ok(registry::list_nodes(&r)?))
        .map_err(OrphanError::Registry)?;
    let mut tally = Tally::default();
    for node in nodes.iter().filter(|n| {
        matches!(
            n.state(),
            NodeState::Up | NodeState::Suspect | NodeState::Draining
        )
    }) {
        tally.servers += 1;
        let cursor = cursors.entry(node.id).or_default();
        let span = tracing::info_span!(
            "orphan_server",
            node = %registry::format_node_id(node.id),
            address = %node.address,
            from = %cursor
        );
        if let Err(e) = scan_server(core, node, cursor, &mut tally)
            .instrument(span.clone())
            .await
        {
            span.in_scope(|| {
                tracing::debug!(error = %e, "orphan scan of a chunk server failed; retried next round");
            });
        }
    }
    cursors.retain(|id, _| nodes.iter().any(|n| n.id == *id));
    Ok(tally)
}

/// Lists up to [`MAX_LISTED_PER_NODE`] shards of `node` from `cursor`, page by page, and
/// checks each page's old-enough shards right after listing it.
async fn scan_server(
    core: &Core,
    node: &NodeRecord,
    cursor: &mut String,
    tally: &mut Tally,
) -> Result<(), OrphanError> {
    let name = registry::format_node_id(node.id);
    let channel = core
        .raft
        .connections()
        .channel(&node.address)
        .map_err(|source| OrphanError::Connect {
            node: name.clone(),
            address: node.address.clone(),
            source,
        })?;
    let mut client = ChunkServiceClient::new(channel);
    let grace = core.cfg.orphan_grace_secs;
    let mut listed = 0usize;
    while listed < MAX_LISTED_PER_NODE {
        let mut req = tonic::Request::new(ListShardsRequest {
            start_after: cursor.clone(),
            limit: LIST_PAGE,
        });
        req.set_timeout(LIST_TIMEOUT);
        let page = client
            .list_shards(req)
            .await
            .map_err(|status| OrphanError::ListShards {
                node: name.clone(),
                address: node.address.clone(),
                status,
            })?
            .into_inner();
        listed += page.shards.len();
        tally.listed += page.shards.len();
        // Read after the listing: the age is judged no earlier than the file was seen.
        let now = now_unix();
        let old: Vec<u128> = page
            .shards
            .iter()
            .filter(|s| old_enough(s.created_unix, grace, now))
            .filter_map(|s| match s.shard_id.parse::<ShardId>() {
                Ok(id) => Some(id.as_u128()),
                Err(e) => {
                    log_bad_id(&e);
                    None
                }
            })
            .collect();
        if !old.is_empty() {
            check_and_queue(core, node.id, &old, tally).await?;
        }
        if page.next_start_after.is_empty() {
            // The whole inventory was seen; the next round starts over.
            cursor.clear();
            break;
        }
        *cursor = page.next_start_after;
    }
    Ok(())
}

fn log_bad_id(e: &IdError) {
    tracing::warn!(error = %e, "chunk server listed an invalid shard id; skipped");
}

/// Past the grace period by the metadata node's clock. A missing creation time is never old.
fn old_enough(created_unix: i64, grace_secs: u64, now_unix: u64) -> bool {
    u64::try_from(created_unix)
        .ok()
        .filter(|c| *c > 0)
        .is_some_and(|c| c.saturating_add(grace_secs) <= now_unix)
}

/// Checks `shards` (listed on `node`) against every partition and queues the unreferenced
/// ones for deletion. Nothing is queued when any partition did not answer.
async fn check_and_queue(
    core: &Core,
    node: u128,
    shards: &[u128],
    tally: &mut Tally,
) -> Result<(), OrphanError> {
    let Some(referenced) = referenced_anywhere(core, node, shards).await else {
        tally.skipped += shards.len();
        return Ok(());
    };
    tally.checked += shards.len();
    let partitions = core.partitions().max(1);
    let mut by_partition: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
    for (shard, _) in shards.iter().zip(&referenced).filter(|(_, r)| !**r) {
        // Spread over the partitions, so every partition's GC shares the deletions.
        let p = 1 + u64::try_from(shard % u128::from(partitions)).unwrap_or(0);
        by_partition.entry(p).or_default().push(*shard);
    }
    let found: usize = by_partition.values().map(Vec::len).sum();
    tally.found += found;
    core.metrics.orphans_found.inc_by(found as u64);
    let now = now_unix();
    for (p, orphans) in by_partition {
        let Some(prepared) =
            discard_all(&orphans, node, now).map_err(|source| OrphanError::Build {
                count: orphans.len(),
                source,
            })?
        else {
            continue;
        };
        match core.propose_anywhere(p, &prepared).await {
            Ok(_) => {
                tally.queued += orphans.len();
                core.metrics.orphans_deleted.inc_by(orphans.len() as u64);
                for s in &orphans {
                    tracing::debug!(shard = %ShardId::from_u128(*s), partition = p, "orphan shard queued for deletion");
                }
            }
            // Found again next round.
            Err(e) => {
                tracing::debug!(partition = p, count = orphans.len(), error = %e, "queueing orphans for deletion failed");
            }
        }
    }
    Ok(())
}

/// One command queueing every shard of `shards` on `node` (unconditional writes, so merging
/// the single-shard commands changes nothing but the entry count); `None` for no shards.
fn discard_all(shards: &[u128], node: u128, now: u64) -> Result<Option<Prepared>, CatalogError> {
    let mut all: Option<Prepared> = None;
    for s in shards {
        let p = repair::discard(*s, node, GcReason::Unreferenced, now)?;
        match &mut all {
            None => all = Some(p),
            Some(a) => a.command.writes.extend(p.command.writes),
        }
    }
    Ok(all)
}

/// Per shard, whether any partition references it on `node`; `None` when some partition did
/// not answer (then nothing may be concluded).
async fn referenced_anywhere(core: &Core, node: u128, shards: &[u128]) -> Option<Vec<bool>> {
    let mut any = vec![false; shards.len()];
    for chunk_start in (0..shards.len()).step_by(MAX_CHECK_SHARDS) {
        let end = (chunk_start + MAX_CHECK_SHARDS).min(shards.len());
        let part = shards.get(chunk_start..end)?;
        let answers = futures::future::join_all(
            (1..=core.partitions()).map(|p| check_partition(core, p, node, part)),
        )
        .await;
        for (p, answer) in (1u64..).zip(answers) {
            match answer {
                Ok(refs) if refs.len() == part.len() => {
                    for (a, r) in any.get_mut(chunk_start..end)?.iter_mut().zip(refs) {
                        *a |= r;
                    }
                }
                Ok(refs) => {
                    tracing::warn!(
                        partition = p,
                        asked = part.len(),
                        answered = refs.len(),
                        "CheckShardRefs answered the wrong number of shards; skipping"
                    );
                    return None;
                }
                Err(e) => {
                    tracing::debug!(partition = p, error = %e, "partition could not check shard references; skipping these shards this round");
                    return None;
                }
            }
        }
    }
    Some(any)
}

/// One partition's answer: read here when this node leads it (the RPC's own function), else
/// asked of its leader.
async fn check_partition(
    core: &Core,
    p: u64,
    node: u128,
    shards: &[u128],
) -> Result<Vec<bool>, ServiceError> {
    if core.is_leader(p) {
        return internal::check_shard_refs(core, p, node, shards.to_vec()).await;
    }
    let channel = core.leader_channel(p)?;
    let req = CheckShardRefsRequest {
        group_id: p,
        node_id: registry::format_node_id(node),
        shard_ids: shards
            .iter()
            .map(|s| ShardId::from_u128(*s).to_string())
            .collect(),
    };
    let reply = MetaInternalClient::new(channel)
        .check_shard_refs(peer_request(req))
        .await
        .map_err(ServiceError::Remote)?;
    Ok(reply.into_inner().referenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_judged_conservatively() {
        assert!(old_enough(100, 10, 110));
        assert!(!old_enough(101, 10, 110));
        // Unknown creation times are never old.
        assert!(!old_enough(0, 0, 110));
        assert!(!old_enough(-5, 0, 110));
        // A huge grace never wraps around.
        assert!(!old_enough(100, u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn orphans_are_queued_in_one_command() {
        let p = discard_all(&[1, 2, 3], 9, 50).unwrap().unwrap();
        assert_eq!(p.command.writes.len(), 3);
        assert!(p.command.conditions.is_empty());
        assert!(discard_all(&[], 9, 50).unwrap().is_none());
    }
}
