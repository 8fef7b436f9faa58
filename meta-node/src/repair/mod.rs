//! Background repair (DESIGN §7, `docs/repair.md`): the I/O shell around
//! [`catalog::repair`](crate::catalog::repair).
//!
//! Every `repair_interval`, each partition's leader surveys the segments short of shards (the
//! shard index ranges of unplaced shards and of down or removed servers, plus the queue of
//! corrupt reports), most urgent first, and runs up to `repair_concurrency` rebuilds at once
//! on this node. A rebuild picks a target server holding no shard of the segment (placement's
//! `replacement`, so zones stay spread), asks it to `ReconstructShard` from the segment's
//! readable shards, and records the new location through Raft with a conditional command
//! (the version must still exist and still reference the old location). Nothing is kept in
//! memory that a new leader would need: it surveys the same durable facts and carries on.
//!
//! The submodules: `reports` queues the corrupt shards that chunk servers (heartbeats) and
//! clients (`ReportShards`) report; `status` answers the repair part of `ClusterStatus`. This
//! file holds the node's repair state and the scheduler with its rebuilds.

mod reports;
mod status;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::{self, NodeId};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::{ReconstructShardRequest, ReconstructSource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use crate::catalog::index;
use crate::catalog::repair::{self as crepair, DegradedSegment, NodeHealth};
use crate::catalog::{CatalogError, GcReason};
use crate::registry;
use crate::service::{Core, ServiceError, now_unix};

pub(crate) use reports::{on_client_report, on_corrupt_shards};
pub(crate) use status::{counters, status};

/// Failures of one rebuild, named after the failing step.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no target for the rebuild: {0}")]
    Placement(#[from] placement::PlacementError),
    #[error("the segment has {left} readable shards, {k} are needed to rebuild one")]
    TooFewSources { left: usize, k: usize },
    #[error("chunk server {address}: ReconstructShard failed: {status}")]
    Reconstruct {
        address: String,
        status: tonic::Status,
    },
    #[error("chunk server {address}: rebuilt shard has size {got}, expected {expected}")]
    RebuiltSize {
        address: String,
        expected: u64,
        got: u64,
    },
    #[error("the rebuild took {secs} s, past half the orphan grace period; discarded")]
    TooSlow { secs: u64 },
    #[error("recording the rebuilt shard: {0}")]
    Commit(#[from] ServiceError),
    #[error("the repair is stale: {0}")]
    Stale(#[from] crepair::StaleRepair),
}

impl RepairError {
    /// The commit may have been applied although it answered an error (the reply was lost on
    /// the way back): the rebuilt shard must then not be queued for deletion — orphan
    /// collection, which checks the index, takes it if it is in fact unreferenced.
    fn maybe_recorded(&self) -> bool {
        matches!(self, RepairError::Commit(e) if maybe_applied(e))
    }
}

/// Whether a failed proposal may still have been applied: not when the state machine refused
/// it (a failed condition) or it was never built, but when the answer was lost — including a
/// leader that stepped down after appending it (the next leader may commit the entry).
pub(crate) fn maybe_applied(e: &ServiceError) -> bool {
    !matches!(e, ServiceError::Catalog(_) | ServiceError::Invalid(_))
}

impl From<CatalogError> for RepairError {
    fn from(e: CatalogError) -> Self {
        RepairError::Commit(ServiceError::Catalog(e))
    }
}

/// What one node's repairs have done, for `ClusterStatus` and logs.
#[derive(Debug)]
pub(crate) struct RepairState {
    permits: Arc<Semaphore>,
    /// Woken when a rebuild ends, so the next one starts at once rather than a whole
    /// `repair_interval` later (a lost server's backlog is worked through back to back).
    done: tokio::sync::Notify,
    /// (version, segment) being rebuilt now, so a pass never starts a second rebuild of one.
    in_flight: Mutex<HashSet<(u128, u64)>>,
    /// Segments whose last rebuild failed: not before this time, and how many failures in a
    /// row (the wait doubles up to [`MAX_BACKOFF`]), so a segment that cannot be rebuilt now
    /// (no target, sources unreachable) does not spin.
    backoff: Mutex<HashMap<(u128, u64), (Instant, u32)>>,
    figures: Mutex<Figures>,
    /// (node, shard) corrupt reports already queued recently: heartbeats repeat them until
    /// the shard is gone, and each needs only one queue entry.
    reported: Mutex<HashMap<(u128, u128), Instant>>,
}

#[derive(Debug, Default)]
struct Figures {
    shards: u64,
    bytes: u64,
    failures: u64,
    /// (when, bytes) of recent commits, for the rate.
    recent: VecDeque<(Instant, u64)>,
}

/// The window of the repair rate.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A corrupt report is queued again at most this often per shard.
const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// A rebuild may take at least this long, more for big shards (see [`rebuild_timeout`]).
const MIN_REBUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait before a failed segment is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Target servers tried per rebuild before the segment waits for the next pass.
const TARGET_ATTEMPTS: usize = 3;
/// Times a commit is rebuilt after losing a race with another change of the same object
/// (e.g. a rebuild of another segment of it).
const COMMIT_ATTEMPTS: usize = 5;

impl RepairState {
    pub(crate) fn new(concurrency: usize) -> RepairState {
        RepairState {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            done: tokio::sync::Notify::new(),
            in_flight: Mutex::default(),
            backoff: Mutex::default(),
            figures: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_success(&self, bytes: u64) {
        let mut f = self.figures();
        f.shards += 1;
        f.bytes += bytes;
        let now = Instant::now();
        f.recent.push_back((now, bytes));
        while f
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            f.recent.pop_front();
        }
    }

    fn record_failure(&self) {
        self.figures().failures += 1;
    }

    /// (shards, bytes, failures, bytes per second over the last minute).
    pub(crate) fn totals(&self) -> (u64, u64, u64, f64) {
        let f = self.figures();
        let now = Instant::now();
        let recent: u64 = f
            .recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, b)| *b)
            .sum();
        let span = f
            .recent
            .front()
            .map_or(RATE_WINDOW, |(t, _)| now.duration_since(*t))
            .clamp(Duration::from_secs(1), RATE_WINDOW);
        (
            f.shards,
            f.bytes,
            f.failures,
            recent as f64 / span.as_secs_f64(),
        )
    }

    fn backing_off(&self, id: (u128, u64)) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn settle(&self, id: (u128, u64), ok: bool, base: Duration) {
        let mut b = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget segments that were repaired by someone else, deleted, or replaced.
        let now = Instant::now();
        b.retain(|_, (until, _)| now < *until + MAX_BACKOFF);
        if ok {
            b.remove(&id);
            return;
        }
        let failures = b.get(&id).map_or(0, |(_, n)| *n).saturating_add(1);
        let wait = base
            .saturating_mul(1u32 << failures.min(10))
            .min(MAX_BACKOFF);
        b.insert(id, (Instant::now() + wait, failures));
    }

    fn claim(&self, id: (u128, u64)) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    fn release(&self, id: (u128, u64)) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// True when the report should be queued now (not queued within the last minute).
    fn fresh_report(&self, node: u128, shard: u128) -> bool {
        let mut r = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        r.retain(|_, t| now.duration_since(*t) < REPORT_AGAIN_AFTER);
        match r.entry((node, shard)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                true
            }
        }
    }
}

/// The registry's view for the survey: every node's state and down-since time.
pub(crate) fn node_health(core: &Core) -> Result<HashMap<u128, NodeHealth>, ServiceError> {
    let system = core.reader(0)?;
    let down = registry::down_since_all(&system)?;
    Ok(registry::list_nodes(&system)?
        .iter()
        .map(|n| {
            (
                n.id,
                NodeHealth {
                    state: n.state(),
                    down_since_unix: down.get(&n.id).copied().unwrap_or(0),
                },
            )
        })
        .collect())
}

/// The scheduler: a pass every `repair_interval` over the partitions this node leads.
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(core.cfg.repair_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = core.repair.done.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = pass(&core).await {
            tracing::debug!(error = %e, "repair pass failed");
        }
    }
}

