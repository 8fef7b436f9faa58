//! The scrubber: re-reads every shard at a bounded rate, verifying block and whole-shard
//! checksums, so silent corruption is found before a read (or a repair) needs the shard.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use tracing::{info, warn};

use crate::format;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Bytes verified per read while scrubbing.
const PIECE: u64 = 1024 * 1024;

/// How far the scrubber is through its current pass, for heartbeats and the
/// `dogfs_chunk_scrub_progress` gauge. Progress is counted in shard-file bytes (data, block
/// table and footer) against the store's used bytes when the pass began: cheap (no extra walk
/// to size the pass) and proportional to the time a pass takes at a fixed rate. Shards written
/// or deleted during a pass make the total approximate, so the fraction is clamped to 1.
#[derive(Debug, Default)]
pub struct ScrubProgress {
    total: AtomicU64,
    done: AtomicU64,
    phase: AtomicU8,
}

/// `ScrubProgress::phase` values besides the initial 0 (no pass started yet).
const PHASE_RUNNING: u8 = 1;
const PHASE_RESTING: u8 = 2;

impl ScrubProgress {
    fn begin(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase.store(PHASE_RUNNING, Ordering::Relaxed);
    }

    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.phase.store(PHASE_RESTING, Ordering::Relaxed);
    }

    /// 0..=1 through the current pass: 0 before the first pass (or with the scrubber off),
    /// the fraction done while a pass runs, 1 while resting after a completed pass.
    pub fn fraction(&self) -> f64 {
        match self.phase.load(Ordering::Relaxed) {
            PHASE_RUNNING => {
                let total = self.total.load(Ordering::Relaxed);
                if total == 0 {
                    return 0.0;
                }
                (self.done.load(Ordering::Relaxed) as f64 / total as f64).clamp(0.0, 1.0)
            }
            PHASE_RESTING => 1.0,
            _ => 0.0,
        }
    }
}

/// Outcome of one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    pub shards: u64,
    pub bytes: u64,
    pub corrupt: Vec<ShardId>,
    /// The pass was stopped before it finished.
    pub stopped: bool,
}

/// Verifies every stored shard once. `rate` caps bytes per second (0 = unlimited); `stop`
/// ends the pass early. Blocking: run it on a blocking thread.
pub fn scrub_pass(
    store: &Arc<Store>,
    metrics: &Metrics,
    rate: u64,
    stop: &AtomicBool,
) -> Result<ScrubReport, StoreError> {
    let started = Instant::now();
    let mut report = ScrubReport::default();
    metrics.scrub.begin(store.used_bytes());
    store.walk_ids(None, |id| {
        if stop.load(Ordering::Relaxed) {
            report.stopped = true;
            return Ok(ControlFlow::Break(()));
        }
        let reader = match store.reader(id) {
            Ok(r) => r,
            // Deleted since the listing: nothing to check.
            Err(StoreError::NotFound(_)) => return Ok(ControlFlow::Continue(())),
            Err(e) if e.is_corruption() => {
                report.corrupt.push(id);
                return Ok(ControlFlow::Continue(()));
            }
            Err(e) => return Err(e),
        };
        let size = reader.meta().size;
        let result = reader.verify_all(PIECE, |n| {
            report.bytes += n;
            metrics.scrub_bytes.inc_by(n);
            metrics.scrub.advance(n);
            throttle(started, report.bytes, rate, stop);
        });
        // The block table and footer count towards the pass's total (the store's used bytes)
        // but are not data pieces: account for them once the shard is done.
        metrics
            .scrub
            .advance(format::file_len_for(size).map_or(0, |len| len - size));
        match result {
            Ok(()) => report.shards += 1,
            Err(e) if e.is_corruption() => {
                warn!(shard_id = %id, error = %e, "scrub found a corrupt shard");
                report.corrupt.push(id);
                report.shards += 1;
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if report.stopped {
        return Ok(report);
    }
    metrics.scrub_passes.inc();
    metrics.scrub.finish();
    Ok(report)
}

/// Sleeps while the pass is ahead of `rate`, waking early when stopped. Rate limiting, not
/// synchronisation: it bounds the disk bandwidth scrubbing takes from clients.
fn throttle(started: Instant, done: u64, rate: u64, stop: &AtomicBool) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    while !stop.load(Ordering::Relaxed) {
        let elapsed = started.elapsed();
        if elapsed >= due {
            return;
        }
        std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
    }
}

/// Runs passes forever: one pass, then `interval` of rest, until `stop` is set.
pub async fn run(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    rate: u64,
    interval: Duration,
    stop: Arc<AtomicBool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (s, m, st) = (Arc::clone(&store), Arc::clone(&metrics), Arc::clone(&stop));
        match tokio::task::spawn_blocking(move || scrub_pass(&s, &m, rate, &st)).await {
            Ok(Ok(r)) if !r.stopped => info!(
                shards = r.shards,
                bytes = r.bytes,
                corrupt = r.corrupt.len(),
                "scrub pass finished"
            ),
            Ok(Ok(_)) => return,
            Ok(Err(e)) => warn!(error = %e, "scrub pass failed"),
            Err(e) => warn!(error = %e, "scrub task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
