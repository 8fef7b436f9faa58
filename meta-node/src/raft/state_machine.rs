//! [`StateMachine`]: openraft's `RaftStateMachine` for one group, a conditional key-value
//! store on a [`KvEngine`] key space (sled by default), with snapshots in fsynced files.
//!
//! Layout of a group's key space: `0x00 "applied"` (bincode `Option<LogId>`), `0x00
//! "membership"` (bincode `StoredMembership`), and data keys `0x01, len(tree), tree, key` whose
//! values are `version (u64 big endian), value`, plus `0x00 "applying"` (bincode
//! `Option<LogId>`).
//!
//! Each entry's writes go to the engine in order, not in a transaction: `applying = N`, the
//! entry's data (and membership) writes, then `applied = N` (an entry with no writes only
//! moves `applied`). The engine recovers a prefix of its writes after a crash, so on open
//! `applying > applied` means the crash tore entry N's writes: the group is then restored from
//! its snapshot file (or emptied when it has none) and openraft re-applies the log after it.
//! Otherwise what the engine holds is exactly the applied log up to `applied`.
//!
//! Snapshots: one file per group, `<snapshot dir>/group-<id>/current.snap`, written to a
//! temporary file, fsynced, renamed, the directory fsynced. On open, if the snapshot file is
//! ahead of the engine (the engine lost unflushed writes in a crash, and the log behind the
//! snapshot may be purged), the engine is restored from it. See `docs/raft-storage.md`.

use std::fs;
use std::io::{Cursor, Write as _};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::engine::{EngineError, KvEngine, KvSpace, Pair, RawWrite, SledEngine};
use super::types::{Command, Condition, Key, MAX_TREE_NAME, Response, TypeConfig, Write};
use crate::wal::GroupId;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

const APPLIED_KEY: &[u8] = b"\x00applied";
/// Written before an entry's writes: a crash between it and `applied` left a torn entry.
const APPLYING_KEY: &[u8] = b"\x00applying";
const MEMBERSHIP_KEY: &[u8] = b"\x00membership";
const DATA_PREFIX: u8 = 0x01;

const SNAP_MAGIC: &[u8; 8] = b"DOGFSSNP";
const SNAP_VERSION: u32 = 1;
/// magic, version (u32), crc32c of the body (u32), body length (u64).
const SNAP_HEADER: usize = 8 + 4 + 4 + 8;
const SNAP_FILE: &str = "current.snap";

/// Errors of the state machine (converted into openraft's `StorageError` at the trait
/// boundary).
#[derive(Debug, Error)]
pub enum StateMachineError {
    #[error("group {group}: {source}")]
    Engine { group: GroupId, source: EngineError },
    #[error("group {group}: decoding {what}: {source}")]
    Decode {
        group: GroupId,
        what: &'static str,
        source: bincode::Error,
    },
    #[error("group {group}: encoding {what}: {source}")]
    Encode {
        group: GroupId,
        what: &'static str,
        source: bincode::Error,
    },
    #[error("group {group}: stored value of {key:?} is shorter than its version")]
    ShortValue { group: GroupId, key: Vec<u8> },
    #[error("group {group}: creating the snapshot directory {dir}: {source}")]
    CreateSnapshotDir {
        group: GroupId,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("group {group}: writing snapshot file {path}: {source}")]
    WriteSnapshot {
        group: GroupId,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("group {group}: reading snapshot file {path}: {source}")]
    ReadSnapshot {
        group: GroupId,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("group {group}: snapshot is malformed: {reason}")]
    BadSnapshot { group: GroupId, reason: String },
    #[error("group {group}: the snapshot file lock is poisoned")]
    SnapshotLock { group: GroupId },
}

/// A stored value and its version (the index of the log entry that last wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// The body of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    meta: Meta,
    /// Raw data pairs of the key space (meta keys excluded).
    pairs: Vec<Pair>,
}

