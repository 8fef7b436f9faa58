//! One shard move: the target copies the shard from its source (`CopyShard`, every block and
//! the whole shard verified, stored durably under a new id), the new location is committed
//! through Raft with the repair's conditional command, then the source copy is deleted. When
//! the source cannot give the shard (down, missing, corrupt), the target rebuilds it from the
//! segment's other shards instead (`ReconstructShard`).
//!
//! Safe to stop at any point: until the commit the old copy is the referenced one and the new
//! one is an unreferenced file (queued for deletion here, else taken by orphan collection);
//! after it the new copy is referenced and verified, and the old one is only deleted then. A
//! segment never has fewer readable shards than before the move.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use dogfs_core::placement::MoveReason;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::{
    CopyShardRequest, DeleteShardRequest, ReconstructShardRequest, ReconstructSource, ShardInfo,
};

use super::survey::SegmentRef;
use crate::catalog::repair::{self as crepair, Rebuilt, StaleRepair};
use crate::catalog::{CatalogError, GcReason};
use crate::registry::{Liveness, NodeRecord};
use crate::service::{Core, ServiceError, now_unix};

/// One planned move.
#[derive(Debug, Clone)]
pub struct Planned {
    pub seg: SegmentRef,
    pub index: u8,
    pub from: u128,
    pub to: u128,
    pub bytes: u64,
    pub reason: MoveReason,
}

/// Failures of one move, named after the failing step.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("segment {segment} of the version has no shard {index} any more")]
    NoShard { segment: u64, index: u8 },
    #[error("chunk server {node:032x} is not registered")]
    UnknownNode { node: u128 },
    #[error("chunk server {address} is busy: {status}")]
    Busy {
        address: String,
        status: tonic::Status,
    },
    #[error("chunk server {address}: CopyShard failed: {status}")]
    Copy {
        address: String,
        status: tonic::Status,
    },
    #[error(
        "chunk server {address}: the source could not give the shard ({copy}), and rebuilding it failed: {status}"
    )]
    Rebuild {
        address: String,
        copy: String,
        status: tonic::Status,
    },
    #[error("chunk server {address}: the copy has size {got}, expected {expected}")]
    Size {
        address: String,
        expected: u64,
        got: u64,
    },
    #[error("the move took {secs} s, past half the orphan grace period; discarded")]
    TooSlow { secs: u64 },
    #[error("recording the move: {0}")]
    Commit(#[from] ServiceError),
    #[error("the move is stale: {0}")]
    Stale(#[from] StaleRepair),
}

impl From<CatalogError> for MoveError {
    fn from(e: CatalogError) -> Self {
        MoveError::Commit(ServiceError::Catalog(e))
    }
}

impl MoveError {
    /// The target was busy (its repair slots full): try again soon, not a failure.
    pub fn busy(&self) -> bool {
        matches!(self, MoveError::Busy { .. })
    }

    /// The target failed (not the source, not a race): plan around it for a while.
    pub fn target_failed(&self) -> bool {
        matches!(
            self,
            MoveError::Copy { .. } | MoveError::Rebuild { .. } | MoveError::Size { .. }
        )
    }
}

/// What a finished move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub bytes: u64,
    /// Rebuilt from the other shards because the source could not give it.
    pub rebuilt: bool,
}

/// Times a commit is rebuilt after losing a race with another change of the same object.
const COMMIT_ATTEMPTS: usize = 5;
/// A copy may take this long plus [`COPY_MIN_RATE`] of shard: a frozen target holds one of the
/// mover's slots no longer than that before the move is planned elsewhere.
const COPY_BASE_TIMEOUT: Duration = Duration::from_secs(15);
const COPY_MIN_RATE: u64 = 1 << 20;
/// A source delete after the commit; GC retries it otherwise.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one move.
pub async fn run(
    core: &Core,
    mv: &Planned,
    nodes: &HashMap<u128, NodeRecord>,
) -> Result<Moved, MoveError> {
    let old = mv.seg.shard(mv.index).cloned().ok_or(MoveError::NoShard {
        segment: mv.seg.segment,
        index: mv.index,
    })?;
    let address = |node: u128| {
        nodes
            .get(&node)
            .map(|n| n.address.clone())
            .ok_or(MoveError::UnknownNode { node })
    };
    let target = address(mv.to)?;
    let source = address(mv.from)?;
    let new_id = ShardId::random();
    let started = Instant::now();
    let (info, rebuilt) = match copy(core, &target, &source, &old, new_id).await {
        Ok(info) => (info, false),
        Err(status) => match status.code() {
            tonic::Code::ResourceExhausted => {
                return Err(MoveError::Busy {
                    address: target,
                    status,
                });
            }
            // The source could not give a good copy (unreachable, missing, corrupt).
            tonic::Code::FailedPrecondition | tonic::Code::DataLoss => {
                let info = rebuild(core, &target, mv, &old, new_id, nodes)
                    .await
                    .map_err(|rebuild| MoveError::Rebuild {
                        address: target.clone(),
                        copy: status.message().to_owned(),
                        status: rebuild,
                    })?;
                (info, true)
            }
            _ => {
                return Err(MoveError::Copy {
                    address: target,
                    status,
                });
            }
        },
    };
    let discard = || crate::repair::discard(core, mv.seg.partition, new_id.as_u128(), mv.to);
    if info.size != old.size {
        discard().await;
        return Err(MoveError::Size {
            address: target,
            expected: old.size,
            got: info.size,
        });
    }
    let secs = started.elapsed().as_secs();
    // Orphan collection may take an unreferenced shard once it is older than the grace
    // period: a copy that slow is not recorded (as for repairs, docs/repair.md).
    if secs.saturating_mul(2) >= core.cfg.orphan_grace_secs {
        discard().await;
        return Err(MoveError::TooSlow { secs });
    }
    let new = Rebuilt {
        shard_id: new_id.as_u128(),
        node: mv.to,
        crc32c: info.crc32c,
        size: info.size,
    };
    if let Err(e) = record(core, mv, old.shard_id, new).await {
        // A commit whose answer was lost may have been applied: then the new copy is the
        // referenced one and must stay (orphan collection checks the index before deleting).
        if !matches!(&e, MoveError::Commit(c) if crate::repair::maybe_applied(c)) {
            discard().await;
        }
        return Err(e);
    }
    tracing::info!(
        shard_index = mv.index,
        from = %source,
        to = %target,
        bytes = info.size,
        rebuilt,
        millis = started.elapsed().as_millis() as u64,
        "shard moved"
    );
    // The commit queued the old copy for deletion; deleting it now frees the space at once
    // (a drained server empties as it goes, usage figures follow the moves). GC retries it
    // when this fails.
    if !rebuilt {
        delete_source(core, &source, old.shard_id).await;
    }
    Ok(Moved {
        bytes: info.size,
        rebuilt,
    })
}

