//! The state machine's command semantics against a model: random conditional commands over a
//! few keys in two trees, with snapshot transfers and restarts at random points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use dogfs_meta::raft::{
    Command, Condition, Key, Response, SledEngine, StateMachine, TypeConfig, Write,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;

type Model = BTreeMap<Key, (Vec<u8>, u64)>;

fn key_strategy() -> impl Strategy<Value = Key> {
    (prop_oneof![Just("a"), Just("b")], 0u8..4).prop_map(|(t, k)| Key::new(t, vec![k]))
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

fn condition_strategy() -> impl Strategy<Value = Condition> {
    prop_oneof![
        key_strategy().prop_map(Condition::Exists),
        key_strategy().prop_map(Condition::Absent),
        (key_strategy(), value_strategy()).prop_map(|(k, v)| Condition::Equals(k, v)),
        (key_strategy(), 0u64..6).prop_map(|(k, v)| Condition::VersionEquals(k, v)),
    ]
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        (key_strategy(), value_strategy()).prop_map(|(k, v)| Write::Put(k, v)),
        key_strategy().prop_map(Write::Delete),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Apply(Command),
    /// Build a snapshot and install it into a fresh state machine, which continues.
    Transfer,
    /// Drop and reopen the engine and state machine.
    Restart,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (
            prop::collection::vec(condition_strategy(), 0..3),
            prop::collection::vec(write_strategy(), 0..4)
        )
            .prop_map(|(conditions, writes)| Step::Apply(Command {
                conditions,
                writes,
                batch: Vec::new(),
            })),
        1 => Just(Step::Transfer),
        1 => Just(Step::Restart),
    ]
}

fn model_apply(model: &mut Model, cmd: &Command, index: u64) -> Response {
    for (i, c) in cmd.conditions.iter().enumerate() {
        let v = model.get(c.key());
        let ok = match c {
            Condition::Exists(_) => v.is_some(),
            Condition::Absent(_) => v.is_none(),
            Condition::Equals(_, want) => v.is_some_and(|(v, _)| v == want),
            Condition::VersionEquals(_, want) => v.is_some_and(|(_, ver)| ver == want),
        };
        if !ok {
            return Response::ConditionFailed { index: i };
        }
    }
    for w in &cmd.writes {
        match w {
            Write::Put(k, v) => {
                model.insert(k.clone(), (v.clone(), index));
            }
            Write::Delete(k) => {
                model.remove(k);
            }
        }
    }
    Response::Applied { version: index }
}

fn contents(sm: &StateMachine<SledEngine>) -> Model {
    let r = sm.reader();
    let mut out = Model::new();
    for t in ["a", "b"] {
        for (k, v) in r.list(t, b"", None, usize::MAX).unwrap() {
            out.insert(Key::new(t, k), (v.value, v.version));
        }
    }
    out
}

fn open(dir: &Path) -> (SledEngine, StateMachine<SledEngine>) {
    // sled releases its file lock from a background thread after the last handle drops, so a
    // reopen straight after a drop can find it still held: retry, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let engine = loop {
        match SledEngine::open(dir.join("sled")) {
            Ok(e) => break e,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening sled: {e}"),
        }
    };
    let sm = StateMachine::open(&engine, 1, dir.join("snapshots")).unwrap();
    (engine, sm)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn commands_match_the_model(steps in prop::collection::vec(step_strategy(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut dirs = vec![tempfile::tempdir().unwrap()];
            let (mut engine, mut sm) = open(dirs[0].path());
            let mut model = Model::new();
            let mut index = 0;
            for step in steps {
                match step {
                    Step::Apply(cmd) => {
                        index += 1;
                        let want = model_apply(&mut model, &cmd, index);
                        let entry: Entry<TypeConfig> = Entry {
                            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                            payload: EntryPayload::Normal(cmd),
                        };
                        let got = sm.apply([entry]).await.unwrap();
                        assert_eq!(got, vec![want]);
                    }
                    Step::Transfer => {
                        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
                        let dir = tempfile::tempdir().unwrap();
                        let (e2, mut sm2) = open(dir.path());
                        sm2.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
                        drop(sm);
                        drop(engine);
                        (engine, sm) = (e2, sm2);
                        dirs.push(dir);
                    }
                    Step::Restart => {
                        drop(sm);
                        drop(engine);
                        (engine, sm) = open(dirs.last().unwrap().path());
                    }
                }
                assert_eq!(contents(&sm), model);
                let applied = sm.applied_state().await.unwrap().0.map(|l| l.index);
                assert_eq!(applied, (index > 0).then_some(index));
            }
        });
    }
}
