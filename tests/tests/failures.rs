//! Failures during reads and writes, on clusters of real processes (3 `dogfs-meta`, 6 or 7
//! `dogfs-chunk`, RS 4+2): a frozen chunk server (SIGSTOP) costs a read one shard timeout, not
//! a stall; a chunk server killed mid-upload is replaced (or, without a spare, recorded
//! missing) and the object commits; a large PUT survives its partition leader's kill; killing
//! the metadata leader during a stream of PUTs loses no acknowledged PUT.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_same, check_object, client, data, get_range, layout, options};
use dogfs_client::{Client, ErrorKind, ListQuery, ObjectInfo, PutOptions};
use dogfs_core::names::{BucketName, ObjectKey, partition_of};
use dogfs_tests::{Cluster, NodeRef};
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

/// A PUT whose bytes come through a pipe that holds after `hold_at` bytes until `finish`, so a
/// test can break something while the upload is at a known point.
struct HeldPut {
    go: tokio::sync::oneshot::Sender<()>,
    feed: tokio::task::JoinHandle<()>,
    put: tokio::task::JoinHandle<Result<ObjectInfo, dogfs_client::Error>>,
}

impl HeldPut {
    /// Starts the PUT and returns once the client has read `hold_at` bytes (less the pipe's
    /// 64 KiB buffer).
    async fn start(c: &Client, bucket: &str, key: &str, obj: Bytes, hold_at: usize) -> HeldPut {
        let (mut tx, rx) = tokio::io::duplex(64 << 10);
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let size = obj.len() as u64;
        let feed = tokio::spawn(async move {
            tx.write_all(&obj[..hold_at]).await.unwrap();
            held_tx.send(()).unwrap();
            // The test may drop `go` when it fails; then the PUT is cut short too.
            if go_rx.await.is_ok() {
                tx.write_all(&obj[hold_at..]).await.unwrap();
                tx.shutdown().await.unwrap();
            }
        });
        let put = {
            let (c, bucket, key) = (c.clone(), bucket.to_owned(), key.to_owned());
            tokio::spawn(async move { c.put(&bucket, &key, rx, size, PutOptions::default()).await })
        };
        tokio::time::timeout(Duration::from_secs(60), held_rx)
            .await
            .unwrap_or_else(|_| panic!("the PUT did not read {hold_at} bytes within 60 s"))
            .unwrap();
        HeldPut { go, feed, put }
    }

    /// Lets the rest of the bytes through; the PUT's result (within 120 s).
    async fn finish(self) -> Result<ObjectInfo, dogfs_client::Error> {
        self.go.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(120), self.put)
            .await
            .expect("the PUT did not finish within 120 s")
            .unwrap();
        self.feed.await.unwrap();
        r
    }
}

/// A 16 MiB object (one segment, four stripes); the chunk server holding its data shard 0 is
/// frozen with SIGSTOP. With a 1 s shard timeout a GET completes well within 10 s, exact, for
/// a client that had a connection to the frozen server and for a new one; so does a range GET.
/// After SIGCONT the server serves again.
#[tokio::test]
async fn a_frozen_chunk_server_does_not_stall_reads() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let writer = client(&cluster, Duration::from_secs(1)).await;
    writer.create_bucket("frozen").await.unwrap();
    let obj = data(3, 16 << 20);
    writer
        .put_bytes("frozen", "sixteen", obj.clone())
        .await
        .unwrap();
    // Read once, so the client holds a connection to every chunk server.
    check_object(&writer, "frozen", "sixteen", &obj, 0, 0).await;

    let segments = layout(&cluster, "frozen", "sixteen").await;
    let shard0 = &segments[0].shards[0];
    assert_eq!(shard0.index, 0);
    let frozen = cluster
        .chunk_index(&shard0.node_id)
        .unwrap_or_else(|| panic!("shard 0 on an unknown server: {shard0:?}"));
    cluster.sigstop(NodeRef::Chunk(frozen)).unwrap();
    eprintln!("{:?}: chunk server {frozen} (shard 0) frozen", t0.elapsed());

    let fresh = client(&cluster, Duration::from_secs(1)).await;
    for (who, c) in [("warm client", &writer), ("new client", &fresh)] {
        let start = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(10), c.get_bytes("frozen", "sixteen"))
            .await
            .unwrap_or_else(|_| panic!("{who}: GET stalled for 10 s on a frozen chunk server"))
            .unwrap();
        assert_same(who, &got, &obj);
        eprintln!(
            "{who}: 16 MiB GET with a frozen server: {:?}",
            start.elapsed()
        );

        let start = Instant::now();
        let r = (5 << 20) + 17..(9 << 20) + 3;
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            get_range(c, "frozen", "sixteen", r.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("{who}: range GET stalled for 10 s"));
        assert_same(who, &got, &obj[r.start as usize..r.end as usize]);
        eprintln!(
            "{who}: range GET with a frozen server: {:?}",
            start.elapsed()
        );
    }

    cluster.sigcont(NodeRef::Chunk(frozen)).unwrap();
    let after = client(&cluster, Duration::from_secs(1)).await;
    check_object(&after, "frozen", "sixteen", &obj, 5, 3).await;
    eprintln!("{:?}: SIGCONT, reads exact", t0.elapsed());
}