fn tree_prefix(tree: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + tree.len());
    p.push(DATA_PREFIX);
    // Tree names are checked to be at most 255 bytes before they get here.
    p.push(u8::try_from(tree.len()).unwrap_or(u8::MAX));
    p.extend_from_slice(tree.as_bytes());
    p
}

fn data_key(key: &Key) -> Vec<u8> {
    let mut k = tree_prefix(&key.tree);
    k.extend_from_slice(&key.key);
    k
}

/// The smallest byte string greater than every string starting with `p`, if any.
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn split_value(group: GroupId, key: &[u8], raw: &[u8]) -> Result<Versioned, StateMachineError> {
    let Some((version, value)) = raw.split_first_chunk::<8>() else {
        return Err(StateMachineError::ShortValue {
            group,
            key: key.to_vec(),
        });
    };
    Ok(Versioned {
        version: u64::from_be_bytes(*version),
        value: value.to_vec(),
    })
}

fn check_tree(key: &Key) -> Result<(), String> {
    if key.tree.len() > MAX_TREE_NAME {
        return Err(format!(
            "tree name of {} bytes exceeds {MAX_TREE_NAME}",
            key.tree.len()
        ));
    }
    Ok(())
}

/// Read access to a group's data, shareable with request handlers (the [`StateMachine`]
/// itself is owned by openraft). Reads see applied state; linearizability is the caller's
/// business (read index).
#[derive(Debug, Clone)]
pub struct KvReader<S: KvSpace> {
    group: GroupId,
    space: S,
}

impl<S: KvSpace> KvReader<S> {
    /// The value and version of `key`.
    pub fn get(&self, key: &Key) -> Result<Option<Versioned>, StateMachineError> {
        let k = data_key(key);
        let raw = self
            .space
            .get(&k)
            .map_err(|source| StateMachineError::Engine {
                group: self.group,
                source,
            })?;
        raw.map(|r| split_value(self.group, &k, &r)).transpose()
    }

    /// Up to `limit` keys of `tree` starting with `prefix` and greater than `start_after` (if
    /// given), in key order, with their values.
    pub fn list(
        &self,
        tree: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StateMachineError> {
        let tp = tree_prefix(tree);
        let mut lo = tp.clone();
        lo.extend_from_slice(prefix);
        let from = match start_after {
            Some(after) if after >= prefix => {
                let mut a = tp.clone();
                a.extend_from_slice(after);
                Bound::Excluded(a)
            }
            _ => Bound::Included(lo.clone()),
        };
        let to = match prefix_end(&lo) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        // `start_after` past every key with the prefix: nothing (and no inverted range).
        if let (Bound::Excluded(f), Bound::Excluded(t)) = (&from, &to)
            && f >= t
        {
            return Ok(Vec::new());
        }
        let pairs =
            self.space
                .range(from, to, limit)
                .map_err(|source| StateMachineError::Engine {
                    group: self.group,
                    source,
                })?;
        pairs
            .into_iter()
            .map(|(k, v)| {
                let user = k.get(tp.len()..).unwrap_or_default().to_vec();
                split_value(self.group, &k, &v).map(|v| (user, v))
            })
            .collect()
    }
}

/// Where the current snapshot file of a group is, and its meta.
#[derive(Debug)]
struct SnapshotFiles {
    group: GroupId,
    dir: PathBuf,
    /// Meta of the current file; the lock also serialises writers of the file.
    current: Mutex<Option<Meta>>,
}

impl SnapshotFiles {
    fn path(&self) -> PathBuf {
        self.dir.join(SNAP_FILE)
    }

