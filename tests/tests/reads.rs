//! Reads on clusters of real processes.
//!
//! - Linearizable reads under leader leases, on real `dogfs-meta` processes: a partition
//!   leader frozen (SIGSTOP) while it holds a read lease, deposed while frozen, and resumed
//!   never answers a read with the value it held before the write its successor acknowledged.
//! - Hedged shard reads (DESIGN §4 GET, §12 "tail"), on 3 + 6 processes: a chunk server
//!   holding a data shard of every object is frozen; every GET still returns the exact bytes
//!   well within a second of its healthy time, with `shard_timeout` at 30 s.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{CELL_SIZE, SEGMENT_SIZE, assert_same, client, data, get_range, layout, options};
use dogfs_core::names::{BucketName, ObjectKey, partition_of};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_tests::cluster::TestChannel;
use dogfs_tests::{Cluster, ClusterOptions, NodeRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;
use tonic::metadata::MetadataValue;

async fn meta(cluster: &Cluster, node: u64) -> MetaServiceClient<TestChannel> {
    let addr = cluster
        .node(NodeRef::Meta(node as usize))
        .unwrap()
        .grpc_addr();
    // As a metadata node: the reads below are marked forwarded, which only a metadata node's
    // certificate may do when the cluster checks tokens.
    MetaServiceClient::new(cluster.meta_channel(&addr.to_string()).await.unwrap())
}

/// A GetObject the node must serve itself (marked forwarded, so it is never passed on).
fn local_get(key: &str) -> Request<pb::GetObjectRequest> {
    let mut r = Request::new(pb::GetObjectRequest {
        bucket: "lease".into(),
        key: key.into(),
        consistency: pb::ReadConsistency::Linearizable as i32,
    });
    r.metadata_mut()
        .insert("x-dogfs-forwarded", MetadataValue::from_static("1"));
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn lease_reads(cluster: &Cluster, node: u64) -> u64 {
    let addr = cluster
        .node(NodeRef::Meta(node as usize))
        .unwrap()
        .http_addr();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: dogfs\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("dogfs_meta_lease_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lease_reads counter in /metrics:\n{body}"))
}

#[tokio::test]
async fn a_deposed_leader_never_serves_a_stale_read() {
    let mut cluster = Cluster::start(options(0)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("lease").await.unwrap();
    c.put_bytes("lease", "k", bytes::Bytes::from_static(b"v1"))
        .await
        .unwrap();

    let group = partition_of(
        &BucketName::parse("lease").unwrap(),
        &ObjectKey::parse("k").unwrap(),
        cluster.options().partitions,
    );
    let (old, term) = cluster.meta_leader(group).await.unwrap();
    let mut old_client = meta(&cluster, old).await;

    // Reads served by the old leader: the first opens its lease, the rest ride on it.
    let before = lease_reads(&cluster, old).await;
    for _ in 0..20 {
        let got = old_client.get_object(local_get("k")).await.unwrap();
        assert_eq!(&got.get_ref().inline_data[..], b"v1");
    }
    assert!(
        lease_reads(&cluster, old).await > before,
        "20 reads in a row at the leader never used its lease"
    );

    // Freeze it while it holds a fresh lease; the others elect a new leader and commit v2.
    old_client.get_object(local_get("k")).await.unwrap();
    cluster.sigstop(NodeRef::Meta(old as usize)).unwrap();
    let (new, _) = cluster
        .wait_meta_leader(group, Duration::from_secs(30), |l, t| l != old && t > term)
        .await
        .unwrap();
    let mut new_client = meta(&cluster, new).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = new_client
            .put_inline_object(pb::PutInlineObjectRequest {
                bucket: "lease".into(),
                key: "k".into(),
                data: bytes::Bytes::from_static(b"v2"),
                etag: "v2".into(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("PUT v2 at the new leader {new}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("PUT v2 at the new leader {new}: {e}"),
        }
    }

    // Resumed, the old leader answers reads it must serve itself at once: refused (it is no
    // longer the leader) or v2, never v1.
    cluster.sigcont(NodeRef::Meta(old as usize)).unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let (mut served, mut refused) = (0, 0);
    while Instant::now() < until {
        match old_client.get_object(local_get("k")).await {
            Ok(r) => {
                assert_eq!(
                    &r.get_ref().inline_data[..],
                    b"v2",
                    "the deposed leader {old} served a stale read"
                );
                served += 1;
            }
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("resumed node {old}: {served} reads served (v2), {refused} refused");
    // Without the forwarded mark it passes the read to the new leader.
    let mut r = Request::new(pb::GetObjectRequest {
        bucket: "lease".into(),
        key: "k".into(),
        consistency: pb::ReadConsistency::Linearizable as i32,
    });
    r.set_timeout(Duration::from_secs(10));
    let got = old_client.get_object(r).await.unwrap();
    assert_eq!(&got.get_ref().inline_data[..], b"v2");
}

/// The chunk servers (harness indices) holding a data shard of some segment of `bucket/key`.
async fn data_holders(cluster: &Cluster, bucket: &str, key: &str, segments: usize) -> Vec<usize> {
    let k = cluster.options().ec_k;
    let mut out: Vec<usize> = layout(cluster, bucket, key)
        .await
        .iter()
        .take(segments)
        .flat_map(|seg| seg.shards.iter())
        .filter(|s| s.index < k && !s.missing)
        .map(|s| {
            cluster
                .chunk_index(&s.node_id)
                .unwrap_or_else(|| panic!("{bucket}/{key}: shard on an unknown server: {s:?}"))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A whole GET and the time it took.
async fn timed_get(c: &dogfs_client::Client, bucket: &str, key: &str) -> (Duration, bytes::Bytes) {
    let t = Instant::now();
    // A generous outer bound, so a regression fails here instead of hanging the suite.
    let got = tokio::time::timeout(Duration::from_secs(60), c.get_bytes(bucket, key))
        .await
        .unwrap_or_else(|_| panic!("GET {bucket}/{key} stalled for 60 s"))
        .unwrap_or_else(|e| panic!("GET {bucket}/{key}: {e}"));
    (t.elapsed(), got)
}

#[tokio::test]
async fn a_frozen_chunk_server_costs_a_get_a_hedge_not_a_timeout() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions {
        // The registry must not mark the frozen server suspect during the test: this measures
        // hedging, not the layout's node states.
        suspect_after_secs: 600,
        down_after_secs: 1200,
        ..options(6)
    })
    .await
    .unwrap();
    eprintln!("{:?}: cluster up", t0.elapsed());
    // The timeout the hedge must make irrelevant.
    let shard_timeout = Duration::from_secs(30);
    let c = client(&cluster, shard_timeout).await;
    c.create_bucket("hedge").await.unwrap();

    // 9 MiB (2 segments of 8 MiB) and 20 MiB + 12345 (3 segments); then 1 MiB objects under
    // fresh keys until one has a data shard on a server that also holds a data shard of both
    // others (each 1 MiB try succeeds with probability about 2/3).
    let mut objects: Vec<(String, bytes::Bytes)> = vec![
        ("9MiB".to_owned(), data(71, 9 << 20)),
        ("20MiB+12345".to_owned(), data(72, (20 << 20) + 12_345)),
    ];
    for (key, obj) in &objects {
        c.put_bytes("hedge", key, obj.clone()).await.unwrap();
        eprintln!("{:?}: {key} written", t0.elapsed());
    }
    let mut common = data_holders(&cluster, "hedge", &objects[0].0, usize::MAX).await;
    // Only its two full segments: the range GET below reads a whole cell of one of them (the
    // short last segment has smaller cells).
    let second = data_holders(&cluster, "hedge", &objects[1].0, 2).await;
    common.retain(|i| second.contains(i));
    assert!(
        !common.is_empty(),
        "no chunk server holds a data shard of both large objects"
    );
    let mut frozen = None;
    for attempt in 0..20 {
        let key = format!("1MiB-{attempt}");
        let obj = data(80 + attempt, 1 << 20);
        c.put_bytes("hedge", &key, obj.clone()).await.unwrap();
        let holders = data_holders(&cluster, "hedge", &key, usize::MAX).await;
        if let Some(&i) = common.iter().find(|i| holders.contains(i)) {
            objects.insert(0, (key, obj));
            frozen = Some(i);
            break;
        }
    }
    let frozen = frozen.expect("20 objects of 1 MiB and none shares a data server");
    eprintln!(
        "{:?}: objects written; chunk server {frozen} holds a data shard of each",
        t0.elapsed()
    );

    // Healthy GETs (the second of each: connections open, latency estimate warm).
    let mut healthy = Vec::new();
    for (key, obj) in &objects {
        timed_get(&c, "hedge", key).await;
        let (took, got) = timed_get(&c, "hedge", key).await;
        assert_same(&format!("healthy GET {key}"), &got, obj);
        healthy.push(took);
    }

    cluster.sigstop(NodeRef::Chunk(frozen)).unwrap();
    eprintln!("{:?}: chunk server {frozen} frozen (SIGSTOP)", t0.elapsed());
    // A client that held connections to the frozen server, and one that never read before
    // (no latency samples yet: its first hedge delay is the ceiling).
    let fresh = client(&cluster, shard_timeout).await;
    for (who, cl) in [("warm client", &c), ("new client", &fresh)] {
        for ((key, obj), base) in objects.iter().zip(&healthy) {
            let (took, got) = timed_get(cl, "hedge", key).await;
            assert_same(
                &format!("{who}: GET {key} with server {frozen} frozen"),
                &got,
                obj,
            );
            eprintln!(
                "{who}: GET {key}: {took:?} with a frozen data server, {base:?} healthy \
                 (extra {:?})",
                took.saturating_sub(*base)
            );
            assert!(
                took < Duration::from_secs(2),
                "{who}: GET {key} took {took:?} with a frozen server (healthy {base:?})"
            );
        }
    }
    // A range GET inside one cell the frozen server holds (of the largest object, in one of
    // its two full segments): it needs that shard only, so it waits for the hedge and
    // decodes the range from four others.
    let (key, obj) = &objects[2];
    let segs = layout(&cluster, "hedge", key).await;
    // Full segments only: a short last segment has smaller cells.
    let (seg, index) = segs[..2]
        .iter()
        .find_map(|seg| {
            seg.shards
                .iter()
                .find(|s| s.index < 4 && cluster.chunk_index(&s.node_id) == Some(frozen))
                .map(|s| (seg.index, u64::from(s.index)))
        })
        .expect("the frozen server holds a data shard of the largest object");
    let cell_start = seg * SEGMENT_SIZE + index * CELL_SIZE;
    let r = cell_start + 1000..cell_start + 500_000;
    let t = Instant::now();
    let got = get_range(&c, "hedge", key, r.clone()).await;
    let took = t.elapsed();
    assert_same(
        "range GET, frozen server",
        &got,
        &obj[r.start as usize..r.end as usize],
    );
    eprintln!("warm client: range GET {r:?} of {key}: {took:?}");
    assert!(took < Duration::from_secs(2), "range GET took {took:?}");

    cluster.sigcont(NodeRef::Chunk(frozen)).unwrap();
    for (key, obj) in &objects {
        let (_, got) = timed_get(&c, "hedge", key).await;
        assert_same(&format!("GET {key} after SIGCONT"), &got, obj);
    }
    eprintln!("{:?}: resumed; every object exact", t0.elapsed());
}
