//! The Raft storage (`dogfs_meta::raft`) on the real WAL and sled: openraft's storage test
//! suite, the command semantics, snapshots, and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dogfs_meta::raft::{
    Command, Condition, Key, LogStore, Response, SledEngine, StateMachine, TypeConfig, Write,
};
use dogfs_meta::wal::{Wal, WalConfig};
use openraft::storage::{
    RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StorageError,
    StoredMembership, Vote,
};
use tempfile::TempDir;

type Sm = StateMachine<SledEngine>;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<TypeConfig> {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

fn key(tree: &str, k: &str) -> Key {
    Key::new(tree, k.as_bytes())
}

fn put(tree: &str, k: &str, v: &str) -> Write {
    Write::Put(key(tree, k), v.as_bytes().to_vec())
}

/// Opens a WAL, a sled engine and the snapshot root inside `dir`.
fn open_node(dir: &Path) -> (Arc<Wal>, SledEngine) {
    let (wal, _) = Wal::open(dir.join("wal"), WalConfig::default()).unwrap();
    let engine = SledEngine::open(dir.join("sled")).unwrap();
    (Arc::new(wal), engine)
}

fn open_group(dir: &Path, wal: &Arc<Wal>, engine: &SledEngine, group: u64) -> (LogStore, Sm) {
    let sm = StateMachine::open(engine, group, dir.join("snapshots")).unwrap();
    (LogStore::new(wal.clone(), group), sm)
}

/// A fresh node (WAL + sled + snapshot dir) in a temp dir per build; group 1.
struct FreshNode;

impl StoreBuilder<TypeConfig, LogStore, Sm, TempDir> for FreshNode {
    async fn build(&self) -> Result<(TempDir, LogStore, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let (wal, engine) = open_node(dir.path());
        let (log, sm) = open_group(dir.path(), &wal, &engine, 1);
        Ok((dir, log, sm))
    }
}

/// One node shared by every build: each build gets a new group on the same WAL and sled
/// database, so the suite also checks that groups do not see each other.
struct SharedNode {
    dir: TempDir,
    wal: Arc<Wal>,
    engine: SledEngine,
    next_group: AtomicU64,
}

impl StoreBuilder<TypeConfig, LogStore, Sm, ()> for SharedNode {
    async fn build(&self) -> Result<((), LogStore, Sm), StorageError<u64>> {
        let group = self.next_group.fetch_add(1, Ordering::SeqCst);
        let (log, sm) = open_group(self.dir.path(), &self.wal, &self.engine, group);
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_suite_fresh_node_per_test() {
    Suite::test_all(FreshNode).unwrap();
}

#[test]
fn openraft_suite_groups_sharing_one_wal_and_db() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, engine) = open_node(dir.path());
    // Another group's state in the same WAL and database, which the suite must never see.
    let other = LogStore::new(wal.clone(), 0);
    wal.append_entries(0, 0, [bytes::Bytes::from_static(b"not an entry")])
        .unwrap()
        .wait()
        .unwrap();
    let builder = SharedNode {
        dir,
        wal: wal.clone(),
        engine,
        next_group: AtomicU64::new(100),
    };
    Suite::test_all(builder).unwrap();
    assert_eq!(other.wal().last_index(0), Some(0));
    assert!(
        wal.groups().len() > 10,
        "each suite test used its own group"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn command_conditions_writes_and_failures() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, engine) = open_node(dir.path());
        let (_log, mut sm) = open_group(dir.path(), &wal, &engine, 3);
        let reader = sm.reader();

        // Unconditional puts into two trees; the same key in each is a different key.
        let r = sm
            .apply([normal(
                1,
                Command::writes(vec![put("bucket", "a", "A1"), put("object", "a", "O1")]),
            )])
            .await
            .unwrap();
        assert_eq!(r, vec![Response::Applied { version: 1 }]);
        let got = reader.get(&key("bucket", "a")).unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.version), (&b"A1"[..], 1));
        assert_eq!(
            reader.get(&key("object", "a")).unwrap().unwrap().value,
            b"O1"
        );
        assert_eq!(reader.get(&key("upload", "a")).unwrap(), None);

        // Create-if-absent on an existing key fails at condition 0 and writes nothing, including
        // the other writes of the batch.
        let r = sm
            .apply([normal(
                2,
                Command {
                    conditions: vec![Condition::Absent(key("bucket", "a"))],
                    writes: vec![put("bucket", "a", "A2"), put("bucket", "b", "B2")],
                    batch: Vec::new(),
                },
            )])
            .await
            .unwrap();
        assert_eq!(r, vec![Response::ConditionFailed { index: 0 }]);
        assert_eq!(
            reader.get(&key("bucket", "a")).unwrap().unwrap().value,
            b"A1"
        );
        assert_eq!(reader.get(&key("bucket", "b")).unwrap(), None);
        // A failed command still counts as applied.
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 2)));

        // The first failing condition is named, even if later ones fail too.
        let r = sm
            .apply([normal(
                3,
                Command {
                    conditions: vec![
                        Condition::Exists(key("bucket", "a")),
                        Condition::Equals(key("bucket", "a"), b"A1".to_vec()),
                        Condition::VersionEquals(key("bucket", "a"), 2),
                        Condition::Exists(key("bucket", "zzz")),
                    ],
                    writes: vec![Write::Delete(key("bucket", "a"))],
                    batch: Vec::new(),
                },
            )])
            .await
            .unwrap();
        assert_eq!(r, vec![Response::ConditionFailed { index: 2 }]);
        assert!(reader.get(&key("bucket", "a")).unwrap().is_some());

        // All conditions hold: compare-and-swap on value and version, delete, put; the new
        // version is the entry's index. A later write of the same key in the batch wins.
        let r = sm
            .apply([normal(
                4,
                Command {
                    conditions: vec![
                        Condition::Exists(key("bucket", "a")),
                        Condition::Equals(key("bucket", "a"), b"A1".to_vec()),
                        Condition::VersionEquals(key("bucket", "a"), 1),
                        Condition::Absent(key("bucket", "c")),
                    ],
                    writes: vec![
                        put("bucket", "a", "A4"),
                        put("bucket", "c", "first"),
                        put("bucket", "c", "C4"),
                        Write::Delete(key("object", "a")),
                        Write::Delete(key("object", "never-existed")),
                    ],
                    batch: Vec::new(),
                },
            )])
            .await
            .unwrap();
        assert_eq!(r, vec![Response::Applied { version: 4 }]);
        let a = reader.get(&key("bucket", "a")).unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.version), (&b"A4"[..], 4));
        assert_eq!(
            reader.get(&key("bucket", "c")).unwrap().unwrap().value,
            b"C4"
        );
        assert_eq!(reader.get(&key("object", "a")).unwrap(), None);

        // Equals on an absent key, VersionEquals on an absent key: fail.
        let r = sm
            .apply([
                normal(
                    5,
                    Command {
                        conditions: vec![Condition::Equals(key("object", "a"), b"O1".to_vec())],
                        writes: vec![],
                        batch: Vec::new(),
                    },
                ),
                normal(
                    6,
                    Command {
                        conditions: vec![Condition::VersionEquals(key("object", "a"), 1)],
                        writes: vec![],
                        batch: Vec::new(),
                    },
                ),
                // An over-long tree name is rejected deterministically.
                normal(7, Command::writes(vec![put(&"t".repeat(256), "k", "v")])),
                blank(1, 8),
            ])
            .await
            .unwrap();
        assert_eq!(
            r[..2],
            [
                Response::ConditionFailed { index: 0 },
                Response::ConditionFailed { index: 0 }
            ]
        );
        assert!(matches!(r[2], Response::Invalid { .. }));
        assert_eq!(r[3], Response::Internal);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 8)));

        // Listing: prefix, start-after, limit, and tree boundaries.
        let keys = ["p/1", "p/2", "p/3", "q/1"];
        let writes = keys.iter().map(|k| put("object", k, k)).collect();
        sm.apply([normal(9, Command::writes(writes))])
            .await
            .unwrap();
        let names = |v: Vec<(Vec<u8>, _)>| -> Vec<String> {
            v.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect()
        };
        assert_eq!(
            names(reader.list("object", b"p/", None, 100).unwrap()),
            ["p/1", "p/2", "p/3"]
        );
        assert_eq!(
            names(reader.list("object", b"p/", Some(b"p/1"), 1).unwrap()),
            ["p/2"]
        );
        assert_eq!(
            names(reader.list("object", b"", None, 100).unwrap()),
            ["p/1", "p/2", "p/3", "q/1"]
        );
        assert_eq!(
            names(reader.list("bucket", b"", None, 100).unwrap()),
            ["a", "c"]
        );
        assert!(reader.list("upload", b"", None, 100).unwrap().is_empty());
        // start-after beyond the prefix, before it, on the last key; limit 0.
        assert!(
            reader
                .list("object", b"p/", Some(b"q"), 100)
                .unwrap()
                .is_empty()
        );
        assert!(
            reader
                .list("object", b"p/", Some(b"p/3"), 100)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            names(reader.list("object", b"p/", Some(b"a"), 100).unwrap()),
            ["p/1", "p/2", "p/3"]
        );
        assert!(reader.list("object", b"", None, 0).unwrap().is_empty());
    });
}