async fn pass(core: &Arc<Core>) -> Result<(), ServiceError> {
    let led: Vec<u64> = (1..=core.partitions())
        .filter(|p| core.is_leader(*p))
        .collect();
    if led.is_empty() {
        core.metrics.repair_backlog.set(0);
        core.metrics.repair_waiting.set(0);
        core.metrics.repair_unreadable.set(0);
        return Ok(());
    }
    let health = node_health(core)?;
    let now = now_unix();
    let (mut backlog, mut waiting, mut unreadable) = (0i64, 0i64, 0i64);
    let mut due: Vec<(u64, DegradedSegment)> = Vec::new();
    for p in led {
        let survey = crepair::survey(&core.reader(p)?, &health, now, core.cfg.repair_after_secs)?;
        for (version, segment, index) in &survey.stale {
            let _ = core
                .propose(p, &crepair::drop_entry(*version, *segment, *index))
                .await;
        }
        for seg in survey.segments {
            if seg.unreadable() {
                unreadable += 1;
            } else if seg.due() {
                backlog += 1;
                due.push((p, seg));
            } else {
                waiting += 1;
            }
        }
    }
    core.metrics.repair_backlog.set(backlog);
    core.metrics.repair_waiting.set(waiting);
    core.metrics.repair_unreadable.set(unreadable);
    // Most urgent first over every partition: fewest readable shards.
    due.sort_by_key(|(_, s)| s.shards_left());
    for (p, seg) in due {
        let id = (seg.version_id, seg.segment);
        if core.repair.backing_off(id) {
            continue;
        }
        let Ok(permit) = Arc::clone(&core.repair.permits).try_acquire_owned() else {
            break;
        };
        if !core.repair.claim(id) {
            continue;
        }
        let core = Arc::clone(core);
        let span = tracing::info_span!(
            "repair",
            partition = p,
            bucket = %seg.bucket,
            key = %seg.key,
            version = %format_args!("{:032x}", seg.version_id),
            segment = seg.segment,
            shards_left = seg.shards_left(),
        );
        tokio::spawn(
            async move {
                let ok = rebuild_segment(&core, p, seg, permit).await;
                let base = Duration::from_millis(core.cfg.repair_interval_ms.max(10));
                core.repair.settle(id, ok, base);
                core.repair.release(id);
                core.repair.done.notify_one();
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// Rebuilds the segment's first due shard (the next pass takes the next one, from a fresh
/// survey that sees this one's new location).
/// Whether it succeeded.
async fn rebuild_segment(
    core: &Core,
    p: u64,
    seg: DegradedSegment,
    _permit: OwnedSemaphorePermit,
) -> bool {
    let Some(slot) = seg.shards.iter().position(|(_, c)| c.due()) else {
        return true;
    };
    match rebuild_shard(core, p, &seg, slot).await {
        Ok(bytes) => {
            core.repair.record_success(bytes);
            core.metrics.repair_shards.inc();
            core.metrics.repair_bytes.inc_by(bytes);
            true
        }
        Err(e) => {
            core.repair.record_failure();
            core.metrics.repair_failures.inc();
            tracing::warn!(shard_index = slot, error = %e, "repair of a shard failed; retried later");
            false
        }
    }
}

async fn rebuild_shard(
    core: &Core,
    p: u64,
    seg: &DegradedSegment,
    slot: usize,
) -> Result<u64, RepairError> {
    let (lost, _) = &seg.shards[slot];
    let sources: Vec<&crate::catalog::ShardRecord> = seg
        .shards
        .iter()
        .filter(|(_, c)| c.readable())
        .map(|(s, _)| s)
        .collect();
    if sources.len() < seg.k {
        return Err(RepairError::TooFewSources {
            left: sources.len(),
            k: seg.k,
        });
    }
    let health_nodes = registry::list_nodes(&core.reader(0)?).map_err(ServiceError::from)?;
    let views: Vec<_> = health_nodes.iter().map(|n| n.view()).collect();
    let addresses: HashMap<u128, String> = health_nodes
        .iter()
        .map(|n| (n.id, n.address.clone()))
        .collect();
    // Every server holding any shard of the segment (readable or not) is off limits: never
    // two shards of one segment on one server.
    let holders: Vec<NodeId> = seg
        .shards
        .iter()
        .filter(|(s, _)| !s.missing)
        .map(|(s, _)| NodeId::from_u128(s.node))
        .collect();
    let failed = NodeId::from_u128(index::holder(lost));
    let seed = placement::segment_seed(seg.version_id, seg.segment) ^ u64::from(lost.index);
    let request_sources: Vec<ReconstructSource> = sources
        .iter()
        .map(|s| ReconstructSource {
            index: u32::from(s.index),
            shard_id: format!("{:032x}", s.shard_id),
            address: addresses.get(&s.node).cloned().unwrap_or_default(),
            crc32c: s.crc32c,
        })
        .collect();
    let mut exclude: Vec<NodeId> = Vec::new();
    let mut last_error = None;
    for _ in 0..TARGET_ATTEMPTS {
        let target = placement::replacement(&views, &holders, failed, lost.size, seed, &exclude)?;
        let address = addresses
            .get(&target.as_u128())
            .cloned()
            .unwrap_or_default();
        let new_shard = ShardId::random();
        let started = Instant::now();
        let req = ReconstructShardRequest {
            shard_id: new_shard.to_string(),
            index: u32::from(lost.index),
            codec: seg.scheme.codec.clone(),
            k: u32::from(seg.scheme.k),
            m: u32::from(seg.scheme.m),
            cell_size: u64::from(seg.scheme.cell_size),
            segment_len: seg.data_len,
            // A shard missing since its write never had a checksum; one that was stored did.
            expected_crc32c: (!lost.missing).then_some(lost.crc32c),
            sources: request_sources.clone(),
        };
        match reconstruct(core, &address, req, lost.size).await {
            Ok(info) => {
                if info.size != lost.size {
                    discard(core, p, new_shard.as_u128(), target.as_u128()).await;
                    return Err(RepairError::RebuiltSize {
                        address,
                        expected: lost.size,
                        got: info.size,
                    });
                }
                let secs = started.elapsed().as_secs();
                // Orphan collection may take an unreferenced shard once it is older than
                // the grace period: a rebuild that slow is not recorded (see index.rs).
                if secs.saturating_mul(2) >= core.cfg.orphan_grace_secs {
                    discard(core, p, new_shard.as_u128(), target.as_u128()).await;
                    return Err(RepairError::TooSlow { secs });
                }
                let rebuilt = crepair::Rebuilt {
                    shard_id: new_shard.as_u128(),
                    node: target.as_u128(),
                    crc32c: info.crc32c,
                    size: info.size,
                };
                return match record(core, p, seg, lost, rebuilt).await {
                    Ok(()) => {
                        tracing::info!(
                            shard_index = lost.index,
                            target = %address,
                            bytes = info.size,
                            millis = started.elapsed().as_millis() as u64,
                            "shard rebuilt"
                        );
                        Ok(info.size)
                    }
                    Err(e) => {
                        if !e.maybe_recorded() {
                            discard(core, p, new_shard.as_u128(), target.as_u128()).await;
                        }
                        Err(e)
                    }
                };
            }
            Err(status) => {
                tracing::debug!(target = %address, error = %status, "rebuild on this target failed");
                exclude.push(target);
                last_error = Some(RepairError::Reconstruct { address, status });
                // A rebuild that failed for lack of good sources will not do better elsewhere.
                if last_error.as_ref().is_some_and(|e| {
                    matches!(e, RepairError::Reconstruct { status, .. }
                        if status.code() == tonic::Code::FailedPrecondition)
                }) {
                    break;
                }
            }
        }
    }
    Err(last_error.unwrap_or(RepairError::TooFewSources {
        left: sources.len(),
        k: seg.k,
    }))
}

/// Time allowed for one rebuild: a minute, or 4 MB/s of shard, whichever is longer.
pub(crate) fn rebuild_timeout(shard_bytes: u64) -> Duration {
    MIN_REBUILD_TIMEOUT.max(Duration::from_secs(shard_bytes / (4 << 20)))
}

pub(crate) async fn reconstruct(
    core: &Core,
    address: &str,
    req: ReconstructShardRequest,
    shard_bytes: u64,
) -> Result<dogfs_proto::chunk::ShardInfo, tonic::Status> {
    let channel = core
        .raft
        .connections()
        .channel(address)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    request.set_timeout(rebuild_timeout(shard_bytes));
    let resp = ChunkServiceClient::new(channel)
        .reconstruct_shard(request)
        .await?
        .into_inner();
    if !resp.bad_sources.is_empty() {
        tracing::info!(bad_sources = ?resp.bad_sources, "rebuild skipped unusable sources");
    }
    resp.shard
        .ok_or_else(|| tonic::Status::internal("ReconstructShard answered without a shard"))
}

/// Commits the rebuilt shard's location, rebuilding the command when it lost a race with
/// another change of the same object that left this slot alone.
async fn record(
    core: &Core,
    p: u64,
    seg: &DegradedSegment,
    lost: &crate::catalog::ShardRecord,
    rebuilt: crepair::Rebuilt,
) -> Result<(), RepairError> {
    let (bucket, key) = names(seg)?;
    for _ in 0..COMMIT_ATTEMPTS {
        if !core.is_leader(p) {
            return Err(RepairError::Commit(ServiceError::NotLeader {
                group: p,
                leader_addr: None,
            }));
        }
        let prepared = crepair::commit(
            &core.reader(p)?,
            &bucket,
            &key,
            seg.version_id,
            seg.segment,
            lost.index,
            lost.shard_id,
            rebuilt,
            GcReason::Repaired,
            now_unix(),
        )??;
        match core.propose(p, &prepared).await {
            Ok(_) => return Ok(()),
            Err(ServiceError::Catalog(CatalogError::Conflict { .. })) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RepairError::Commit(ServiceError::Catalog(
        CatalogError::Conflict {
            operation: "recording a repaired shard",
        },
    )))
}

fn names(seg: &DegradedSegment) -> Result<(BucketName, ObjectKey), RepairError> {
    Ok((
        BucketName::parse(&seg.bucket).map_err(CatalogError::from)?,
        ObjectKey::parse(&seg.key).map_err(CatalogError::from)?,
    ))
}

/// Queues a rebuilt shard that nothing will reference for deletion (best effort: orphan
/// collection takes it otherwise).
pub(crate) async fn discard(core: &Core, p: u64, shard: u128, node: u128) {
    let result = match crepair::discard(shard, node, GcReason::Unreferenced, now_unix()) {
        Ok(prepared) => core.propose_anywhere(p, &prepared).await.map(|_| ()),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        tracing::debug!(shard = %format_args!("{shard:032x}"), error = %e, "queueing an unused rebuilt shard for deletion failed; orphan collection will take it");
    }
}
