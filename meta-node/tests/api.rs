//! The WAL's API as the Raft storage uses it, and space reclamation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{Model, Op, open};
use dogfs_meta::wal::state::StateError;
use dogfs_meta::wal::{LogBounds, Wal, WalConfig, WalError, segment};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[test]
fn reads_rules_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig::default();
    let wal = open(dir.path(), &config);
    assert_eq!(wal.bounds(1), LogBounds::default());
    wal.append_entries(1, 1, [b("a"), b("b"), b("c"), b("d"), b("e")])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(wal.last_index(1), Some(5));
    assert_eq!(wal.entries(1, 2..4), vec![(2, b("b")), (3, b("c"))]);
    assert_eq!(wal.entries(1, ..=2), vec![(1, b("a")), (2, b("b"))]);
    assert_eq!(wal.entries(1, 4..), vec![(4, b("d")), (5, b("e"))]);
    assert_eq!(wal.entries(1, 9..), vec![]);
    assert_eq!(wal.entries(1, ..0), vec![]);
    assert_eq!(wal.entry(1, 3), Some(b("c")));
    // Conflict: truncate since 4 and append a different 4.
    wal.truncate(1, 4).unwrap().wait().unwrap();
    assert!(matches!(
        wal.append_entries(1, 5, [b("x")]),
        Err(WalError::Rejected(StateError::NotContiguous {
            last: 3,
            got: 5,
            ..
        }))
    ));
    wal.append_entries(1, 4, [b("D")]).unwrap().wait().unwrap();
    // Purge behind a snapshot.
    wal.purge(1, 2, b("log id 2")).unwrap().wait().unwrap();
    assert_eq!(
        wal.bounds(1),
        LogBounds {
            first: Some(3),
            last: Some(4),
            purged: Some((2, b("log id 2")))
        }
    );
    // Installing a snapshot past the end: purge beyond the last entry, then append after it.
    wal.purge(1, 10, b("log id 10")).unwrap().wait().unwrap();
    assert!(matches!(
        wal.append_entries(1, 10, [b("x")]),
        Err(WalError::Rejected(StateError::BelowPurged {
            purged: 10,
            got: 10,
            ..
        }))
    ));
    wal.append_entries(1, 11, [b("k")]).unwrap().wait().unwrap();
    // A lower purge is a no-op.
    wal.purge(1, 5, b("stale")).unwrap().wait().unwrap();
    wal.save_vote(1, b("term 3 node 2"))
        .unwrap()
        .wait()
        .unwrap();
    wal.save_committed(1, b("log id 11"))
        .unwrap()
        .wait()
        .unwrap();
    wal.flush().unwrap().wait().unwrap();
    let check = |wal: &Wal| {
        assert_eq!(
            wal.bounds(1),
            LogBounds {
                first: Some(11),
                last: Some(11),
                purged: Some((10, b("log id 10")))
            }
        );
        assert_eq!(wal.entries(1, ..), vec![(11, b("k"))]);
        assert_eq!(wal.vote(1), Some(b("term 3 node 2")));
        assert_eq!(wal.committed(1), Some(b("log id 11")));
        assert_eq!(wal.groups(), vec![1]);
    };
    check(&wal);
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), config).unwrap();
    assert_eq!(report.truncated, None);
    assert_eq!(report.segments, 1);
    check(&wal);
}

#[test]
fn acks_can_be_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path(), &WalConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let acks: Vec<_> = (1..=10)
            .map(|i| {
                wal.append_entries(3, i, [Bytes::from(vec![i as u8])])
                    .unwrap()
            })
            .collect();
        for a in acks {
            a.await.unwrap();
        }
        wal.save_vote(3, b("v")).unwrap().await.unwrap();
    });
    assert_eq!(wal.last_index(3), Some(10));
}