/// A 48 MiB PUT (6 segments of 8 MiB) on 7 chunk servers (each segment uses 6 of them). The
/// test feeds the object through a pipe and holds it at 21 MiB, in segment 2, until segment
/// 2's six shard uploads are the only ones in flight; it kills (kill -9) the lowest-numbered
/// server receiving one, then lets the PUT go on. The PUT succeeds; no shard of segments 2..6
/// is on the killed server and none is missing (it was replaced by the seventh server, and
/// later segments placed on it were moved before sending); the object reads back exactly with
/// the killed server still down.
#[tokio::test]
async fn a_chunk_server_killed_mid_upload_is_replaced_and_the_object_commits() {
    const SIZE: usize = 48 << 20;
    const HOLD_AT: usize = 21 << 20;
    let t0 = Instant::now();
    let mut cluster = Cluster::start(options(7)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(5)).await;
    c.create_bucket("midput").await.unwrap();
    let obj = data(4, SIZE);

    let held = HeldPut::start(&c, "midput", "big", obj.clone(), HOLD_AT).await;
    // Segment 1's uploads finish (fsync, answer) by themselves; wait until only segment 2's six
    // are in flight.
    let end = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let uploads: Vec<Vec<String>> = (0..7)
            .map(|i| cluster.chunk_uploads_in_progress(i).unwrap())
            .collect();
        let total: usize = uploads.iter().map(Vec::len).sum();
        if total == 6 && uploads.iter().all(|u| u.len() <= 1) {
            break uploads.iter().position(|u| u.len() == 1).unwrap();
        }
        assert!(
            Instant::now() < end,
            "expected the 6 shard uploads of segment 2 in flight, saw {uploads:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim_id = cluster.chunk_node_id(victim).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(victim)).unwrap();
    eprintln!(
        "{:?}: PUT held at 21 MiB, chunk server {victim} killed",
        t0.elapsed()
    );
    let info = held
        .finish()
        .await
        .unwrap_or_else(|e| panic!("PUT with a target killed mid-upload: {e}"));
    assert_eq!(info.size, SIZE as u64);
    assert!(info.etag.ends_with("-6"), "{info:?}");
    eprintln!("{:?}: PUT committed", t0.elapsed());

    let segments = layout(&cluster, "midput", "big").await;
    assert_eq!(segments.len(), 6);
    for s in &segments {
        assert!(
            s.shards.iter().all(|x| !x.missing),
            "a shard is missing although a seventh server could take it: {s:?}"
        );
        let nodes: BTreeSet<&str> = s.shards.iter().map(|x| x.node_id.as_str()).collect();
        assert_eq!(nodes.len(), 6, "two shards on one server: {s:?}");
        if s.index == 2 {
            eprintln!("segment 2 after the kill of {victim_id}: {nodes:?}");
        }
        if s.index >= 2 {
            assert!(
                !nodes.contains(victim_id.as_str()),
                "segment {} still has a shard on the killed server: {s:?}",
                s.index
            );
        }
    }

    // The killed server stays down: the object reads back exactly (segments 0 and 1 may have
    // a shard on it and decode from parity).
    check_object(&c, "midput", "big", &obj, 10, 4).await;
    let fresh = client(&cluster, Duration::from_secs(5)).await;
    check_object(&fresh, "midput", "big", &obj, 0, 0).await;
    eprintln!("{:?}: exact with the killed server down", t0.elapsed());
}

/// The same with 6 chunk servers, so no spare: a 24 MiB PUT (3 segments) held at 13 MiB
/// (segment 1), chunk server 2 (a target of every segment, as each uses all six) killed. The
/// PUT commits with that server's shard missing in segments 1 and 2 (DESIGN §4 step 3: at
/// least k + 1 stored); nothing else is missing; the object is exact with the server down, and
/// with a second server killed too (4 of 6 left where a shard is missing).
#[tokio::test]
async fn a_chunk_server_killed_mid_upload_without_a_spare_commits_with_a_missing_shard() {
    const SIZE: usize = 24 << 20;
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(5)).await;
    c.create_bucket("nospare").await.unwrap();
    let obj = data(5, SIZE);
    let held = HeldPut::start(&c, "nospare", "k", obj.clone(), 13 << 20).await;
    let victim_id = cluster.chunk_node_id(2).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(2)).unwrap();
    let info = held
        .finish()
        .await
        .unwrap_or_else(|e| panic!("PUT with a target killed mid-upload, no spare: {e}"));
    assert_eq!(info.size, SIZE as u64);

    let segments = layout(&cluster, "nospare", "k").await;
    assert_eq!(segments.len(), 3);
    for s in &segments {
        let missing: Vec<&str> = s
            .shards
            .iter()
            .filter(|x| x.missing)
            .map(|x| x.node_id.as_str())
            .collect();
        // Segment 0 was streamed before the kill; its shard on the killed server counts as
        // stored or missing depending on whether its fsync was acknowledged in time.
        let want = if s.index == 0 { 0..=1 } else { 1..=1 };
        assert!(
            want.contains(&missing.len()) && missing.iter().all(|n| *n == victim_id),
            "segment {}: missing {missing:?}, expected the killed server's shard: {s:?}",
            s.index
        );
        let stored: BTreeSet<&str> = s
            .shards
            .iter()
            .filter(|x| !x.missing)
            .map(|x| x.node_id.as_str())
            .collect();
        assert_eq!(
            stored.len(),
            6 - missing.len(),
            "two shards on one server: {s:?}"
        );
    }
    check_object(&c, "nospare", "k", &obj, 10, 5).await;
    cluster.kill9(NodeRef::Chunk(4)).unwrap();
    check_object(&c, "nospare", "k", &obj, 10, 6).await;
}

