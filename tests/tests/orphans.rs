//! Orphan collection (issue 12 item 5, `meta-node/src/orphans.rs`) against real processes
//! (3 `dogfs-meta`, 6 `dogfs-chunk`, RS 4+2, 256 KiB segments), with a 2 s grace period:
//! after overwrites, deletes, failed and killed PUTs, an aborted upload written to after its
//! abort, a shard written directly to a chunk server and a pending upload, every chunk server
//! ends up holding exactly the shards the current objects' layouts name, every object reads back
//! exactly, the direct orphan disappears, and the pending upload's shard survives well past the
//! grace period (until its upload expires).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{check_object, client, data, inventory, layout};
use dogfs_client::PutOptions;
use dogfs_core::ids::ShardId;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_internal_client::MetaInternalClient;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_tests::{Cluster, ClusterOptions};
use tokio::io::AsyncWriteExt;

const BUCKET: &str = "orphans";
/// The upload TTL: long enough for the pending upload to outlive several orphan rounds past
/// the grace period, short enough for the killed PUTs to expire within the test.
const TTL_SECS: u64 = 25;
const GRACE_SECS: u64 = 2;

fn options() -> ClusterOptions {
    let env = [
        ("DOGFS_SEGMENT_SIZE", "256KiB".to_owned()),
        ("DOGFS_CELL_SIZE", "64KiB".to_owned()),
        ("DOGFS_ORPHAN_GRACE_SECS", GRACE_SECS.to_string()),
        ("DOGFS_ORPHAN_INTERVAL_MS", "300".to_owned()),
        ("DOGFS_GC_INTERVAL_MS", "200".to_owned()),
        ("DOGFS_UPLOAD_TTL_SECS", TTL_SECS.to_string()),
    ];
    ClusterOptions {
        chunk_nodes: 6,
        meta_env: env.map(|(k, v)| (k.to_owned(), v)).to_vec(),
        ..ClusterOptions::default()
    }
}

async fn inventories(cluster: &Cluster) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for i in 0..cluster.chunk_nodes() {
        out.push(inventory(cluster, i).await);
    }
    out
}

/// Every (chunk server, shard) stored.
async fn stored(cluster: &Cluster) -> BTreeSet<(usize, String)> {
    (0..)
        .zip(inventories(cluster).await)
        .flat_map(|(i, inv)| inv.into_iter().map(move |s| (i, s)))
        .collect()
}

/// What metadata says each chunk server should hold: every stored shard of every current
/// object, by `GetObject`.
async fn referenced(
    cluster: &Cluster,
    keys: impl Iterator<Item = &String>,
) -> Vec<BTreeSet<String>> {
    let mut out = vec![BTreeSet::new(); cluster.chunk_nodes()];
    for key in keys {
        for seg in layout(cluster, BUCKET, key).await {
            for s in seg.shards.iter().filter(|s| !s.missing) {
                let i = cluster.chunk_index(&s.node_id).unwrap_or_else(|| {
                    panic!("{key}: shard {} on unknown node {}", s.shard_id, s.node_id)
                });
                out[i].insert(s.shard_id.clone());
            }
        }
    }
    out
}

async fn meta(cluster: &Cluster) -> MetaServiceClient<dogfs_tests::cluster::TestChannel> {
    MetaServiceClient::new(cluster.channel(&cluster.endpoints()[0]).await.unwrap())
}

/// Writes `len` bytes as shard `id` on the chunk server at `address` (as a component under
/// TLS: no grant needed).
async fn put_shard(cluster: &Cluster, address: &str, id: &str, len: usize) {
    let i = cluster
        .chunk_endpoints()
        .iter()
        .position(|a| a == address)
        .unwrap_or_else(|| panic!("{address} is not a chunk server of the cluster"));
    let mut c = cluster.chunk_client(i).await.unwrap();
    let id: ShardId = id.parse().unwrap();
    dogfs_chunk::client::put_shard(&mut c, id, &data(id.as_u128() as u64, len))
        .await
        .unwrap_or_else(|e| panic!("PutShard {id} to {address}: {e}"));
}

