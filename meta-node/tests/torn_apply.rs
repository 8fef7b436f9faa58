//! Crash consistency of the state machine's apply path (`docs/raft-storage.md`): entries are
//! written to the engine as ordered single writes between an `applying` and an `applied`
//! marker, not in a transaction. Here the engine is an in-memory one that records every write;
//! a crash is simulated at *every* point of that record (the engine keeps a prefix of its
//! writes, which is the `KvSpace` contract), the state machine is reopened on the prefix, and
//! what it then holds must be exactly the applied log up to the index it reports — after which
//! re-applying the rest of the log (as openraft does from the WAL) reaches the same final
//! state and the same responses as the run without a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dogfs_meta::raft::engine::{Pair, RawWrite};
use dogfs_meta::raft::{
    Command, Condition, EngineError, Key, KvEngine, KvSpace, Response, StateMachine, TypeConfig,
    Write,
};
use dogfs_meta::wal::GroupId;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};

/// One recorded engine operation: an ordered single write, or an atomic whole replacement.
#[derive(Debug, Clone)]
enum Op {
    Write(RawWrite),
    Replace(Vec<Pair>),
}

#[derive(Debug, Default)]
struct MemState {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    ops: Vec<Op>,
}

impl MemState {
    fn run(&mut self, op: &Op) {
        match op {
            Op::Write((k, Some(v))) => {
                self.data.insert(k.clone(), v.clone());
            }
            Op::Write((k, None)) => {
                self.data.remove(k);
            }
            Op::Replace(pairs) => self.data = pairs.iter().cloned().collect(),
        }
        self.ops.push(op.clone());
    }
}

/// An in-memory engine (one space, the test uses one group) recording its operations.
#[derive(Debug, Clone, Default)]
struct MemEngine(Arc<Mutex<MemState>>);

impl MemEngine {
    /// The engine as a crash after its first `n` operations leaves it.
    fn prefix(&self, n: usize) -> MemEngine {
        let ops = self.0.lock().unwrap().ops[..n].to_vec();
        let e = MemEngine::default();
        for op in &ops {
            e.0.lock().unwrap().run(op);
        }
        e
    }

    fn ops(&self) -> usize {
        self.0.lock().unwrap().ops.len()
    }