/// The leader of the key's partition is killed while a 40 MiB PUT (5 segments) is held at
/// 10 MiB: the upload lives in Raft, so the PUT goes on against the new leader (commit included)
/// and the object is exact.
#[tokio::test]
async fn a_large_put_survives_its_partition_leader_kill9() {
    const SIZE: usize = 40 << 20;
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(5)).await;
    c.create_bucket("big").await.unwrap();
    let obj = data(6, SIZE);
    let held = HeldPut::start(&c, "big", "k", obj.clone(), 10 << 20).await;
    let group = partition_of(
        &BucketName::parse("big").unwrap(),
        &ObjectKey::parse("k").unwrap(),
        cluster.options().partitions,
    );
    let (victim, term) = cluster.meta_leader(group).await.unwrap();
    cluster.kill9(NodeRef::Meta(victim as usize)).unwrap();
    cluster
        .wait_meta_leader(group, Duration::from_secs(30), |l, t| {
            l != victim && t > term
        })
        .await
        .unwrap();
    let info = held
        .finish()
        .await
        .unwrap_or_else(|e| panic!("PUT across a kill of its partition leader {victim}: {e}"));
    assert_eq!(info.size, SIZE as u64);
    check_object(&c, "big", "k", &obj, 5, 7).await;
}

#[derive(Debug)]
struct Attempt {
    key: String,
    data: Bytes,
    started: Instant,
    result: Result<ObjectInfo, String>,
}