    fn encode(&self, body: &SnapshotBody) -> Result<Vec<u8>, StateMachineError> {
        let bytes = bincode::serialize(body).map_err(|source| StateMachineError::Encode {
            group: self.group,
            what: "a snapshot",
            source,
        })?;
        let mut out = Vec::with_capacity(SNAP_HEADER + bytes.len());
        out.extend_from_slice(SNAP_MAGIC);
        out.extend_from_slice(&SNAP_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
        Ok(out)
    }

    fn decode(&self, data: &[u8]) -> Result<SnapshotBody, StateMachineError> {
        let bad = |reason: &str| StateMachineError::BadSnapshot {
            group: self.group,
            reason: reason.to_string(),
        };
        let Some((header, body)) = data.split_at_checked(SNAP_HEADER) else {
            return Err(bad("shorter than its header"));
        };
        if &header[..8] != SNAP_MAGIC {
            return Err(bad("bad magic"));
        }
        let u32_at = |i: usize| {
            header
                .get(i..i + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_le_bytes)
        };
        if u32_at(8) != Some(SNAP_VERSION) {
            return Err(bad("unknown version"));
        }
        let len = header
            .get(16..24)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes);
        if len != Some(body.len() as u64) {
            return Err(bad("length mismatch"));
        }
        if u32_at(12) != Some(crc32c::crc32c(body)) {
            return Err(bad("checksum mismatch"));
        }
        bincode::deserialize(body).map_err(|source| StateMachineError::Decode {
            group: self.group,
            what: "a snapshot",
            source,
        })
    }