#[test]
fn snapshot_build_and_install_round_trip() {
    rt().block_on(async {
        let dir_l = tempfile::tempdir().unwrap();
        let dir_f = tempfile::tempdir().unwrap();
        let (wal_l, engine_l) = open_node(dir_l.path());
        let (wal_f, engine_f) = open_node(dir_f.path());
        let (_, mut leader) = open_group(dir_l.path(), &wal_l, &engine_l, 5);
        let (_, mut follower) = open_group(dir_f.path(), &wal_f, &engine_f, 5);

        leader
            .apply([
                membership(1, 1, &[1, 2, 3]),
                normal(
                    2,
                    Command::writes(vec![put("bucket", "x", "1"), put("object", "x/y", "2")]),
                ),
                normal(3, Command::writes(vec![put("bucket", "z", "3")])),
            ])
            .await
            .unwrap();
        // The follower has stale data of its own that the install must remove.
        follower
            .apply([normal(
                1,
                Command::writes(vec![put("bucket", "stale", "s")]),
            )])
            .await
            .unwrap();

        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 3)));
        assert_eq!(snap.meta.last_membership.log_id(), &Some(log_id(1, 1)));
        let current = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
        assert_eq!(current.snapshot.get_ref(), snap.snapshot.get_ref());
        assert!(dir_l.path().join("snapshots/group-5/current.snap").exists());

        // A damaged copy is refused and changes nothing.
        let mut bad = snap.snapshot.get_ref().clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let res = follower
            .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(bad)))
            .await;
        assert!(res.is_err());
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 1))
        );
        assert!(
            follower
                .reader()
                .get(&key("bucket", "stale"))
                .unwrap()
                .is_some()
        );

        let mut recv = follower.begin_receiving_snapshot().await.unwrap();
        *recv = std::io::Cursor::new(snap.snapshot.get_ref().clone());
        follower.install_snapshot(&snap.meta, recv).await.unwrap();

        let (applied, mem) = follower.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(mem, snap.meta.last_membership);
        let fr = follower.reader();
        let lr = leader.reader();
        for t in ["bucket", "object"] {
            let f = fr.list(t, b"", None, 100).unwrap();
            assert_eq!(f, lr.list(t, b"", None, 100).unwrap(), "tree {t}");
        }
        assert_eq!(fr.get(&key("bucket", "stale")).unwrap(), None);
        assert_eq!(fr.get(&key("object", "x/y")).unwrap().unwrap().version, 2);
        assert_eq!(
            follower.get_current_snapshot().await.unwrap().unwrap().meta,
            snap.meta
        );

        // The follower goes on applying after the snapshot.
        let r = follower
            .apply([normal(
                4,
                Command {
                    conditions: vec![Condition::VersionEquals(key("bucket", "z"), 3)],
                    writes: vec![put("bucket", "z", "4")],
                    batch: Vec::new(),
                },
            )])
            .await
            .unwrap();
        assert_eq!(r, vec![Response::Applied { version: 4 }]);
    });
}