    /// The data keys and values (markers excluded).
    fn data(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let s = self.0.lock().unwrap();
        s.data
            .iter()
            .filter(|(k, _)| k.first() == Some(&0x01))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl KvEngine for MemEngine {
    type Space = MemEngine;
    fn space(&self, _group: GroupId) -> Result<MemEngine, EngineError> {
        Ok(self.clone())
    }
}

impl KvSpace for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.lock().unwrap().data.get(key).cloned())
    }

    fn range(
        &self,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Pair>, EngineError> {
        let s = self.0.lock().unwrap();
        Ok(s.data
            .range((from, to))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write_in_order(&self, writes: &[RawWrite]) -> Result<(), EngineError> {
        let mut s = self.0.lock().unwrap();
        for w in writes {
            s.run(&Op::Write(w.clone()));
        }
        Ok(())
    }

    fn replace_all(&self, pairs: Vec<Pair>) -> Result<(), EngineError> {
        self.0.lock().unwrap().run(&Op::Replace(pairs));
        Ok(())
    }

    fn flush(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn key(k: &str) -> Key {
    Key::new("t", k.as_bytes())
}

fn put(k: &str, v: &str) -> Write {
    Write::Put(key(k), v.as_bytes().to_vec())
}

/// A log exercising every apply shape: membership, blank, plain writes, conditional writes
/// that pass and fail, deletes, and batches whose later commands see the earlier ones' writes.
fn entries() -> Vec<Entry<TypeConfig>> {
    let payloads = vec![
        EntryPayload::Membership(Membership::new(
            vec![[1u64, 2, 3].into_iter().collect::<BTreeSet<_>>()],
            None,
        )),
        EntryPayload::Blank,
        EntryPayload::Normal(Command::writes(vec![put("a", "1"), put("b", "1")])),
        EntryPayload::Normal(Command {
            conditions: vec![Condition::Absent(key("c"))],
            writes: vec![put("c", "3"), Write::Delete(key("a"))],
            ..Default::default()
        }),
        // Fails: c exists. Writes nothing but still moves `applied`.
        EntryPayload::Normal(Command {
            conditions: vec![Condition::Absent(key("c"))],
            writes: vec![put("c", "never")],
            ..Default::default()
        }),
        EntryPayload::Normal(Command::batch(vec![
            Command::writes(vec![put("d", "4"), put("e", "5")]),
            Command {
                conditions: vec![Condition::Equals(key("d"), b"4".to_vec())],
                writes: vec![put("f", "6"), Write::Delete(key("b"))],
                ..Default::default()
            },
            Command {
                conditions: vec![Condition::Absent(key("f"))],
                writes: vec![put("g", "never")],
                ..Default::default()
            },
        ])),
        EntryPayload::Blank,
        EntryPayload::Normal(Command {
            conditions: vec![Condition::VersionEquals(key("e"), 6)],
            writes: vec![put("e", "55"), put("h", "8"), put("i", "9")],
            ..Default::default()
        }),
        EntryPayload::Normal(Command::writes(vec![
            Write::Delete(key("c")),
            Write::Delete(key("d")),
            put("j", "10"),
        ])),
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Entry {
            log_id: log_id(i as u64 + 1),
            payload,
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Runs the log once without a crash, taking a snapshot after `snapshot_after` entries (if
/// any); then crashes at every operation of the engine's record and checks recovery.
fn crash_everywhere(snapshot_after: Option<usize>) {
    let log = entries();
    let dir = tempfile::tempdir().unwrap();
    let (snaps_before, snaps_after) = (dir.path().join("before"), dir.path().join("after"));
    let engine = MemEngine::default();
    // The data after each applied index, and the responses.
    let mut states = BTreeMap::new();
    let mut responses = Vec::new();
    let mut snapshot_op = usize::MAX;
    rt().block_on(async {
        let mut sm = StateMachine::open(&engine, 1, &snaps_after).unwrap();
        std::fs::create_dir_all(&snaps_before).unwrap();
        states.insert(0, engine.data());
        for (i, e) in log.iter().enumerate() {
            responses.extend(sm.apply([e.clone()]).await.unwrap());
            states.insert(e.log_id.index, engine.data());
            if snapshot_after == Some(i + 1) {
                sm.get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .unwrap();
                snapshot_op = engine.ops();
            }
        }
    });
    let final_state = engine.data();
    assert!(
        final_state.contains_key(&b"\x01\x01tj"[..]),
        "{final_state:?}"
    );
    let total = engine.ops();
    let mut torn_seen = 0;
    for n in 0..=total {
        let crashed = engine.prefix(n);
        // Before the snapshot was written, its file did not exist yet.
        let snaps: &Path = if n >= snapshot_op {
            &snaps_after
        } else {
            &snaps_before
        };
        rt().block_on(async {
            let mut sm = StateMachine::open(&crashed, 1, snaps).unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            let at = applied.map_or(0, |l| l.index);
            assert_eq!(
                crashed.data(),
                states[&at],
                "crash after {n} of {total} engine writes: reopened at applied {at}, but the \
                 data is not the log applied up to {at}"
            );
            if crashed.ops() > n {
                // Opening rewrote the engine: the prefix ended inside a torn entry.
                torn_seen += 1;
            }
            // openraft re-applies the log after `applied` from the WAL: same responses.
            let rest: Vec<_> = log
                .iter()
                .filter(|e| e.log_id.index > at)
                .cloned()
                .collect();
            let replayed = sm.apply(rest).await.unwrap();
            assert_eq!(
                replayed,
                responses[at as usize..],
                "crash after {n}: responses"
            );
            assert_eq!(
                crashed.data(),
                final_state,
                "crash after {n} of {total} engine writes, then replay from {at}: final state \
                 differs"
            );
        });
    }
    assert!(
        torn_seen > 0,
        "no crash point fell inside an entry's writes"
    );
    // The responses of a clean run: conditions failed exactly where expected.
    assert!(matches!(
        responses[4],
        Response::ConditionFailed { index: 0 }
    ));
    match &responses[5] {
        Response::Batch(rs) => assert!(matches!(
            rs[..],
            [
                Response::Applied { .. },
                Response::Applied { .. },
                Response::ConditionFailed { index: 0 }
            ]
        )),
        other => panic!("batch response: {other:?}"),
    }
    assert!(matches!(responses[7], Response::Applied { version: 8 }));
}

#[test]
fn a_crash_at_any_write_without_a_snapshot_recovers_the_applied_log() {
    crash_everywhere(None);
}

#[test]
fn a_crash_at_any_write_with_a_snapshot_recovers_the_applied_log() {
    crash_everywhere(Some(4));
}
