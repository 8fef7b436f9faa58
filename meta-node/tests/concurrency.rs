//! Many threads appending at once: nothing acknowledged is lost, per-group order holds, and
//! group commit really batches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use bytes::Bytes;
use dogfs_meta::wal::{Wal, WalConfig};

#[test]
fn concurrent_appenders_lose_nothing_and_keep_order() {
    const THREADS: usize = 32;
    const GROUPS: u64 = 4;
    const PER_THREAD: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 16 << 10,
        ..WalConfig::default()
    };
    let wal = Arc::new(Wal::open(dir.path(), config.clone()).unwrap().0);
    // The Raft layer serializes appends per group; the test does the same with one lock per
    // group, held only while submitting (the wait for durability happens outside it).
    let locks: Arc<Vec<Mutex<()>>> = Arc::new((0..GROUPS).map(|_| Mutex::new(())).collect());
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, locks, start) = (Arc::clone(&wal), Arc::clone(&locks), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let group = t as u64 % GROUPS;
                let mut acked = Vec::new();
                for seq in 0..PER_THREAD {
                    let ack = {
                        let _g = locks[group as usize].lock().unwrap();
                        let next = wal.last_index(group).map_or(1, |l| l + 1);
                        let payload = Bytes::from(format!("{t}:{seq}"));
                        let ack = wal.append_entries(group, next, [payload.clone()]).unwrap();
                        acked.push((next, payload));
                        ack
                    };
                    ack.wait().unwrap();
                    if seq % 20 == 0 {
                        wal.save_vote(group, Bytes::from(format!("vote {t}:{seq}")))
                            .unwrap()
                            .wait()
                            .unwrap();
                    }
                }
                (group, acked)
            })
        })
        .collect();
    let mut acked: BTreeMap<u64, Vec<(u64, Bytes)>> = BTreeMap::new();
    for h in handles {
        let (group, list) = h.join().unwrap();
        acked.entry(group).or_default().extend(list);
    }
    let stats = wal.stats();
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap().0;
    for (group, list) in acked {
        let got: BTreeMap<u64, Bytes> = wal.entries(group, ..).into_iter().collect();
        let want: BTreeMap<u64, Bytes> = list.into_iter().collect();
        assert_eq!(
            got, want,
            "group {group}: every acknowledged entry, at its index"
        );
        // Contiguous from 1, and each thread's entries in its submission order.
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            (1..=got.len() as u64).collect::<Vec<_>>()
        );
        let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
        for p in got.values() {
            let s = std::str::from_utf8(p).unwrap();
            let (t, seq) = s.split_once(':').unwrap();
            let seq: u64 = seq.parse().unwrap();
            if let Some(prev) = last_seq.insert(t.to_string(), seq) {
                assert_eq!(seq, prev + 1, "thread {t} in group {group}");
            }
        }
        assert!(wal.vote(group).is_some());
    }
    assert!(
        stats.segments_created > 0,
        "the test crossed segment boundaries: {stats:?}"
    );
}

#[test]
fn group_commit_batches_syncs() {
    const THREADS: usize = 64;
    const PER_THREAD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), WalConfig::default()).unwrap().0);
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, start) = (Arc::clone(&wal), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for i in 1..=PER_THREAD {
                    wal.append_entries(t as u64, i, [Bytes::from_static(&[7u8; 100])])
                        .unwrap()
                        .wait()
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = wal.stats();
    let appends = THREADS as u64 * PER_THREAD;
    assert_eq!(stats.records, appends);
    println!(
        "{appends} appends, {} syncs, {} batches",
        stats.syncs, stats.batches
    );
    // Each thread waits for its ack before the next append, so every sync can cover at most
    // one record per thread; with 64 threads it should cover many.
    assert!(
        stats.syncs * 4 <= appends,
        "group commit: {} syncs for {appends} appends",
        stats.syncs
    );
    // Each thread is its own group: the syncs covered many groups each, and together every
    // append exactly once.
    assert_eq!(stats.synced_submissions, appends, "{stats:?}");
    assert!(
        stats.synced_groups >= stats.syncs * 4,
        "a sync should cover the records of many groups: {stats:?}"
    );
    assert!(stats.synced_groups <= appends, "{stats:?}");
    drop(wal);
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap().0;
    for t in 0..THREADS as u64 {
        assert_eq!(wal.last_index(t), Some(PER_THREAD));
    }
}
