//! WAL crash tests: the files cut at every byte of the tail, garbage, flipped bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use bytes::Bytes;
use common::{Model, Op, open};
use dogfs_meta::wal::{RecoveryError, Wal, WalConfig, WalError, segment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HEADER: u64 = segment::HEADER_LEN;

/// Segment files in order: (file name, contents).
type Files = Vec<(String, Vec<u8>)>;

fn config() -> WalConfig {
    WalConfig {
        segment_size: 2048,
        ..WalConfig::default()
    }
}

fn payload(rng: &mut StdRng, tag: &str) -> Bytes {
    let n = rng.random_range(0..60);
    let mut v = tag.as_bytes().to_vec();
    v.extend((0..n).map(|_| rng.random::<u8>()));
    Bytes::from(v)
}

/// A scripted history over 4 groups: appends, votes, committed markers, truncates, purges.
/// Every operation is one record and changes the state (no no-ops: they are not written).
fn script(n: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model::default();
    let mut ops = Vec::new();
    while ops.len() < n {
        let group = rng.random_range(0..4u64);
        let g = model.groups.get(&group).cloned().unwrap_or_default();
        let len = g.entries.len() as u64;
        let op = match rng.random_range(0..10) {
            0 => Op::Vote {
                group,
                payload: payload(&mut rng, "vote"),
            },
            1 => Op::Committed {
                group,
                payload: payload(&mut rng, "commit"),
            },
            2 if len >= 3 => {
                let last = *g.entries.keys().last().unwrap();
                Op::Truncate {
                    group,
                    since: last - rng.random_range(0..2),
                }
            }
            3 if len >= 4 => {
                let first = *g.entries.keys().next().unwrap();
                Op::Purge {
                    group,
                    up_to: first + 1,
                    payload: payload(&mut rng, "purge"),
                }
            }
            _ => Op::Entry {
                group,
                index: model.next_index(group),
                payload: payload(&mut rng, "entry"),
            },
        };
        model.apply(&op);
        ops.push(op);
    }
    ops
}

/// Segment files in order: (name, bytes).
fn read_segments(dir: &Path) -> Files {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(seq, p)| (segment::file_name(seq), fs::read(p).unwrap()))
        .collect()
}

fn write_segments(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// For each op, the segment index and the end offset of its record.
fn locate(files: &[(String, Vec<u8>)], ops: &[Op]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut it = ops.iter();
    for (f, (_, bytes)) in files.iter().enumerate() {
        let mut off = HEADER;
        while off < bytes.len() as u64 {
            let op = it.next().expect("more records on disk than operations");
            off += op.encoded_len();
            out.push((f, off));
        }
        assert_eq!(
            off,
            bytes.len() as u64,
            "segment {f} ends on a record boundary"
        );
    }
    assert_eq!(out.len(), ops.len(), "every acknowledged record is on disk");
    out
}

/// Cuts each segment's preallocated zeroes after its last record (`ops` says where the
/// records end), so the tests can cut and damage the records themselves.
fn trim_preallocation(files: Files, ops: &[Op]) -> Files {
    let mut it = ops.iter();
    files
        .into_iter()
        .map(|(name, mut bytes)| {
            assert_eq!(
                bytes.len() as u64,
                config().segment_size,
                "{name} is preallocated"
            );
            let mut off = HEADER;
            while off < bytes.len() as u64 && bytes[off as usize..].iter().any(|b| *b != 0) {
                off += it
                    .next()
                    .expect("records beyond the operations")
                    .encoded_len();
            }
            bytes.truncate(off as usize);
            (name, bytes)
        })
        .collect()
}

/// Reopens `files` as given and again with each segment padded with zeroes to the segment
/// size (what a crash leaves of a preallocated segment: whatever reached the disk, then the
/// never-written space), and checks both as [`reopen_and_check_as_given`] does.
fn reopen_and_check(files: &[(String, Vec<u8>)], expected: &Model, ctx: &str) {
    reopen_and_check_as_given(files, expected, ctx);
    reopen_and_check_as_given(
        &zero_padded(files),
        expected,
        &format!("{ctx}, zero-padded"),
    );
}

/// Each segment padded with zeroes to the segment size.
fn zero_padded(files: &[(String, Vec<u8>)]) -> Files {
    let size = config().segment_size as usize;
    files
        .iter()
        .map(|(name, bytes)| {
            let mut b = bytes.clone();
            if b.len() < size {
                b.resize(size, 0);
            }
            (name.clone(), b)
        })
        .collect()
}

/// Reopens `files` and checks the state is `expected`; then appends, reopens, checks again.
fn reopen_and_check_as_given(files: &[(String, Vec<u8>)], expected: &Model, ctx: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), files);
    let wal = open(dir.path(), &config());
    expected.check(&wal, ctx);
    // Appending after recovery works and survives another reopen.
    let mut expected = expected.clone();
    let more = [
        Op::Entry {
            group: 9,
            index: expected.next_index(9),
            payload: Bytes::from_static(b"after"),
        },
        Op::Entry {
            group: 1,
            index: expected.next_index(1),
            payload: Bytes::from_static(b"g1"),
        },
        Op::Vote {
            group: 0,
            payload: Bytes::from_static(b"vote after"),
        },
    ];
    for op in &more {
        op.run(&wal);
        expected.apply(op);
    }
    drop(wal);
    let wal = open(dir.path(), &config());
    expected.check(&wal, &format!("{ctx}, after append + reopen"));
}

