//! WAL benchmarks: the disk's raw fdatasync floor, single-writer append+sync latency, and
//! group-commit throughput with 256 concurrent appenders, all in one run on one directory.
//!
//! `cargo bench -p dogfs-meta --bench wal`; the directory is `$DOGFS_BENCH_DIR` if set, else
//! a temporary directory under the system temp dir (it must be on the real disk, not tmpfs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use dogfs_meta::wal::{Wal, WalConfig};

const PAYLOAD: usize = 256;
const APPENDERS: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("DOGFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    println!("WAL bench directory: {}", dir.path().display());
    dir
}

fn floor(g: &mut BenchmarkGroup<'_, WallTime>, dir: &Path, name: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap();
    let small = [0x5au8; PAYLOAD];
    g.bench_function(name, |b| {
        b.iter(|| {
            f.write_all(&small).unwrap();
            f.sync_data().unwrap();
        })
    });
}

fn wal(c: &mut Criterion) {
    let dir = bench_dir();
    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));

    // The floor: append a small record-sized write to a file and fdatasync it. Measured
    // before and after the WAL benchmarks, as the shared disk drifts.
    floor(&mut g, dir.path(), "fdatasync_floor");

    // One writer: every append waits for its own sync.
    let wal_dir = dir.path().join("single");
    let (w, _) = Wal::open(&wal_dir, WalConfig::default()).unwrap();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut next = 1u64;
    g.bench_function("append_sync_1_writer", |b| {
        b.iter(|| {
            w.append_entries(0, next, [payload.clone()])
                .unwrap()
                .wait()
                .unwrap();
            next += 1;
        })
    });
    drop(w);

    // 256 appenders, each waiting for its ack before its next append (a client doing one
    // commit at a time); each on its own group.
    let wal_dir = dir.path().join("concurrent");
    let w = Arc::new(Wal::open(&wal_dir, WalConfig::default()).unwrap().0);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let workers: Vec<mpsc::Sender<u64>> = (0..APPENDERS)
        .map(|t| {
            let (tx, rx) = mpsc::channel::<u64>();
            let (w, done) = (Arc::clone(&w), done_tx.clone());
            let payload = payload.clone();
            std::thread::spawn(move || {
                let mut next = 1u64;
                while let Ok(n) = rx.recv() {
                    for _ in 0..n {
                        w.append_entries(t as u64, next, [payload.clone()])
                            .unwrap()
                            .wait()
                            .unwrap();
                        next += 1;
                    }
                    done.send(()).unwrap();
                }
            });
            tx
        })
        .collect();
    let totals = Arc::new(Mutex::new((0u64, 0u64, Duration::ZERO)));
    g.sample_size(20);
    g.bench_function("append_sync_256_appenders", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(APPENDERS as u64);
            let syncs = w.stats().syncs;
            let start = Instant::now();
            for tx in &workers {
                tx.send(per).unwrap();
            }
            for _ in 0..APPENDERS {
                done_rx.recv().unwrap();
            }
            let elapsed = start.elapsed();
            let mut t = totals.lock().unwrap();
            t.0 += per * APPENDERS as u64;
            t.1 += w.stats().syncs - syncs;
            t.2 += elapsed;
            // Report the time per record as criterion asked for `iters` of them.
            elapsed.mul_f64(iters as f64 / (per * APPENDERS as u64) as f64)
        })
    });
    drop(workers);
    floor(&mut g, dir.path(), "fdatasync_floor_again");
    g.finish();
    let (records, syncs, time) = *totals.lock().unwrap();
    let secs = time.as_secs_f64();
    println!(
        "256 appenders: {records} records, {syncs} syncs in {secs:.2} s: {:.0} records/s, \
         {:.0} syncs/s, {:.1} records per sync",
        records as f64 / secs,
        syncs as f64 / secs,
        records as f64 / syncs.max(1) as f64
    );
}

criterion_group!(benches, wal);
criterion_main!(benches);