#[test]
fn completion_callbacks_run_once_durable_and_never_for_refused_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path(), &WalConfig::default());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 1..=10u64 {
        let tx = tx.clone();
        wal.append_entries_then(4, i, [Bytes::from(vec![i as u8])], move |r| {
            tx.send((
                i,
                r.is_ok(),
                std::thread::current().name().map(String::from),
            ))
            .unwrap();
        })
        .unwrap();
    }
    let tx2 = tx.clone();
    wal.flush_then(move |r| tx2.send((0, r.is_ok(), None)).unwrap())
        .unwrap();
    let mut got: Vec<u64> = Vec::new();
    for _ in 0..11 {
        let (i, ok, thread) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(ok, "entry {i}");
        if i > 0 {
            // Called on the writer thread, in submission order.
            assert!(thread.is_some_and(|t| t.starts_with("dogfs-wal")));
        }
        got.push(i);
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]);
    // Durable by then (the reopen below checks it on disk).
    assert_eq!(wal.last_index(4), Some(10));
    // A refused write (a gap in the log) reports its error and never calls back.
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = std::sync::Arc::clone(&called);
    let refused = wal.append_entries_then(4, 20, [b("gap")], move |_| {
        c.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(refused.is_err());
    wal.flush().unwrap().wait().unwrap();
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    drop(wal);
    let wal = open(dir.path(), &WalConfig::default());
    assert_eq!(wal.last_index(4), Some(10));
    assert_eq!(rx.try_recv().ok().map(|x| x.0), None, "no extra calls");
}

#[test]
fn reclaim_deletes_purged_segments_and_rewrites_idle_groups() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 1024,
        rewrite_limit: 1000,
        ..WalConfig::default()
    };
    let wal = open(dir.path(), &config);
    let mut ops = vec![
        // Idle groups written first: they pin the oldest segment.
        Op::Vote {
            group: 0,
            payload: b("vote 0"),
        },
        Op::Entry {
            group: 2,
            index: 1,
            payload: b("idle entry 1"),
        },
        Op::Entry {
            group: 2,
            index: 2,
            payload: b("idle entry 2"),
        },
        Op::Committed {
            group: 2,
            payload: b("c2"),
        },
    ];
    for i in 1..=300 {
        ops.push(Op::Entry {
            group: 1,
            index: i,
            payload: Bytes::from(vec![i as u8; 40]),
        });
    }
    ops.push(Op::Purge {
        group: 1,
        up_to: 290,
        payload: b("snap 290"),
    });
    for op in &ops {
        op.run(&wal);
    }
    let model = Model::of(&ops);
    let before = wal.stats().segments;
    assert!(before >= 15, "{before} segments");
    let report = wal.reclaim().unwrap();
    assert_eq!(report.rewritten_groups, vec![0, 2]);
    let after = wal.stats().segments;
    assert!(
        after <= 2,
        "{before} segments before reclaim, {after} after: {report:?}"
    );
    assert_eq!(report.deleted.len() as u64, before - after);
    assert_eq!(segment::list(dir.path()).unwrap().len() as u64, after);
    model.check(&wal, "after reclaim");
    // A second pass finds nothing more to do.
    let again = wal.reclaim().unwrap();
    assert!(
        again.deleted.is_empty() && again.rewritten_groups.is_empty(),
        "{again:?}"
    );
    drop(wal);
    let wal = open(dir.path(), &config);
    model.check(&wal, "after reclaim and reopen");
}

#[test]
fn reclaim_keeps_segments_of_large_unpurged_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 1024,
        rewrite_limit: 100,
        ..WalConfig::default()
    };
    let wal = open(dir.path(), &config);
    let mut ops = Vec::new();
    for i in 1..=10 {
        ops.push(Op::Entry {
            group: 5,
            index: i,
            payload: Bytes::from(vec![1u8; 50]),
        });
    }
    for i in 1..=100 {
        ops.push(Op::Entry {
            group: 1,
            index: i,
            payload: Bytes::from(vec![2u8; 50]),
        });
    }
    ops.push(Op::Purge {
        group: 1,
        up_to: 100,
        payload: b("all"),
    });
    for op in &ops {
        op.run(&wal);
    }
    let report = wal.reclaim().unwrap();
    // Group 5 holds 500 live bytes in the first segment, above the rewrite limit: nothing
    // behind it can go.
    assert!(
        report.rewritten_groups.is_empty() && report.deleted.is_empty(),
        "{report:?}"
    );
    // Once group 5 is purged, everything up to the active segment can go.
    wal.purge(5, 10, b("snap")).unwrap().wait().unwrap();
    ops.push(Op::Purge {
        group: 5,
        up_to: 10,
        payload: b("snap"),
    });
    let report = wal.reclaim().unwrap();
    assert!(!report.deleted.is_empty(), "{report:?}");
    Model::of(&ops).check(&wal, "after reclaim");
    drop(wal);
    Model::of(&ops).check(&open(dir.path(), &config), "after reopen");
}

#[test]
fn a_directory_is_opened_by_one_wal_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path(), &WalConfig::default());
    let err = Wal::open(dir.path(), WalConfig::default()).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(wal);
    open(dir.path(), &WalConfig::default());
}
