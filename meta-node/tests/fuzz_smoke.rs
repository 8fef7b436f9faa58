//! The fuzz targets of this crate, run for a bounded time (`dogfs_core::fuzzing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use dogfs_core::fuzzing::drive;
use dogfs_meta::fuzzing;
use dogfs_meta::raft::{Command, Condition, Key, Write};
use dogfs_meta::wal::record::{Kind, Record};

#[test]
fn wal_records_fuzz() {
    let rec = |group, kind, index, payload: &[u8]| {
        Record {
            group,
            kind,
            index,
            payload: Bytes::copy_from_slice(payload),
        }
        .encode()
        .unwrap()
    };
    let mut two = rec(1, Kind::Entry, 5, b"entry");
    two.extend(rec(0, Kind::Vote, 0, b"vote"));
    let seeds = vec![
        two,
        rec(3, Kind::Truncate, 9, b""),
        rec(2, Kind::Committed, 0, &[7; 300]),
    ];
    drive("wal_records", &seeds, fuzzing::wal_records);
}

#[test]
fn raft_messages_fuzz() {
    let cmd = Command {
        conditions: vec![Condition::Absent(Key::new("bucket", b"b".to_vec()))],
        writes: vec![Write::Put(Key::new("bucket", b"b".to_vec()), vec![1, 2, 3])],
        ..Command::default()
    };
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(3, 1), None);
    let seeds = vec![
        bincode::serialize(&cmd).unwrap(),
        bincode::serialize(&vote).unwrap(),
    ];
    drive("raft_messages", &seeds, fuzzing::raft_messages);
}

#[test]
fn stored_records_fuzz() {
    let seeds = vec![vec![1u8, 0, 0, 0], vec![1u8; 64]];
    drive("stored_records", &seeds, fuzzing::stored_records);
}
