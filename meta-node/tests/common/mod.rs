//! A deliberately simple model of what the WAL must return, and helpers shared by the tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use dogfs_meta::wal::{Wal, WalConfig};

/// One operation, at the granularity of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Entry {
        group: u64,
        index: u64,
        payload: Bytes,
    },
    Truncate {
        group: u64,
        since: u64,
    },
    Purge {
        group: u64,
        up_to: u64,
        payload: Bytes,
    },
    Vote {
        group: u64,
        payload: Bytes,
    },
    Committed {
        group: u64,
        payload: Bytes,
    },
}

impl Op {
    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> u64 {
        25 + match self {
            Op::Entry { payload, .. }
            | Op::Purge { payload, .. }
            | Op::Vote { payload, .. }
            | Op::Committed { payload, .. } => payload.len() as u64,
            Op::Truncate { .. } => 0,
        }
    }

    /// Submits the operation and waits for its acknowledgement.
    pub fn run(&self, wal: &Wal) {
        self.submit(wal).wait().unwrap();
    }

    pub fn submit(&self, wal: &Wal) -> dogfs_meta::wal::Ack {
        match self.clone() {
            Op::Entry {
                group,
                index,
                payload,
            } => wal.append_entries(group, index, [payload]),
            Op::Truncate { group, since } => wal.truncate(group, since),
            Op::Purge {
                group,
                up_to,
                payload,
            } => wal.purge(group, up_to, payload),
            Op::Vote { group, payload } => wal.save_vote(group, payload),
            Op::Committed { group, payload } => wal.save_committed(group, payload),
        }
        .unwrap()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupModel {
    pub entries: BTreeMap<u64, Bytes>,
    pub purged: Option<(u64, Bytes)>,
    pub vote: Option<Bytes>,
    pub committed: Option<Bytes>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub groups: BTreeMap<u64, GroupModel>,
}

impl Model {
    pub fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Entry {
                group,
                index,
                payload,
            } => {
                self.groups
                    .entry(group)
                    .or_default()
                    .entries
                    .insert(index, payload);
            }
            Op::Truncate { group, since } => {
                let g = self.groups.entry(group).or_default();
                g.entries.split_off(&since);
            }
            Op::Purge {
                group,
                up_to,
                payload,
            } => {
                let g = self.groups.entry(group).or_default();
                if g.purged.as_ref().is_none_or(|(p, _)| *p <= up_to) {
                    g.entries = g.entries.split_off(&(up_to + 1));
                    g.purged = Some((up_to, payload));
                }
            }
            Op::Vote { group, payload } => {
                self.groups.entry(group).or_default().vote = Some(payload)
            }
            Op::Committed { group, payload } => {
                self.groups.entry(group).or_default().committed = Some(payload)
            }
        }
    }

    /// Where the next entry of `group` goes.
    pub fn next_index(&self, group: u64) -> u64 {
        let Some(g) = self.groups.get(&group) else {
            return 1;
        };
        match g.entries.last_key_value() {
            Some((i, _)) => i + 1,
            None => g.purged.as_ref().map_or(1, |(p, _)| p + 1),
        }
    }

    pub fn of(ops: &[Op]) -> Model {
        let mut m = Model::default();
        for op in ops {
            m.apply(op);
        }
        m
    }

    /// Asserts the WAL returns exactly this model's state.
    pub fn check(&self, wal: &Wal, ctx: &str) {
        let groups: BTreeSet<u64> = wal
            .groups()
            .into_iter()
            .chain(self.groups.keys().copied())
            .collect();
        let empty = GroupModel::default();
        for g in groups {
            let m = self.groups.get(&g).unwrap_or(&empty);
            let got: BTreeMap<u64, Bytes> = wal.entries(g, ..).into_iter().collect();
            assert_eq!(got, m.entries, "{ctx}: entries of group {g}");
            let b = wal.bounds(g);
            assert_eq!(
                b.first,
                m.entries.keys().next().copied(),
                "{ctx}: first of group {g}"
            );
            assert_eq!(
                b.last,
                m.entries.keys().last().copied(),
                "{ctx}: last of group {g}"
            );
            assert_eq!(wal.last_index(g), b.last);
            assert_eq!(b.purged, m.purged, "{ctx}: purged of group {g}");
            assert_eq!(wal.vote(g), m.vote, "{ctx}: vote of group {g}");
            assert_eq!(
                wal.committed(g),
                m.committed,
                "{ctx}: committed of group {g}"
            );
        }
    }
}

pub fn open(dir: &Path, config: &WalConfig) -> Wal {
    Wal::open(dir, config.clone()).unwrap().0
}
