//! What a workload measured: operation latencies and bytes moved over a wall-clock span,
//! summarised as throughput (of user data), operations per second and latency percentiles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latencies of the operations of one workload, in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    bytes: u64,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    /// One operation that moved `bytes` of user data.
    pub fn record(&mut self, latency: Duration, bytes: u64) {
        self.latencies.push(latency);
        self.bytes += bytes;
    }

    /// Merges another client's samples.
    pub fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.bytes += other.bytes;
    }

    pub fn ops(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Summarises over `elapsed`, the wall-clock time of the whole workload (not the sum of
    /// latencies: clients overlap).
    pub fn summarise(&self, name: &str, elapsed: Duration) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let secs = elapsed.as_secs_f64();
        let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
        Summary {
            workload: name.to_owned(),
            ops: self.ops(),
            bytes: self.bytes,
            seconds: secs,
            mb_per_s: per_sec(self.bytes as f64 / 1e6),
            gib_per_s: per_sec(self.bytes as f64 / (1u64 << 30) as f64),
            ops_per_s: per_sec(self.ops() as f64),
            p50_ms: ms(percentile(&sorted, 50.0)),
            p90_ms: ms(percentile(&sorted, 90.0)),
            p99_ms: ms(percentile(&sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or_default()),
            note: None,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p` percent of
/// the values at or below it. Zero for no values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One row of the bench table (and one object of its `--json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub workload: String,
    pub ops: u64,
    /// User data moved (object bytes, not shards).
    pub bytes: u64,
    pub seconds: f64,
    /// 10^6 bytes of user data per second.
    pub mb_per_s: f64,
    /// 2^30 bytes of user data per second.
    pub gib_per_s: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Anything else worth a line: peak RSS, the server that was stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A performance bar of DESIGN §12, checked against figures of the same run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BarCheck {
    pub bar: String,
    pub measured: f64,
    pub required: f64,
    pub unit: String,
    /// `>=` or `<=`: how measured must compare to required.
    pub op: String,
    pub pass: bool,
}

impl BarCheck {
    /// `measured` must be at least `required`.
    pub fn at_least(bar: &str, measured: f64, required: f64, unit: &str) -> Self {
        BarCheck {
            bar: bar.to_owned(),
            measured,
            required,
            unit: unit.to_owned(),
            op: ">=".to_owned(),
            pass: measured >= required,
        }
    }

    /// `measured` must be at most `required`.
    pub fn at_most(bar: &str, measured: f64, required: f64, unit: &str) -> Self {
        BarCheck {
            op: "<=".to_owned(),
            pass: measured <= required,
            ..Self::at_least(bar, measured, required, unit)
        }
    }
}

/// The table `dogfs bench` prints.
pub fn table(rows: &[Summary]) -> String {
    let mut out = format!(
        "{:<22} {:>7} {:>10} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "workload", "ops", "data", "secs", "MB/s", "GiB/s", "ops/s", "p50", "p90", "p99", "max"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<22} {:>7} {:>10} {:>8.2} {:>9.1} {:>7.3} {:>9.1} {:>9} {:>9} {:>9} {:>9}\n",
            r.workload,
            r.ops,
            crate::human::size(r.bytes),
            r.seconds,
            r.mb_per_s,
            r.gib_per_s,
            r.ops_per_s,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p90_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.max_ms),
        ));
        if let Some(note) = &r.note {
            out.push_str(&format!("{:<22} {note}\n", ""));
        }
    }
    out
}

/// The bar checks as lines: `PASS  <bar>: measured 123.4 MB/s, required >= 100.0 MB/s`.
pub fn bar_lines(bars: &[BarCheck]) -> String {
    bars.iter()
        .map(|b| {
            format!(
                "{}  {}: measured {:.1} {}, required {} {:.1} {}\n",
                if b.pass { "PASS" } else { "FAIL" },
                b.bar,
                b.measured,
                b.unit,
                b.op,
                b.required,
                b.unit
            )
        })
        .collect()
}

fn fmt_ms(v: f64) -> String {
    crate::human::latency(Duration::from_secs_f64(v.max(0.0) / 1e3))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ms_(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(ms_).collect();
        assert_eq!(percentile(&sorted, 50.0), ms_(50));
        assert_eq!(percentile(&sorted, 90.0), ms_(90));
        assert_eq!(percentile(&sorted, 99.0), ms_(99));
        assert_eq!(percentile(&sorted, 100.0), ms_(100));
        assert_eq!(percentile(&sorted, 0.0), ms_(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(percentile(&[ms_(7)], 99.0), ms_(7));
        // Small sets: p50 of 4 values is the 2nd, p99 the 4th.
        let four = [ms_(1), ms_(2), ms_(3), ms_(4)];
        assert_eq!(percentile(&four, 50.0), ms_(2));
        assert_eq!(percentile(&four, 99.0), ms_(4));
    }

    #[test]
    fn summary_uses_wall_clock_not_summed_latency() {
        let mut a = Samples::new();
        let mut b = Samples::new();
        // Two clients, each 2 ops of 1 s moving 500 MB, overlapping within 2 s of wall clock.
        for _ in 0..2 {
            a.record(Duration::from_secs(1), 250_000_000);
            b.record(Duration::from_secs(1), 250_000_000);
        }
        a.merge(b);
        let s = a.summarise("put", Duration::from_secs(2));
        assert_eq!(s.ops, 4);
        assert_eq!(s.bytes, 1_000_000_000);
        assert!((s.mb_per_s - 500.0).abs() < 1e-9);
        assert!((s.ops_per_s - 2.0).abs() < 1e-9);
        assert!((s.gib_per_s - 1e9 / 2.0 / (1u64 << 30) as f64).abs() < 1e-12);
        assert!((s.p50_ms - 1000.0).abs() < 1e-9);
        assert!((s.max_ms - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn empty_and_zero_time_summaries_are_zero() {
        let s = Samples::new().summarise("x", Duration::ZERO);
        assert_eq!((s.ops, s.bytes), (0, 0));
        assert_eq!((s.mb_per_s, s.ops_per_s, s.max_ms), (0.0, 0.0, 0.0));
    }

    #[test]
    fn unsorted_input_is_sorted_before_percentiles() {
        let mut s = Samples::new();
        for v in [9, 1, 5, 3, 7, 2, 8, 4, 6, 10] {
            s.record(ms_(v), 0);
        }
        let sum = s.summarise("x", Duration::from_secs(1));
        assert!((sum.p50_ms - 5.0).abs() < 1e-9);
        assert!((sum.p90_ms - 9.0).abs() < 1e-9);
        assert!((sum.max_ms - 10.0).abs() < 1e-9);
    }

    #[test]
    fn bars_and_table() {
        let ok = BarCheck::at_least("GET ≥ 1 GB/s", 1200.0, 1000.0, "MB/s");
        assert!(ok.pass);
        let bad = BarCheck::at_most("RSS under 128 MiB", 200.0, 128.0, "MiB");
        assert!(!bad.pass);
        let lines = bar_lines(&[ok, bad]);
        assert!(lines.starts_with("PASS  GET"), "{lines}");
        assert!(lines.contains("FAIL  RSS under 128 MiB: measured 200.0 MiB, required <= 128.0"));
        let mut s = Samples::new();
        s.record(ms_(3), 1 << 20);
        let t = table(&[s.summarise("put", Duration::from_secs(1))]);
        assert!(t.lines().nth(1).unwrap().starts_with("put "), "{t}");
        assert!(t.contains("1.0 MiB"), "{t}");
    }
}
