//! The scrubber: re-reads every shard at a bounded rate, verifying block and whole-shard
//! checksums, so silent corruption is found before a read (or a repair) needs the shard.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dogfs_core::ids::ShardId;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Bytes verified per read while scrubbing.
const PIECE: u64 = 1024 * 1024;

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
        let result = reader.verify_all(PIECE, |n| {
            report.bytes += n;
            metrics.scrub_bytes.inc_by(n);
            throttle(started, report.bytes, rate, stop);
        });
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