fn copy_timeout(shard_bytes: u64) -> Duration {
    COPY_BASE_TIMEOUT + Duration::from_secs(shard_bytes / COPY_MIN_RATE)
}

async fn client(
    core: &Core,
    address: &str,
) -> Result<ChunkServiceClient<tonic::transport::Channel>, tonic::Status> {
    let channel = core
        .raft
        .connections()
        .channel(address)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(ChunkServiceClient::new(channel))
}

async fn copy(
    core: &Core,
    target: &str,
    source: &str,
    old: &crate::catalog::ShardRecord,
    new_id: ShardId,
) -> Result<ShardInfo, tonic::Status> {
    let mut request = tonic::Request::new(CopyShardRequest {
        shard_id: format!("{:032x}", old.shard_id),
        source_address: source.to_owned(),
        expected_crc32c: old.crc32c,
        expected_size: old.size,
        target_shard_id: new_id.to_string(),
    });
    request.set_timeout(copy_timeout(old.size));
    client(core, target)
        .await?
        .copy_shard(request)
        .await?
        .into_inner()
        .shard
        .ok_or_else(|| tonic::Status::internal("CopyShard answered without a shard"))
}

/// The fallback: rebuild the shard on the target from the segment's other shards on live
/// servers.
async fn rebuild(
    core: &Core,
    target: &str,
    mv: &Planned,
    old: &crate::catalog::ShardRecord,
    new_id: ShardId,
    nodes: &HashMap<u128, NodeRecord>,
) -> Result<ShardInfo, tonic::Status> {
    let sources: Vec<ReconstructSource> =
        mv.seg
            .shards
            .iter()
            .filter(|s| s.index != old.index && !s.missing)
            .filter_map(|s| {
                let n = nodes.get(&s.node)?;
                (n.liveness != Liveness::Down && n.admin != crate::registry::AdminState::Removed)
                    .then(|| ReconstructSource {
                        index: u32::from(s.index),
                        shard_id: format!("{:032x}", s.shard_id),
                        address: n.address.clone(),
                        crc32c: s.crc32c,
                    })
            })
            .collect();
    let scheme = &mv.seg.scheme;
    let req = ReconstructShardRequest {
        shard_id: new_id.to_string(),
        index: u32::from(old.index),
        codec: scheme.codec.clone(),
        k: u32::from(scheme.k),
        m: u32::from(scheme.m),
        cell_size: u64::from(scheme.cell_size),
        segment_len: mv.seg.data_len,
        expected_crc32c: Some(old.crc32c),
        sources,
    };
    crate::repair::reconstruct(core, target, req, old.size).await
}

/// Commits the new location, rebuilding the command when it lost a race with another change
/// of the same object that left this slot alone. Through whichever node leads the partition:
/// the mover runs on the system group's leader.
async fn record(core: &Core, mv: &Planned, old_shard: u128, new: Rebuilt) -> Result<(), MoveError> {
    let (bucket, key) = mv.seg.names()?;
    let p = mv.seg.partition;
    for _ in 0..COMMIT_ATTEMPTS {
        let prepared = crepair::commit(
            &core.reader(p)?,
            &bucket,
            &key,
            mv.seg.version_id,
            mv.seg.segment,
            mv.index,
            old_shard,
            new,
            GcReason::Moved,
            now_unix(),
        )??;
        match core.propose_anywhere(p, &prepared).await {
            Ok(_) => return Ok(()),
            Err(ServiceError::Catalog(CatalogError::Conflict { .. })) => {
                // The local replica may be a step behind the leader that refused the command.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(MoveError::Commit(ServiceError::Catalog(
        CatalogError::Conflict {
            operation: "recording a moved shard",
        },
    )))
}

async fn delete_source(core: &Core, source: &str, shard: u128) {
    let mut request = tonic::Request::new(DeleteShardRequest {
        shard_id: format!("{shard:032x}"),
        // Metadata nodes are components: their certificate stands in for a grant.
        grant: Default::default(),
    });
    request.set_timeout(DELETE_TIMEOUT);
    let result = match client(core, source).await {
        Ok(mut c) => c.delete_shard(request).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::debug!(shard = %format_args!("{shard:032x}"), source, error = %e, "deleting a moved shard's old copy failed; GC retries it");
    }
}
