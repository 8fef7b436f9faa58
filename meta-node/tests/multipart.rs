//! Multipart uploads in the catalogue (`catalog::multipart`) on the real state machine (sled in
//! a temp dir), commands applied through `StateMachine::apply_entry`, one partition (a
//! multipart upload lives in its key's partition only).
//!
//! After every operation, [`Cluster::check`] derives from the catalogue itself (uploads,
//! objects, completed parts) the exact shard index and compares it with the `shardref` tree,
//! checks no queued deletion names a referenced shard, and that every shard ever placed that is
//! no longer referenced is queued (no leak).
//!
//! - `parts_replace_complete_subset_and_errors`: the whole life of an upload, each refused
//!   request leaving every tree unchanged.
//! - `abort_expiry_races_and_listings`: abort, expiry of abandoned uploads and of pending
//!   parts, a part completed between a completion's read and its apply, listings and pages.
//! - `random_operations_keep_the_index_exact`: a seeded random sequence of all of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::NodeId;
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_meta::catalog::index::{self, UNPLACED};
use dogfs_meta::catalog::multipart::{
    self, BeginPart, CompleteMultipart, CompletePart, CreateMultipart, PartCommit, PartRecord,
};
use dogfs_meta::catalog::records::{self, UploadRecord};
use dogfs_meta::catalog::{
    CatalogError, CommitObject, GcReason, ObjectBody, ObjectVersion, Prepared, ShardReport,
    Targets, keys, ops,
};
use dogfs_meta::raft::{
    Command, KvReader, Response, SledEngine, SledSpace, StateMachine, TypeConfig, Versioned,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const NOW: u64 = 1_800_000_000;
const TTL: u64 = 3600;
const BUCKET: &str = "bkt";
/// The minimum part size of these tests (the service's default is 5 MiB).
const MIN_PART: u64 = 10_000;

/// RS 2+2 with 4 KiB cells: segment sizes are multiples of 8 KiB.
fn scheme() -> ErasureScheme {
    ErasureScheme::new(Codec::ReedSolomon, 2, 2, 4096).unwrap()
}

fn b() -> BucketName {
    BucketName::parse(BUCKET).unwrap()
}

fn k(key: &str) -> ObjectKey {
    ObjectKey::parse(key).unwrap()
}

const NODES: [u128; 6] = [11, 12, 13, 14, 15, 16];

type Dump = Vec<(String, Vec<(Vec<u8>, Versioned)>)>;

struct Cluster {
    _dir: TempDir,
    sm: StateMachine<SledEngine>,
    next: u64,
    incarnation: u64,
    rng: StdRng,
    /// Every (node, shard) ever placed, for "no leak".
    placed: BTreeSet<(u128, u128)>,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path().join("sled")).unwrap();
        let sm = StateMachine::open(&engine, 1, dir.path().join("snapshots")).unwrap();
        Cluster {
            _dir: dir,
            sm,
            next: 0,
            // The bucket's incarnation (the system group is not needed here).
            incarnation: 7,
            rng: StdRng::seed_from_u64(seed),
            placed: BTreeSet::new(),
        }
    }

    fn reader(&self) -> KvReader<SledSpace> {
        self.sm.reader()
    }

    fn apply(&mut self, cmd: Command) -> Response {
        self.next += 1;
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next),
            payload: EntryPayload::Normal(cmd),
        };
        self.sm.apply_entry(entry).unwrap()
    }

    fn run(&mut self, p: &Prepared) -> Result<u64, CatalogError> {
        let r = self.apply(p.command.clone());
        p.interpret(&r)
    }

    fn dump(&self) -> Dump {
        [
            keys::OBJECTS,
            keys::UPLOADS,
            keys::GC,
            keys::SHARD_INDEX,
            keys::MULTIPART,
            keys::PARTS,
            keys::PART_LINKS,
        ]
        .iter()
        .map(|t| {
            (
                t.to_string(),
                self.reader().list(t, b"", None, usize::MAX).unwrap(),
            )
        })
        .collect()
    }

    fn values<T: serde::de::DeserializeOwned>(&self, tree: &str) -> Vec<T> {
        self.reader()
            .list(tree, b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, v)| records::decode("record", &v.value).unwrap())
            .collect()
    }

    fn gc(&self) -> BTreeMap<u128, (u128, GcReason)> {
        ops::gc_pending(&self.reader(), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.shard_id, (e.node, e.reason)))
            .collect()
    }

    /// The index the catalogue implies, the index stored, the GC queue: see the module docs.
    fn check(&self) {
        let mut want = BTreeSet::new();
        for u in self.values::<UploadRecord>(keys::UPLOADS) {
            for seg in &u.segments {
                for (shard, node) in &seg.shards {
                    if *node != UNPLACED {
                        assert!(want.insert((*node, *shard)), "shard {shard:x} twice");
                    }
                }
            }
        }
        for o in self.values::<ObjectVersion>(keys::OBJECTS) {
            for s in o.shards() {
                assert!(want.insert((index::holder(s), s.shard_id)));
            }
        }
        for p in self.values::<PartRecord>(keys::PARTS) {
            for s in p.segments.iter().flat_map(|s| &s.shards) {
                if !s.missing {
                    assert!(want.insert((s.node, s.shard_id)));
                }
            }
        }
        let stored: BTreeSet<(u128, u128)> = self
            .reader()
            .list(keys::SHARD_INDEX, b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(key, _)| {
                (
                    u128::from_be_bytes(key[..16].try_into().unwrap()),
                    u128::from_be_bytes(key[16..].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(stored, want, "shard index differs from the catalogue");
        let gc = self.gc();
        let referenced: BTreeSet<u128> = want.iter().map(|(_, s)| *s).collect();
        for shard in gc.keys() {
            assert!(
                !referenced.contains(shard),
                "queued shard {shard:x} is referenced"
            );
        }
        for (node, shard) in &self.placed {
            assert!(
                referenced.contains(shard) || gc.get(shard).is_some_and(|(n, _)| n == node),
                "shard {shard:x} on {node} leaked: neither referenced nor queued"
            );
        }
        // Every link names a pending upload, and every part upload has its link.
        let links = self
            .reader()
            .list(keys::PART_LINKS, b"", None, usize::MAX)
            .unwrap();
        for (key, _) in links {
            let id = u128::from_be_bytes(key[..].try_into().unwrap());
            assert!(ops::get_upload(&self.reader(), id).unwrap().is_some());
        }
    }

    fn create(&mut self, key: &str, now: u64, ttl: u64) -> u128 {
        let id: u128 = self.rng.random();
        let req = CreateMultipart {
            upload_id: id,
            bucket: b(),
            key: k(key),
            content_type: "text/plain".into(),
            user_metadata: BTreeMap::from([("a".to_string(), "1".to_string())]),
            scheme: scheme(),
            now_unix: now,
            ttl_secs: ttl,
        };
        self.run(&multipart::create_multipart(&req, self.incarnation).unwrap())
            .unwrap();
        self.check();
        id
    }

    fn targets(&mut self, size: u64, segment_size: u64) -> Targets {
        // An invalid geometry gets no targets (the builder refuses it).
        let Ok(layout) = ObjectLayout::new(size, segment_size, scheme()) else {
            return Vec::new();
        };
        layout
            .segments()
            .map(|_| {
                let mut nodes = NODES.to_vec();
                nodes.shuffle(&mut self.rng);
                nodes
                    .iter()
                    .take(scheme().total())
                    .map(|n| {
                        (
                            ShardId::from_u128(self.rng.random()),
                            Some(NodeId::from_u128(*n)),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// UploadPart; returns the part upload id and its targets.
    fn begin_part(
        &mut self,
        key: &str,
        upload: u128,
        number: u32,
        size: u64,
        segment_size: u64,
    ) -> Result<(u128, Targets), CatalogError> {
        let targets = self.targets(size, segment_size);
        let part_upload_id: u128 = self.rng.random();
        let req = BeginPart {
            upload_id: upload,
            part_upload_id,
            bucket: b(),
            key: k(key),
            number,
            size,
            segment_size,
            targets: targets.clone(),
            now_unix: NOW,
            ttl_secs: TTL,
        };
        let p = multipart::begin_part(&self.reader(), &req)?;
        self.run(&p)?;
        for seg in &targets {
            for (s, n) in seg {
                self.placed.insert((n.unwrap().as_u128(), s.as_u128()));
            }
        }
        self.check();
        Ok((part_upload_id, targets))
    }

    fn reports(size: u64, segment_size: u64) -> Vec<Vec<ShardReport>> {
        ObjectLayout::new(size, segment_size, scheme())
            .unwrap()
            .segments()
            .map(|seg| {
                (0..seg.total_shards())
                    .map(|_| ShardReport::Stored {
                        client_crc32c: 7,
                        server_crc32c: 7,
                        size: seg.shard_len(),
                    })
                    .collect()
            })
            .collect()
    }

    fn complete_part_req(
        key: &str,
        upload: u128,
        part_upload_id: u128,
        size: u64,
        segment_size: u64,
        etag: &str,
    ) -> CompletePart {
        CompletePart {
            bucket: b(),
            key: k(key),
            upload_id: upload,
            part_upload_id,
            etag: etag.into(),
            segments: Self::reports(size, segment_size),
            now_unix: NOW + 1,
            min_write_shards: 0,
        }
    }

    fn complete_part(&mut self, req: &CompletePart) -> Result<PartRecord, CatalogError> {
        match multipart::complete_part(&self.reader(), req)? {
            PartCommit::Commit(p, record) => {
                self.run(&p)?;
                self.check();
                Ok(record)
            }
            PartCommit::AlreadyCompleted(r) => Ok(r),
        }
    }

    /// UploadPart and CompletePart of a part with etag `hex(md5(tag))`.
    fn part(
        &mut self,
        key: &str,
        upload: u128,
        number: u32,
        size: u64,
        segment_size: u64,
        tag: &str,
    ) -> PartRecord {
        let (pid, _) = self
            .begin_part(key, upload, number, size, segment_size)
            .unwrap();
        let etag = md5_hex(&md5_digest(tag.as_bytes()));
        let req = Self::complete_part_req(key, upload, pid, size, segment_size, &etag);
        self.complete_part(&req).unwrap()
    }

    fn complete_req(key: &str, upload: u128, parts: &[(u32, &str)]) -> CompleteMultipart {
        CompleteMultipart {
            bucket: b(),
            key: k(key),
            upload_id: upload,
            parts: parts.iter().map(|(n, e)| (*n, e.to_string())).collect(),
            now_unix: NOW + 2,
            min_part_size: MIN_PART,
        }
    }

    fn complete(&mut self, req: &CompleteMultipart) -> Result<u64, CatalogError> {
        let p = multipart::complete_multipart(&self.reader(), req)?;
        let v = self.run(&p)?;
        self.check();
        Ok(v)
    }

    /// Refused with nothing proposed or changed.
    fn refused<T: std::fmt::Debug>(
        &mut self,
        f: impl FnOnce(&mut Cluster) -> Result<T, CatalogError>,
    ) -> CatalogError {
        let before = self.dump();
        let e = f(self).unwrap_err();
        assert_eq!(
            self.dump(),
            before,
            "a refused operation changed the state ({e})"
        );
        e
    }

    fn shards_of(part: &PartRecord) -> BTreeSet<u128> {
        part.segments
            .iter()
            .flat_map(|s| &s.shards)
            .map(|s| s.shard_id)
            .collect()
    }
}

fn etag(tag: &str) -> String {
    md5_hex(&md5_digest(tag.as_bytes()))
}

#[test]
fn parts_replace_complete_subset_and_errors() {
    let mut c = Cluster::new(1);
    let key = "big/object";
    let up = c.create(key, NOW, TTL);
    assert_eq!(
        multipart::get_multipart(&c.reader(), &b(), &k(key), up)
            .unwrap()
            .0
            .content_type,
        "text/plain"
    );

    // Part 1: 3 segments of 8 KiB (the last short); part 2: 16 KiB segments; part 3: 1 byte.
    let p1 = c.part(key, up, 1, 20_000, 8192, "one");
    let p2_old = c.part(key, up, 2, 12_000, 16384, "two-old");
    let p3 = c.part(key, up, 3, 1, 8192, "three");
    let p5 = c.part(key, up, 5, 10_000, 8192, "five");
    assert_eq!(p1.segments.len(), 3);
    assert_eq!(p2_old.segments.len(), 1);

    // Re-uploading part 2 replaces it: the old part's shards are queued at once.
    let p2 = c.part(key, up, 2, 30_000, 16384, "two");
    let gc = c.gc();
    for s in Cluster::shards_of(&p2_old) {
        assert_eq!(gc.get(&s).map(|(_, r)| *r), Some(GcReason::Replaced));
    }
    assert_eq!(gc.len(), Cluster::shards_of(&p2_old).len());
    let listed = multipart::list_parts(&c.reader(), up, 0, 100).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.number, p.size, p.etag.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, 20_000, etag("one")),
            (2, 30_000, etag("two")),
            (3, 1, etag("three")),
            (5, 10_000, etag("five")),
        ]
    );
    // Pages.
    let page = multipart::list_parts(&c.reader(), up, 1, 2).unwrap();
    assert_eq!(page.iter().map(|p| p.number).collect::<Vec<_>>(), [2, 3]);

    // A part still being uploaded (never completed) and refused part requests.
    let (pending, _) = c.begin_part(key, up, 4, 9000, 8192).unwrap();
    assert!(matches!(
        c.refused(|c| c.begin_part(key, up, 0, 10, 8192)),
        CatalogError::InvalidPartNumber { number: 0 }
    ));
    assert!(matches!(
        c.refused(|c| c.begin_part(key, up, 10_001, 10, 8192)),
        CatalogError::InvalidPartNumber { number: 10_001 }
    ));
    assert!(matches!(
        c.refused(|c| c.begin_part(key, up + 1, 1, 10, 8192)),
        CatalogError::NoSuchUpload { .. }
    ));
    assert!(matches!(
        c.refused(|c| c.begin_part(key, up, 1, 10, 1000)),
        CatalogError::Layout(_)
    ));
    // A part's upload can never be committed as the object.
    let commit = CommitObject {
        upload_id: pending,
        bucket: b(),
        key: k(key),
        size: 9000,
        etag: "x".into(),
        content_type: String::new(),
        user_metadata: BTreeMap::new(),
        segments: Cluster::reports(9000, 8192),
        inline: None,
        now_unix: NOW + 1,
        min_write_shards: 0,
    };
    let e = c.refused(|c| ops::commit_object(&c.reader(), &commit, 4096));
    assert!(matches!(e, CatalogError::PartUploadCommit { .. }), "{e}");
    // A part report is checked like a commit's.
    let mut bad = Cluster::complete_part_req(key, up, pending, 9000, 8192, "e");
    bad.segments[0][1] = ShardReport::Stored {
        client_crc32c: 1,
        server_crc32c: 2,
        size: 4096,
    };
    let e = c.refused(|c| c.complete_part(&bad));
    assert!(matches!(e, CatalogError::ChecksumMismatch { .. }), "{e}");
    let mut other = Cluster::complete_part_req(key, up + 1, pending, 9000, 8192, "e");
    other.upload_id = up + 1;
    let e = c.refused(|c| c.complete_part(&other));
    assert!(matches!(e, CatalogError::NoSuchUpload { .. }), "{e}");

    // Completion errors, each leaving everything as it was.
    let (e1, e2, e3, e5) = (etag("one"), etag("two"), etag("three"), etag("five"));
    for (parts, want) in [
        (vec![], "MalformedXML"),
        (vec![(2, e2.as_str()), (1, e1.as_str())], "InvalidPartOrder"),
        (vec![(1, e1.as_str()), (1, e1.as_str())], "InvalidPartOrder"),
        (vec![(1, e1.as_str()), (7, e1.as_str())], "InvalidPart:"),
        (vec![(1, e2.as_str()), (2, e2.as_str())], "InvalidPart:"),
        (
            vec![(1, e1.as_str()), (3, e3.as_str()), (5, e5.as_str())],
            "EntityTooSmall",
        ),
        // A pending part is not a part yet.
        (vec![(1, e1.as_str()), (4, e1.as_str())], "InvalidPart:"),
    ] {
        let req = Cluster::complete_req(key, up, &parts);
        let e = c.refused(|c| c.complete(&req));
        assert!(e.to_string().starts_with(want), "{parts:?}: {e}");
    }

    // Completion with a subset: 1, 2 and the small last part 3 (quoted ETags accepted).
    let q1 = format!("\"{e1}\"");
    let req = Cluster::complete_req(key, up, &[(1, &q1), (2, &e2), (3, &e3)]);
    c.complete(&req).unwrap();
    let o = ops::get_object(&c.reader(), &b(), &k(key)).unwrap();
    assert_eq!(o.size, 20_000 + 30_000 + 1);
    assert_eq!(o.version_id, up);
    assert_eq!(o.content_type, "text/plain");
    assert_eq!(o.user_metadata.get("a").map(String::as_str), Some("1"));
    let mut digests = Vec::new();
    for t in ["one", "two", "three"] {
        digests.extend_from_slice(&md5_digest(t.as_bytes()));
    }
    assert_eq!(o.etag, format!("{}-3", md5_hex(&md5_digest(&digests))));
    let ObjectBody::Parts(body) = &o.body else {
        panic!("not a parts body: {:?}", o.body)
    };
    assert_eq!(
        body.parts
            .iter()
            .map(|p| (p.number, p.size, p.segment_size))
            .collect::<Vec<_>>(),
        vec![(1, 20_000, 8192), (2, 30_000, 16384), (3, 1, 8192)]
    );
    // Segments numbered across parts; each keeps its part's geometry (what repair uses).
    assert_eq!(
        body.segments.iter().map(|s| s.index).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    let lens: Vec<u64> = (0..6)
        .map(|i| o.segment_layout(i).unwrap().data_len())
        .collect();
    assert_eq!(lens, [8192, 8192, 3616, 16384, 13616, 1]);
    assert!(o.segment_layout(6).is_err());
    for (i, seg) in body.segments.iter().enumerate() {
        let shard_len = o.segment_layout(i as u64).unwrap().shard_len();
        assert!(seg.shards.iter().all(|s| s.size == shard_len));
    }
    let gc = c.gc();
    for s in Cluster::shards_of(&p5) {
        assert_eq!(gc.get(&s).map(|(_, r)| *r), Some(GcReason::Aborted));
    }
    for s in [&p1, &p2, &p3].into_iter().flat_map(Cluster::shards_of) {
        assert!(!gc.contains_key(&s));
    }
    assert!(
        multipart::list_parts(&c.reader(), up, 0, 100)
            .unwrap()
            .is_empty()
    );

    // Completing again: already committed; the pending part can no longer complete.
    let e = c.refused(|c| c.complete(&req));
    assert!(
        matches!(e, CatalogError::UploadAlreadyCommitted { .. }),
        "{e}"
    );
    let late = Cluster::complete_part_req(key, up, pending, 9000, 8192, "late");
    let e = c.refused(|c| c.complete_part(&late));
    assert!(matches!(e, CatalogError::NoSuchUpload { .. }), "{e}");
    // ... and expires with its targets queued and its link gone.
    let p = ops::expire_uploads(&c.reader(), NOW + TTL + 10, 100)
        .unwrap()
        .unwrap();
    c.run(&p).unwrap();
    c.check();
    assert!(
        c.reader()
            .list(keys::PART_LINKS, b"", None, 10)
            .unwrap()
            .is_empty()
    );

    // Overwriting the multipart object queues all its shards.
    let up2 = c.create(key, NOW, TTL);
    let q = c.part(key, up2, 1, 5, 8192, "x");
    c.complete(&Cluster::complete_req(key, up2, &[(1, &etag("x"))]))
        .unwrap();
    let gc = c.gc();
    for s in [&p1, &p2, &p3].into_iter().flat_map(Cluster::shards_of) {
        assert_eq!(gc.get(&s).map(|(_, r)| *r), Some(GcReason::Replaced));
    }
    // Deleting it queues its shards too.
    let p = ops::delete_object(&c.reader(), &b(), &k(key), NOW + 5)
        .unwrap()
        .unwrap();
    c.run(&p).unwrap();
    c.check();
    for s in Cluster::shards_of(&q) {
        assert_eq!(c.gc().get(&s).map(|(_, r)| *r), Some(GcReason::Deleted));
    }
}

#[test]
fn abort_expiry_races_and_listings() {
    let mut c = Cluster::new(2);
    let a = c.create("a", NOW, TTL);
    let pa = c.part("a", a, 1, 20_000, 8192, "a1");
    let pending = c.begin_part("a", a, 2, 100, 8192).unwrap().0;
    c.run(&multipart::abort_multipart(&c.reader(), &b(), &k("a"), a, NOW + 3).unwrap())
        .unwrap();
    c.check();
    for s in Cluster::shards_of(&pa) {
        assert_eq!(c.gc().get(&s).map(|(_, r)| *r), Some(GcReason::Aborted));
    }
    let e = c.refused(|c| multipart::abort_multipart(&c.reader(), &b(), &k("a"), a, NOW));
    assert!(matches!(e, CatalogError::NoSuchUpload { .. }));
    // A part still uploading at the abort cannot complete; aborting its upload frees it.
    let late = Cluster::complete_part_req("a", a, pending, 100, 8192, "late");
    assert!(matches!(
        c.refused(|c| c.complete_part(&late)),
        CatalogError::NoSuchUpload { .. }
    ));
    c.run(&ops::abort_upload(&c.reader(), pending, &b(), &k("a"), NOW + 4).unwrap())
        .unwrap();
    c.check();

    // A part completed between a completion's read and its apply: the completion reruns.
    let r = c.create("r", NOW, TTL);
    c.part("r", r, 1, 20_000, 8192, "r1");
    let (pid, _) = c.begin_part("r", r, 2, 10, 8192).unwrap();
    let stale = multipart::complete_multipart(
        &c.reader(),
        &Cluster::complete_req("r", r, &[(1, &etag("r1"))]),
    )
    .unwrap();
    c.complete_part(&Cluster::complete_part_req(
        "r",
        r,
        pid,
        10,
        8192,
        &etag("r2"),
    ))
    .unwrap();
    let before = c.dump();
    assert!(matches!(c.run(&stale), Err(CatalogError::Conflict { .. })));
    assert_eq!(c.dump(), before);
    // A retried CompletePart answers the stored part.
    let again = Cluster::complete_part_req("r", r, pid, 10, 8192, &etag("r2"));
    assert_eq!(c.complete_part(&again).unwrap().number, 2);
    // An abort built before a part completed reruns too.
    let stale_abort = multipart::abort_multipart(&c.reader(), &b(), &k("r"), r, NOW).unwrap();
    c.part("r", r, 3, 10, 8192, "r3");
    assert!(matches!(
        c.run(&stale_abort),
        Err(CatalogError::Conflict { .. })
    ));
    c.check();

    // Listing: several uploads over keys, a prefix, markers and pages.
    let mut want = vec![("r".to_string(), r)];
    for key in ["x/1", "x/2", "x/2", "y"] {
        let id = c.create(key, NOW, TTL);
        want.push((key.to_string(), id));
    }
    want.sort();
    let all = |c: &Cluster, prefix: &str, marker: Option<(&ObjectKey, Option<u128>)>, n| {
        let (page, more) = multipart::list_multipart(&c.reader(), &b(), prefix, marker, n).unwrap();
        (
            page.into_iter()
                .map(|m| (m.key, m.upload_id))
                .collect::<Vec<_>>(),
            more,
        )
    };
    assert_eq!(all(&c, "", None, 100), (want.clone(), false));
    assert_eq!(
        all(&c, "x/", None, 100).0,
        want.iter()
            .filter(|(k, _)| k.starts_with("x/"))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(all(&c, "", None, 2), (want[..2].to_vec(), true));
    // Paging with (key, upload id) markers visits every upload once.
    let mut seen = Vec::new();
    let mut marker: Option<(String, u128)> = None;
    loop {
        let mk = marker.as_ref().map(|(key, id)| (k(key), *id));
        let (page, more) = all(&c, "", mk.as_ref().map(|(key, id)| (key, Some(*id))), 2);
        marker = page.last().cloned();
        seen.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(seen, want);
    // A key marker alone skips every upload of that key.
    let x2 = k("x/2");
    assert_eq!(all(&c, "", Some((&x2, None)), 100).0, vec![want[4].clone()]);

    // Expiry: abandoned uploads past their expiry, with their completed parts.
    let old = c.create("old", NOW - TTL + 100, TTL);
    let po = c.part("old", old, 1, 30_000, 16384, "o1");
    assert!(
        multipart::expire_multipart(&c.reader(), NOW + 100, 10)
            .unwrap()
            .is_none()
    );
    let p = multipart::expire_multipart(&c.reader(), NOW + 200, 10)
        .unwrap()
        .unwrap();
    c.run(&p).unwrap();
    c.check();
    for s in Cluster::shards_of(&po) {
        assert_eq!(c.gc().get(&s).map(|(_, r)| *r), Some(GcReason::Expired));
    }
    assert!(matches!(
        multipart::get_multipart(&c.reader(), &b(), &k("old"), old),
        Err(CatalogError::NoSuchUpload { .. })
    ));
    // An expired upload takes no part and does not complete.
    let gone = c.create("gone", NOW - 2 * TTL, TTL);
    assert!(matches!(
        c.refused(|c| c.begin_part("gone", gone, 1, 10, 8192)),
        CatalogError::UploadExpired { .. }
    ));
    assert!(matches!(
        c.refused(|c| c.complete(&Cluster::complete_req("gone", gone, &[(1, "e")]))),
        CatalogError::UploadExpired { .. }
    ));
}

#[test]
fn random_operations_keep_the_index_exact() {
    let (mut parts_done, mut objects_done) = (0, 0);
    for seed in 0..4u64 {
        let mut c = Cluster::new(100 + seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let keys_ = ["k1", "k2", "k3"];
        // Open uploads: (key, id); pending part uploads: (key, id, part id, number, size, seg).
        let mut uploads: Vec<(&str, u128)> = Vec::new();
        let mut pending: Vec<(&str, u128, u128, u32, u64, u64)> = Vec::new();
        for _ in 0..150 {
            match rng.random_range(0..10) {
                0 => {
                    let key = keys_[rng.random_range(0..keys_.len())];
                    uploads.push((key, c.create(key, NOW, TTL)));
                }
                1..=3 if !uploads.is_empty() => {
                    let (key, id) = uploads[rng.random_range(0..uploads.len())];
                    let number = rng.random_range(1..=4);
                    let size = rng.random_range(0..40_000);
                    let seg = [8192, 16384][rng.random_range(0..2)];
                    if let Ok((pid, _)) = c.begin_part(key, id, number, size, seg) {
                        pending.push((key, id, pid, number, size, seg));
                    }
                }
                4..=5 if !pending.is_empty() => {
                    let (key, id, pid, number, size, seg) =
                        pending.swap_remove(rng.random_range(0..pending.len()));
                    let req = Cluster::complete_part_req(
                        key,
                        id,
                        pid,
                        size,
                        seg,
                        &etag(&number.to_string()),
                    );
                    if c.complete_part(&req).is_ok() {
                        parts_done += 1;
                    }
                }
                6 if !uploads.is_empty() => {
                    let (key, id) = uploads.swap_remove(rng.random_range(0..uploads.len()));
                    let p = multipart::abort_multipart(&c.reader(), &b(), &k(key), id, NOW);
                    if let Ok(p) = p {
                        c.run(&p).unwrap();
                        c.check();
                    }
                }
                7 | 8 if !uploads.is_empty() => {
                    let (key, id) = uploads[rng.random_range(0..uploads.len())];
                    let parts = multipart::list_parts(&c.reader(), id, 0, 100).unwrap_or_default();
                    let chosen: Vec<(u32, String)> = parts
                        .iter()
                        .filter(|_| rng.random_bool(0.7))
                        .map(|p| (p.number, p.etag.clone()))
                        .collect();
                    let mut req = Cluster::complete_req(key, id, &[]);
                    req.parts = chosen;
                    req.min_part_size = 0;
                    if c.complete(&req).is_ok() {
                        objects_done += 1;
                        uploads.retain(|(_, u)| *u != id);
                    }
                }
                _ => {
                    // Abandoned pending parts expire.
                    if let Some(p) = ops::expire_uploads(&c.reader(), NOW + TTL + 1, 2).unwrap() {
                        c.run(&p).unwrap();
                        c.check();
                        pending.retain(|(_, _, pid, ..)| {
                            ops::get_upload(&c.reader(), *pid).unwrap().is_some()
                        });
                    }
                }
            }
        }
        // Everything left expires: nothing is referenced but objects, nothing leaks.
        if let Some(p) =
            multipart::expire_multipart(&c.reader(), NOW + TTL + 1, usize::MAX).unwrap()
        {
            c.run(&p).unwrap();
        }
        if let Some(p) = ops::expire_uploads(&c.reader(), NOW + TTL + 1, usize::MAX).unwrap() {
            c.run(&p).unwrap();
        }
        c.check();
        assert!(
            c.reader()
                .list(keys::PARTS, b"", None, 1)
                .unwrap()
                .is_empty()
        );
        assert!(
            c.reader()
                .list(keys::MULTIPART, b"", None, 1)
                .unwrap()
                .is_empty()
        );
    }
    // The sequences did exercise both.
    assert!(
        parts_done > 25 && objects_done > 5,
        "{parts_done} parts, {objects_done} objects"
    );
}

fn md5_digest(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

fn md5_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
