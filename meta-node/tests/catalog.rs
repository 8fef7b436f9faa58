//! The object catalogue (`dogfs_meta::catalog`) on the real state machine (sled in a temp dir):
//! one system group and P partitions, commands applied through `StateMachine::apply_entry`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::NodeId;
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_meta::catalog::keys;
use dogfs_meta::catalog::list::ObjectSummary;
use dogfs_meta::catalog::ops;
use dogfs_meta::catalog::{
    BeginPut, CatalogError, CommitObject, DEFAULT_INLINE_MAX, GcReason, ListEntry, ListPage,
    ListQuery, ObjectBody, Prepared, PutInline, ShardReport, Targets, list_partition, merge_pages,
    partition_of,
};
use dogfs_meta::raft::{
    Command, KvReader, Response, SledEngine, SledSpace, StateMachine, TypeConfig, Versioned,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const NOW: u64 = 1_800_000_000;
const TTL: u64 = 3600;

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

/// A system group (0) and partitions 1..=P, every group a state machine in one sled database.
struct Cluster {
    _dir: TempDir,
    system: Group,
    parts: Vec<Group>,
    next_id: u128,
}

impl Cluster {
    fn new(partitions: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path().join("sled")).unwrap();
        let open = |g| Group {
            sm: StateMachine::open(&engine, g, dir.path().join("snapshots")).unwrap(),
            next: 0,
        };
        let system = open(0);
        let parts = (1..=partitions).map(open).collect();
        Cluster {
            _dir: dir,
            system,
            parts,
            next_id: 1,
        }
    }

    fn p(&self) -> u64 {
        self.parts.len() as u64
    }

    fn part(&mut self, bucket: &BucketName, key: &ObjectKey) -> &mut Group {
        let i = partition_of(bucket, key, self.p()) - 1;
        &mut self.parts[i as usize]
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn dump(&self) -> Vec<Dump> {
        let trees = [
            keys::BUCKETS,
            keys::OBJECTS,
            keys::UPLOADS,
            keys::GC,
            keys::SEALS,
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

    fn create_bucket(&mut self, name: &str) -> Result<u64, CatalogError> {
        let name = BucketName::parse(name)?;
        let p = ops::create_bucket(&name, NOW)?;
        self.system.run(&p)
    }

    /// The DeleteBucket protocol: seal every partition, check each empty, delete the record;
    /// unseal on failure.
    fn delete_bucket(&mut self, name: &str) -> Result<(), CatalogError> {
        let name = BucketName::parse(name)?;
        let (_, inc) = ops::get_bucket(&self.system.reader(), &name)?;
        for g in &mut self.parts {
            g.run(&ops::seal_bucket(&name, inc))?;
        }
        let mut failure = None;
        for (i, g) in self.parts.iter().enumerate() {
            if let Err(e) = ops::check_partition_empty(&g.reader(), i as u64 + 1, &name) {
                failure = Some(e);
                break;
            }
        }
        if failure.is_none()
            && let Err(e) = self.system.run(&ops::delete_bucket_record(&name, inc))
        {
            failure = Some(e);
        }
        match failure {
            Some(e) => {
                for g in &mut self.parts {
                    g.run(&ops::unseal_bucket(&name, inc))?;
                }
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// BeginPut with fresh targets; returns the upload id and the targets.
    fn begin(
        &mut self,
        bucket: &str,
        key: &str,
        size: u64,
    ) -> Result<(u128, Targets), CatalogError> {
        let bucket = BucketName::parse(bucket)?;
        let key = ObjectKey::parse(key)?;
        let (_, inc) = ops::get_bucket(&self.system.reader(), &bucket)?;
        let layout = ObjectLayout::new(size, SEGMENT, scheme())?;
        let targets: Targets = if size <= DEFAULT_INLINE_MAX {
            Vec::new()
        } else {
            (0..layout.segment_count())
                .map(|s| {
                    (0..scheme().total() as u128)
                        .map(|i| {
                            let shard = ShardId::from_u128(self.id() << 8);
                            (
                                shard,
                                Some(NodeId::from_u128(100 + i + u128::from(s as u8))),
                            )
                        })
                        .collect()
                })
                .collect()
        };
        let upload_id = self.id();
        let req = BeginPut {
            upload_id,
            bucket: bucket.clone(),
            key: key.clone(),
            size,
            scheme: scheme(),
            segment_size: SEGMENT,
            targets: targets.clone(),
            now_unix: NOW,
            ttl_secs: TTL,
        };
        let p = ops::begin_put(&req, inc, DEFAULT_INLINE_MAX)?;
        self.part(&bucket, &key).run(&p)?;
        Ok((upload_id, targets))
    }

    fn prepare_commit(&mut self, req: &CommitObject) -> Result<Prepared, CatalogError> {
        let g = self.part(&req.bucket, &req.key);
        ops::commit_object(&g.reader(), req, DEFAULT_INLINE_MAX)
    }

    fn commit(&mut self, req: &CommitObject) -> Result<u64, CatalogError> {
        let p = self.prepare_commit(req)?;
        self.part(&req.bucket, &req.key).run(&p)
    }

    fn get(
        &mut self,
        bucket: &str,
        key: &str,
    ) -> Result<dogfs_meta::catalog::ObjectVersion, CatalogError> {
        let bucket = BucketName::parse(bucket)?;
        let key = ObjectKey::parse(key)?;
        let g = self.part(&bucket, &key);
        ops::get_object(&g.reader(), &bucket, &key)
    }

    fn gc(&self) -> BTreeMap<u128, (u128, GcReason)> {
        self.parts
            .iter()
            .flat_map(|g| ops::gc_pending(&g.reader(), usize::MAX).unwrap())
            .map(|e| (e.shard_id, (e.node, e.reason)))
            .collect()
    }

    fn put(&mut self, bucket: &str, key: &str, size: u64) -> Result<u128, CatalogError> {
        let (upload, _) = self.begin(bucket, key, size)?;
        let req = commit_req(bucket, key, upload, size);
        self.commit(&req)?;
        Ok(upload)
    }

    fn list(&self, bucket: &str, q: &ListQuery) -> Result<ListPage, CatalogError> {
        let bucket = BucketName::parse(bucket)?;
        let pages = self
            .parts
            .iter()
            .map(|g| list_partition(&g.reader(), &bucket, q))
            .collect::<Result<Vec<_>, _>>()?;
        merge_pages(q, pages)
    }
}

const SEGMENT: u64 = 16384;

/// RS 2+2 with 4 KiB cells: segments of 16 KiB are 2 stripes.
fn scheme() -> ErasureScheme {
    ErasureScheme::new(Codec::ReedSolomon, 2, 2, 4096).unwrap()
}

fn crc(upload: u128, segment: u64, shard: usize) -> u32 {
    (upload as u32) ^ ((segment as u32) << 8) ^ shard as u32
}

/// A valid commit for `size` bytes: every shard stored with matching checksums and sizes.
fn commit_req(bucket: &str, key: &str, upload: u128, size: u64) -> CommitObject {
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
        bucket: BucketName::parse(bucket).unwrap(),
        key: ObjectKey::parse(key).unwrap(),
        size,
        etag: format!("etag-{upload}"),
        content_type: "application/octet-stream".into(),
        user_metadata: BTreeMap::from([("owner".to_string(), "test".to_string())]),
        segments,
        inline,
        now_unix: NOW + 1,
        min_write_shards: 0,
    }
}

#[test]
fn buckets_create_list_delete_only_when_empty() {
    let mut c = Cluster::new(4);
    let inc = c.create_bucket("photos").unwrap();
    assert!(matches!(
        c.create_bucket("photos"),
        Err(CatalogError::BucketExists { bucket }) if bucket == "photos"
    ));
    c.create_bucket("alpha").unwrap();
    let names: Vec<String> = ops::list_buckets(&c.system.reader(), None, 10)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha", "photos"]);
    let (rec, v) =
        ops::get_bucket(&c.system.reader(), &BucketName::parse("photos").unwrap()).unwrap();
    assert_eq!(
        (rec.name.as_str(), rec.created_unix, v),
        ("photos", NOW, inc)
    );

    // Invalid names never reach a key.
    let before = c.dump();
    for bad in ["Ab", "a", "bad_name", "192.168.0.1", "xn--abc", "-lead"] {
        let e = c.create_bucket(bad).unwrap_err();
        assert!(matches!(e, CatalogError::InvalidName(_)), "{bad}: {e}");
        assert!(e.to_string().contains("invalid bucket name"), "{e}");
    }
    assert!(matches!(
        c.begin("photos", "", 10),
        Err(CatalogError::InvalidName(_))
    ));
    assert!(matches!(
        c.begin("photos", "a\0b", 10),
        Err(CatalogError::InvalidName(_))
    ));
    let long = "k".repeat(1025);
    assert!(matches!(
        c.begin("photos", &long, 10),
        Err(CatalogError::InvalidName(_))
    ));
    assert_eq!(c.dump(), before);

    // Unknown buckets.
    assert!(
        matches!(c.delete_bucket("nothing"), Err(CatalogError::NoSuchBucket { bucket }) if bucket == "nothing")
    );
    assert!(matches!(
        c.begin("nothing", "k", 10),
        Err(CatalogError::NoSuchBucket { .. })
    ));

    // Not empty: refused, with the partition and key named, and nothing changed (seals undone).
    c.put("photos", "cat.jpg", 100).unwrap();
    let before = c.dump();
    let e = c.delete_bucket("photos").unwrap_err();
    match &e {
        CatalogError::BucketNotEmpty {
            bucket,
            partition,
            key,
        } => {
            assert_eq!((bucket.as_str(), key.as_str()), ("photos", "cat.jpg"));
            let want = partition_of(
                &BucketName::parse("photos").unwrap(),
                &ObjectKey::parse("cat.jpg").unwrap(),
                4,
            );
            assert_eq!(*partition, want);
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "bucket \"photos\" is not empty: partition {} still holds object \"cat.jpg\"",
            match e {
                CatalogError::BucketNotEmpty { partition, .. } => partition,
                _ => 0,
            }
        )
    );
    assert_eq!(c.dump(), before);

    // An upload begun before the delete cannot commit after it.
    let (upload, _) = c.begin("photos", "late.txt", 10).unwrap();
    let del = ops::delete_object(
        &c.part(
            &BucketName::parse("photos").unwrap(),
            &ObjectKey::parse("cat.jpg").unwrap(),
        )
        .reader(),
        &BucketName::parse("photos").unwrap(),
        &ObjectKey::parse("cat.jpg").unwrap(),
        NOW,
    )
    .unwrap()
    .unwrap();
    c.part(
        &BucketName::parse("photos").unwrap(),
        &ObjectKey::parse("cat.jpg").unwrap(),
    )
    .run(&del)
    .unwrap();
    c.delete_bucket("photos").unwrap();
    assert!(matches!(
        ops::get_bucket(&c.system.reader(), &BucketName::parse("photos").unwrap()),
        Err(CatalogError::NoSuchBucket { .. })
    ));
    let late = c.commit(&commit_req("photos", "late.txt", upload, 10));
    assert!(
        matches!(late, Err(CatalogError::BucketBusy { .. })),
        "{late:?}"
    );
    // BeginPut with the deleted incarnation (a leader that read the bucket before the delete).
    let req = BeginPut {
        upload_id: 999,
        bucket: BucketName::parse("photos").unwrap(),
        key: ObjectKey::parse("x").unwrap(),
        size: 10,
        scheme: scheme(),
        segment_size: SEGMENT,
        targets: Vec::new(),
        now_unix: NOW,
        ttl_secs: TTL,
    };
    let p = ops::begin_put(&req, inc, DEFAULT_INLINE_MAX).unwrap();
    let r = c.part(&req.bucket, &req.key).run(&p);
    assert!(matches!(r, Err(CatalogError::BucketBusy { .. })), "{r:?}");

    // Recreated: a new incarnation, usable at once.
    let inc2 = c.create_bucket("photos").unwrap();
    assert_ne!(inc2, inc);
    c.put("photos", "x", 10).unwrap();
    assert_eq!(c.get("photos", "x").unwrap().incarnation, inc2);
    // Empty bucket deletes.
    c.create_bucket("empty").unwrap();
    c.delete_bucket("empty").unwrap();
    let names: Vec<String> = ops::list_buckets(&c.system.reader(), None, 10)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha", "photos"]);
}

#[test]
fn begin_commit_get_overwrite_and_delete() {
    let mut c = Cluster::new(3);
    c.create_bucket("data").unwrap();
    let size = 40_000; // 3 segments: 16384 + 16384 + 7232
    let (u1, t1) = c.begin("data", "dir/obj", size).unwrap();
    assert_eq!(t1.len(), 3);
    // Not visible before commit.
    assert!(matches!(
        c.get("data", "dir/obj"),
        Err(CatalogError::NoSuchKey { .. })
    ));
    let v1 = c.commit(&commit_req("data", "dir/obj", u1, size)).unwrap();
    let o = c.get("data", "dir/obj").unwrap();
    assert_eq!(
        (o.version_id, o.size, o.etag.as_str()),
        (u1, size, format!("etag-{u1}").as_str())
    );
    assert_eq!(
        o.user_metadata.get("owner").map(String::as_str),
        Some("test")
    );
    let layout = o.layout().unwrap();
    let ObjectBody::Segments(segs) = &o.body else {
        panic!("not segmented")
    };
    assert_eq!(segs.len(), 3);
    for (seg, (rec, targets)) in layout.segments().zip(segs.iter().zip(&t1)) {
        assert_eq!(rec.index, seg.index());
        for (i, (s, (shard, node))) in rec.shards.iter().zip(targets).enumerate() {
            assert_eq!(
                (s.index as usize, s.shard(), Some(s.node())),
                (i, *shard, *node)
            );
            assert_eq!(
                (s.crc32c, s.size, s.missing),
                (crc(u1, seg.index(), i), seg.shard_len(), false)
            );
        }
    }
    assert_eq!(segs[2].shards[0].size, 3648);
    assert!(c.gc().is_empty());
    // The upload is gone.
    assert!(c.parts.iter().all(|g| {
        g.reader()
            .list(keys::UPLOADS, b"", None, 10)
            .unwrap()
            .is_empty()
    }));
    let b = BucketName::parse("data").unwrap();
    let k = ObjectKey::parse("dir/obj").unwrap();
    let head = ops::head_object(&c.part(&b, &k).reader(), &b, &k).unwrap();
    assert_eq!(head.version_id, u1);
    let stored = c
        .part(&b, &k)
        .reader()
        .get(&keys::object(&b, &k))
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, v1);

    // Overwrite: new version, and exactly the old shards queued, in the same entry.
    let (u2, _) = c.begin("data", "dir/obj", 20_000).unwrap();
    let v2 = c
        .commit(&commit_req("data", "dir/obj", u2, 20_000))
        .unwrap();
    assert!(v2 > v1);
    assert_eq!(c.get("data", "dir/obj").unwrap().version_id, u2);
    let old: BTreeMap<u128, (u128, GcReason)> = t1
        .iter()
        .flatten()
        .map(|(s, n)| (s.as_u128(), (n.unwrap().as_u128(), GcReason::Replaced)))
        .collect();
    assert_eq!(c.gc(), old);
    let g = c.part(&b, &k).reader();
    for s in old.keys() {
        assert_eq!(
            g.get(&keys::gc(ShardId::from_u128(*s)))
                .unwrap()
                .unwrap()
                .version,
            v2
        );
    }

    // Delete: gone, its shards queued; deleting again is a no-op.
    let t2: Vec<u128> = c
        .get("data", "dir/obj")
        .unwrap()
        .shards()
        .map(|s| s.shard_id)
        .collect();
    let p = ops::delete_object(&c.part(&b, &k).reader(), &b, &k, NOW)
        .unwrap()
        .unwrap();
    c.part(&b, &k).run(&p).unwrap();
    assert!(
        matches!(c.get("data", "dir/obj"), Err(CatalogError::NoSuchKey { bucket, key }) if bucket == "data" && key == "dir/obj")
    );
    let gc = c.gc();
    assert_eq!(gc.len(), old.len() + t2.len());
    assert!(t2.iter().all(|s| gc[s].1 == GcReason::Deleted));
    assert!(
        ops::delete_object(&c.part(&b, &k).reader(), &b, &k, NOW)
            .unwrap()
            .is_none()
    );
    // Racing delete built on a stale read: conflict, nothing changed.
    c.put("data", "dir/obj", 10).unwrap();
    let stale = ops::delete_object(&c.part(&b, &k).reader(), &b, &k, NOW)
        .unwrap()
        .unwrap();
    c.put("data", "dir/obj", 11).unwrap();
    let before = c.dump();
    assert!(matches!(
        c.part(&b, &k).run(&stale),
        Err(CatalogError::Conflict { .. })
    ));
    assert_eq!(c.dump(), before);

    // GC completion removes queue entries.
    let all: Vec<ShardId> = c.gc().keys().map(|s| ShardId::from_u128(*s)).collect();
    for g in &mut c.parts {
        g.run(&ops::gc_done(&all)).unwrap();
    }
    assert!(c.gc().is_empty());
}

#[test]
fn double_commit_unknown_upload_races_and_abort() {
    let mut c = Cluster::new(2);
    c.create_bucket("data").unwrap();
    let size = 20_000;
    let (u, _) = c.begin("data", "k", size).unwrap();
    let req = commit_req("data", "k", u, size);
    // The same commit prepared twice from one read: the second loses the race.
    let p1 = c.prepare_commit(&req).unwrap();
    let p2 = c.prepare_commit(&req).unwrap();
    c.part(&req.bucket, &req.key).run(&p1).unwrap();
    let before = c.dump();
    assert!(matches!(
        c.part(&req.bucket, &req.key).run(&p2),
        Err(CatalogError::Conflict { .. })
    ));
    assert_eq!(c.dump(), before);
    // Retrying (or committing again later): already committed, nothing changes.
    let e = c.commit(&req).unwrap_err();
    assert!(
        matches!(e, CatalogError::UploadAlreadyCommitted { upload, .. } if upload == u),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!("upload {u:032x} was already committed as the current version of \"data\"/\"k\"")
    );
    assert_eq!(c.dump(), before);

    // Two uploads of one key committing concurrently: the second is detected.
    let (a, _) = c.begin("data", "k", size).unwrap();
    let (b, _) = c.begin("data", "k", size).unwrap();
    let pa = c.prepare_commit(&commit_req("data", "k", a, size)).unwrap();
    let pb = c.prepare_commit(&commit_req("data", "k", b, size)).unwrap();
    c.part(&req.bucket, &req.key).run(&pa).unwrap();
    let before = c.dump();
    assert!(matches!(
        c.part(&req.bucket, &req.key).run(&pb),
        Err(CatalogError::Conflict { .. })
    ));
    assert_eq!(c.dump(), before);
    // Its retry succeeds and queues a's shards.
    c.commit(&commit_req("data", "k", b, size)).unwrap();
    assert_eq!(c.get("data", "k").unwrap().version_id, b);

    // Unknown upload id, and an upload of another key.
    let before = c.dump();
    let e = c
        .commit(&commit_req("data", "k", 0xdead, size))
        .unwrap_err();
    assert!(
        matches!(e, CatalogError::NoSuchUpload { upload: 0xdead }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "upload {:032x} does not exist (never begun, aborted, or expired and collected)",
            0xdead
        )
    );
    assert_eq!(c.dump(), before);
    let (other, _) = c.begin("data", "other", size).unwrap();
    let mut wrong = commit_req("data", "other", other, size);
    wrong.key = ObjectKey::parse("k").unwrap();
    let before = c.dump();
    // Same partition or not, the upload is not one of "k".
    assert!(matches!(
        c.commit(&wrong),
        Err(CatalogError::NoSuchUpload { .. })
    ));
    assert_eq!(c.dump(), before);

    // Abort: the upload is gone with all its targets queued; committing it is unknown.
    let (ab, targets) = c.begin("data", "gone", size).unwrap();
    let bn = BucketName::parse("data").unwrap();
    let kn = ObjectKey::parse("gone").unwrap();
    let p = ops::abort_upload(&c.part(&bn, &kn).reader(), ab, &bn, &kn, NOW).unwrap();
    c.part(&bn, &kn).run(&p).unwrap();
    let gc = c.gc();
    assert!(
        targets
            .iter()
            .flatten()
            .all(|(s, n)| gc[&s.as_u128()] == (n.unwrap().as_u128(), GcReason::Aborted))
    );
    assert!(matches!(
        c.commit(&commit_req("data", "gone", ab, size)),
        Err(CatalogError::NoSuchUpload { .. })
    ));
    assert!(matches!(
        ops::abort_upload(&c.part(&bn, &kn).reader(), ab, &bn, &kn, NOW),
        Err(CatalogError::NoSuchUpload { .. })
    ));
    // Upload id collision.
    let req = BeginPut {
        upload_id: other,
        bucket: bn.clone(),
        key: ObjectKey::parse("other").unwrap(),
        size: 10,
        scheme: scheme(),
        segment_size: SEGMENT,
        targets: Vec::new(),
        now_unix: NOW,
        ttl_secs: TTL,
    };
    let (_, inc) = ops::get_bucket(&c.system.reader(), &bn).unwrap();
    let p = ops::begin_put(&req, inc, DEFAULT_INLINE_MAX).unwrap();
    assert!(matches!(
        c.part(&bn, &req.key).run(&p),
        Err(CatalogError::UploadIdInUse { .. })
    ));
}

#[test]
fn commit_validation_is_precise_and_changes_nothing() {
    let mut c = Cluster::new(2);
    c.create_bucket("data").unwrap();
    let size = 40_000;
    let (u, _) = c.begin("data", "k", size).unwrap();
    let good = commit_req("data", "k", u, size);
    let before = c.dump();
    let check = |c: &mut Cluster, req: &CommitObject, msg: &str| {
        let e = c.commit(req).unwrap_err();
        assert_eq!(e.to_string(), msg, "{e:?}");
        e
    };

    let mut r = good.clone();
    r.segments[1].pop();
    let e = check(
        &mut c,
        &r,
        "segment 1 shard 3: no checksum reported (and not declared missing)",
    );
    assert!(matches!(
        e,
        CatalogError::ChecksumMissing {
            segment: 1,
            shard: 3
        }
    ));

    let mut r = good.clone();
    r.segments[2][1] = ShardReport::Stored {
        client_crc32c: 0xaaaa,
        server_crc32c: 0xbbbb,
        size: 3648,
    };
    let e = check(
        &mut c,
        &r,
        "segment 2 shard 1: checksum 0000aaaa computed by the client differs from 0000bbbb acknowledged by the chunk server",
    );
    assert!(matches!(
        e,
        CatalogError::ChecksumMismatch {
            segment: 2,
            shard: 1,
            ..
        }
    ));

    let mut r = good.clone();
    r.segments[0][0] = ShardReport::Missing;
    r.segments[0][3] = ShardReport::Missing;
    let e = check(
        &mut c,
        &r,
        "segment 0: 2 shards missing, at most 1 may be (the write quorum, min_write_shards, must be stored)",
    );
    assert!(matches!(
        e,
        CatalogError::TooManyMissing {
            segment: 0,
            missing: 2,
            allowed: 1
        }
    ));

    let mut r = good.clone();
    r.segments[2][0] = ShardReport::Stored {
        client_crc32c: 1,
        server_crc32c: 1,
        size: 4096,
    };
    check(
        &mut c,
        &r,
        "segment 2 shard 0: 4096 bytes stored, the layout needs 3648",
    );

    let mut r = good.clone();
    r.segments.pop();
    check(
        &mut c,
        &r,
        &format!("commit of upload {u:032x}: 2 segments reported, the layout has 3"),
    );

    let mut r = good.clone();
    r.segments[0].push(ShardReport::Missing);
    check(&mut c, &r, "segment 0: 5 shards reported, the scheme has 4");

    let mut r = good.clone();
    r.size = 39_999;
    check(
        &mut c,
        &r,
        &format!(
            "commit of upload {u:032x}: size 39999 differs from the 40000 bytes declared at BeginPut"
        ),
    );

    let mut r = good.clone();
    r.inline = Some(vec![0; 10]);
    check(
        &mut c,
        &r,
        &format!(
            "commit of upload {u:032x}: 40000 bytes exceeds inline_max 4096; inline data is not allowed"
        ),
    );

    let mut r = good.clone();
    r.now_unix = NOW + TTL + 1;
    let e = c.commit(&r).unwrap_err();
    assert!(matches!(e, CatalogError::UploadExpired { .. }), "{e}");
    assert_eq!(c.dump(), before);

    // m−1 = 1 missing shard per segment is allowed and recorded.
    let mut r = good.clone();
    r.segments[1][2] = ShardReport::Missing;
    c.commit(&r).unwrap();
    let o = c.get("data", "k").unwrap();
    let missing: Vec<(u64, u8)> = match &o.body {
        ObjectBody::Segments(s) => s
            .iter()
            .flat_map(|seg| {
                seg.shards
                    .iter()
                    .filter(|sh| sh.missing)
                    .map(move |sh| (seg.index, sh.index))
            })
            .collect(),
        other => panic!("not segments: {other:?}"),
    };
    assert_eq!(missing, [(1, 2)]);

    // BeginPut validation.
    let bn = BucketName::parse("data").unwrap();
    let (_, inc) = ops::get_bucket(&c.system.reader(), &bn).unwrap();
    let node = |i| NodeId::from_u128(i);
    let base = BeginPut {
        upload_id: 5000,
        bucket: bn.clone(),
        key: ObjectKey::parse("b").unwrap(),
        size: 20_000,
        scheme: scheme(),
        segment_size: SEGMENT,
        targets: vec![
            (1..=4)
                .map(|i| (ShardId::from_u128(i), Some(node(i))))
                .collect(),
            (5..=8)
                .map(|i| (ShardId::from_u128(i), Some(node(i))))
                .collect(),
        ],
        now_unix: NOW,
        ttl_secs: TTL,
    };
    assert!(ops::begin_put(&base, inc, DEFAULT_INLINE_MAX).is_ok());
    let mut r = base.clone();
    r.targets.pop();
    assert_eq!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX)
            .unwrap_err()
            .to_string(),
        "size 20000 needs 2 segment target sets (segment size 16384), got 1"
    );
    let mut r = base.clone();
    r.targets[1][3].1 = Some(node(5));
    assert!(matches!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX),
        Err(CatalogError::DuplicateTargetNode { segment: 1, .. })
    ));
    let mut r = base.clone();
    r.targets[1][3].0 = ShardId::from_u128(1);
    assert!(matches!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX),
        Err(CatalogError::DuplicateShardId { .. })
    ));
    let mut r = base.clone();
    r.targets[0].pop();
    assert!(matches!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX),
        Err(CatalogError::TargetCount {
            segment: 0,
            expected: 4,
            got: 3
        })
    ));
    let mut r = base.clone();
    r.segment_size = 1000;
    assert!(matches!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX),
        Err(CatalogError::Layout(_))
    ));
    let mut r = base;
    r.size = 100;
    assert!(matches!(
        ops::begin_put(&r, inc, DEFAULT_INLINE_MAX),
        Err(CatalogError::InlineWithTargets { .. })
    ));
}