/// Waits for `cond` (re-evaluated every 100 ms) until `deadline`; `what` and the last
/// observation name the failure.
macro_rules! wait_until {
    ($deadline:expr, $what:expr, $cond:expr) => {{
        let deadline: Instant = $deadline;
        loop {
            let (ok, seen) = $cond;
            if ok {
                break seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}; last: {:?}",
                $what,
                seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphans_are_collected_and_referenced_shards_never_are() {
    let cluster = Cluster::start(options()).await.unwrap();
    let c = client(&cluster, Duration::from_secs(5)).await;
    c.create_bucket(BUCKET).await.unwrap();
    let mut m = meta(&cluster).await;

    // Objects: some overwritten, some deleted, one inline.
    let mut want: BTreeMap<String, Bytes> = BTreeMap::new();
    for (i, len) in [700_000usize, 300_000, 1_100_000, 90_000, 2_000, 520_000]
        .into_iter()
        .enumerate()
    {
        let key = format!("obj{i}");
        let body = data(i as u64, len);
        c.put_bytes(BUCKET, &key, body.clone()).await.unwrap();
        want.insert(key, body);
    }
    for (i, len) in [(0usize, 400_000usize), (1, 800_000), (4, 600_000)] {
        let key = format!("obj{i}");
        let body = data(100 + i as u64, len);
        c.put_bytes(BUCKET, &key, body.clone()).await.unwrap();
        want.insert(key, body);
    }
    for key in ["obj2", "obj3"] {
        assert!(c.delete(BUCKET, key).await.unwrap());
        want.remove(key);
    }

    // A failed PUT: the body ends after 500 kB of a declared 1 MB.
    let short = data(7, 500_000);
    let e = c
        .put(
            BUCKET,
            "failed",
            &short[..],
            1_000_000,
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    eprintln!("failed PUT: {e}");

    // Killed PUTs: the client stops (its task is aborted) once at least two segments' shards
    // are stored; their uploads stay pending until they expire.
    for n in 0..2u64 {
        let before = stored(&cluster).await;
        let (mut w, r) = tokio::io::duplex(64 << 10);
        let c2 = c.clone();
        let put = tokio::spawn(async move {
            c2.put(
                BUCKET,
                &format!("killed{n}"),
                r,
                3 << 20,
                PutOptions::default(),
            )
            .await
        });
        w.write_all(&data(200 + n, 700_000)).await.unwrap();
        wait_until!(
            Instant::now() + Duration::from_secs(30),
            "shards of the killed PUT",
            {
                // New shards, not the net count: the GC deletes replaced shards meanwhile.
                let new = stored(&cluster).await.difference(&before).count();
                (new >= 12, new)
            }
        );
        put.abort();
        assert!(put.await.unwrap_err().is_cancelled());
        drop(w);
    }

    // An aborted upload, and a write to one of its targets after the abort (a late client).
    let begun = m
        .begin_put(pb::BeginPutRequest {
            bucket: BUCKET.into(),
            key: "aborted".into(),
            size: 600_000,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    let targets: Vec<&pb::ShardLocation> = begun.segments[0].shards.iter().collect();
    put_shard(&cluster, &targets[0].address, &targets[0].shard_id, 65_536).await;
    m.abort_upload(pb::AbortUploadRequest {
        bucket: BUCKET.into(),
        key: "aborted".into(),
        upload_id: begun.upload_id.clone(),
    })
    .await
    .unwrap();
    put_shard(&cluster, &targets[1].address, &targets[1].shard_id, 65_536).await;

    // A pending upload with one shard written, never committed.
    let pending = m
        .begin_put(pb::BeginPutRequest {
            bucket: BUCKET.into(),
            key: "pending".into(),
            size: 1 << 20,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    let pending_started = Instant::now();
    let p = &pending.segments[0].shards[0];
    put_shard(&cluster, &p.address, &p.shard_id, 65_536).await;
    let p_server = cluster.chunk_index(&p.node_id).unwrap();

    // An orphan: a shard written directly to a chunk server.
    let orphan = ShardId::random().to_string();
    let orphan_addr = cluster.chunk_endpoints()[0].clone();
    put_shard(&cluster, &orphan_addr, &orphan, 10_000).await;
    assert!(inventory(&cluster, 0).await.contains(&orphan));
    let t = Instant::now();
    wait_until!(
        t + Duration::from_secs(30),
        "the direct orphan to be collected",
        {
            let present = inventory(&cluster, 0).await.contains(&orphan);
            (!present, present)
        }
    );
    eprintln!("direct orphan collected after {:?}", t.elapsed());

    // A second orphan, written after the first was collected: the round that collects it
    // started after the first one's round ended, when the pending shard (written before the
    // first orphan) was already past the grace period, so that round checked the pending
    // shard too — and must have left it.
    let orphan2 = ShardId::random().to_string();
    put_shard(&cluster, &orphan_addr, &orphan2, 10_000).await;
    wait_until!(
        Instant::now() + Duration::from_secs(30),
        "the second orphan to be collected",
        {
            let present = inventory(&cluster, 0).await.contains(&orphan2);
            (!present, present)
        }
    );
    assert!(
        inventory(&cluster, p_server).await.contains(&p.shard_id),
        "the pending upload's shard was deleted {:?} after it was written (grace {GRACE_SECS} s)",
        pending_started.elapsed()
    );
    assert!(
        pending_started.elapsed() < Duration::from_secs(TTL_SECS),
        "inconclusive: the pending upload may have expired already ({:?})",
        pending_started.elapsed()
    );

    // Once every upload expired and the grace period passed: every server holds exactly what
    // the current objects reference.
    let expected = referenced(&cluster, want.keys()).await;
    let t = Instant::now();
    wait_until!(
        t + Duration::from_secs(TTL_SECS + 60),
        "inventories to equal the references",
        {
            let got = inventories(&cluster).await;
            let diff: Vec<(usize, Vec<&String>, Vec<&String>)> = got
                .iter()
                .zip(&expected)
                .enumerate()
                .filter(|(_, (g, e))| g != e)
                .map(|(i, (g, e))| (i, g.difference(e).collect(), e.difference(g).collect()))
                .collect();
            // Extra shards may still be collected; a missing one never comes back.
            for (i, _, missing) in &diff {
                assert!(
                    missing.is_empty(),
                    "chunk server {i} lost referenced shards {missing:?}"
                );
            }
            (diff.is_empty(), format!("{diff:?}"))
        }
    );
    eprintln!("inventories settled {:?} after the orphans", t.elapsed());
    assert_eq!(
        referenced(&cluster, want.keys()).await,
        expected,
        "layouts changed meanwhile"
    );
    for (key, body) in &want {
        check_object(&c, BUCKET, key, body, 3, 1).await;
    }
    for key in [
        "obj2", "obj3", "failed", "killed0", "killed1", "aborted", "pending",
    ] {
        assert!(c.get_bytes(BUCKET, key).await.is_err(), "{key} exists");
    }
    check_shard_refs_rpc(&cluster).await;
}

/// `MetaInternal.CheckShardRefs` through every metadata node (leaders answer, followers
/// forward): exactly the object's partition references its shard; bad requests are refused.
async fn check_shard_refs_rpc(cluster: &Cluster) {
    let seg = layout(cluster, BUCKET, "obj0").await;
    let s = &seg[0].shards[0];
    let unknown = ShardId::random().to_string();
    let partitions = cluster.options().partitions;
    let other = cluster
        .chunk_node_id((cluster.chunk_index(&s.node_id).unwrap() + 1) % cluster.chunk_nodes())
        .unwrap()
        .to_owned();
    for ep in cluster.endpoints() {
        let mut m = MetaInternalClient::new(cluster.meta_channel(&ep).await.unwrap());
        let mut answers = Vec::new();
        for group_id in 1..=partitions {
            let r = m
                .check_shard_refs(pb::CheckShardRefsRequest {
                    group_id,
                    node_id: s.node_id.clone(),
                    shard_ids: vec![s.shard_id.clone(), unknown.clone()],
                })
                .await
                .unwrap_or_else(|e| panic!("{ep}, partition {group_id}: {e}"))
                .into_inner();
            answers.push(r.referenced);
        }
        let referencing = answers.iter().filter(|a| a[0]).count();
        assert_eq!(referencing, 1, "{ep}: {answers:?}");
        assert!(
            answers.iter().all(|a| a.len() == 2 && !a[1]),
            "{ep}: {answers:?}"
        );
        // The same shard id on another server is not referenced.
        for group_id in 1..=partitions {
            let r = m
                .check_shard_refs(pb::CheckShardRefsRequest {
                    group_id,
                    node_id: other.clone(),
                    shard_ids: vec![s.shard_id.clone()],
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.referenced, [false], "{ep}: partition {group_id}");
        }
        let bad = [
            (0, s.node_id.clone(), vec![s.shard_id.clone()]),
            (partitions + 1, s.node_id.clone(), vec![s.shard_id.clone()]),
            (1, "not-a-node".to_owned(), vec![s.shard_id.clone()]),
            (1, s.node_id.clone(), vec![s.shard_id.to_uppercase()]),
            (1, s.node_id.clone(), vec!["abc".to_owned()]),
            (1, s.node_id.clone(), vec![unknown.clone(); 10_001]),
        ];
        for (group_id, node_id, shard_ids) in bad {
            let n = shard_ids.len();
            let e = m
                .check_shard_refs(pb::CheckShardRefsRequest {
                    group_id,
                    node_id: node_id.clone(),
                    shard_ids,
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::InvalidArgument,
                "{ep}: group {group_id}, node {node_id:?}, {n} ids: {e}"
            );
        }
    }
}