fn build(n: usize) -> (tempfile::TempDir, Vec<Op>, Files) {
    let dir = tempfile::tempdir().unwrap();
    let ops = script(n);
    let wal = open(dir.path(), &config());
    for op in &ops {
        op.run(&wal);
    }
    Model::of(&ops).check(&wal, "before the crash");
    drop(wal);
    let files = trim_preallocation(read_segments(dir.path()), &ops);
    (dir, ops, files)
}

#[test]
fn cut_at_every_byte_of_the_tail() {
    let (_dir, ops, files) = build(260);
    assert!(
        files.len() >= 4,
        "the script spans several segments ({})",
        files.len()
    );
    let loc = locate(&files, &ops);
    let last = files.len() - 1;
    // The tail region: the last 6 records of the second-to-last segment, the boundary, and
    // all of the last segment (its header included).
    let prev_records: Vec<_> = loc.iter().filter(|(f, _)| *f == last - 1).collect();
    let start_prev = prev_records[prev_records.len() - 7].1;
    let mut cuts: Vec<(usize, u64)> = (start_prev..=files[last - 1].1.len() as u64)
        .map(|o| (last - 1, o))
        .collect();
    cuts.extend((0..=files[last].1.len() as u64).map(|o| (last, o)));
    assert!(loc.iter().filter(|(f, _)| *f == last).count() >= 3);
    for (f, o) in cuts {
        let mut cut: Files = files[..=f].to_vec();
        cut[f].1.truncate(o as usize);
        let survivors = loc
            .iter()
            .take_while(|&&(rf, end)| rf < f || (rf == f && end <= o))
            .count();
        let ctx = format!("cut segment {f} at {o} ({survivors} records)");
        reopen_and_check_as_given(&cut, &Model::of(&ops[..survivors]), &ctx);
        // Padded with zeroes, a record cut where its remaining bytes were zeroes anyway (say
        // the high bytes of an index) is whole again, and recovering it is right: it is
        // exactly the record that was being written.
        let whole_again = loc.get(survivors).is_some_and(|&(rf, end)| {
            rf == f && files[f].1[o as usize..end as usize].iter().all(|b| *b == 0)
        });
        let padded_survivors = survivors + usize::from(whole_again);
        reopen_and_check_as_given(
            &zero_padded(&cut),
            &Model::of(&ops[..padded_survivors]),
            &format!("{ctx}, zero-padded ({padded_survivors} records)"),
        );
    }
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let (_dir, ops, files) = build(60);
    let mut rng = StdRng::seed_from_u64(11);
    let expected = Model::of(&ops);
    for len in [1usize, 7, 24, 25, 100, 4096] {
        let mut bad = files.clone();
        let n = bad.len();
        let good_len = bad[n - 1].1.len() as u64;
        bad[n - 1].1.extend((0..len).map(|_| rng.random::<u8>()));
        let dir = tempfile::tempdir().unwrap();
        write_segments(dir.path(), &bad);
        let (wal, report) = Wal::open(dir.path(), config()).unwrap();
        expected.check(&wal, &format!("{len} garbage bytes"));
        let (_, at) = report.truncated.clone().unwrap();
        assert_eq!(at, good_len);
        drop(wal);
        reopen_and_check(&bad, &expected, &format!("{len} garbage bytes"));
    }
    // Zeroes (a zero-filled tail after a crash) too.
    let mut bad = files.clone();
    let n = bad.len();
    bad[n - 1].1.extend([0u8; 512]);
    reopen_and_check(&bad, &expected, "zero tail");
}