#[test]
fn inline_objects_and_expiry() {
    let mut c = Cluster::new(2);
    c.create_bucket("small").unwrap();
    let (u, t) = c.begin("small", "tiny", 4096).unwrap();
    assert!(t.is_empty());
    let good = commit_req("small", "tiny", u, 4096);
    let before = c.dump();
    let mut r = good.clone();
    r.inline = None;
    assert_eq!(
        c.commit(&r).unwrap_err().to_string(),
        format!(
            "commit of upload {u:032x}: 4096 bytes is at most inline_max 4096; the data must be sent inline"
        )
    );
    let mut r = good.clone();
    r.inline = Some(vec![1; 4095]);
    assert_eq!(
        c.commit(&r).unwrap_err().to_string(),
        format!("commit of upload {u:032x}: inline data has 4095 bytes, the object 4096")
    );
    assert_eq!(c.dump(), before);
    c.commit(&good).unwrap();
    let o = c.get("small", "tiny").unwrap();
    assert_eq!(o.body, ObjectBody::Inline(vec![7; 4096]));
    assert_eq!(o.shards().count(), 0);
    // Empty object.
    c.put("small", "empty", 0).unwrap();
    assert_eq!(
        c.get("small", "empty").unwrap().body,
        ObjectBody::Inline(Vec::new())
    );
    // Overwriting an inline object queues nothing; 4097 bytes is erasure-coded.
    c.put("small", "tiny", 4097).unwrap();
    assert!(c.gc().is_empty());
    assert!(matches!(
        c.get("small", "tiny").unwrap().body,
        ObjectBody::Segments(_)
    ));

    // Expiry: only uploads past their expiry go, their targets queued.
    let (old, targets) = c.begin("small", "big", 10_000).unwrap();
    let bn = BucketName::parse("small").unwrap();
    let kn = ObjectKey::parse("big").unwrap();
    let g = c.part(&bn, &kn);
    assert!(
        ops::expire_uploads(&g.reader(), NOW + TTL, 100)
            .unwrap()
            .is_none()
    );
    let p = ops::expire_uploads(&g.reader(), NOW + TTL + 1, 100)
        .unwrap()
        .unwrap();
    g.run(&p).unwrap();
    assert!(ops::get_upload(&g.reader(), old).unwrap().is_none());
    let gc = c.gc();
    assert!(
        targets
            .iter()
            .flatten()
            .all(|(s, n)| gc[&s.as_u128()] == (n.unwrap().as_u128(), GcReason::Expired))
    );
    assert!(matches!(
        c.commit(&commit_req("small", "big", old, 10_000)),
        Err(CatalogError::NoSuchUpload { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Listing.

/// The S3 answer computed directly from a sorted set of keys.
fn model(
    keys: &BTreeSet<String>,
    prefix: &str,
    delimiter: &str,
    start_after: &str,
) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    for k in keys
        .iter()
        .filter(|k| k.as_str() > start_after && k.starts_with(prefix))
    {
        let rest = &k[prefix.len()..];
        match (!delimiter.is_empty())
            .then(|| rest.find(delimiter))
            .flatten()
        {
            Some(pos) => {
                let cp = k[..prefix.len() + pos + delimiter.len()].to_string();
                if out.last() != Some(&(true, cp.clone())) {
                    out.push((true, cp));
                }
            }
            None => out.push((false, k.clone())),
        }
    }
    out
}

fn entries(page: &ListPage) -> Vec<(bool, String)> {
    page.entries
        .iter()
        .map(|e| {
            (
                matches!(e, ListEntry::CommonPrefix(_)),
                e.name().to_string(),
            )
        })
        .collect()
}

/// Pages through the listing and checks every page against the model's slice.
fn check_listing(
    c: &Cluster,
    bucket: &str,
    keys: &BTreeSet<String>,
    prefix: &str,
    delimiter: &str,
    start_after: &str,
    max_keys: usize,
) {
    let want = model(keys, prefix, delimiter, start_after);
    let mut q = ListQuery {
        prefix: prefix.into(),
        delimiter: delimiter.into(),
        start_after: (!start_after.is_empty()).then(|| start_after.to_string()),
        continuation_token: None,
        max_keys,
    };
    let mut at = 0;
    loop {
        let page = c.list(bucket, &q).unwrap();
        let end = (at + max_keys).min(want.len());
        assert_eq!(
            entries(&page),
            want[at..end],
            "prefix {prefix:?} delimiter {delimiter:?} after {start_after:?} max {max_keys} at {at}"
        );
        at = end;
        assert_eq!(page.is_truncated, at < want.len());
        assert_eq!(page.is_truncated, page.next_continuation_token.is_some());
        match page.next_continuation_token {
            Some(t) => q.continuation_token = Some(t),
            None => break,
        }
    }
    assert_eq!(at, want.len());
}

#[test]
fn listing_10000_keys_over_8_partitions_matches_the_model() {
    let mut c = Cluster::new(8);
    c.create_bucket("big").unwrap();
    c.create_bucket("other").unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut keys = BTreeSet::new();
    let tops = ["a", "b", "logs", "photos", "é", "z"];
    while keys.len() < 10_000 {
        let top = tops[rng.random_range(0..tops.len())];
        let k = match rng.random_range(0..5) {
            0 => format!("{top}{}", rng.random_range(0..500)),
            1 => format!("{top}/{}", rng.random_range(0..1000)),
            2 => format!(
                "{top}/d{}/f{}",
                rng.random_range(0..20),
                rng.random_range(0..100)
            ),
            3 => format!("{top}/d{}/", rng.random_range(0..30)),
            _ => format!("{top}//x{}/y/z", rng.random_range(0..50)),
        };
        keys.insert(k);
    }
    for k in &keys {
        c.put("big", k, 1).unwrap();
    }
    // Noise in a neighbouring bucket never shows.
    for k in ["a/1", "zzz", "logs/d1/f1"] {
        c.put("other", k, 1).unwrap();
    }
    let per_part: Vec<usize> = c
        .parts
        .iter()
        .map(|g| {
            g.reader()
                .list(keys::OBJECTS, b"big\0", None, usize::MAX)
                .unwrap()
                .len()
        })
        .collect();
    assert!(per_part.iter().all(|n| *n > 900), "{per_part:?}");
    assert_eq!(per_part.iter().sum::<usize>(), 10_000);

    check_listing(&c, "big", &keys, "", "", "", 1000);
    check_listing(&c, "big", &keys, "", "", "", 333);
    check_listing(&c, "big", &keys, "", "/", "", 1);
    check_listing(&c, "big", &keys, "", "/", "", 4);
    check_listing(&c, "big", &keys, "logs/", "/", "", 7);
    check_listing(&c, "big", &keys, "logs/", "/", "logs/d3", 5);
    check_listing(&c, "big", &keys, "a/d1", "/", "", 3);
    check_listing(&c, "big", &keys, "photos/d", "/f", "", 10);
    check_listing(&c, "big", &keys, "é/", "", "é/5", 250);
    check_listing(&c, "big", &keys, "b//", "/", "", 2);
    check_listing(&c, "big", &keys, "nothing", "/", "", 10);
    check_listing(&c, "big", &keys, "z", "", "z/d9/f99", 1000);
    check_listing(&c, "big", &keys, "", "d", "", 50);

    // max_keys 0, bad token, and a token of another prefix.
    let q = ListQuery {
        max_keys: 0,
        ..ListQuery::default()
    };
    let p = c.list("big", &q).unwrap();
    assert!(p.entries.is_empty() && !p.is_truncated);
    let q = ListQuery {
        max_keys: 10,
        continuation_token: Some("zz".into()),
        ..ListQuery::default()
    };
    assert!(matches!(
        c.list("big", &q),
        Err(CatalogError::InvalidToken { .. })
    ));
    let first = c
        .list(
            "big",
            &ListQuery {
                max_keys: 2,
                prefix: "a/".into(),
                ..ListQuery::default()
            },
        )
        .unwrap();
    let q = ListQuery {
        max_keys: 10,
        prefix: "b".into(),
        continuation_token: first.next_continuation_token.clone(),
        ..ListQuery::default()
    };
    assert!(matches!(
        c.list("big", &q),
        Err(CatalogError::InvalidToken { .. })
    ));
    // Object summaries carry the record's fields.
    let o: Vec<&ObjectSummary> = first.objects().collect();
    let rec = c.get("big", &o[0].key).unwrap();
    assert_eq!(
        (o[0].size, o[0].etag.clone(), o[0].version_id),
        (rec.size, rec.etag, rec.version_id)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn small_listings_match_the_model(
        partitions in 1u64..5,
        keys in proptest::collection::btree_set("[ab/é]{1,5}", 0..60),
        prefix in "[ab/]{0,2}",
        delimiter in prop::sample::select(vec!["", "/", "b", "//", "é"]),
        start_after in "[ab/]{0,3}",
        max_keys in 1usize..6,
    ) {
        let mut c = Cluster::new(partitions);
        c.create_bucket("prop").unwrap();
        for k in &keys {
            c.put("prop", k, 1).unwrap();
        }
        check_listing(&c, "prop", &keys, &prefix, delimiter, &start_after, max_keys);
    }
}

#[test]
fn replace_target_moves_a_shard_and_queues_the_old_one() {
    let mut c = Cluster::new(2);
    c.create_bucket("data").unwrap();
    let size = 20_000;
    let (u, targets) = c.begin("data", "k", size).unwrap();
    let bn = BucketName::parse("data").unwrap();
    let kn = ObjectKey::parse("k").unwrap();
    let new = (ShardId::from_u128(0xabc), NodeId::from_u128(0xfeed));
    let reader = c.part(&bn, &kn).reader();
    let before = c.dump();
    // A node already in the segment, a used shard id, a target that does not exist.
    let e = ops::replace_target(
        &reader,
        u,
        &bn,
        &kn,
        1,
        2,
        (new.0, targets[1][0].1.unwrap()),
        NOW,
    );
    assert!(matches!(
        e,
        Err(CatalogError::DuplicateTargetNode { segment: 1, .. })
    ));
    let e = ops::replace_target(&reader, u, &bn, &kn, 1, 2, (targets[0][0].0, new.1), NOW);
    assert!(matches!(e, Err(CatalogError::DuplicateShardId { .. })));
    let e = ops::replace_target(&reader, u, &bn, &kn, 2, 0, new, NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("upload {u:032x} has no target for segment 2 shard 0 (2 segments)")
    );
    assert!(matches!(
        ops::replace_target(&reader, u, &bn, &kn, 0, 4, new, NOW),
        Err(CatalogError::NoSuchTarget { .. })
    ));
    assert!(matches!(
        ops::replace_target(&reader, 77, &bn, &kn, 0, 0, new, NOW),
        Err(CatalogError::NoSuchUpload { upload: 77 })
    ));
    assert_eq!(c.dump(), before);

    let p = ops::replace_target(&reader, u, &bn, &kn, 1, 2, new, NOW).unwrap();
    // A stale replacement (built before another change of the upload) conflicts.
    let stale = ops::replace_target(
        &reader,
        u,
        &bn,
        &kn,
        0,
        0,
        (ShardId::from_u128(0xabd), NodeId::from_u128(0xbeef)),
        NOW,
    )
    .unwrap();
    c.part(&bn, &kn).run(&p).unwrap();
    assert!(matches!(
        c.part(&bn, &kn).run(&stale),
        Err(CatalogError::Conflict { .. })
    ));
    let old = targets[1][2];
    assert_eq!(
        c.gc(),
        BTreeMap::from([(
            old.0.as_u128(),
            (old.1.unwrap().as_u128(), GcReason::TargetReplaced)
        )])
    );
    c.commit(&commit_req("data", "k", u, size)).unwrap();
    let o = c.get("data", "k").unwrap();
    let ObjectBody::Segments(segs) = &o.body else {
        panic!("inline")
    };
    assert_eq!((segs[1].shards[2].shard(), segs[1].shards[2].node()), new);
    assert_eq!(segs[0].shards[0].shard(), targets[0][0].0);
}

#[test]
fn corrupt_or_unknown_format_records_are_reported() {
    let mut c = Cluster::new(1);
    c.create_bucket("data").unwrap();
    let bn = BucketName::parse("data").unwrap();
    let kn = ObjectKey::parse("k").unwrap();
    let key = keys::object(&bn, &kn);
    for (value, reason) in [
        (vec![9u8, 1, 2], "unknown format byte 9"),
        (Vec::new(), "empty value"),
    ] {
        let cmd = Command::writes(vec![dogfs_meta::raft::Write::Put(key.clone(), value)]);
        c.parts[0].apply(cmd);
        let e = c.get("data", "k").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("stored object version is corrupt: {reason}")
        );
    }
    let cmd = Command::writes(vec![dogfs_meta::raft::Write::Put(key, vec![1, 0xff])]);
    c.parts[0].apply(cmd);
    assert!(matches!(
        c.get("data", "k"),
        Err(CatalogError::Corrupt {
            what: "object version",
            ..
        })
    ));
}

fn inline_req(bucket: &str, key: &str, version_id: u128, data: &[u8]) -> PutInline {
    PutInline {
        version_id,
        bucket: BucketName::parse(bucket).unwrap(),
        key: ObjectKey::parse(key).unwrap(),
        data: data.to_vec(),
        etag: "etag".into(),
        content_type: "text/plain".into(),
        user_metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        scheme: scheme(),
        segment_size: SEGMENT,
        now_unix: NOW,
    }
}

#[test]
fn put_inline_writes_one_entry_and_queues_the_replaced_version() {
    let mut c = Cluster::new(2);
    let inc = c.create_bucket("small").unwrap();
    let bn = BucketName::parse("small").unwrap();
    let kn = ObjectKey::parse("obj").unwrap();
    // An erasure-coded version first; the inline PUT replaces it and queues its shards in the
    // same entry.
    let old = c.put("small", "obj", 40_000).unwrap();
    let old_shards: BTreeSet<u128> = c
        .get("small", "obj")
        .unwrap()
        .shards()
        .map(|s| s.shard_id)
        .collect();
    assert!(!old_shards.is_empty());
    let g = c.part(&bn, &kn);
    let p = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 900, b"tiny"),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap();
    let version = g.run(&p).unwrap();
    let o = c.get("small", "obj").unwrap();
    assert_eq!(o.body, ObjectBody::Inline(b"tiny".to_vec()));
    assert_eq!(o.version_id, 900);
    assert_ne!(o.version_id, old);
    assert_eq!(o.user_metadata["k"], "v");
    let gc = c.gc();
    assert_eq!(gc.keys().copied().collect::<BTreeSet<_>>(), old_shards);
    assert!(gc.values().all(|(_, r)| *r == GcReason::Replaced));
    let g = c.part(&bn, &kn);
    let versions = g
        .reader()
        .list(keys::GC, b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v.version)
        .collect::<BTreeSet<_>>();
    assert_eq!(versions, BTreeSet::from([version]));

    // Too large, or a bad key: refused, nothing written.
    let before = c.dump();
    let g = c.part(&bn, &kn);
    let err = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 901, &[0; 4097]),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "an inline object has at most 4096 bytes, got 4097; use BeginPut"
    );
    // Built on a stale read: the second of two racing PUTs conflicts, state unchanged.
    let a = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 902, b"a"),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap();
    let b = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 903, b"b"),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap();
    assert_eq!(c.dump(), before);
    let g = c.part(&bn, &kn);
    g.run(&a).unwrap();
    let after_a = c.dump();
    let g = c.part(&bn, &kn);
    assert!(matches!(g.run(&b), Err(CatalogError::Conflict { .. })));
    assert_eq!(c.dump(), after_a);
    // Overwriting an inline version queues nothing new.
    let gc_before = c.gc();
    let g = c.part(&bn, &kn);
    let p = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 904, b""),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap();
    g.run(&p).unwrap();
    assert_eq!(c.gc(), gc_before);
    assert_eq!(c.get("small", "obj").unwrap().size, 0);

    // A sealed (being deleted) incarnation refuses the PUT; a new key in a deleted bucket too.
    c.delete_bucket("small").unwrap_err();
    let g = c.part(&bn, &kn);
    let p = ops::put_inline(
        &g.reader(),
        &inline_req("small", "obj", 905, b"x"),
        inc,
        DEFAULT_INLINE_MAX,
    )
    .unwrap();
    g.run(&ops::seal_bucket(&bn, inc)).unwrap();
    let sealed = c.dump();
    let g = c.part(&bn, &kn);
    assert!(matches!(g.run(&p), Err(CatalogError::BucketBusy { .. })));
    assert_eq!(c.dump(), sealed);
}

