//! The adaptive hedge delay of shard reads (DESIGN §4 GET, §12 "tail").
//!
//! A shard request that has delivered nothing for longer than the hedge delay is read around
//! (another shard is asked at once; the slow request keeps running). The delay follows this
//! client's recent time-to-first-byte of shard requests with the estimator TCP uses for its
//! retransmission timeout (RFC 6298: smoothed mean + 4 × smoothed deviation), which fires
//! rarely on a healthy but jittery path and quickly on a dead one, clamped to
//! `[hedge_min, hedge_max]`. Requests that never delivered are not samples, so a frozen server
//! does not teach the client to wait longer for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Default floor: under this, ordinary jitter (a busy core, a 1 MiB disk read, a GC pause of
/// a neighbour) would start spurious parity reads, each costing a shard read and a decode.
pub const DEFAULT_HEDGE_MIN: Duration = Duration::from_millis(20);
/// Default ceiling: a frozen server must cost a GET well under a second (DESIGN §12); half a
/// second leaves room for the parity reads and the decode, and is HDFS's hedged-read default.
pub const DEFAULT_HEDGE_MAX: Duration = Duration::from_millis(500);

/// Smoothed time-to-first-byte, in seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Estimate {
    srtt: f64,
    rttvar: f64,
    samples: u64,
}

/// Hedge delay bounds and the latency estimate they clamp. Cheap to clone; clones share the
/// estimate (one per client).
#[derive(Debug, Clone)]
pub struct Hedger {
    min: Duration,
    max: Duration,
    est: Arc<Mutex<Estimate>>,
}

impl Default for Hedger {
    fn default() -> Self {
        Hedger::new(DEFAULT_HEDGE_MIN, DEFAULT_HEDGE_MAX)
    }
}

impl Hedger {
    /// `max` below `min` is raised to `min` (the config refuses it before it gets here).
    pub fn new(min: Duration, max: Duration) -> Self {
        Hedger {
            min,
            max: max.max(min),
            est: Arc::default(),
        }
    }

    /// One shard request's time to its first message.
    pub fn record(&self, ttfb: Duration) {
        let r = ttfb.as_secs_f64();
        let mut e = self.est.lock().unwrap_or_else(PoisonError::into_inner);
        if e.samples == 0 {
            e.srtt = r;
            e.rttvar = r / 2.0;
        } else {
            e.rttvar = 0.75 * e.rttvar + 0.25 * (e.srtt - r).abs();
            e.srtt = 0.875 * e.srtt + 0.125 * r;
        }
        e.samples += 1;
    }

    /// The current hedge delay: the ceiling until the first sample.
    pub fn delay(&self) -> Duration {
        let e = *self.est.lock().unwrap_or_else(PoisonError::into_inner);
        if e.samples == 0 {
            return self.max;
        }
        Duration::try_from_secs_f64(e.srtt + 4.0 * e.rttvar)
            .unwrap_or(self.max)
            .clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_without_samples_then_follows_latency_within_bounds() {
        let h = Hedger::new(20 * MS, 500 * MS);
        assert_eq!(h.delay(), 500 * MS);
        h.record(2 * MS);
        // 2 + 4 × 1 ms, under the floor.
        assert_eq!(h.delay(), 20 * MS);
        for _ in 0..50 {
            h.record(40 * MS);
        }
        let d = h.delay();
        assert!(d >= 40 * MS && d < 60 * MS, "{d:?}");
        for _ in 0..50 {
            h.record(10 * MS);
            h.record(400 * MS);
        }
        assert_eq!(h.delay(), 500 * MS);
    }

    #[test]
    fn clones_share_the_estimate() {
        let h = Hedger::new(MS, 500 * MS);
        let c = h.clone();
        c.record(10 * MS);
        assert_eq!(h.delay(), 30 * MS);
    }
}
