//! Objects through the SDK against a cluster of real processes (3 `dogfs-meta`, 6 `dogfs-chunk`,
//! RS 4+2, 8 MiB segments): every size of issue 4 round-trips exactly, whole and by ranges;
//! every object survives any two chunk servers killed; a whole-cluster restart keeps every
//! object and the listing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{INLINE_MAX, SEGMENT_SIZE, check_object, client, corpus, layout, options};
use dogfs_client::{Client, ListEntry, ListQuery};
use dogfs_tests::{Cluster, NodeRef};
use futures::TryStreamExt;

const BUCKET: &str = "objects";

/// Stores the corpus; checks what each PUT answers.
async fn put_corpus(client: &Client, objects: &[(String, Bytes)]) {
    client.create_bucket(BUCKET).await.unwrap();
    for (key, data) in objects {
        let info = client
            .put_bytes(BUCKET, key, data.clone())
            .await
            .unwrap_or_else(|e| panic!("PUT {key} ({} bytes): {e}", data.len()));
        assert_eq!(info.size, data.len() as u64, "{key}");
        assert_eq!(info.inline, data.len() <= INLINE_MAX, "{key}: {info:?}");
        let segments = (data.len() as u64).div_ceil(SEGMENT_SIZE).max(1);
        // Computed here, independently of the SDK.
        let crc = format!("{:08x}", crc32c::crc32c(data));
        let want_etag = if segments > 1 {
            format!("{crc}-{segments}")
        } else {
            crc
        };
        assert_eq!(info.etag, want_etag, "{key}");
    }
}

/// Every key of the bucket with its size, through the SDK's paged listing.
async fn listing(client: &Client) -> BTreeMap<String, u64> {
    let entries: Vec<ListEntry> = client
        .list(
            BUCKET,
            ListQuery {
                max_keys: Some(3),
                ..ListQuery::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|e| match e {
            ListEntry::Object(o) => (o.key, o.size),
            ListEntry::CommonPrefix(p) => panic!("common prefix {p:?} without a delimiter"),
        })
        .collect()
}

fn expected_listing(objects: &[(String, Bytes)]) -> BTreeMap<String, u64> {
    objects
        .iter()
        .map(|(k, d)| (k.clone(), d.len() as u64))
        .collect()
}

#[tokio::test]
async fn every_size_round_trips_whole_and_by_ranges() {
    let t0 = Instant::now();
    let cluster = Cluster::start(options(6)).await.unwrap();
    eprintln!("{:?}: cluster up", t0.elapsed());
    let client = client(&cluster, Duration::from_secs(5)).await;
    let objects = corpus();
    eprintln!("{:?}: corpus made", t0.elapsed());
    put_corpus(&client, &objects).await;
    eprintln!("{:?}: corpus stored", t0.elapsed());

    for (i, (key, data)) in objects.iter().enumerate() {
        check_object(&client, BUCKET, key, data, 20, 7 + i as u64).await;
        // Metadata's layout agrees: segments of 8 MiB, k + m shards each, none missing, every
        // shard of a segment on a different server.
        let segments = layout(&cluster, BUCKET, key).await;
        let want = if data.len() <= INLINE_MAX {
            0
        } else {
            (data.len() as u64).div_ceil(SEGMENT_SIZE) as usize
        };
        assert_eq!(segments.len(), want, "{key}: {segments:?}");
        for s in &segments {
            assert_eq!(s.shards.len(), 6, "{key}: {s:?}");
            assert!(s.shards.iter().all(|x| !x.missing), "{key}: {s:?}");
            let mut nodes: Vec<&str> = s.shards.iter().map(|x| x.node_id.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            assert_eq!(nodes.len(), 6, "{key}: two shards on one server: {s:?}");
        }
    }
    eprintln!("{:?}: every object read whole and by ranges", t0.elapsed());
    assert_eq!(listing(&client).await, expected_listing(&objects));
}

/// Every pair of the six chunk servers killed (kill -9) in turn: every object still reads back
/// exactly, from the four left (RS 4+2). The pair is restarted before the next one is killed.
#[tokio::test]
async fn every_object_survives_any_two_chunk_servers_killed() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let client = client(&cluster, Duration::from_secs(5)).await;
    let objects = corpus();
    put_corpus(&client, &objects).await;
    eprintln!("{:?}: corpus stored", t0.elapsed());

    let mut pairs = Vec::new();
    for a in 0..6 {
        for b in a + 1..6 {
            pairs.push((a, b));
        }
    }
    for (n, &(a, b)) in pairs.iter().enumerate() {
        cluster.kill9(NodeRef::Chunk(a)).unwrap();
        cluster.kill9(NodeRef::Chunk(b)).unwrap();
        for (i, (key, data)) in objects.iter().enumerate() {
            // Whole objects, and a few ranges (they decode only the cells they touch).
            check_object(&client, BUCKET, key, data, 2, (n * 100 + i) as u64).await;
        }
        eprintln!(
            "{:?}: chunk servers {a} and {b} down, every object exact",
            t0.elapsed()
        );
        cluster.restart(NodeRef::Chunk(a)).await.unwrap();
        cluster.restart(NodeRef::Chunk(b)).await.unwrap();
    }
    // And with all six back, nothing was lost.
    for (key, data) in &objects {
        check_object(&client, BUCKET, key, data, 0, 0).await;
    }
}

/// All nine processes killed at once (kill -9) and started again on the same ports and data
/// dirs: every object reads back exactly, the listing is the same, and the cluster takes new
/// objects.
#[tokio::test]
async fn whole_cluster_restart_keeps_every_object() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let objects = corpus();
    {
        let client = client(&cluster, Duration::from_secs(5)).await;
        put_corpus(&client, &objects).await;
        assert_eq!(listing(&client).await, expected_listing(&objects));
    }
    eprintln!("{:?}: corpus stored", t0.elapsed());

    cluster.restart_all().await.unwrap();
    eprintln!("{:?}: whole cluster restarted and ready", t0.elapsed());

    let client = client(&cluster, Duration::from_secs(5)).await;
    assert_eq!(listing(&client).await, expected_listing(&objects));
    for (i, (key, data)) in objects.iter().enumerate() {
        check_object(&client, BUCKET, key, data, 3, 50 + i as u64).await;
    }
    let extra = common::data(99, 3 << 20);
    client
        .put_bytes(BUCKET, "after-restart", extra.clone())
        .await
        .unwrap();
    check_object(&client, BUCKET, "after-restart", &extra, 3, 99).await;
    eprintln!("{:?}: every object exact after the restart", t0.elapsed());
}
