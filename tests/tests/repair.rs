//! The self-healing data layer on clusters of real processes (3 `dogfs-meta`, 6 or 7
//! `dogfs-chunk`, RS 4+2, timings shortened by flags): writes ride through a dead server, a
//! dead server's shards are rebuilt elsewhere after `repair_after`, corrupt shards found by
//! the scrubber are rebuilt exactly, and repair racing deletes, overwrites and a metadata
//! leader's kill resurrects nothing and completes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_same, client, data, inventory, layout};
use dogfs_client::{Client, ErrorKind};
use dogfs_proto::chunk::GetShardRequest;
use dogfs_proto::meta as pb;
use dogfs_tests::{Cluster, ClusterOptions, NodeRef};
use futures::StreamExt;

/// 3 + `chunk_nodes`, RS 4+2, 8 MiB segments, servers suspect after 2 s and down after 4 s,
/// repaired 2 s after that; repair passes every 300 ms.
fn healing_options(chunk_nodes: usize) -> ClusterOptions {
    ClusterOptions {
        chunk_nodes,
        suspect_after_secs: 2,
        down_after_secs: 4,
        meta_env: [
            ("DOGFS_SEGMENT_SIZE", "8MiB"),
            ("DOGFS_REPAIR_AFTER_SECS", "2"),
            ("DOGFS_REPAIR_INTERVAL_MS", "300"),
            ("DOGFS_GC_INTERVAL_MS", "300"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        chunk_env: vec![("DOGFS_SCRUB_INTERVAL_SECS".to_owned(), "1".to_owned())],
        ..ClusterOptions::default()
    }
}

async fn status(c: &Client) -> Option<pb::ClusterStatusResponse> {
    c.cluster_status().await.ok()
}

/// Waits until metadata reports no segment short of shards and every object's layout has all
/// k+m shards stored on distinct servers in `allowed`.
async fn wait_healed(
    cluster: &Cluster,
    c: &Client,
    objects: &BTreeMap<String, Bytes>,
    allowed: &HashSet<String>,
    within: Duration,
) {
    let end = Instant::now() + within;
    loop {
        let mut problem = None;
        match status(c).await.and_then(|s| s.repair) {
            Some(r) if r.degraded.is_empty() && r.backlog_segments == 0 => {}
            other => problem = Some(format!("repair status {other:?}")),
        }
        if problem.is_none() {
            'objects: for key in objects.keys() {
                for seg in layout(cluster, "heal", key).await {
                    let nodes: HashSet<&str> =
                        seg.shards.iter().map(|s| s.node_id.as_str()).collect();
                    if nodes.len() != seg.shards.len() {
                        problem = Some(format!(
                            "{key} segment {}: two shards on one server",
                            seg.index
                        ));
                        break 'objects;
                    }
                    if let Some(s) = seg
                        .shards
                        .iter()
                        .find(|s| s.missing || !allowed.contains(&s.node_id))
                    {
                        problem = Some(format!(
                            "{key} segment {} shard {} missing={} on {}",
                            seg.index, s.index, s.missing, s.node_id
                        ));
                        break 'objects;
                    }
                }
            }
        }
        let Some(p) = problem else { return };
        assert!(
            Instant::now() < end,
            "not healed within {within:?}: {p}\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn check_all(c: &Client, objects: &BTreeMap<String, Bytes>, what: &str) {
    for (key, want) in objects {
        let got = c
            .get_bytes("heal", key)
            .await
            .unwrap_or_else(|e| panic!("{what}: GET heal/{key}: {e}"));
        assert_same(&format!("{what}: GET heal/{key}"), &got, want);
    }
}

/// Waits until the registry shows chunk server `id` in `state`.
async fn wait_state(cluster: &Cluster, id: &str, state: pb::NodeState, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let nodes = cluster.list_nodes().await.unwrap_or_default();
        if nodes
            .iter()
            .any(|n| n.node_id == id && n.state == state as i32)
        {
            return;
        }
        assert!(Instant::now() < end, "{id} not {state:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One of six servers killed for good: erasure-coded PUTs keep succeeding (with a shard
/// recorded missing); a seventh server joins; after `repair_after` every segment is back to
/// k+m shards on live servers, and every object reads exactly with any two of the six live
/// servers also frozen.
#[tokio::test]
async fn a_dead_server_is_rebuilt_elsewhere_and_writes_never_stop() {
    let mut cluster = Cluster::start(healing_options(6)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("heal").await.unwrap();
    let mut objects = BTreeMap::new();
    for (i, size) in [100_000usize, 1 << 20, (9 << 20) + 7, 3 << 20]
        .iter()
        .enumerate()
    {
        let key = format!("before/{i}");
        let body = data(i as u64, *size);
        c.put_bytes("heal", &key, body.clone()).await.unwrap();
        objects.insert(key, body);
    }
    let dead = cluster.chunk_node_id(0).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(0)).unwrap();
    wait_state(
        &cluster,
        &dead,
        pb::NodeState::Suspect,
        Duration::from_secs(30),
    )
    .await;

    // Five eligible servers: every PUT places five shards and records one missing.
    for i in 0..4 {
        let key = format!("during/{i}");
        let body = data(100 + i, (2 << 20) + i as usize);
        c.put_bytes("heal", &key, body.clone())
            .await
            .unwrap_or_else(|e| panic!("PUT {key} with one server down: {e}"));
        let segs = layout(&cluster, "heal", &key).await;
        assert!(
            segs.iter()
                .all(|s| s.shards.iter().filter(|sh| sh.missing).count() == 1),
            "{key}: exactly one shard missing (five servers could take one)"
        );
        objects.insert(key, body);
    }
    check_all(&c, &objects, "one server down").await;
    // Visible to operators: the four segments written short are counted with 5 of 6 shards
    // and due for repair (no server can take their missing shard until one joins).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = status(&c).await.and_then(|s| s.repair).unwrap_or_default();
        let short = r
            .degraded
            .iter()
            .filter(|d| d.shards_left == 5 && d.shards_total == 6)
            .map(|d| d.segments)
            .sum::<u64>();
        if short >= 4 && r.backlog_segments >= 4 && r.unreadable_segments == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "status never showed the short segments: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let seventh = cluster.add_chunk_server().await.unwrap();
    let live: HashSet<String> = (1..=seventh)
        .map(|i| cluster.chunk_node_id(i).unwrap().to_owned())
        .collect();
    wait_healed(&cluster, &c, &objects, &live, Duration::from_secs(120)).await;

    // Any two of the live servers frozen: still exact (parity reads).
    for pair in [(1, 2), (3, 6), (4, 5)] {
        cluster.sigstop(NodeRef::Chunk(pair.0)).unwrap();
        cluster.sigstop(NodeRef::Chunk(pair.1)).unwrap();
        let fresh = client(&cluster, Duration::from_secs(2)).await;
        check_all(&fresh, &objects, &format!("servers {pair:?} frozen")).await;
        cluster.sigcont(NodeRef::Chunk(pair.0)).unwrap();
        cluster.sigcont(NodeRef::Chunk(pair.1)).unwrap();
    }
}

/// The file of shard `id` on chunk server `i`.
fn shard_file(cluster: &Cluster, i: usize, id: &str) -> PathBuf {
    cluster
        .node(NodeRef::Chunk(i))
        .unwrap()
        .data_dir()
        .join("shards")
        .join(&id[0..2])
        .join(&id[2..4])
        .join(id)
}

/// All bytes of shard `id` as chunk server `i` serves them.
async fn read_shard(cluster: &Cluster, i: usize, id: &str) -> Vec<u8> {
    let mut cl = cluster.chunk_client(i).await.unwrap();
    let mut stream = cl
        .get_shard(GetShardRequest {
            shard_id: id.to_owned(),
            offset: 0,
            length: None,
            // The harness's chunk client is a component under TLS: no grant needed.
            grant: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.extend_from_slice(&m.unwrap().data);
    }
    out
}

fn chunk_of(cluster: &Cluster, node_id: &str) -> usize {
    cluster.chunk_index(node_id).unwrap()
}

/// A flipped byte in a data shard and in a parity shard: the scrubber finds both, metadata
/// rebuilds them elsewhere, each rebuilt shard is byte-for-byte the original, and no read
/// ever returns wrong bytes meanwhile.
#[tokio::test]
async fn corrupt_shards_found_by_the_scrubber_are_rebuilt_exactly() {
    let cluster = Cluster::start(healing_options(7)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("heal").await.unwrap();
    let body = data(7, (3 << 20) + 123);
    c.put_bytes("heal", "scrubbed", body.clone()).await.unwrap();
    let before = layout(&cluster, "heal", "scrubbed").await;
    let shards = &before[0].shards;
    let mut originals = BTreeMap::new();
    for idx in [0usize, 4] {
        let s = &shards[idx];
        let i = chunk_of(&cluster, &s.node_id);
        let bytes = read_shard(&cluster, i, &s.shard_id).await;
        assert_eq!(bytes.len() as u64, s.size);
        // Flip one byte in the middle of the shard's data.
        let path = shard_file(&cluster, i, &s.shard_id);
        let mut file = std::fs::read(&path).unwrap();
        file[bytes.len() / 2] ^= 0x5a;
        std::fs::write(&path, &file).unwrap();
        originals.insert(idx, (s.shard_id.clone(), bytes));
    }
    let mut objects = BTreeMap::new();
    objects.insert("scrubbed".to_owned(), body.clone());
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        // Every read on the way is exact: corrupt shards are never decoded from.
        let got = c.get_bytes("heal", "scrubbed").await.unwrap();
        assert_same("GET while corrupt", &got, &body);
        let now = layout(&cluster, "heal", "scrubbed").await;
        let rebuilt = originals.iter().all(|(idx, (old, _))| {
            now[0].shards[*idx].shard_id != *old && !now[0].shards[*idx].missing
        });
        if rebuilt {
            for (idx, (_, want)) in &originals {
                let s = &now[0].shards[*idx];
                let i = chunk_of(&cluster, &s.node_id);
                let got = read_shard(&cluster, i, &s.shard_id).await;
                assert_same(&format!("rebuilt shard {idx}"), &got, want);
                assert_eq!(
                    s.crc32c,
                    crc32c::crc32c(want),
                    "recorded CRC of shard {idx}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < end,
            "corrupt shards not rebuilt within 120 s: {now:?}\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let all: HashSet<String> = (0..7)
        .map(|i| cluster.chunk_node_id(i).unwrap().to_owned())
        .collect();
    wait_healed(&cluster, &c, &objects, &all, Duration::from_secs(60)).await;
}

/// A shard file lost from a server's disk (nothing a scrubber walks finds it): the first
/// reader decodes around it, reports it (`ReportShards`, NOT_FOUND counts as corrupt), and
/// metadata rebuilds it elsewhere, byte-for-byte the original.
#[tokio::test]
async fn a_shard_lost_from_disk_is_reported_by_a_reader_and_rebuilt() {
    let cluster = Cluster::start(healing_options(7)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("heal").await.unwrap();
    let body = data(11, (2 << 20) + 5);
    c.put_bytes("heal", "vanished", body.clone()).await.unwrap();
    let before = layout(&cluster, "heal", "vanished").await;
    let lost = before[0].shards[1].clone();
    let holder = chunk_of(&cluster, &lost.node_id);
    let original = read_shard(&cluster, holder, &lost.shard_id).await;
    std::fs::remove_file(shard_file(&cluster, holder, &lost.shard_id)).unwrap();

    let got = c.get_bytes("heal", "vanished").await.unwrap();
    assert_same("GET with a shard file gone", &got, &body);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let now = layout(&cluster, "heal", "vanished").await;
        let s = &now[0].shards[1];
        if s.shard_id != lost.shard_id && !s.missing {
            let i = chunk_of(&cluster, &s.node_id);
            let rebuilt = read_shard(&cluster, i, &s.shard_id).await;
            assert_same("rebuilt shard 1", &rebuilt, &original);
            break;
        }
        assert!(
            Instant::now() < end,
            "the reported shard was not rebuilt within 60 s\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = c.get_bytes("heal", "vanished").await.unwrap();
    assert_same("GET after the rebuild", &got, &body);
}

/// Repair racing deletes and overwrites of the same objects, and the metadata leader of a
/// partition killed mid-repair: deleted objects stay deleted, overwritten ones read their new
/// bytes, the rest their old ones; every surviving segment ends with k+m shards on live
/// servers, and once garbage collection has run no live server holds a shard of a deleted or
/// replaced version.
#[tokio::test]
async fn repair_racing_deletes_overwrites_and_a_leader_kill_loses_and_leaks_nothing() {
    let mut opts = healing_options(7);
    opts.meta_env.extend(
        [
            ("DOGFS_ORPHAN_GRACE_SECS", "3"),
            ("DOGFS_ORPHAN_INTERVAL_MS", "1000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // Rebuilds slowed to seconds, so the leader's kill lands while they run.
    opts.chunk_env
        .push(("DOGFS_REPAIR_BANDWIDTH".to_owned(), "64KiB".to_owned()));
    let mut cluster = Cluster::start(opts).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("heal").await.unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..40u64 {
        let key = format!("obj/{i:02}");
        let body = data(500 + i, 40_000 + i as usize * 997);
        c.put_bytes("heal", &key, body.clone()).await.unwrap();
        objects.insert(key, body);
    }
    // A server dies; two seconds after it is down, every object has a shard to rebuild.
    let dead = cluster.chunk_node_id(0).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(0)).unwrap();
    wait_state(
        &cluster,
        &dead,
        pb::NodeState::Down,
        Duration::from_secs(30),
    )
    .await;

    // Once repairs are under way (some done, some left), kill partition 1's leader; then
    // delete a third and overwrite a third while the new leaders carry on.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let r = status(&c).await.and_then(|s| s.repair).unwrap_or_default();
        if r.repaired_shards > 0 {
            assert!(
                r.backlog_segments > 0,
                "every repair finished before the kill: {r:?}"
            );
            break;
        }
        assert!(Instant::now() < end, "no repair began within 60 s: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, _) = cluster.meta_leader(1).await.unwrap();
    cluster.kill9(NodeRef::Meta(leader as usize)).unwrap();
    let mut deleted = Vec::new();
    for (n, key) in objects
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
    {
        match n % 3 {
            0 => {
                assert!(c.delete("heal", &key).await.unwrap(), "{key} existed");
                deleted.push(key);
            }
            1 => {
                let body = data(9000 + n as u64, 50_000 + n);
                c.put_bytes("heal", &key, body.clone()).await.unwrap();
                objects.insert(key, body);
            }
            _ => {}
        }
    }
    for key in &deleted {
        objects.remove(key);
    }
    cluster
        .restart(NodeRef::Meta(leader as usize))
        .await
        .unwrap();

    let live: HashSet<String> = (1..7)
        .map(|i| cluster.chunk_node_id(i).unwrap().to_owned())
        .collect();
    wait_healed(&cluster, &c, &objects, &live, Duration::from_secs(180)).await;
    check_all(&c, &objects, "after repair").await;
    for key in &deleted {
        let e = c.get_bytes("heal", key).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{key} was deleted: {e}");
    }

    // Nothing leaked: once GC and orphan collection ran, each live server holds exactly the
    // shards the current versions reference on it.
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in objects.keys() {
        for seg in layout(&cluster, "heal", key).await {
            for s in seg.shards {
                want.entry(s.node_id).or_default().insert(s.shard_id);
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let mut diff = Vec::new();
        for i in 1..7 {
            let id = cluster.chunk_node_id(i).unwrap().to_owned();
            let have = inventory(&cluster, i).await;
            let expected = want.get(&id).cloned().unwrap_or_default();
            if have != expected {
                diff.push(format!(
                    "server {i}: {} extra, {} missing",
                    have.difference(&expected).count(),
                    expected.difference(&have).count()
                ));
            }
        }
        if diff.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "inventories differ from the references: {diff:?}\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check_all(&c, &objects, "after collection").await;
}
