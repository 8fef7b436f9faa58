//! Reports of corrupt shards: from chunk servers' heartbeats (`on_corrupt_shards`) and from
//! clients' `ReportShards` (`on_client_report`). Each shard still referenced is queued for
//! repair in its partition; the scheduler takes it from there.

use std::sync::Arc;

use dogfs_core::ids::ShardId;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_proto::meta as pb;

use crate::catalog::CatalogError;
use crate::catalog::index::{self, RefKind};
use crate::catalog::repair::{self as crepair, RepairReason};
use crate::registry;
use crate::service::{Core, ServiceError, now_unix};

/// Corrupt shards a chunk server reported in its heartbeat (on the system group's leader):
/// each one referenced by a current version is queued for repair in its partition.
pub(crate) async fn on_corrupt_shards(core: Arc<Core>, node: u128, shard_ids: Vec<String>) {
    for raw in shard_ids.iter().take(MAX_CORRUPT_PER_HEARTBEAT) {
        let Ok(shard) = raw.parse::<ShardId>().map(ShardId::as_u128) else {
            tracing::debug!(shard = %raw, "heartbeat named an invalid shard id; ignored");
            continue;
        };
        if !core.repair.fresh_report(node, shard) {
            continue;
        }
        if let Err(e) = queue_corrupt(&core, node, shard).await {
            tracing::debug!(shard = %raw, error = %e, "queueing a corrupt shard for repair failed; retried on a later heartbeat");
        }
    }
}

/// At most this many corrupt shards are taken from one heartbeat.
const MAX_CORRUPT_PER_HEARTBEAT: usize = 1000;

async fn queue_corrupt(core: &Core, node: u128, shard: u128) -> Result<(), ServiceError> {
    for p in 1..=core.partitions() {
        // The local replica finds the partition; the command's conditions make a stale read
        // harmless (it fails and the next heartbeat tries again).
        let reader = core.reader(p)?;
        let Some(r) = index::get(&reader, node, shard)? else {
            continue;
        };
        if r.kind != RefKind::Object {
            return Ok(());
        }
        let (Ok(bucket), Ok(key)) = (BucketName::parse(&r.bucket), ObjectKey::parse(&r.key)) else {
            return Ok(());
        };
        if let Some(prepared) = crepair::queue(
            &reader,
            &bucket,
            &key,
            r.version_id,
            shard,
            RepairReason::Corrupt,
            now_unix(),
        )? {
            core.propose_anywhere(p, &prepared).await?;
            core.metrics.repair_reports.inc();
            tracing::info!(partition = p, shard = %format_args!("{shard:032x}"), node = %registry::format_node_id(node), "corrupt shard queued for repair");
        }
        return Ok(());
    }
    Ok(())
}

/// ReportShards on the partition's leader: queues the shards a reader found corrupt; returns
/// how many were newly queued.
pub(crate) async fn on_client_report(
    core: &Core,
    p: u64,
    bucket: &BucketName,
    key: &ObjectKey,
    version_id: u128,
    problems: &[pb::ShardProblem],
) -> Result<u32, ServiceError> {
    core.read_barrier(p).await?;
    let mut queued = 0;
    for problem in problems {
        if !problem.corrupt {
            // Timeouts and transport failures are the registry's business (liveness).
            continue;
        }
        let Ok(shard) = problem.shard_id.parse::<ShardId>().map(ShardId::as_u128) else {
            return Err(ServiceError::Invalid(format!(
                "report: invalid shard id {:?}",
                problem.shard_id.chars().take(80).collect::<String>()
            )));
        };
        let reader = core.reader(p)?;
        if let Some(prepared) = crepair::queue(
            &reader,
            bucket,
            key,
            version_id,
            shard,
            RepairReason::Reported,
            now_unix(),
        )? {
            match core.propose(p, &prepared).await {
                Ok(_) => {
                    queued += 1;
                    core.metrics.repair_reports.inc();
                    tracing::info!(shard = %problem.shard_id, reason = %problem.reason, "reported shard queued for repair");
                }
                // Queued by a concurrent report, or the object changed: nothing to add.
                Err(ServiceError::Catalog(CatalogError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(queued)
}
