//! Repair figures for `ClusterStatus`: this node's counters, the redundancy survey of every
//! partition, and the sum over the metadata nodes that answer.

use std::collections::HashMap;
use std::time::Duration;

use dogfs_proto::meta as pb;

use super::node_health;
use crate::catalog::repair as crepair;
use crate::service::{Core, ServiceError, now_unix};

/// This node's repair figures and the settings, without a survey: what a peer's
/// `ClusterStatus` answers (peers probe it every second for leader spreading).
pub(crate) fn counters(core: &Core) -> pb::RepairStatus {
    let (shards, bytes, failures, rate) = core.repair.totals();
    pb::RepairStatus {
        repaired_shards: shards,
        repaired_bytes: bytes,
        repair_bytes_per_sec: rate,
        repair_failures: failures,
        orphans_deleted: core.metrics.orphans_deleted.get(),
        min_write_shards: u32::try_from(core.cfg.write_quorum(&core.scheme)).unwrap_or(u32::MAX),
        repair_after_secs: core.cfg.repair_after_secs,
        ..Default::default()
    }
}

/// Redundancy and repair for `ClusterStatus`: the survey of this node's replicas of every
/// partition, and the repair figures of every metadata node that answers within
/// [`PEER_FIGURES_TIMEOUT`] (each counts the partitions it leads).
pub(crate) async fn status(core: &Core) -> Result<pb::RepairStatus, ServiceError> {
    let mut out = survey_all(core)?;
    let own = counters(core);
    let peers = core
        .peers
        .iter()
        .filter(|(id, _)| **id != core.node_id)
        .map(|(_, addr)| async move {
            let channel = core.raft.connections().channel(addr).ok()?;
            let mut client =
                dogfs_proto::meta::admin_service_client::AdminServiceClient::new(channel);
            let call =
                client.cluster_status(crate::service::peer_request(pb::ClusterStatusRequest {}));
            tokio::time::timeout(PEER_FIGURES_TIMEOUT, call)
                .await
                .ok()?
                .ok()?
                .into_inner()
                .repair
        });
    let mut all = futures::future::join_all(peers).await;
    all.push(Some(own));
    for r in all.into_iter().flatten() {
        out.repaired_shards += r.repaired_shards;
        out.repaired_bytes += r.repaired_bytes;
        out.repair_bytes_per_sec += r.repair_bytes_per_sec;
        out.repair_failures += r.repair_failures;
        out.orphans_deleted += r.orphans_deleted;
    }
    Ok(out)
}

/// How long `status` waits for a peer's repair figures.
const PEER_FIGURES_TIMEOUT: Duration = Duration::from_millis(500);

fn survey_all(core: &Core) -> Result<pb::RepairStatus, ServiceError> {
    let health = node_health(core)?;
    let now = now_unix();
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    let (mut unreadable, mut backlog, mut waiting) = (0u64, 0u64, 0u64);
    for p in 1..=core.partitions() {
        let survey = crepair::survey(&core.reader(p)?, &health, now, core.cfg.repair_after_secs)?;
        for seg in survey.segments {
            let total = u32::try_from(seg.shards.len()).unwrap_or(u32::MAX);
            let left = u32::try_from(seg.shards_left()).unwrap_or(u32::MAX);
            *counts.entry((left, total)).or_default() += 1;
            if seg.unreadable() {
                unreadable += 1;
            } else if seg.due() {
                backlog += 1;
            } else {
                waiting += 1;
            }
        }
    }
    let mut degraded: Vec<pb::RedundancyCount> = counts
        .into_iter()
        .map(|((left, total), segments)| pb::RedundancyCount {
            shards_left: left,
            shards_total: total,
            segments,
        })
        .collect();
    degraded.sort_by_key(|c| (c.shards_total, c.shards_left));
    Ok(pb::RepairStatus {
        degraded,
        unreadable_segments: unreadable,
        backlog_segments: backlog,
        waiting_segments: waiting,
        min_write_shards: u32::try_from(core.cfg.write_quorum(&core.scheme)).unwrap_or(u32::MAX),
        repair_after_secs: core.cfg.repair_after_secs,
        ..Default::default()
    })
}