    /// Reads the current file, if any.
    fn read(&self) -> Result<Option<(Vec<u8>, SnapshotBody)>, StateMachineError> {
        let path = self.path();
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateMachineError::ReadSnapshot {
                    group: self.group,
                    path,
                    source,
                });
            }
        };
        let body = self.decode(&data)?;
        Ok(Some((data, body)))
    }

    /// Makes `data` (an encoded snapshot with `meta`) the current file unless the current one
    /// is at least as new: temp file, fsync, rename, directory fsync.
    fn install(&self, meta: &Meta, data: &[u8]) -> Result<(), StateMachineError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| StateMachineError::SnapshotLock { group: self.group })?;
        if let Some(cur) = current.as_ref()
            && cur.last_log_id > meta.last_log_id
        {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{SNAP_FILE}.tmp"));
        let path = self.path();
        let werr = |path: &Path, source| StateMachineError::WriteSnapshot {
            group: self.group,
            path: path.to_path_buf(),
            source,
        };
        {
            let mut f = fs::File::create(&tmp).map_err(|e| werr(&tmp, e))?;
            f.write_all(data).map_err(|e| werr(&tmp, e))?;
            f.sync_all().map_err(|e| werr(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| werr(&path, e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| werr(&self.dir, e))?;
        *current = Some(meta.clone());
        Ok(())
    }
}

/// The state machine of one group. Generic over the engine; sled by default.
#[derive(Debug)]
pub struct StateMachine<E: KvEngine = SledEngine> {
    group: GroupId,
    space: E::Space,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    snapshots: Arc<SnapshotFiles>,
}

impl<E: KvEngine> StateMachine<E> {
    /// Opens the state machine of `group` in `engine`, with its snapshot files under
    /// `snapshot_root/group-<group>/`. If the snapshot file is ahead of the engine (which lost
    /// unflushed writes in a crash), the engine is restored from it first.
    pub fn open(
        engine: &E,
        group: GroupId,
        snapshot_root: impl AsRef<Path>,
    ) -> Result<StateMachine<E>, StateMachineError> {
        let space = engine
            .space(group)
            .map_err(|source| StateMachineError::Engine { group, source })?;
        let dir = snapshot_root.as_ref().join(format!("group-{group}"));
        fs::create_dir_all(&dir).map_err(|source| StateMachineError::CreateSnapshotDir {
            group,
            dir: dir.clone(),
            source,
        })?;
        let snapshots = Arc::new(SnapshotFiles {
            group,
            dir,
            current: Mutex::new(None),
        });
        let mut sm = StateMachine {
            group,
            space,
            applied: None,
            membership: Membership::default(),
            snapshots,
        };
        let applying = sm.load_meta()?;
        let snapshot = sm.snapshots.read()?.map(|(_, body)| body);
        let snapshot_at = snapshot.as_ref().and_then(|b| b.meta.last_log_id);
        // A torn entry (the crash hit between `applying` and `applied`), or an engine behind
        // its snapshot file (it lost unflushed writes, and the log behind the snapshot may be
        // purged): restart from the snapshot, or from empty when there is none (then nothing
        // was ever purged, and openraft replays the whole log).
        let torn = applying > sm.applied;
        if torn || snapshot_at > sm.applied {
            tracing::warn!(
                group,
                engine_applied = ?sm.applied,
                torn = ?torn.then_some(applying),
                snapshot = ?snapshot_at,
                "restoring the group from its snapshot (openraft re-applies the log after it)"
            );
            let empty = SnapshotBody {
                meta: Meta::default(),
                pairs: Vec::new(),
            };
            sm.restore(snapshot.as_ref().unwrap_or(&empty))?;
        }
        if let Some(body) = snapshot
            && let Ok(mut cur) = sm.snapshots.current.lock()
        {
            *cur = Some(body.meta);
        }
        Ok(sm)
    }

    /// The group id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// A read handle on the group's data.
    pub fn reader(&self) -> KvReader<E::Space> {
        KvReader {
            group: self.group,
            space: self.space.clone(),
        }
    }

    /// Last applied log id and membership, as stored in the engine.
    pub fn applied(&self) -> (Option<LogId<NodeId>>, Membership) {
        (self.applied, self.membership.clone())
    }

    fn engine_err(&self, source: EngineError) -> StateMachineError {
        StateMachineError::Engine {
            group: self.group,
            source,
        }
    }

    fn encode<T: Serialize>(
        &self,
        what: &'static str,
        v: &T,
    ) -> Result<Vec<u8>, StateMachineError> {
        bincode::serialize(v).map_err(|source| StateMachineError::Encode {
            group: self.group,
            what,
            source,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        b: &[u8],
    ) -> Result<T, StateMachineError> {
        bincode::deserialize(b).map_err(|source| StateMachineError::Decode {
            group: self.group,
            what,
            source,
        })
    }

    /// Loads `applied` and the membership; returns the `applying` marker.
    fn load_meta(&mut self) -> Result<Option<LogId<NodeId>>, StateMachineError> {
        self.applied = self.load("the last applied log id", APPLIED_KEY)?.flatten();
        self.membership = self
            .load("the membership", MEMBERSHIP_KEY)?
            .unwrap_or_default();
        Ok(self.load("the applying marker", APPLYING_KEY)?.flatten())
    }

    fn load<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StateMachineError> {
        match self.space.get(key).map_err(|e| self.engine_err(e))? {
            Some(b) => Ok(Some(self.decode(what, &b)?)),
            None => Ok(None),
        }
    }

    /// Replaces the key space by a snapshot's content and meta, atomically.
    fn restore(&mut self, body: &SnapshotBody) -> Result<(), StateMachineError> {
        let mut pairs = Vec::with_capacity(body.pairs.len() + 2);
        for (k, v) in &body.pairs {
            if k.first() != Some(&DATA_PREFIX) {
                return Err(StateMachineError::BadSnapshot {
                    group: self.group,
                    reason: "a key outside the data range".to_string(),
                });
            }
            pairs.push((k.clone(), v.clone()));
        }
        pairs.push((
            APPLIED_KEY.to_vec(),
            self.encode("the last applied log id", &body.meta.last_log_id)?,
        ));
        pairs.push((
            MEMBERSHIP_KEY.to_vec(),
            self.encode("the membership", &body.meta.last_membership)?,
        ));
        self.space
            .replace_all(pairs)
            .map_err(|e| self.engine_err(e))?;
        self.space.flush().map_err(|e| self.engine_err(e))?;
        self.applied = body.meta.last_log_id;
        self.membership = body.meta.last_membership.clone();
        Ok(())
    }

    /// Applies one entry: decides its writes, then writes `applying`, the writes and
    /// `applied`, in that order (module docs).
    pub fn apply_entry(&mut self, entry: Entry<TypeConfig>) -> Result<Response, StateMachineError> {
        let log_id = entry.log_id;
        let mut membership = None;
        let (response, writes) = match entry.payload {
            EntryPayload::Blank => (Response::Internal, Vec::new()),
            EntryPayload::Membership(m) => {
                let stored = Membership::new(Some(log_id), m);
                let w = (
                    MEMBERSHIP_KEY.to_vec(),
                    Some(self.encode("the membership", &stored)?),
                );
                membership = Some(stored);
                (Response::Internal, vec![w])
            }
            EntryPayload::Normal(cmd) => self.decide(&cmd, log_id.index)?,
        };
        let applied = self.encode("the last applied log id", &Some(log_id))?;
        let mut all = Vec::with_capacity(writes.len() + 2);
        if !writes.is_empty() {
            all.push((APPLYING_KEY.to_vec(), Some(applied.clone())));
            all.extend(writes);
        }
        all.push((APPLIED_KEY.to_vec(), Some(applied)));
        self.space
            .write_in_order(&all)
            .map_err(|e| self.engine_err(e))?;
        self.applied = Some(log_id);
        if let Some(m) = membership {
            self.membership = m;
        }
        Ok(response)
    }

    /// A command's response and data writes: its conditions checked against the stored values
    /// (and, in a batch, against the writes of the sub-commands before it).
    fn decide(
        &self,
        cmd: &Command,
        index: u64,
    ) -> Result<(Response, Vec<RawWrite>), StateMachineError> {
        let is_batch = !cmd.batch.is_empty();
        let subs: Vec<&Command> = if is_batch {
            cmd.batch.iter().collect()
        } else {
            vec![cmd]
        };
        let malformed_batch = is_batch
            && (!cmd.conditions.is_empty()
                || !cmd.writes.is_empty()
                || cmd.batch.iter().any(|c| !c.batch.is_empty()));
        let invalid = if malformed_batch {
            Some("a batch command carries conditions, writes or a nested batch".to_string())
        } else {
            subs.iter()
                .flat_map(|c| {
                    c.conditions
                        .iter()
                        .map(Condition::key)
                        .chain(c.writes.iter().map(Write::key))
                })
                .find_map(|k| check_tree(k).err())
        };
        if let Some(reason) = invalid {
            return Ok((Response::Invalid { reason }, Vec::new()));
        }
        let group = self.group;
        let mut outcomes = Vec::with_capacity(subs.len());
        // Writes of earlier sub-commands of a batch, seen by the conditions of later ones.
        let mut overlay: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> =
            std::collections::HashMap::new();
        let mut writes = Vec::new();
        for sub in &subs {
            let mut failed = None;
            for (i, c) in sub.conditions.iter().enumerate() {
                let k = data_key(c.key());
                let raw = match overlay.get(&k) {
                    Some(o) => o.clone(),
                    None => self.space.get(&k).map_err(|e| self.engine_err(e))?,
                };
                let v = raw.and_then(|raw| split_value(group, &[], &raw).ok());
                let holds = match c {
                    Condition::Exists(_) => v.is_some(),
                    Condition::Absent(_) => v.is_none(),
                    Condition::Equals(_, want) => v.is_some_and(|v| &v.value == want),
                    Condition::VersionEquals(_, want) => v.is_some_and(|v| v.version == *want),
                };
                if !holds {
                    failed = Some(i);
                    break;
                }
            }
            if let Some(index) = failed {
                outcomes.push(Response::ConditionFailed { index });
                continue;
            }
            outcomes.push(Response::Applied { version: index });
            for w in &sub.writes {
                let (k, v) = match w {
                    Write::Put(k, v) => {
                        let mut stored = Vec::with_capacity(8 + v.len());
                        stored.extend_from_slice(&index.to_be_bytes());
                        stored.extend_from_slice(v);
                        (data_key(k), Some(stored))
                    }
                    Write::Delete(k) => (data_key(k), None),
                };
                if is_batch {
                    overlay.insert(k.clone(), v.clone());
                }
                writes.push((k, v));
            }
        }
        let response = if is_batch {
            Response::Batch(outcomes)
        } else {
            outcomes.pop().unwrap_or(Response::Internal)
        };
        Ok((response, writes))
    }

    /// Copies the group's data and meta for a snapshot (a consistent cut: the state machine
    /// applies nothing meanwhile).
    fn snapshot_builder(&mut self) -> Result<SnapshotBuilder, StateMachineError> {
        // Not an fsync for sled; the snapshot file written next is what makes this cut
        // durable (see `open`).
        self.space.flush().map_err(|e| self.engine_err(e))?;
        let mut pairs = Vec::new();
        let end = prefix_end(&[DATA_PREFIX]).map_or(Bound::Unbounded, Bound::Excluded);
        let mut from = Bound::Included(vec![DATA_PREFIX]);
        loop {
            let chunk = self
                .space
                .range(from.clone(), end.clone(), 4096)
                .map_err(|e| self.engine_err(e))?;
            let Some((last, _)) = chunk.last() else { break };
            from = Bound::Excluded(last.clone());
            let n = chunk.len();
            pairs.extend(chunk);
            if n < 4096 {
                break;
            }
        }
        Ok(SnapshotBuilder {
            files: self.snapshots.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            pairs,
            failed: None,
        })
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StateMachineError> {
        Ok(self.snapshots.read()?.map(|(data, body)| Snapshot {
            meta: body.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }

    /// Installs a received snapshot: the file first (fsynced), then the key space.
    fn install(&mut self, meta: &Meta, data: &[u8]) -> Result<(), StateMachineError> {
        let body = self.snapshots.decode(data)?;
        if body.meta.last_log_id != meta.last_log_id
            || body.meta.last_membership != meta.last_membership
        {
            return Err(StateMachineError::BadSnapshot {
                group: self.group,
                reason: format!(
                    "file holds {:?}, expected {:?}",
                    body.meta.last_log_id, meta.last_log_id
                ),
            });
        }
        let body = SnapshotBody {
            meta: meta.clone(),
            pairs: body.pairs,
        };
        let data = self.snapshots.encode(&body)?;
        self.snapshots.install(meta, &data)?;
        self.restore(&body)
    }
}

/// Builds a snapshot file from a copy taken by `get_snapshot_builder`.
#[derive(Debug)]
pub struct SnapshotBuilder {
    files: Arc<SnapshotFiles>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    pairs: Vec<Pair>,
    /// Copying the state failed (`get_snapshot_builder` cannot return an error).
    failed: Option<StateMachineError>,
}

impl SnapshotBuilder {
    fn build(&mut self) -> Result<Snapshot<TypeConfig>, StateMachineError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = match &self.applied {
            Some(l) => format!(
                "{}-{}-{}-{nanos}",
                l.leader_id.term, l.leader_id.node_id, l.index
            ),
            None => format!("none-{nanos}"),
        };
        let body = SnapshotBody {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            pairs: std::mem::take(&mut self.pairs),
        };
        let data = self.files.encode(&body)?;
        self.files.install(&body.meta, &data)?;
        Ok(Snapshot {
            meta: body.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn sm_read_err(e: StateMachineError) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        self.build()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl<E: KvEngine> RaftStateMachine<TypeConfig> for StateMachine<E> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        Ok(self.applied())
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let r = self
                .apply_entry(entry)
                .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?;
            out.push(r);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        match self.snapshot_builder() {
            Ok(b) => b,
            Err(e) => {
                // The trait gives no way to fail here: hand out a builder that fails to build.
                tracing::error!(group = self.group, error = %e, "copying state for a snapshot");
                SnapshotBuilder {
                    files: self.snapshots.clone(),
                    applied: self.applied,
                    membership: self.membership.clone(),
                    pairs: Vec::new(),
                    failed: Some(e),
                }
            }
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        self.install(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        self.current_snapshot().map_err(sm_read_err)
    }
}