/// Four writers PUT small (inline), 10 KiB and 1 MiB objects under unique keys; while they run
/// the metadata node leading the most Raft groups is killed (kill -9), twice (restarted in
/// between, so the second kill hits another node). The writers go on until each has had PUTs
/// succeed after each kill. Then every PUT that returned Ok reads back exactly
/// (also after the killed node restarted), and every PUT that failed is either absent or
/// exact, never corrupt.
#[tokio::test]
async fn killing_the_metadata_leader_loses_no_acknowledged_put() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(5)).await;
    c.create_bucket("stream").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok_count = Arc::new(AtomicUsize::new(0));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let ok_after_kill: Vec<Arc<AtomicUsize>> =
        (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (c, stop, ok_count, killed_at, after) = (
            c.clone(),
            Arc::clone(&stop),
            Arc::clone(&ok_count),
            Arc::clone(&killed_at),
            Arc::clone(&ok_after_kill[w as usize]),
        );
        writers.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let size = match i % 3 {
                    0 => 100 + i as usize,
                    1 => 10_000 + i as usize,
                    _ => 1 << 20,
                };
                let key = format!("w{w}/{i:05}");
                let body = data(w * 1_000_000 + i, size);
                let started = Instant::now();
                let result = tokio::time::timeout(
                    Duration::from_secs(90),
                    c.put_bytes("stream", &key, body.clone()),
                )
                .await
                .map_err(|_| "no answer in 90 s".to_owned())
                .and_then(|r| r.map_err(|e| format!("{:?}: {e}", e.kind())));
                if result.is_ok() {
                    ok_count.fetch_add(1, Ordering::SeqCst);
                    let k = *killed_at.lock().unwrap();
                    if k.is_some_and(|k| started > k) {
                        after.fetch_add(1, Ordering::SeqCst);
                    }
                }
                attempts.push(Attempt {
                    key,
                    data: body,
                    started,
                    result,
                });
                i += 1;
            }
            attempts
        }));
    }

    // Let the writers get going, then kill the node that leads the most groups; once PUTs
    // succeed again, restart it and do the same to the node that leads the most groups then.
    let end = Instant::now() + Duration::from_secs(30);
    while ok_count.load(Ordering::SeqCst) < 12 {
        assert!(Instant::now() < end, "the writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut victims = Vec::new();
    for round in 0..2 {
        if let Some(&prev) = victims.last() {
            cluster.restart(NodeRef::Meta(prev)).await.unwrap();
        }
        let status = cluster.cluster_status().await.unwrap();
        let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for g in &status.groups {
            if let Some(l) = g.leader_id {
                led.entry(l).or_default().push(g.group_id);
            }
        }
        let (&victim, groups) = led
            .iter()
            .max_by_key(|(id, gs)| (gs.len(), std::cmp::Reverse(**id)))
            .unwrap();
        let groups = groups.clone();
        let before = ok_count.load(Ordering::SeqCst);
        for n in &ok_after_kill {
            n.store(0, Ordering::SeqCst);
        }
        *killed_at.lock().unwrap() = Some(Instant::now());
        cluster.kill9(NodeRef::Meta(victim as usize)).unwrap();
        victims.push(victim as usize);
        eprintln!(
            "{:?}: round {round}: {before} PUTs acknowledged; meta node {victim} (leader of \
             groups {groups:?}) killed",
            t0.elapsed()
        );
        for &g in &groups {
            cluster
                .wait_meta_leader(g, Duration::from_secs(30), |l, _| l != victim)
                .await
                .unwrap();
        }
        eprintln!("{:?}: new leaders elected", t0.elapsed());
        let end = Instant::now() + Duration::from_secs(60);
        while ok_after_kill.iter().any(|n| n.load(Ordering::SeqCst) < 3) {
            assert!(
                Instant::now() < end,
                "PUTs do not succeed after the failover: {:?}",
                ok_after_kill
                    .iter()
                    .map(|n| n.load(Ordering::SeqCst))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut attempts = Vec::new();
    for w in writers {
        attempts.extend(w.await.unwrap());
    }
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.result.is_err()).collect();
    eprintln!(
        "{:?}: {} PUTs, {} acknowledged, {} failed: {:?}",
        t0.elapsed(),
        attempts.len(),
        attempts.len() - failed.len(),
        failed.len(),
        failed
            .iter()
            .map(|a| (&a.key, a.started.duration_since(t0), &a.result))
            .collect::<Vec<_>>()
    );

    verify(&c, &attempts).await;
    eprintln!(
        "{:?}: every acknowledged PUT reads back exactly",
        t0.elapsed()
    );

    // The last killed node comes back, catches up, and nothing changes.
    let last = *victims.last().unwrap();
    cluster.restart(NodeRef::Meta(last)).await.unwrap();
    cluster.wait_ready().await.unwrap();
    let again = client(&cluster, Duration::from_secs(5)).await;
    verify(&again, &attempts).await;
    eprintln!("{:?}: and after node {last} restarted", t0.elapsed());
}

/// Acknowledged PUTs read back exactly (with the ETag they were acknowledged with); failed
/// ones are absent or exact.
async fn verify(c: &dogfs_client::Client, attempts: &[Attempt]) {
    // The listing has every acknowledged key and nothing that was never attempted.
    let listed: BTreeSet<String> = c
        .list("stream", ListQuery::default())
        .map_ok(|e| e.name().to_owned())
        .try_collect()
        .await
        .unwrap();
    let tried: BTreeSet<&str> = attempts.iter().map(|a| a.key.as_str()).collect();
    for a in attempts.iter().filter(|a| a.result.is_ok()) {
        assert!(listed.contains(&a.key), "acknowledged {} not listed", a.key);
    }
    for k in &listed {
        assert!(tried.contains(k.as_str()), "listed {k} was never written");
    }
    for a in attempts {
        match &a.result {
            Ok(info) => {
                let got = c
                    .get_bytes("stream", &a.key)
                    .await
                    .unwrap_or_else(|e| panic!("acknowledged PUT {} lost: {e}", a.key));
                assert_same(&format!("acknowledged PUT {}", a.key), &got, &a.data);
                let head = c.head("stream", &a.key).await.unwrap();
                assert_eq!(head.etag, info.etag, "{}", a.key);
                assert_eq!(head.version_id, info.version_id, "{}", a.key);
            }
            Err(why) => match c.get_bytes("stream", &a.key).await {
                Ok(got) => assert_same(
                    &format!("failed PUT {} ({why}) is present", a.key),
                    &got,
                    &a.data,
                ),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => panic!("failed PUT {} ({why}): GET says {e}", a.key),
            },
        }
    }
}