#[test]
fn flipped_byte_in_the_last_record_drops_only_it() {
    let (_dir, ops, files) = build(60);
    let n = files.len();
    let last_len = ops.last().unwrap().encoded_len() as usize;
    let file_len = files[n - 1].1.len();
    let expected = Model::of(&ops[..ops.len() - 1]);
    for pos in file_len - last_len..file_len {
        let mut bad = files.clone();
        bad[n - 1].1[pos] ^= 0x10;
        reopen_and_check(
            &bad,
            &expected,
            &format!("byte {pos} of the last record flipped"),
        );
    }
}

#[test]
fn damage_before_acknowledged_records_refuses_to_open() {
    let (_dir, _ops, files) = build(200);
    assert!(files.len() >= 3);
    // A flipped byte in the first segment, while later segments hold records.
    let mut bad = files.clone();
    bad[0].1[HEADER as usize + 30] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &bad);
    let err = Wal::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Recover {
                source: RecoveryError::CorruptMiddle { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&files[0].0),
        "the message names the file: {err}"
    );
    // The files are left as they were for an operator to inspect.
    assert_eq!(fs::read(dir.path().join(&bad[0].0)).unwrap(), bad[0].1);

    // A damaged header on a segment that holds records.
    let mut bad = files.clone();
    let n = bad.len();
    bad[n - 1].1[3] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &bad);
    let err = Wal::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Recover {
                source: RecoveryError::CorruptHeader { .. },
                ..
            }
        ),
        "{err}"
    );

    // A missing segment in the middle.
    let dir = tempfile::tempdir().unwrap();
    let mut holed = files.clone();
    holed.remove(1);
    write_segments(dir.path(), &holed);
    let err = Wal::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Recover {
                source: RecoveryError::SegmentGap { .. },
                ..
            }
        ),
        "{err}"
    );
}

/// A crash in the middle of space reclamation: while the group images are being written
/// (cut at every byte of them, old segments still present), and after each single deletion.
#[test]
fn crash_during_reclaim_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size: 2048,
        rewrite_limit: 4096,
        ..WalConfig::default()
    };
    let mut ops = script(40);
    // A busy group whose log is purged behind a "snapshot", after the idle ones above.
    for i in 1..=120 {
        ops.push(Op::Entry {
            group: 7,
            index: i,
            payload: Bytes::from(vec![i as u8; 60]),
        });
    }
    ops.push(Op::Purge {
        group: 7,
        up_to: 115,
        payload: Bytes::from_static(b"snap"),
    });
    let model = Model::of(&ops);
    let wal = Wal::open(dir.path(), config.clone()).unwrap().0;
    for op in &ops {
        op.run(&wal);
    }
    let before = read_segments(dir.path());
    let report = wal.reclaim().unwrap();
    assert!(
        !report.rewritten_groups.is_empty() && report.deleted.len() >= 3,
        "{report:?}"
    );
    model.check(&wal, "after reclaim");
    drop(wal);
    let after = read_segments(dir.path());
    // The segments reclaim appended to: the last one before it, grown, and any it rolled to.
    let last_before = before.last().unwrap().0.clone();
    let tail: Vec<(String, usize, Vec<u8>)> = after
        .iter()
        .filter(|(name, _)| *name >= last_before)
        .map(|(name, bytes)| {
            let start = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| b.len());
            (name.clone(), start, bytes.clone())
        })
        .collect();
    assert!(
        tail.iter().any(|(_, start, b)| b.len() > *start),
        "the images were appended"
    );
    // Images partly written, nothing deleted yet: every byte of them.
    for (t, (_, start, bytes)) in tail.iter().enumerate() {
        for cut in *start..=bytes.len() {
            let mut files = before.clone();
            files.pop();
            for (name, _, b) in &tail[..t] {
                files.push((name.clone(), b.clone()));
            }
            files.push((tail[t].0.clone(), bytes[..cut].to_vec()));
            reopen_and_check(
                &files,
                &model,
                &format!("images cut in {} at {cut}", tail[t].0),
            );
        }
    }
    // Images durable, deletions interrupted after each one (oldest first).
    for j in 0..=report.deleted.len() {
        let mut files: Files = before[j..before.len() - 1].to_vec();
        files.extend(tail.iter().map(|(n, _, b)| (n.clone(), b.clone())));
        let dir = tempfile::tempdir().unwrap();
        write_segments(dir.path(), &files);
        let wal = Wal::open(dir.path(), config.clone()).unwrap().0;
        model.check(&wal, &format!("{j} segments deleted"));
    }
}
