//! The shard index (`catalog::index`) and the repair operations (`catalog::repair`) on the real
//! state machine (sled in a temp dir), commands applied through `StateMachine::apply_entry`:
//! one system group and P partitions, like `tests/catalog.rs`.
//!
//! - `index_equals_the_model_after_every_operation`: a seeded random sequence of every operation
//!   that creates or drops a shard reference; after each one the `shardref` tree of every
//!   partition equals exactly what the model derives, no queued deletion names a referenced
//!   shard, and every shard that lost its last reference is queued for deletion.
//! - `degraded_writes_*`: unplaced targets and the write quorum.
//! - `repair_*`: the repair queue, the survey and the repair commit, with its races.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::{NodeId, NodeState};
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_meta::catalog::index::{self, RefKind, ShardRef, UNPLACED};
use dogfs_meta::catalog::repair::{
    self, NodeHealth, Rebuilt, RepairReason, ShardCondition, StaleRepair,
};
use dogfs_meta::catalog::{
    BeginPut, CatalogError, CommitObject, DEFAULT_INLINE_MAX, GcReason, ObjectBody, ObjectVersion,
    Prepared, PutInline, ShardReport, Targets, keys, ops, partition_of,
};
use dogfs_meta::raft::{
    Command, KvReader, Response, SledEngine, SledSpace, StateMachine, TypeConfig, Versioned,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const NOW: u64 = 1_800_000_000;
const SEGMENT: u64 = 16384;
const BUCKET: &str = "bkt";

/// RS 2+2 with 4 KiB cells: a 16 KiB segment is 2 stripes.
fn scheme() -> ErasureScheme {
    ErasureScheme::new(Codec::ReedSolomon, 2, 2, 4096).unwrap()
}

fn b() -> BucketName {
    BucketName::parse(BUCKET).unwrap()
}

fn k(key: &str) -> ObjectKey {
    ObjectKey::parse(key).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Harness (the few lines of tests/catalog.rs it needs).

struct Group {
    sm: StateMachine<SledEngine>,
    next: u64,
}

impl Group {
    fn apply(&mut self, cmd: Command) -> Response {
        self.next += 1;
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next),
            payload: EntryPayload::Normal(cmd),
        };
        self.sm.apply_entry(entry).unwrap()
    }

    fn reader(&self) -> KvReader<SledSpace> {
        self.sm.reader()
    }

    fn run(&mut self, p: &Prepared) -> Result<u64, CatalogError> {
        let r = self.apply(p.command.clone());
        p.interpret(&r)
    }
}

type Dump = Vec<(String, Vec<(Vec<u8>, Versioned)>)>;

struct Cluster {
    _dir: TempDir,
    system: Group,
    parts: Vec<Group>,
    incarnation: u64,
}