#[test]
fn restart_keeps_vote_log_state_and_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = rt().block_on(async {
        let (wal, engine) = open_node(dir.path());
        let (mut log, mut sm) = open_group(dir.path(), &wal, &engine, 2);
        // Another group in the same WAL and database.
        let (mut log9, mut sm9) = open_group(dir.path(), &wal, &engine, 9);

        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        let syncs = wal.stats().syncs;
        let entries: Vec<_> = [membership(1, 1, &[1])]
            .into_iter()
            .chain(
                (2..=20)
                    .map(|i| normal(i, Command::writes(vec![put("k", &format!("{i:03}"), "v")]))),
            )
            .collect();
        log.blocking_append(entries.clone()).await.unwrap();
        assert!(
            wal.stats().syncs > syncs,
            "append acknowledged after a sync"
        );
        log.save_committed(Some(log_id(1, 20))).await.unwrap();
        sm.apply(entries[..15].to_vec()).await.unwrap();

        // Snapshot at 15, purge behind it, then a conflicting suffix replaced.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.purge(log_id(1, 10)).await.unwrap();
        log.truncate(log_id(1, 18)).await.unwrap();
        log.blocking_append([blank(2, 18)]).await.unwrap();

        log9.blocking_append([blank(1, 1)]).await.unwrap();
        sm9.apply([blank(1, 1)]).await.unwrap();

        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
        assert_eq!(state.last_log_id, Some(log_id(2, 18)));
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read.first().unwrap().log_id, log_id(1, 11));
        (
            log.read_vote().await.unwrap(),
            state,
            log.read_committed().await.unwrap(),
            sm.applied_state().await.unwrap(),
            snap.meta,
            read,
            sm.reader().list("k", b"", None, 100).unwrap(),
        )
    });

    // Everything dropped (WAL, sled, runtime); reopen from the same directories.
    rt().block_on(async {
        let (wal, engine) = open_node(dir.path());
        let (mut log, mut sm) = open_group(dir.path(), &wal, &engine, 2);
        assert_eq!(log.read_vote().await.unwrap(), before.0);
        assert_eq!(before.0, Some(Vote::new_committed(3, 1)));
        assert_eq!(log.get_log_state().await.unwrap(), before.1);
        assert_eq!(log.read_committed().await.unwrap(), before.2);
        assert_eq!(before.2, Some(log_id(1, 20)));
        assert_eq!(sm.applied_state().await.unwrap(), before.3);
        assert_eq!(before.3.0, Some(log_id(1, 15)));
        assert_eq!(
            sm.get_current_snapshot().await.unwrap().unwrap().meta,
            before.4
        );
        let mut reader = log.get_log_reader().await;
        let read = reader.try_get_log_entries(0..).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            before.5.iter().map(|e| e.log_id).collect::<Vec<_>>()
        );
        assert_eq!(sm.reader().list("k", b"", None, 100).unwrap(), before.6);

        let (mut log9, mut sm9) = open_group(dir.path(), &wal, &engine, 9);
        assert_eq!(
            log9.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1))
        );
        assert_eq!(sm9.applied_state().await.unwrap().0, Some(log_id(1, 1)));
        assert_eq!(log9.read_vote().await.unwrap(), None);
    });
}

/// sled's flush is not an fsync: after a power loss the engine may be behind. If it is behind
/// the snapshot file (whose log may be purged), opening restores it from the file.
#[test]
fn engine_behind_its_snapshot_is_restored_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let snap_meta = rt().block_on(async {
        let (wal, engine) = open_node(dir.path());
        let (_, mut sm) = open_group(dir.path(), &wal, &engine, 4);
        sm.apply([
            membership(1, 1, &[1, 2]),
            normal(2, Command::writes(vec![put("t", "a", "1")])),
        ])
        .await
        .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        snap.meta
    });
    // Simulate the lost writes: wipe the engine (a fresh database).
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    rt().block_on(async {
        let (wal, engine) = open_node(dir.path());
        let (_, mut sm) = open_group(dir.path(), &wal, &engine, 4);
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, snap_meta.last_log_id);
        assert_eq!(mem, snap_meta.last_membership);
        assert_eq!(
            mem,
            StoredMembership::<u64, BasicNode>::new(
                Some(log_id(1, 1)),
                Membership::new(vec![[1, 2].into_iter().collect()], None)
            )
        );
        assert_eq!(
            sm.reader().get(&key("t", "a")).unwrap().unwrap().value,
            b"1"
        );
    });
}