#[test]
fn batch_entries_apply_each_command_in_order_atomically() {
    let mut c = Cluster::new(1);
    c.create_bucket("batch").unwrap();
    let bn = BucketName::parse("batch").unwrap();
    let inc = ops::get_bucket(&c.system.reader(), &bn).unwrap().1;
    let k1 = ObjectKey::parse("one").unwrap();
    let g = c.part(&bn, &k1);
    // Two PUTs of the same key built on the same read, and one of another key, in one entry:
    // the second PUT of "one" sees the first's write and conflicts; the others apply.
    let a = ops::put_inline(&g.reader(), &inline_req("batch", "one", 1, b"a"), inc, 4096).unwrap();
    let b = ops::put_inline(&g.reader(), &inline_req("batch", "one", 2, b"b"), inc, 4096).unwrap();
    let d = ops::put_inline(&g.reader(), &inline_req("batch", "two", 3, b"d"), inc, 4096).unwrap();
    let r = g.apply(Command::batch(vec![
        a.command.clone(),
        b.command.clone(),
        d.command.clone(),
    ]));
    let Response::Batch(rs) = r else {
        panic!("not a batch response: {r:?}")
    };
    assert_eq!(rs.len(), 3);
    let version = a.interpret(&rs[0]).unwrap();
    assert!(matches!(
        b.interpret(&rs[1]),
        Err(CatalogError::Conflict { .. })
    ));
    assert_eq!(
        d.interpret(&rs[2]).unwrap(),
        version,
        "one entry, one version"
    );
    assert_eq!(
        c.get("batch", "one").unwrap().body,
        ObjectBody::Inline(b"a".to_vec())
    );
    assert_eq!(
        c.get("batch", "two").unwrap().body,
        ObjectBody::Inline(b"d".to_vec())
    );
    // A malformed batch (its own writes, or nested) changes nothing.
    let before = c.dump();
    let g = c.part(&bn, &k1);
    let mut bad = Command::batch(vec![a.command.clone()]);
    bad.writes = d.command.writes.clone();
    assert!(matches!(g.apply(bad), Response::Invalid { .. }));
    let nested = Command::batch(vec![Command::batch(vec![a.command.clone()])]);
    assert!(matches!(g.apply(nested), Response::Invalid { .. }));
    assert_eq!(c.dump(), before);
}