impl Cluster {
    fn new(partitions: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path().join("sled")).unwrap();
        let open = |g| Group {
            sm: StateMachine::open(&engine, g, dir.path().join("snapshots")).unwrap(),
            next: 0,
        };
        let mut system = open(0);
        let parts = (1..=partitions).map(open).collect();
        let incarnation = system.run(&ops::create_bucket(&b(), NOW).unwrap()).unwrap();
        Cluster {
            _dir: dir,
            system,
            parts,
            incarnation,
        }
    }

    fn pi(&self, key: &str) -> usize {
        (partition_of(&b(), &k(key), self.parts.len() as u64) - 1) as usize
    }

    fn part(&mut self, key: &str) -> &mut Group {
        let i = self.pi(key);
        &mut self.parts[i]
    }

    fn reader(&self, key: &str) -> KvReader<SledSpace> {
        self.parts[self.pi(key)].reader()
    }

    /// Every tree of every group, for "state unchanged".
    fn dump(&self) -> Vec<Dump> {
        let trees = [
            keys::BUCKETS,
            keys::OBJECTS,
            keys::UPLOADS,
            keys::GC,
            keys::SEALS,
            keys::SHARD_INDEX,
            keys::REPAIRS,
        ];
        std::iter::once(&self.system)
            .chain(&self.parts)
            .map(|g| {
                trees
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            g.reader().list(t, b"", None, usize::MAX).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The `shardref` tree of partition `i` (0-based), decoded.
    fn index_of(&self, i: usize) -> BTreeMap<(u128, u128), ShardRef> {
        let r = self.parts[i].reader();
        r.list(keys::SHARD_INDEX, b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(key, _)| {
                assert_eq!(key.len(), 32, "index key {key:02x?}");
                let node = u128::from_be_bytes(key[..16].try_into().unwrap());
                let shard = u128::from_be_bytes(key[16..].try_into().unwrap());
                let r = index::get(&r, node, shard).unwrap().unwrap();
                ((node, shard), r)
            })
            .collect()
    }

    fn gc(&self) -> BTreeMap<u128, (u128, GcReason)> {
        self.parts
            .iter()
            .flat_map(|g| ops::gc_pending(&g.reader(), usize::MAX).unwrap())
            .map(|e| (e.shard_id, (e.node, e.reason)))
            .collect()
    }

    fn repairs(&self) -> usize {
        self.parts
            .iter()
            .map(|g| {
                g.reader()
                    .list(keys::REPAIRS, b"", None, usize::MAX)
                    .unwrap()
                    .len()
            })
            .sum()
    }

    fn object(&self, key: &str) -> Option<ObjectVersion> {
        ops::read_object(&self.reader(key), &b(), &k(key))
            .unwrap()
            .map(|(o, _)| o)
    }

    fn begin(
        &mut self,
        key: &str,
        upload_id: u128,
        size: u64,
        targets: Targets,
        now: u64,
        ttl: u64,
    ) -> Result<u64, CatalogError> {
        let req = BeginPut {
            upload_id,
            bucket: b(),
            key: k(key),
            size,
            scheme: scheme(),
            segment_size: SEGMENT,
            targets,
            now_unix: now,
            ttl_secs: ttl,
        };
        let p = ops::begin_put(&req, self.incarnation, DEFAULT_INLINE_MAX)?;
        self.part(key).run(&p)
    }

    fn commit(&mut self, req: &CommitObject) -> Result<u64, CatalogError> {
        let p = ops::commit_object(&self.reader(req.key.as_str()), req, DEFAULT_INLINE_MAX)?;
        self.part(req.key.as_str()).run(&p)
    }

    fn put_inline(&mut self, key: &str, version_id: u128, now: u64) -> Result<u64, CatalogError> {
        let req = PutInline {
            version_id,
            bucket: b(),
            key: k(key),
            data: vec![3; 100],
            etag: "e".into(),
            content_type: String::new(),
            user_metadata: BTreeMap::new(),
            scheme: scheme(),
            segment_size: SEGMENT,
            now_unix: now,
        };
        let p = ops::put_inline(
            &self.reader(key),
            &req,
            self.incarnation,
            DEFAULT_INLINE_MAX,
        )?;
        self.part(key).run(&p)
    }

    fn delete(&mut self, key: &str, now: u64) -> Result<Option<u64>, CatalogError> {
        match ops::delete_object(&self.reader(key), &b(), &k(key), now)? {
            Some(p) => self.part(key).run(&p).map(Some),
            None => Ok(None),
        }
    }

    /// A fully placed BeginPut and a commit with every shard stored (or `missing` ones
    /// reported missing): the new version.
    fn put(
        &mut self,
        key: &str,
        ids: &mut Ids,
        size: u64,
        nodes: &[u128],
        missing: &[(u64, usize)],
    ) -> ObjectVersion {
        let upload = ids.next();
        let layout = ObjectLayout::new(size, SEGMENT, scheme()).unwrap();
        let targets: Targets = layout
            .segments()
            .map(|_| {
                nodes
                    .iter()
                    .map(|n| (ShardId::from_u128(ids.next()), Some(NodeId::from_u128(*n))))
                    .collect()
            })
            .collect();
        self.begin(key, upload, size, targets, NOW, 3600).unwrap();
        let mut req = commit_req(key, upload, size, NOW + 1);
        for (s, i) in missing {
            req.segments[*s as usize][*i] = ShardReport::Missing;
        }
        self.commit(&req).unwrap();
        self.object(key).unwrap()
    }
}

struct Ids(u128);

impl Ids {
    fn next(&mut self) -> u128 {
        self.0 += 1;
        // Spread over the id space, like random ids.
        self.0
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            | 1
    }
}

fn crc(upload: u128, segment: u64, shard: usize) -> u32 {
    (upload as u32) ^ ((segment as u32) << 8) ^ shard as u32
}

/// A commit of `size` bytes with every shard reported stored (the caller edits the reports).
fn commit_req(key: &str, upload: u128, size: u64, now: u64) -> CommitObject {
    let layout = ObjectLayout::new(size, SEGMENT, scheme()).unwrap();
    let (segments, inline) = if size <= DEFAULT_INLINE_MAX {
        (Vec::new(), Some(vec![7u8; size as usize]))
    } else {
        let segs = layout
            .segments()
            .map(|s| {
                (0..s.total_shards())
                    .map(|i| ShardReport::Stored {
                        client_crc32c: crc(upload, s.index(), i),
                        server_crc32c: crc(upload, s.index(), i),
                        size: s.shard_len(),
                    })
                    .collect()
            })
            .collect();
        (segs, None)
    };
    CommitObject {
        upload_id: upload,
        bucket: b(),
        key: k(key),
        size,
        etag: format!("etag-{upload}"),
        content_type: String::new(),
        user_metadata: BTreeMap::new(),
        segments,
        inline,
        now_unix: now,
        min_write_shards: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The index equals the model after every operation.

#[derive(Debug, Clone)]
struct MUpload {
    key: String,
    size: u64,
    expires: u64,
    /// Per segment, per index: (shard, node or UNPLACED, since).
    targets: Vec<Vec<(u128, u128, u64)>>,
}

#[derive(Debug, Clone)]
struct MShard {
    shard: u128,
    node: u128,
    missing: bool,
    since: u64,
}

#[derive(Debug, Clone)]
struct MObject {
    version_id: u128,
    /// Empty for an inline object.
    segments: Vec<Vec<MShard>>,
}

#[derive(Default)]
struct Model {
    uploads: BTreeMap<u128, MUpload>,
    objects: BTreeMap<String, MObject>,
}

impl Model {
    /// The index every partition must hold: partition (0-based) → entries.
    fn index(&self, c: &Cluster) -> Vec<BTreeMap<(u128, u128), ShardRef>> {
        let mut out = vec![BTreeMap::new(); c.parts.len()];
        for (id, u) in &self.uploads {
            for (segment, seg) in (0u64..).zip(&u.targets) {
                for (i, (shard, node, since)) in seg.iter().enumerate() {
                    if *node == UNPLACED {
                        continue;
                    }
                    let r = ShardRef {
                        kind: RefKind::Upload,
                        bucket: BUCKET.into(),
                        key: u.key.clone(),
                        version_id: *id,
                        segment,
                        index: i as u8,
                        since_unix: *since,
                    };
                    assert!(out[c.pi(&u.key)].insert((*node, *shard), r).is_none());
                }
            }
        }
        for (key, o) in &self.objects {
            for (segment, seg) in (0u64..).zip(&o.segments) {
                for (i, s) in seg.iter().enumerate() {
                    let r = ShardRef {
                        kind: RefKind::Object,
                        bucket: BUCKET.into(),
                        key: key.clone(),
                        version_id: o.version_id,
                        segment,
                        index: i as u8,
                        since_unix: s.since,
                    };
                    let holder = if s.missing { UNPLACED } else { s.node };
                    assert!(out[c.pi(key)].insert((holder, s.shard), r).is_none());
                }
            }
        }
        out
    }
}

/// Live nodes the random test places on.
const NODES: [u128; 7] = [101, 102, 103, 104, 105, 106, 107];

struct Run {
    c: Cluster,
    m: Model,
    ids: Ids,
    rng: StdRng,
    now: u64,
    /// (node, shard) that lost their last reference while stored somewhere: must be queued.
    must_gc: BTreeMap<u128, u128>,
    /// Every (node, shard) ever indexed.
    ever: BTreeSet<(u128, u128)>,
    prev: Vec<BTreeMap<(u128, u128), ShardRef>>,
    counts: BTreeMap<&'static str, (usize, usize)>,
}

impl Run {
    fn count(&mut self, op: &'static str, ok: bool) {
        let e = self.counts.entry(op).or_default();
        if ok {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    /// `result` must be `Ok` iff `expect_ok`; an error must leave every tree unchanged.
    fn expect<T: std::fmt::Debug>(
        &mut self,
        op: &'static str,
        before: &[Dump],
        result: Result<T, CatalogError>,
        expect_ok: bool,
    ) -> Option<T> {
        match result {
            Ok(v) => {
                assert!(expect_ok, "{op}: succeeded, the model expected a failure");
                self.count(op, true);
                Some(v)
            }
            Err(e) => {
                assert!(!expect_ok, "{op}: {e} (the model expected success)");
                assert!(
                    before == self.c.dump(),
                    "{op}: failed with {e} but changed the state"
                );
                self.count(op, false);
                None
            }
        }
    }

    fn random_key(&mut self) -> String {
        format!("k{}", self.rng.random_range(0..5))
    }

    fn begin(&mut self) {
        let key = self.random_key();
        let size = match self.rng.random_range(0..4) {
            0 => self.rng.random_range(0..=DEFAULT_INLINE_MAX),
            1 => self.rng.random_range(DEFAULT_INLINE_MAX + 1..=SEGMENT),
            _ => self.rng.random_range(SEGMENT + 1..=3 * SEGMENT),
        };
        let layout = ObjectLayout::new(size, SEGMENT, scheme()).unwrap();
        let mut targets: Targets = Vec::new();
        let mut mt = Vec::new();
        if size > DEFAULT_INLINE_MAX {
            for _ in layout.segments() {
                let mut nodes = NODES.to_vec();
                nodes.shuffle(&mut self.rng);
                // Mostly fully placed; sometimes 1, rarely 2 shards unplaced (more than the
                // quorum allows: that commit must fail).
                let unplaced = match self.rng.random_range(0..10) {
                    0..=5 => 0,
                    6..=8 => 1,
                    _ => 2,
                };
                let mut seg = Vec::new();
                let mut mseg = Vec::new();
                for (i, n) in nodes.iter().take(scheme().total()).enumerate() {
                    let shard = self.ids.next();
                    let node = (i < scheme().total() - unplaced).then_some(*n);
                    seg.push((ShardId::from_u128(shard), node.map(NodeId::from_u128)));
                    mseg.push((shard, node.unwrap_or(UNPLACED), self.now));
                }
                // The unplaced ones anywhere in the segment.
                let order: Vec<usize> = {
                    let mut o: Vec<usize> = (0..seg.len()).collect();
                    o.shuffle(&mut self.rng);
                    o
                };
                targets.push(order.iter().map(|i| seg[*i]).collect());
                mt.push(order.iter().map(|i| mseg[*i]).collect());
            }
        }
        let upload = self.ids.next();
        let ttl = self.rng.random_range(5..200);
        let before = self.c.dump();
        let r = self.c.begin(&key, upload, size, targets, self.now, ttl);
        if self.expect("begin_put", &before, r, true).is_some() {
            self.m.uploads.insert(
                upload,
                MUpload {
                    key,
                    size,
                    expires: self.now + ttl,
                    targets: mt,
                },
            );
        }
    }

    fn pick_upload(&mut self) -> Option<u128> {
        let ids: Vec<u128> = self.m.uploads.keys().copied().collect();
        ids.choose(&mut self.rng).copied()
    }

    fn replace_target(&mut self) {
        let Some(id) = self.pick_upload() else { return };
        let u = self.m.uploads[&id].clone();
        if u.targets.is_empty() {
            return;
        }
        let segment = self.rng.random_range(0..u.targets.len());
        let index = self.rng.random_range(0..scheme().total());
        let used: BTreeSet<u128> = u.targets[segment].iter().map(|t| t.1).collect();
        let free: Vec<u128> = NODES
            .iter()
            .copied()
            .filter(|n| !used.contains(n))
            .collect();
        let Some(node) = free.choose(&mut self.rng).copied() else {
            return;
        };
        let shard = self.ids.next();
        let before = self.c.dump();
        let r = ops::replace_target(
            &self.c.reader(&u.key),
            id,
            &b(),
            &k(&u.key),
            segment as u64,
            index,
            (ShardId::from_u128(shard), NodeId::from_u128(node)),
            self.now,
        )
        .and_then(|p| self.c.part(&u.key).run(&p));
        if self.expect("replace_target", &before, r, true).is_some() {
            self.m.uploads.get_mut(&id).unwrap().targets[segment][index] = (shard, node, self.now);
        }
    }

    fn commit(&mut self) {
        let Some(id) = self.pick_upload() else { return };
        let u = self.m.uploads[&id].clone();
        let mut req = commit_req(&u.key, id, u.size, self.now);
        let mut expect_ok = self.now <= u.expires;
        let quorum = ops::write_quorum(0, 2, 4);
        for (s, seg) in u.targets.iter().enumerate() {
            for (i, (_, node, _)) in seg.iter().enumerate() {
                // Unplaced targets are always reported missing (the degraded-write test
                // covers the other case); placed ones sometimes fail too.
                if *node == UNPLACED || self.rng.random_bool(0.1) {
                    req.segments[s][i] = ShardReport::Missing;
                }
            }
            let missing = req.segments[s]
                .iter()
                .filter(|r| **r == ShardReport::Missing)
                .count();
            if missing > 4 - quorum {
                expect_ok = false;
            }
        }
        let before = self.c.dump();
        let r = self.c.commit(&req);
        if self.expect("commit", &before, r, expect_ok).is_some() {
            let u = self.m.uploads.remove(&id).unwrap();
            let segments = u
                .targets
                .iter()
                .zip(&req.segments)
                .map(|(seg, reports)| {
                    seg.iter()
                        .zip(reports)
                        .map(|((shard, node, _), r)| MShard {
                            shard: *shard,
                            node: *node,
                            missing: *r == ShardReport::Missing,
                            since: self.now,
                        })
                        .collect()
                })
                .collect();
            self.m.objects.insert(
                u.key,
                MObject {
                    version_id: id,
                    segments,
                },
            );
        }
    }

    fn put_inline(&mut self) {
        let key = self.random_key();
        let id = self.ids.next();
        let before = self.c.dump();
        let r = self.c.put_inline(&key, id, self.now);
        if self.expect("put_inline", &before, r, true).is_some() {
            self.m.objects.insert(
                key,
                MObject {
                    version_id: id,
                    segments: Vec::new(),
                },
            );
        }
    }

    fn delete(&mut self) {
        let key = self.random_key();
        let before = self.c.dump();
        let r = self.c.delete(&key, self.now);
        let existed = self.m.objects.remove(&key).is_some();
        let r = self.expect("delete", &before, r, true).unwrap();
        assert_eq!(r.is_some(), existed, "delete of {key}");
    }

    fn abort(&mut self) {
        let Some(id) = self.pick_upload() else { return };
        let key = self.m.uploads[&id].key.clone();
        let before = self.c.dump();
        let r = ops::abort_upload(&self.c.reader(&key), id, &b(), &k(&key), self.now)
            .and_then(|p| self.c.part(&key).run(&p));
        if self.expect("abort", &before, r, true).is_some() {
            self.m.uploads.remove(&id);
        }
    }

    fn expire(&mut self) {
        for i in 0..self.c.parts.len() {
            let before = self.c.dump();
            let p = ops::expire_uploads(&self.c.parts[i].reader(), self.now, usize::MAX).unwrap();
            let expected: Vec<u128> = self
                .m
                .uploads
                .iter()
                .filter(|(_, u)| u.expires < self.now && self.c.pi(&u.key) == i)
                .map(|(id, _)| *id)
                .collect();
            match p {
                None => {
                    assert!(
                        expected.is_empty(),
                        "expiry found nothing; model: {expected:?}"
                    );
                    assert!(before == self.c.dump());
                }
                Some(p) => {
                    let r = self.c.parts[i].run(&p);
                    self.expect("expire", &before, r, true);
                    for id in expected {
                        self.m.uploads.remove(&id);
                    }
                }
            }
        }
    }

    /// A rebuilt copy of a random shard of a random object.
    fn repair(&mut self) {
        let keys: Vec<String> = self
            .m
            .objects
            .iter()
            .filter(|(_, o)| !o.segments.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(key) = keys.choose(&mut self.rng).cloned() else {
            return;
        };
        let o = self.m.objects[&key].clone();
        let segment = self.rng.random_range(0..o.segments.len());
        let index = self.rng.random_range(0..o.segments[segment].len());
        let used: BTreeSet<u128> = o.segments[segment]
            .iter()
            .filter(|s| !s.missing)
            .map(|s| s.node)
            .collect();
        let free: Vec<u128> = NODES
            .iter()
            .copied()
            .filter(|n| !used.contains(n))
            .collect();
        let Some(node) = free.choose(&mut self.rng).copied() else {
            return;
        };
        let stored = self.c.object(&key).unwrap();
        let ObjectBody::Segments(segs) = &stored.body else {
            panic!("{key}: not segmented")
        };
        let old = segs[segment].shards[index].clone();
        let new = Rebuilt {
            shard_id: self.ids.next(),
            node,
            crc32c: 42,
            size: old.size,
        };
        let before = self.c.dump();
        let p = repair::commit(
            &self.c.reader(&key),
            &b(),
            &k(&key),
            o.version_id,
            segment as u64,
            index as u8,
            old.shard_id,
            new,
            dogfs_meta::catalog::GcReason::Repaired,
            self.now,
        )
        .unwrap()
        .unwrap();
        let r = self.c.part(&key).run(&p);
        if self.expect("repair", &before, r, true).is_some() {
            self.m.objects.get_mut(&key).unwrap().segments[segment][index] = MShard {
                shard: new.shard_id,
                node,
                missing: false,
                since: self.now,
            };
        }
    }

    /// The invariants, after every operation.
    fn check(&mut self, step: usize, op: &str) {
        let want = self.m.index(&self.c);
        for (i, w) in want.iter().enumerate() {
            let got = self.c.index_of(i);
            if &got != w {
                let missing: Vec<_> = w.iter().filter(|(k, v)| got.get(k) != Some(v)).collect();
                let extra: Vec<_> = got.iter().filter(|(k, v)| w.get(k) != Some(v)).collect();
                panic!(
                    "step {step} ({op}), partition {}: index differs from the model\n\
                     expected but absent or different: {missing:#?}\nunexpected: {extra:#?}",
                    i + 1
                );
            }
        }
        let now_shards: BTreeSet<u128> = want
            .iter()
            .flat_map(|w| w.keys().map(|(_, s)| *s))
            .collect();
        let now_keys: BTreeSet<(u128, u128)> =
            want.iter().flat_map(|w| w.keys().copied()).collect();
        // Dropped references of shards stored somewhere (not under UNPLACED) whose shard is
        // referenced nowhere any more (a shard reported missing moves under UNPLACED: its
        // partial file, if any, is left to orphan collection).
        for (node, shard) in self.prev.iter().flat_map(|w| w.keys()) {
            if *node != UNPLACED
                && !now_keys.contains(&(*node, *shard))
                && !now_shards.contains(shard)
            {
                self.must_gc.insert(*shard, *node);
            }
        }
        self.ever.extend(now_keys.iter().copied());
        let gc = self.c.gc();
        for (shard, node) in &self.must_gc {
            match gc.get(shard) {
                Some((n, _)) if n == node => {}
                other => panic!(
                    "step {step} ({op}): shard {shard:032x} on node {node} lost its last \
                     reference but is not queued for deletion (queue: {other:?})"
                ),
            }
        }
        for (shard, (node, reason)) in &gc {
            assert!(
                !now_keys.contains(&(*node, *shard)),
                "step {step} ({op}): shard {shard:032x} on node {node} is referenced and \
                 queued for deletion ({reason:?})"
            );
            assert!(
                self.ever.contains(&(*node, *shard)),
                "step {step} ({op}): queued shard {shard:032x} on node {node} was never referenced"
            );
        }
        self.prev = want;
    }
}

#[test]
fn index_equals_the_model_after_every_operation() {
    for seed in 0..6u64 {
        let mut run = Run {
            c: Cluster::new(3),
            m: Model::default(),
            ids: Ids(u128::from(seed) << 40),
            rng: StdRng::seed_from_u64(seed),
            now: NOW,
            must_gc: BTreeMap::new(),
            ever: BTreeSet::new(),
            prev: Vec::new(),
            counts: BTreeMap::new(),
        };
        for step in 0..300 {
            run.now += run.rng.random_range(0..6);
            let op = match run.rng.random_range(0..100) {
                0..=24 => "begin_put",
                25..=34 => "replace_target",
                35..=59 => "commit",
                60..=66 => "put_inline",
                67..=74 => "delete",
                75..=81 => "abort",
                82..=89 => "expire",
                _ => "repair",
            };
            match op {
                "begin_put" => run.begin(),
                "replace_target" => run.replace_target(),
                "commit" => run.commit(),
                "put_inline" => run.put_inline(),
                "delete" => run.delete(),
                "abort" => run.abort(),
                "expire" => run.expire(),
                _ => run.repair(),
            }
            run.check(step, op);
        }
        // The run must have exercised every operation, successes and refusals of commits.
        for op in [
            "begin_put",
            "replace_target",
            "commit",
            "put_inline",
            "delete",
            "abort",
            "expire",
            "repair",
        ] {
            let (ok, _) = run.counts.get(op).copied().unwrap_or_default();
            assert!(ok > 0, "seed {seed}: no successful {op}: {:?}", run.counts);
        }
        assert!(
            run.counts["commit"].1 > 0,
            "seed {seed}: no refused commit: {:?}",
            run.counts
        );
        assert!(!run.must_gc.is_empty());
        eprintln!(
            "seed {seed}: {:?}, {} shards queued",
            run.counts,
            run.must_gc.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Degraded writes.

/// Targets for one segment of `size` ≤ SEGMENT bytes: `nodes[i]` or unplaced.
fn one_segment(ids: &mut Ids, nodes: [Option<u128>; 4]) -> Targets {
    vec![
        nodes
            .iter()
            .map(|n| (ShardId::from_u128(ids.next()), n.map(NodeId::from_u128)))
            .collect(),
    ]
}

#[test]
fn degraded_writes_index_unplaced_targets_and_respect_the_quorum() {
    let mut c = Cluster::new(2);
    let mut ids = Ids(7 << 60);
    let size = SEGMENT;

    // The nil node id is never a target.
    let upload = ids.next();
    let before = c.dump();
    let e = c
        .begin(
            "a",
            upload,
            size,
            one_segment(&mut ids, [Some(1), Some(0), Some(2), Some(3)]),
            NOW,
            60,
        )
        .unwrap_err();
    assert!(
        matches!(&e, CatalogError::DuplicateTargetNode { segment: 0, node } if node == "the nil node id"),
        "{e}"
    );
    assert!(before == c.dump());

    // Two unplaced targets: only the placed ones are indexed (as Upload references).
    let targets = one_segment(&mut ids, [Some(11), None, Some(13), None]);
    c.begin("a", upload, size, targets.clone(), NOW, 60)
        .unwrap();
    let idx = c.index_of(c.pi("a"));
    let placed: BTreeSet<(u128, u128)> = targets[0]
        .iter()
        .filter_map(|(s, n)| n.map(|n| (n.as_u128(), s.as_u128())))
        .collect();
    assert_eq!(idx.keys().copied().collect::<BTreeSet<_>>(), placed);
    assert!(
        idx.values()
            .all(|r| r.kind == RefKind::Upload && r.version_id == upload)
    );

    // A shard reported stored where nothing was placed: refused, nothing changes.
    let before = c.dump();
    let mut req = commit_req("a", upload, size, NOW + 1);
    req.segments[0][3] = ShardReport::Missing;
    let e = c.commit(&req).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::UnplacedShardStored {
                segment: 0,
                shard: 1
            }
        ),
        "{e}"
    );
    assert!(before == c.dump());

    // Both unplaced reported missing: 2 stored < k+1 = 3.
    req.segments[0][1] = ShardReport::Missing;
    let e = c.commit(&req).unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::TooManyMissing {
                segment: 0,
                missing: 2,
                allowed: 1
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        CatalogError::TooManyMissing {
            segment: 0,
            missing: 2,
            allowed: 1
        }
        .to_string()
    );
    assert!(before == c.dump());

    // Replacing one unplaced target places it: indexed, nothing queued for deletion.
    let new_shard = ids.next();
    let p = ops::replace_target(
        &c.reader("a"),
        upload,
        &b(),
        &k("a"),
        0,
        1,
        (ShardId::from_u128(new_shard), NodeId::from_u128(12)),
        NOW + 2,
    )
    .unwrap();
    c.part("a").run(&p).unwrap();
    assert!(c.gc().is_empty());
    let r = index::get(&c.reader("a"), 12, new_shard).unwrap().unwrap();
    assert_eq!(
        (r.kind, r.segment, r.index, r.since_unix),
        (RefKind::Upload, 0, 1, NOW + 2)
    );

    // Now one unplaced: commits with it missing; the missing shard sits under UNPLACED.
    let unplaced_shard = targets[0][3].0.as_u128();
    let mut req = commit_req("a", upload, size, NOW + 3);
    req.segments[0][3] = ShardReport::Missing;
    c.commit(&req).unwrap();
    let idx = c.index_of(c.pi("a"));
    assert_eq!(idx.len(), 4);
    let r = &idx[&(UNPLACED, unplaced_shard)];
    assert_eq!(
        (r.kind, r.version_id, r.segment, r.index),
        (RefKind::Object, upload, 0, 3)
    );
    assert!(idx.values().all(|r| r.kind == RefKind::Object));
    assert!(c.gc().is_empty(), "nothing was dropped");

    // The quorum: 0 (= k+1), k+1, k+m, and settings clamped into k+1..=k+m.
    assert_eq!(ops::write_quorum(0, 2, 4), 3);
    assert_eq!(ops::write_quorum(1, 2, 4), 3);
    assert_eq!(ops::write_quorum(3, 2, 4), 3);
    assert_eq!(ops::write_quorum(4, 2, 4), 4);
    assert_eq!(ops::write_quorum(9, 2, 4), 4);
    for (setting, missing, ok) in [
        (0, 1, true),
        (0, 2, false),
        (3, 1, true),
        (3, 2, false),
        (4, 0, true),
        (4, 1, false),
    ] {
        let upload = ids.next();
        let key = format!("q{setting}-{missing}");
        c.begin(
            &key,
            upload,
            size,
            one_segment(&mut ids, [Some(1), Some(2), Some(3), Some(4)]),
            NOW,
            60,
        )
        .unwrap();
        let mut req = commit_req(&key, upload, size, NOW + 1);
        req.min_write_shards = setting;
        for i in 0..missing {
            req.segments[0][i] = ShardReport::Missing;
        }
        let before = c.dump();
        let r = c.commit(&req);
        if ok {
            r.unwrap();
            let o = c.object(&key).unwrap();
            assert_eq!(o.shards().filter(|s| s.missing).count(), missing);
        } else {
            let e = r.unwrap_err();
            let allowed = 4 - ops::write_quorum(setting, 2, 4);
            assert!(
                matches!(e, CatalogError::TooManyMissing { segment: 0, missing: m, allowed: a } if m == missing && a == allowed),
                "setting {setting}, {missing} missing: {e}"
            );
            assert!(before == c.dump());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Repair: queue, survey, commit.

fn all_up(nodes: &[u128]) -> HashMap<u128, NodeHealth> {
    nodes
        .iter()
        .map(|n| {
            (
                *n,
                NodeHealth {
                    state: NodeState::Up,
                    down_since_unix: 0,
                },
            )
        })
        .collect()
}

const SIX: [u128; 6] = [201, 202, 203, 204, 205, 206];

fn segments(o: &ObjectVersion) -> &[dogfs_meta::catalog::SegmentRecord] {
    match &o.body {
        ObjectBody::Segments(s) => s,
        other => panic!("not segments: {other:?}"),
    }
}

/// Every partition's survey, concatenated (the test keeps the interesting keys in one).
fn survey(
    c: &Cluster,
    key: &str,
    nodes: &HashMap<u128, NodeHealth>,
    now: u64,
    after: u64,
) -> repair::Survey {
    repair::survey(&c.reader(key), nodes, now, after).unwrap()
}

#[test]
fn repair_of_a_corrupt_shard_moves_it_and_queues_the_old_copy() {
    let mut c = Cluster::new(1);
    let mut ids = Ids(9 << 60);
    let nodes = all_up(&SIX);
    let o = c.put("obj", &mut ids, 2 * SEGMENT, &SIX[..4], &[]);
    let victim = segments(&o)[1].shards[2].clone();

    // Queue it: the survey shows the segment, corrupt and due.
    let p = repair::queue(
        &c.reader("obj"),
        &b(),
        &k("obj"),
        o.version_id,
        victim.shard_id,
        RepairReason::Corrupt,
        NOW + 5,
    )
    .unwrap()
    .unwrap();
    c.part("obj").run(&p).unwrap();
    assert_eq!(c.repairs(), 1);
    // Queued twice, or a shard of another version, or an unknown shard: nothing to do.
    for (version, shard) in [
        (o.version_id, victim.shard_id),
        (o.version_id + 1, victim.shard_id),
        (o.version_id, 12345),
    ] {
        assert!(
            repair::queue(
                &c.reader("obj"),
                &b(),
                &k("obj"),
                version,
                shard,
                RepairReason::Reported,
                NOW + 6
            )
            .unwrap()
            .is_none()
        );
    }
    let s = survey(&c, "obj", &nodes, NOW + 10, 60);
    assert!(s.stale.is_empty());
    assert_eq!(s.segments.len(), 1);
    let seg = &s.segments[0];
    assert_eq!((seg.version_id, seg.segment, seg.k), (o.version_id, 1, 2));
    let conds: Vec<ShardCondition> = seg.shards.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        conds,
        [
            ShardCondition::Good,
            ShardCondition::Good,
            ShardCondition::Corrupt,
            ShardCondition::Good
        ]
    );
    assert!(seg.due() && !seg.unreadable());
    assert_eq!(seg.shards_left(), 3);

    // The rebuilt copy is recorded: version, index, GC queue and repair queue in one entry.
    let new = Rebuilt {
        shard_id: ids.next(),
        node: SIX[5],
        crc32c: 0xabcd,
        size: victim.size,
    };
    let p = repair::commit(
        &c.reader("obj"),
        &b(),
        &k("obj"),
        o.version_id,
        1,
        2,
        victim.shard_id,
        new,
        dogfs_meta::catalog::GcReason::Repaired,
        NOW + 20,
    )
    .unwrap()
    .unwrap();
    c.part("obj").run(&p).unwrap();
    let after = c.object("obj").unwrap();
    let slot = &segments(&after)[1].shards[2];
    assert_eq!(
        (
            slot.shard_id,
            slot.node,
            slot.crc32c,
            slot.size,
            slot.missing,
            slot.index
        ),
        (new.shard_id, new.node, 0xabcd, victim.size, false, 2)
    );
    // Everything else is as it was.
    let mut expected = o.clone();
    if let ObjectBody::Segments(s) = &mut expected.body {
        s[1].shards[2] = slot.clone();
    }
    assert_eq!(after, expected);
    let r = c.reader("obj");
    assert_eq!(index::get(&r, victim.node, victim.shard_id).unwrap(), None);
    let moved = index::get(&r, new.node, new.shard_id).unwrap().unwrap();
    assert_eq!(
        moved,
        ShardRef {
            kind: RefKind::Object,
            bucket: BUCKET.into(),
            key: "obj".into(),
            version_id: o.version_id,
            segment: 1,
            index: 2,
            since_unix: NOW + 20,
        }
    );
    assert_eq!(
        c.gc(),
        BTreeMap::from([(victim.shard_id, (victim.node, GcReason::Repaired))])
    );
    assert_eq!(c.repairs(), 0);
    assert!(survey(&c, "obj", &nodes, NOW + 30, 60).segments.is_empty());

    // The same repair again: the slot moved on.
    let before = c.dump();
    assert_eq!(
        repair::commit(
            &c.reader("obj"),
            &b(),
            &k("obj"),
            o.version_id,
            1,
            2,
            victim.shard_id,
            new,
            dogfs_meta::catalog::GcReason::Repaired,
            NOW + 21
        )
        .unwrap(),
        Err(StaleRepair::ShardMoved {
            segment: 1,
            index: 2,
            was: victim.shard_id,
            now: new.shard_id
        })
    );
    // A rebuilt shard of the wrong size, a slot that does not exist.
    let wrong = Rebuilt {
        size: victim.size + 1,
        ..new
    };
    assert_eq!(
        repair::commit(
            &c.reader("obj"),
            &b(),
            &k("obj"),
            o.version_id,
            1,
            2,
            new.shard_id,
            wrong,
            dogfs_meta::catalog::GcReason::Repaired,
            NOW + 21
        )
        .unwrap(),
        Err(StaleRepair::Size {
            expected: victim.size,
            got: victim.size + 1
        })
    );
    for (segment, index) in [(2, 0), (0, 4)] {
        assert_eq!(
            repair::commit(
                &c.reader("obj"),
                &b(),
                &k("obj"),
                o.version_id,
                segment,
                index,
                1,
                new,
                dogfs_meta::catalog::GcReason::Repaired,
                NOW + 21
            )
            .unwrap(),
            Err(StaleRepair::NoSuchShard { segment, index })
        );
    }
    assert!(before == c.dump());
}

#[test]
fn repair_commits_racing_an_overwrite_or_a_delete_change_nothing() {
    let mut c = Cluster::new(1);
    let mut ids = Ids(10 << 60);
    let o = c.put("obj", &mut ids, SEGMENT, &SIX[..4], &[]);
    let old = segments(&o)[0].shards[0].clone();
    // A server outside both versions' segments (never two shards of a segment on one).
    let new = Rebuilt {
        shard_id: ids.next(),
        node: 999,
        crc32c: 1,
        size: old.size,
    };
    let build = |c: &Cluster, version: u128| {
        repair::commit(
            &c.reader("obj"),
            &b(),
            &k("obj"),
            version,
            0,
            0,
            old.shard_id,
            new,
            dogfs_meta::catalog::GcReason::Repaired,
            NOW + 9,
        )
        .unwrap()
    };

    // Built, then the object is overwritten, then applied: Conflict, nothing changed.
    let p = build(&c, o.version_id).unwrap();
    let o2 = c.put("obj", &mut ids, SEGMENT, &SIX[2..6], &[]);
    let before = c.dump();
    let e = c.part("obj").run(&p).unwrap_err();
    assert!(matches!(e, CatalogError::Conflict { .. }), "{e}");
    assert!(before == c.dump());
    // Built after the overwrite: stale.
    assert_eq!(
        build(&c, o.version_id),
        Err(StaleRepair::Overwritten { now: o2.version_id })
    );

    // Built, then the object is deleted, then applied: Conflict, nothing changed.
    let old2 = segments(&o2)[0].shards[0].clone();
    let p = repair::commit(
        &c.reader("obj"),
        &b(),
        &k("obj"),
        o2.version_id,
        0,
        0,
        old2.shard_id,
        new,
        dogfs_meta::catalog::GcReason::Repaired,
        NOW + 9,
    )
    .unwrap()
    .unwrap();
    c.delete("obj", NOW + 10).unwrap().unwrap();
    let before = c.dump();
    let e = c.part("obj").run(&p).unwrap_err();
    assert!(matches!(e, CatalogError::Conflict { .. }), "{e}");
    assert!(before == c.dump());
    assert_eq!(build(&c, o2.version_id), Err(StaleRepair::Deleted));
    // Nothing references the rebuilt shard: it is queued for deletion, unconditionally.
    assert!(c.index_of(0).is_empty());
    c.part("obj")
        .run(&repair::discard(new.shard_id, new.node, GcReason::Unreferenced, NOW + 11).unwrap())
        .unwrap();
    assert_eq!(
        c.gc().get(&new.shard_id),
        Some(&(new.node, GcReason::Unreferenced))
    );
}

#[test]
fn repair_of_a_missing_shard_and_survey_order() {
    let mut c = Cluster::new(1);
    let mut ids = Ids(11 << 60);
    let nodes = all_up(&SIX);
    // "one": segment 0 misses 1 shard (3 left). "two": segment 1 misses 1 and has 1 corrupt
    // (2 left). "three": segment 0 has 1 corrupt (3 left).
    let one = c.put("one", &mut ids, SEGMENT, &SIX[..4], &[(0, 3)]);
    let two = c.put("two", &mut ids, 2 * SEGMENT, &SIX[1..5], &[(1, 0)]);
    let three = c.put("three", &mut ids, SEGMENT, &SIX[2..6], &[]);
    for (key, o, segment, index) in [("two", &two, 1usize, 2usize), ("three", &three, 0, 1)] {
        let shard = segments(o)[segment].shards[index].shard_id;
        let p = repair::queue(
            &c.reader(key),
            &b(),
            &k(key),
            o.version_id,
            shard,
            RepairReason::Reported,
            NOW,
        )
        .unwrap()
        .unwrap();
        c.part(key).run(&p).unwrap();
    }
    // A missing shard cannot be queued (it is already due).
    let missing = segments(&one)[0].shards[3].clone();
    assert!(missing.missing);
    assert!(
        repair::queue(
            &c.reader("one"),
            &b(),
            &k("one"),
            one.version_id,
            missing.shard_id,
            RepairReason::Corrupt,
            NOW
        )
        .unwrap()
        .is_none()
    );

    let s = survey(&c, "one", &nodes, NOW + 1, 60);
    let order: Vec<(&str, u64, usize)> = s
        .segments
        .iter()
        .map(|d| (d.key.as_str(), d.segment, d.shards_left()))
        .collect();
    assert_eq!(order[0], ("two", 1, 2));
    assert_eq!(order.len(), 3);
    assert!(
        order[1..].contains(&("one", 0, 3)) && order[1..].contains(&("three", 0, 3)),
        "{order:?}"
    );
    let d_one = s.segments.iter().find(|d| d.key == "one").unwrap();
    assert_eq!(d_one.shards[3].1, ShardCondition::Missing);
    assert!(d_one.due());
    let d_two = &s.segments[0];
    assert_eq!(
        d_two.shards.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [
            ShardCondition::Missing,
            ShardCondition::Good,
            ShardCondition::Corrupt,
            ShardCondition::Good
        ]
    );

    // The missing shard is repaired: recorded stored, index moved from UNPLACED, nothing queued
    // for deletion (no copy was ever recorded).
    let new = Rebuilt {
        shard_id: ids.next(),
        node: SIX[5],
        crc32c: 77,
        size: missing.size,
    };
    let p = repair::commit(
        &c.reader("one"),
        &b(),
        &k("one"),
        one.version_id,
        0,
        3,
        missing.shard_id,
        new,
        dogfs_meta::catalog::GcReason::Repaired,
        NOW + 2,
    )
    .unwrap()
    .unwrap();
    c.part("one").run(&p).unwrap();
    let slot = segments(&c.object("one").unwrap())[0].shards[3].clone();
    assert_eq!(
        (slot.shard_id, slot.node, slot.crc32c, slot.missing),
        (new.shard_id, new.node, 77, false)
    );
    let r = c.reader("one");
    assert_eq!(index::get(&r, UNPLACED, missing.shard_id).unwrap(), None);
    assert!(index::get(&r, new.node, new.shard_id).unwrap().is_some());
    assert!(c.gc().is_empty());
    let s = survey(&c, "one", &nodes, NOW + 3, 60);
    assert_eq!(
        s.segments
            .iter()
            .map(|d| d.key.as_str())
            .collect::<Vec<_>>(),
        ["two", "three"]
    );

    // Stale queue entries: "three" overwritten (inline), so its entry names a gone version.
    c.put_inline("three", ids.next(), NOW + 4).unwrap();
    let s = survey(&c, "one", &nodes, NOW + 5, 60);
    assert_eq!(
        s.segments
            .iter()
            .map(|d| d.key.as_str())
            .collect::<Vec<_>>(),
        ["two"]
    );
    assert_eq!(s.stale, vec![(three.version_id, 0, 1)]);
    c.part("three")
        .run(&repair::drop_entry(three.version_id, 0, 1))
        .unwrap();
    // "two" deleted: its entry goes stale too, and nothing is left to repair.
    c.delete("two", NOW + 6).unwrap().unwrap();
    let s = survey(&c, "one", &nodes, NOW + 7, 60);
    assert!(s.segments.is_empty());
    assert_eq!(s.stale, vec![(two.version_id, 1, 2)]);
    c.part("two")
        .run(&repair::drop_entry(two.version_id, 1, 2))
        .unwrap();
    assert_eq!(c.repairs(), 0);
    assert_eq!(
        survey(&c, "one", &nodes, NOW + 8, 60),
        repair::Survey::default()
    );
}

#[test]
fn survey_of_down_and_removed_servers() {
    let mut c = Cluster::new(1);
    let mut ids = Ids(12 << 60);
    let a = c.put("a", &mut ids, SEGMENT, &[201, 202, 203, 204], &[]);
    let bb = c.put("b", &mut ids, SEGMENT, &[203, 204, 205, 206], &[]);
    let _untouched = c.put("c", &mut ids, SEGMENT, &[201, 202, 205, 206], &[]);
    let after = 600;
    let t = NOW + 10_000;
    let mut nodes = all_up(&SIX);

    // 203 down for less than repair_after: a and b short of a shard, waiting (not due).
    nodes.insert(
        203,
        NodeHealth {
            state: NodeState::Down,
            down_since_unix: t - after + 1,
        },
    );
    let s = survey(&c, "a", &nodes, t, after);
    assert_eq!(s.segments.len(), 2);
    for d in &s.segments {
        assert!(!d.due(), "{}: due too early", d.key);
        assert_eq!(d.shards_left(), 3);
        let down: Vec<_> = d
            .shards
            .iter()
            .filter(|(_, c)| *c == ShardCondition::Down { due: false })
            .collect();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0.node, 203);
    }
    // Exactly repair_after later: due.
    nodes.insert(
        203,
        NodeHealth {
            state: NodeState::Down,
            down_since_unix: t - after,
        },
    );
    let s = survey(&c, "a", &nodes, t, after);
    assert!(s.segments.iter().all(|d| d.due()));
    assert!(s.segments.iter().all(|d| {
        d.shards
            .iter()
            .any(|(_, c)| *c == ShardCondition::Down { due: true })
    }));

    // 205 removed: b has 2 left (Gone + Down) and comes first; then c (Gone: due) before a
    // (Down for less than repair_after: waiting), both with 3 left.
    nodes.insert(
        205,
        NodeHealth {
            state: NodeState::Removed,
            down_since_unix: 0,
        },
    );
    nodes.insert(
        203,
        NodeHealth {
            state: NodeState::Down,
            down_since_unix: t - 1,
        },
    );
    let s = survey(&c, "a", &nodes, t, after);
    assert_eq!(
        s.segments
            .iter()
            .map(|d| (d.key.as_str(), d.shards_left(), d.due()))
            .collect::<Vec<_>>(),
        [("b", 2, true), ("c", 3, true), ("a", 3, false)]
    );
    let conds: Vec<ShardCondition> = s.segments[0].shards.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        conds,
        [
            ShardCondition::Down { due: false },
            ShardCondition::Good,
            ShardCondition::Gone,
            ShardCondition::Good
        ]
    );
    assert_eq!(s.segments[0].version_id, bb.version_id);
    assert_eq!(s.segments[2].version_id, a.version_id);

    // Suspect and draining servers still serve reads: nothing to do.
    let mut nodes = all_up(&SIX);
    nodes.insert(
        201,
        NodeHealth {
            state: NodeState::Suspect,
            down_since_unix: 0,
        },
    );
    nodes.insert(
        202,
        NodeHealth {
            state: NodeState::Draining,
            down_since_unix: 0,
        },
    );
    assert!(survey(&c, "a", &nodes, t, after).segments.is_empty());

    // A down server's shard reported corrupt stays Down (not readable either way).
    let shard = segments(&a)[0].shards[2].shard_id; // on 203
    let p = repair::queue(
        &c.reader("a"),
        &b(),
        &k("a"),
        a.version_id,
        shard,
        RepairReason::Corrupt,
        t,
    )
    .unwrap()
    .unwrap();
    c.part("a").run(&p).unwrap();
    nodes.insert(
        203,
        NodeHealth {
            state: NodeState::Down,
            down_since_unix: t - 1,
        },
    );
    let s = survey(&c, "a", &nodes, t, after);
    let d = s.segments.iter().find(|d| d.key == "a").unwrap();
    assert_eq!(d.shards[2].1, ShardCondition::Down { due: false });
}

#[test]
fn a_repair_never_reuses_the_old_id_or_stacks_a_segment_on_one_server() {
    let mut c = Cluster::new(1);
    let mut ids = Ids(11 << 60);
    let o = c.put("obj", &mut ids, SEGMENT, &SIX[..4], &[]);
    let shards = segments(&o)[0].shards.clone();
    let old = shards[0].clone();
    let commit = |c: &Cluster, shard_id: u128, node: u128| {
        repair::commit(
            &c.reader("obj"),
            &b(),
            &k("obj"),
            o.version_id,
            0,
            0,
            old.shard_id,
            Rebuilt {
                shard_id,
                node,
                crc32c: 7,
                size: old.size,
            },
            dogfs_meta::catalog::GcReason::Repaired,
            NOW + 9,
        )
        .unwrap()
    };
    // The GC queue is keyed by shard id: reusing it would queue the rebuilt shard itself.
    assert_eq!(commit(&c, old.shard_id, 999), Err(StaleRepair::SameShard));
    // Another shard of the segment already lives on that server.
    assert_eq!(
        commit(&c, ids.next(), shards[1].node),
        Err(StaleRepair::TargetInSegment {
            node: shards[1].node
        })
    );
    // The old copy's own server may take the rebuilt one (a corrupt file replaced in place).
    let p = commit(&c, ids.next(), old.node).unwrap();
    c.part("obj").run(&p).unwrap();
}
