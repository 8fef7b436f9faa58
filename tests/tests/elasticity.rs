//! Elasticity on clusters of real processes (issue 13, DESIGN §7): a server drained under a
//! concurrent PUT/GET load ends empty with every object exact and no read failed; the system
//! group's leader killed mid-drain and mid-rebalance: both resume under the new leader and
//! complete; two servers added to six full ones: a rebalance brings every server's usage
//! within the spread, and stopping it halfway loses nothing; a removed server that restarts is
//! refused (and with `--rejoin-when-removed` joins as a new server); a drain whose source is
//! killed and with a target frozen completes by rebuilding and planning around them.
//!
//! Shards are small (1 MiB segments, 64 KiB cells: 256 KiB shards at RS 4+2) so that a few
//! MiB of objects give the mover tens of shards to move; where a test needs a move in flight
//! at a given moment, the chunk servers' repair bandwidth (which `CopyShard` shares) slows the
//! copies down to seconds.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_same, client, data, inventory, layout};
use dogfs_client::Client;
use dogfs_proto::chunk::NodeInfoRequest;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_tests::cluster::TestChannel;
use dogfs_tests::{Cluster, ClusterOptions, NodeRef};

const BUCKET: &str = "elastic";
/// k+m of the layouts `check_layouts` checks (RS 4+2).
const RS_TOTAL: usize = 6;

/// 3 + `chunk_nodes`, RS 4+2, 1 MiB segments of 64 KiB cells, the mover looking for work
/// every 200 ms; `chunk_env` for every chunk server (capacity, repair bandwidth).
fn elastic_options(chunk_nodes: usize, chunk_env: &[(&str, &str)]) -> ClusterOptions {
    ClusterOptions {
        chunk_nodes,
        meta_env: [
            ("DOGFS_SEGMENT_SIZE", "1MiB"),
            ("DOGFS_CELL_SIZE", "64KiB"),
            ("DOGFS_MOVER_INTERVAL_MS", "200"),
            ("DOGFS_MOVER_CONCURRENCY", "4"),
            ("DOGFS_GC_INTERVAL_MS", "300"),
            ("DOGFS_REPAIR_INTERVAL_MS", "300"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        chunk_env: chunk_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ClusterOptions::default()
    }
}

fn set_meta_env(opts: &mut ClusterOptions, key: &str, value: &str) {
    opts.meta_env.retain(|(k, _)| k != key);
    opts.meta_env.push((key.to_owned(), value.to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Admin API helpers: every call goes to a running metadata node (it forwards to the system
// group's leader), retried on another node while the metadata service is unavailable (e.g. an
// election after a leader's kill).

/// How long an admin call keeps retrying transient errors.
const ADMIN_RETRY: Duration = Duration::from_secs(30);

fn running_meta(cluster: &Cluster) -> Vec<String> {
    (0..cluster.meta_nodes())
        .filter_map(|i| cluster.node(NodeRef::Meta(i)).ok())
        .filter(|n| n.is_running() && !n.is_stopped())
        .map(|n| n.grpc_addr().to_string())
        .collect()
}

/// One call's bound: a node that stops answering is tried again elsewhere.
const ADMIN_CALL: Duration = Duration::from_secs(10);

/// Whether a status is worth retrying on another node (or later).
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}

/// Runs `call` against running metadata nodes until one answers other than transiently.
async fn admin<T, F, Fut>(cluster: &Cluster, what: &str, call: F) -> Result<T, tonic::Status>
where
    F: Fn(AdminServiceClient<TestChannel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let end = Instant::now() + ADMIN_RETRY;
    loop {
        let mut last = None;
        for addr in running_meta(cluster) {
            // The cluster's channel: its CA under TLS, its admin token under auth.
            let Ok(channel) = cluster.channel(&addr).await else {
                last = Some(tonic::Status::unavailable(format!(
                    "{addr}: cannot connect"
                )));
                continue;
            };
            match tokio::time::timeout(ADMIN_CALL, call(AdminServiceClient::new(channel))).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) if transient(&s) => last = Some(s),
                Ok(Err(s)) => return Err(s),
                Err(_) => {
                    last = Some(tonic::Status::deadline_exceeded(format!(
                        "{addr}: no answer within {ADMIN_CALL:?}"
                    )));
                }
            }
        }
        if Instant::now() >= end {
            return Err(last.unwrap_or_else(|| {
                tonic::Status::unavailable(format!("{what}: no metadata node is running"))
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn node_status(cluster: &Cluster, id: &str) -> pb::ChunkNode {
    let id = id.to_owned();
    admin(cluster, "NodeStatus", |mut c| {
        let id = id.clone();
        async move { c.node_status(pb::NodeStatusRequest { node_id: id }).await }
    })
    .await
    .unwrap_or_else(|s| panic!("NodeStatus {id}: {s}"))
    .node
    .unwrap()
}

async fn drain(cluster: &Cluster, id: &str) -> pb::ChunkNode {
    let id = id.to_owned();
    admin(cluster, "DrainNode", |mut c| {
        let id = id.clone();
        async move { c.drain_node(pb::DrainNodeRequest { node_id: id }).await }
    })
    .await
    .unwrap_or_else(|s| panic!("DrainNode {id}: {s}"))
    .node
    .unwrap()
}

async fn remove(cluster: &Cluster, id: &str) -> Result<pb::ChunkNode, tonic::Status> {
    let id = id.to_owned();
    admin(cluster, "RemoveNode", |mut c| {
        let id = id.clone();
        async move { c.remove_node(pb::RemoveNodeRequest { node_id: id }).await }
    })
    .await
    .map(|r| r.node.unwrap())
}

async fn rebalance(cluster: &Cluster, action: pb::RebalanceAction) -> pb::RebalanceStatus {
    admin(cluster, "Rebalance", |mut c| async move {
        c.rebalance(pb::RebalanceRequest {
            action: action as i32,
            spread_percent: 0.0,
        })
        .await
    })
    .await
    .unwrap_or_else(|s| panic!("Rebalance {action:?}: {s}"))
    .status
    .unwrap()
}

async fn rebalance_status(cluster: &Cluster) -> pb::RebalanceStatus {
    admin(cluster, "RebalanceStatus", |mut c| async move {
        c.rebalance_status(pb::RebalanceStatusRequest {}).await
    })
    .await
    .unwrap_or_else(|s| panic!("RebalanceStatus: {s}"))
    .status
    .unwrap()
}

fn state_of(s: &pb::RebalanceStatus) -> pb::RebalanceState {
    pb::RebalanceState::try_from(s.state).unwrap_or_default()
}

/// Polls `probe` every 200 ms until it answers `Some`; fails after `within` with the last
/// observation and every node's log tail.
async fn wait_for<T, F, Fut>(cluster: &Cluster, what: &str, within: Duration, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < end,
            "timed out after {within:?} waiting for {what}; last: {last}\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the system group's leader reports the server drained: `shards_left == 0` in a
/// survey it made (`surveyed_unix != 0`). Answers the final progress.
async fn wait_drained(cluster: &Cluster, id: &str, within: Duration) -> pb::DrainProgress {
    wait_for(cluster, &format!("{id} drained"), within, || async {
        let n = node_status(cluster, id).await;
        match n.drain {
            Some(d) if d.surveyed_unix != 0 && d.shards_left == 0 => Ok(d),
            other => Err(format!("state {:?}, drain {other:?}", n.state)),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Objects and layouts.

type Objects = BTreeMap<String, Bytes>;

async fn put_all(c: &Client, objects: &Objects) {
    for (key, body) in objects {
        c.put_bytes(BUCKET, key, body.clone())
            .await
            .unwrap_or_else(|e| panic!("PUT {BUCKET}/{key}: {e}"));
    }
}

async fn check_all(c: &Client, objects: &Objects, what: &str) {
    for (key, want) in objects {
        let got = c
            .get_bytes(BUCKET, key)
            .await
            .unwrap_or_else(|e| panic!("{what}: GET {BUCKET}/{key}: {e}"));
        assert_same(&format!("{what}: GET {BUCKET}/{key}"), &got, want);
    }
}

/// Every object's layout is whole: each segment has all k+m shards, none missing, on distinct
/// servers, none on `not_on`. Answers every referenced shard id by server.
async fn check_layouts(
    cluster: &Cluster,
    objects: &Objects,
    not_on: Option<&str>,
    what: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in objects.keys() {
        for seg in layout(cluster, BUCKET, key).await {
            let nodes: HashSet<&str> = seg.shards.iter().map(|s| s.node_id.as_str()).collect();
            assert_eq!(
                nodes.len(),
                seg.shards.len(),
                "{what}: {key} segment {}: two shards on one server: {:?}",
                seg.index,
                seg.shards
            );
            assert_eq!(
                seg.shards.len(),
                RS_TOTAL,
                "{what}: {key} segment {}: k+m shards",
                seg.index
            );
            for s in &seg.shards {
                assert!(
                    !s.missing,
                    "{what}: {key} segment {} shard {} is missing",
                    seg.index, s.index
                );
                assert_ne!(
                    Some(s.node_id.as_str()),
                    not_on,
                    "{what}: {key} segment {} shard {} is still on the drained server",
                    seg.index,
                    s.index
                );
                by_node
                    .entry(s.node_id.clone())
                    .or_default()
                    .insert(s.shard_id.clone());
            }
        }
    }
    by_node
}

/// Every object's layout is whole (`check_layouts`) and every shard it references is stored on
/// the server it names (ListShards): a move never leaves a layout pointing at a copy that was
/// not kept. The layouts are read before and after the inventories, and the check retried
/// while they change (a move still in flight commits and deletes its source meanwhile).
/// Answers the referenced shards by server.
async fn check_stored(
    cluster: &Cluster,
    objects: &Objects,
    not_on: Option<&str>,
    what: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let before = check_layouts(cluster, objects, not_on, what).await;
        let mut lost = Vec::new();
        for (node, want) in &before {
            let i = cluster
                .chunk_index(node)
                .unwrap_or_else(|| panic!("{what}: a layout names unknown server {node}"));
            let have = inventory(cluster, i).await;
            lost.extend(
                want.difference(&have)
                    .map(|s| format!("{s} on server {i} ({node})")),
            );
        }
        let after = check_layouts(cluster, objects, not_on, what).await;
        if after != before {
            assert!(
                Instant::now() < end,
                "{what}: layouts still changing after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(
            lost.is_empty(),
            "{what}: {} referenced shards are not on the server their layout names: {lost:?}\n{}",
            lost.len(),
            cluster.all_logs()
        );
        return after;
    }
}

/// Waits until chunk server `i` holds none of the `referenced` shards (the mover deletes a
/// moved shard's source copy right after the commit; GC retries a failed delete).
async fn wait_inventory_unreferenced(
    cluster: &Cluster,
    i: usize,
    referenced: &BTreeMap<String, BTreeSet<String>>,
) {
    let all: BTreeSet<String> = referenced.values().flatten().cloned().collect();
    wait_for(
        cluster,
        &format!("chunk server {i} to hold no referenced shard"),
        Duration::from_secs(30),
        || async {
            let have = inventory(cluster, i).await;
            let still: Vec<&String> = have.intersection(&all).collect();
            if still.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} referenced shards still there (of {} files): {still:?}",
                    still.len(),
                    have.len()
                ))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Usage.

/// `used / (used + available)` of every UP server, by node id, from ListNodes.
async fn usage_ratios(cluster: &Cluster) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let nodes = cluster.list_nodes().await.map_err(|e| e.to_string())?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.state == pb::NodeState::Up as i32)
        .map(|n| {
            let u = n.usage.unwrap_or_default();
            (n.node_id, (u.used_bytes, u.used_bytes + u.available_bytes))
        })
        .collect())
}

/// The capacity-weighted mean ratio and each server's ratio.
fn spread(usage: &BTreeMap<String, (u64, u64)>) -> (f64, BTreeMap<String, f64>) {
    let (used, cap) = usage
        .values()
        .fold((0u64, 0u64), |(u, c), (nu, nc)| (u + nu, c + nc));
    let mean = if cap == 0 {
        0.0
    } else {
        used as f64 / cap as f64
    };
    let ratios = usage
        .iter()
        .map(|(id, (u, c))| {
            let r = if *c == 0 { 0.0 } else { *u as f64 / *c as f64 };
            (id.clone(), r)
        })
        .collect();
    (mean, ratios)
}

fn show(ratios: &BTreeMap<String, f64>) -> String {
    ratios
        .iter()
        .map(|(id, r)| format!("{}…={:.1}%", &id[..6], r * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// 1. Drain under load.

/// A concurrent load: writers PUT new objects (recorded once acknowledged), readers GET the
/// recorded ones and compare bytes. Every failure is kept with its message.
#[derive(Debug, Default)]
struct Load {
    objects: Mutex<Objects>,
    stop: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    async fn writer(self: Arc<Self>, c: Client, w: u64) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let key = format!("load/w{w}/{n:04}");
            // 200 KiB .. ~2.6 MiB: one to three segments.
            let size = 200_000 + ((n * 7919 + w * 104_729) % 2_500_000) as usize;
            let body = data(10_000 + w * 1000 + n, size);
            match c.put_bytes(BUCKET, &key, body.clone()).await {
                Ok(_) => {
                    self.objects.lock().unwrap().insert(key, body);
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.fail(format!("PUT {key}: {e}")),
            }
            n += 1;
        }
    }

    async fn reader(self: Arc<Self>, c: Client, r: usize) {
        let mut turn = r;
        while !self.stop.load(Ordering::Relaxed) {
            let pick = {
                let objects = self.objects.lock().unwrap();
                let len = objects.len();
                objects
                    .iter()
                    .nth(turn % len.max(1))
                    .map(|(k, v)| (k.clone(), v.clone()))
            };
            turn += 7;
            let Some((key, want)) = pick else { continue };
            match c.get_bytes(BUCKET, &key).await {
                Ok(got) if got == want => {
                    self.reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(got) => self.fail(format!(
                    "GET {key}: {} bytes, want {}, content differs",
                    got.len(),
                    want.len()
                )),
                Err(e) => self.fail(format!("GET {key}: {e}")),
            }
        }
    }
}

/// 3 + 7, RS 4+2: a server drained while two writers and two readers run. The drain ends with
/// the server holding no referenced shard, no PUT or GET failed, every object (old and new)
/// reads exactly, and no segment has two shards on one server or any on the drained one. Then
/// RemoveNode succeeds for it and is refused (FAILED_PRECONDITION) for an active server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_drained_under_load_ends_empty_and_no_read_fails() {
    // Copies throttled to 512 KiB/s per target, so the drain lasts while the load runs.
    let cluster = Cluster::start(elastic_options(7, &[("DOGFS_REPAIR_BANDWIDTH", "512KiB")]))
        .await
        .unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket(BUCKET).await.unwrap();
    let mut before = Objects::new();
    for i in 0..10u64 {
        // 300 KB .. ~3.4 MiB, one to four segments.
        let size = 300_000 + (i as usize * 350_000) + i as usize;
        before.insert(format!("before/{i:02}"), data(i, size));
    }
    put_all(&c, &before).await;

    let drained = 2usize;
    let id = cluster.chunk_node_id(drained).unwrap().to_owned();
    let held = inventory(&cluster, drained).await.len();
    assert!(held >= 10, "the server to drain holds only {held} shards");

    let load = Arc::new(Load::default());
    load.objects.lock().unwrap().extend(before.clone());
    let mut tasks = Vec::new();
    for w in 0..2 {
        let c = client(&cluster, Duration::from_secs(2)).await;
        tasks.push(tokio::spawn(Arc::clone(&load).writer(c, w)));
    }
    for r in 0..2 {
        let c = client(&cluster, Duration::from_secs(2)).await;
        tasks.push(tokio::spawn(Arc::clone(&load).reader(c, r)));
    }
    // The load is under way before the drain starts.
    wait_for(
        &cluster,
        "the load to start",
        Duration::from_secs(60),
        || async {
            let (w, r) = (
                load.writes.load(Ordering::Relaxed),
                load.reads.load(Ordering::Relaxed),
            );
            if w >= 1 && r >= 2 {
                Ok(())
            } else {
                Err(format!("{w} writes, {r} reads"))
            }
        },
    )
    .await;

    let started = Instant::now();
    let (writes0, reads0) = (
        load.writes.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
    );
    let n = drain(&cluster, &id).await;
    assert_eq!(n.state, pb::NodeState::Draining as i32, "{n:?}");
    let progress = wait_drained(&cluster, &id, Duration::from_secs(120)).await;
    let took = started.elapsed();
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (writes, reads) = (
        load.writes.load(Ordering::Relaxed) - writes0,
        load.reads.load(Ordering::Relaxed) - reads0,
    );
    eprintln!(
        "drain of {held} shards took {took:?}: {progress:?}; during it {writes} PUTs, {reads} GETs"
    );
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} load operations failed during the drain: {failures:#?}",
        failures.len()
    );
    assert!(reads > 0, "no GET completed during the drain");
    assert!(
        progress.shards_moved > 0,
        "the leader reports no moves: {progress:?}"
    );

    let objects = load.objects.lock().unwrap().clone();
    let fresh = client(&cluster, Duration::from_secs(2)).await;
    check_all(&fresh, &objects, "after the drain").await;
    let referenced = check_stored(&cluster, &objects, Some(&id), "after the drain").await;
    assert!(!referenced.contains_key(&id));
    wait_inventory_unreferenced(&cluster, drained, &referenced).await;

    // An active server that holds shards is not removed.
    let active = cluster.chunk_node_id(0).unwrap().to_owned();
    let e = remove(&cluster, &active).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::FailedPrecondition,
        "RemoveNode of an active server: {e}"
    );
    let n = node_status(&cluster, &active).await;
    assert_eq!(n.state, pb::NodeState::Up as i32, "{n:?}");

    // The drained one is.
    let n = remove(&cluster, &id)
        .await
        .unwrap_or_else(|s| panic!("RemoveNode of the drained server: {s}"));
    assert_eq!(n.state, pb::NodeState::Removed as i32, "{n:?}");
    let n = node_status(&cluster, &id).await;
    assert_eq!(n.state, pb::NodeState::Removed as i32, "{n:?}");
    check_all(&fresh, &objects, "after the removal").await;
}

// ---------------------------------------------------------------------------------------------
// 2. The system group's leader killed mid-drain.

/// 3 + 7, RS 4+2, copies slowed to 256 KiB/s per target: the system group's leader is killed
/// (and restarted) while the drain runs; the new leader carries on and the drain completes
/// with every object exact. A draining server that still holds shards is not removed.
#[tokio::test]
async fn the_metadata_leader_killed_mid_drain_and_the_drain_completes() {
    let mut cluster = Cluster::start(elastic_options(7, &[("DOGFS_REPAIR_BANDWIDTH", "256KiB")]))
        .await
        .unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket(BUCKET).await.unwrap();
    let mut objects = Objects::new();
    for i in 0..8u64 {
        let size = 1_000_000 + (i as usize * 400_000) + i as usize;
        objects.insert(format!("obj/{i:02}"), data(100 + i, size));
    }
    put_all(&c, &objects).await;

    let drained = 4usize;
    let id = cluster.chunk_node_id(drained).unwrap().to_owned();
    let held = inventory(&cluster, drained).await.len();
    drain(&cluster, &id).await;
    let started = Instant::now();

    // Some shards moved, more than the mover's concurrency left: kill the leader there.
    let at_kill = wait_for(
        &cluster,
        "the drain to be under way",
        Duration::from_secs(60),
        || async {
            let n = node_status(&cluster, &id).await;
            match n.drain {
                Some(d) if d.shards_moved >= 2 && d.shards_left >= 6 => Ok(d),
                other => Err(format!("drain {other:?}")),
            }
        },
    )
    .await;
    // Not empty yet: not removable.
    let e = remove(&cluster, &id).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::FailedPrecondition,
        "RemoveNode of a server still holding shards: {e}"
    );
    let (leader, term) = cluster.meta_leader(0).await.unwrap();
    cluster.kill9(NodeRef::Meta(leader as usize)).unwrap();
    eprintln!(
        "killed system leader {leader} (term {term}) {:?} into the drain of {held} shards: {at_kill:?}",
        started.elapsed()
    );
    let (new_leader, _) = cluster
        .wait_meta_leader(0, Duration::from_secs(30), |l, t| l != leader && t > term)
        .await
        .unwrap();
    // The server is still draining in Raft, and the new leader carries on: it moves shards
    // while the old one is still down (its figures count from its takeover).
    let resumed = wait_for(
        &cluster,
        "the new leader to move shards off the server",
        Duration::from_secs(60),
        || async {
            let n = node_status(&cluster, &id).await;
            match n.drain {
                _ if n.state != pb::NodeState::Draining as i32 => {
                    Err(format!("state {:?}, not DRAINING", n.state))
                }
                Some(d) if d.shards_moved >= 1 => Ok(d),
                other => Err(format!("drain {other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "new leader {new_leader} resumed the drain {:?} after it started: {resumed:?}",
        started.elapsed()
    );
    // The old leader back (it takes its preferred leadership back a few seconds later): the
    // drain completes whoever leads.
    cluster
        .restart(NodeRef::Meta(leader as usize))
        .await
        .unwrap();
    let progress = wait_drained(&cluster, &id, Duration::from_secs(120)).await;
    eprintln!(
        "drain done {:?} after it started: {progress:?}",
        started.elapsed()
    );

    let fresh = client(&cluster, Duration::from_secs(2)).await;
    check_all(&fresh, &objects, "after the drain").await;
    let referenced = check_stored(&cluster, &objects, Some(&id), "after the drain").await;
    wait_inventory_unreferenced(&cluster, drained, &referenced).await;
    let n = remove(&cluster, &id)
        .await
        .unwrap_or_else(|s| panic!("RemoveNode of the drained server: {s}"));
    assert_eq!(n.state, pb::NodeState::Removed as i32, "{n:?}");
}

/// 3 + 8, RS 4+2: a drain whose source is killed (-9) mid-way and with another server frozen
/// (SIGSTOP) as a likely target. Copies from the dead source fail and the mover rebuilds those
/// shards from the segments' other shards instead; moves onto the frozen server time out and
/// are planned elsewhere (it turns suspect meanwhile). The drain completes, every object reads
/// back exact (with the frozen server still stopped: reads go around it), every referenced
/// shard is stored where its layout says, and the dead drained server can be removed.
#[tokio::test]
async fn a_drain_rides_through_its_source_killed_and_a_target_frozen() {
    let mut opts = elastic_options(8, &[("DOGFS_REPAIR_BANDWIDTH", "256KiB")]);
    opts.suspect_after_secs = 2;
    opts.down_after_secs = 6;
    // Down servers' shards are the mover's here, not repair's: repair would wait a minute.
    set_meta_env(&mut opts, "DOGFS_REPAIR_AFTER_SECS", "60");
    let mut cluster = Cluster::start(opts).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket(BUCKET).await.unwrap();
    let mut objects = Objects::new();
    for i in 0..8u64 {
        let size = 900_000 + (i as usize * 350_000) + i as usize;
        objects.insert(format!("obj/{i:02}"), data(300 + i, size));
    }
    put_all(&c, &objects).await;

    let (source, frozen) = (0usize, 1usize);
    let id = cluster.chunk_node_id(source).unwrap().to_owned();
    drain(&cluster, &id).await;
    let started = Instant::now();
    wait_for(
        &cluster,
        "the drain to be under way",
        Duration::from_secs(60),
        || async {
            let n = node_status(&cluster, &id).await;
            match n.drain {
                Some(d) if d.shards_moved >= 1 && d.shards_left >= 6 => Ok(d),
                other => Err(format!("drain {other:?}")),
            }
        },
    )
    .await;
    cluster.sigstop(NodeRef::Chunk(frozen)).unwrap();
    cluster.kill9(NodeRef::Chunk(source)).unwrap();
    eprintln!(
        "froze server {frozen} and killed the draining server {source} {:?} into the drain",
        started.elapsed()
    );
    let progress = wait_drained(&cluster, &id, Duration::from_secs(180)).await;
    eprintln!(
        "drain done {:?} after it started: {progress:?}",
        started.elapsed()
    );
    // Reads go around the frozen server (hedged) and never touch the dead one.
    let fresh = client(&cluster, Duration::from_secs(2)).await;
    check_all(
        &fresh,
        &objects,
        "drained with the source dead and a server frozen",
    )
    .await;
    cluster.sigcont(NodeRef::Chunk(frozen)).unwrap();
    check_stored(&cluster, &objects, Some(&id), "after the drain").await;
    let n = remove(&cluster, &id)
        .await
        .unwrap_or_else(|s| panic!("RemoveNode of the drained, dead server: {s}"));
    assert_eq!(n.state, pb::NodeState::Removed as i32, "{n:?}");
    check_all(&fresh, &objects, "after the removal").await;
}

// ---------------------------------------------------------------------------------------------
// 3. Rebalance.

/// 3 + 6, RS 4+2, every chunk server with an 8 MiB capacity, filled to about half; two empty
/// servers join, and the rebalance that starts by itself (reason "server joined") is stopped
/// halfway: STOPPED, every object exact and whole. Started again by an admin call, its
/// system-group leader is killed mid-way: the new leader finds it RUNNING in Raft, carries on,
/// and it ends DONE with every up server's usage within the spread (10 points) of the mean.
#[tokio::test]
async fn two_servers_join_six_full_ones_and_a_rebalance_evens_usage_through_stop_and_a_leader_kill()
{
    let mut cluster = Cluster::start(elastic_options(
        6,
        &[
            ("DOGFS_CAPACITY", "8MiB"),
            ("DOGFS_REPAIR_BANDWIDTH", "256KiB"),
        ],
    ))
    .await
    .unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket(BUCKET).await.unwrap();
    // 16 MiB of data: 24 MiB of shards, 4 MiB on each of the six servers.
    let mut objects = Objects::new();
    for i in 0..8u64 {
        objects.insert(
            format!("full/{i:02}"),
            data(300 + i, (2 << 20) - 1000 + i as usize),
        );
    }
    put_all(&c, &objects).await;
    let full = wait_for(
        &cluster,
        "the six servers to report about half full",
        Duration::from_secs(30),
        || async {
            let u = usage_ratios(&cluster).await?;
            let (mean, ratios) = spread(&u);
            // They hold equal shares (one shard of every segment each): equal ratios once
            // every server's latest usage has reached the registry.
            let (lo, hi) = ratios
                .values()
                .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            if u.len() == 6 && lo >= 0.4 && hi <= 0.6 && hi - lo < 0.02 {
                Ok((mean, ratios))
            } else {
                Err(format!("mean {:.1}%: {}", mean * 100.0, show(&ratios)))
            }
        },
    )
    .await;
    eprintln!(
        "six servers: mean {:.1}%: {}",
        full.0 * 100.0,
        show(&full.1)
    );

    let started = Instant::now();
    let a = cluster.add_chunk_server().await.unwrap();
    let b = cluster.add_chunk_server().await.unwrap();
    let new_ids = [
        cluster.chunk_node_id(a).unwrap().to_owned(),
        cluster.chunk_node_id(b).unwrap().to_owned(),
    ];

    // Started by the joins; stopped once it has moved something.
    let s = wait_for(
        &cluster,
        "the rebalance started by the joins to move data",
        Duration::from_secs(60),
        || async {
            let s = rebalance_status(&cluster).await;
            if state_of(&s) == pb::RebalanceState::Running && s.bytes_moved > 0 {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    assert_eq!(s.reason, "server joined", "{s:?}");
    let stopped = rebalance(&cluster, pb::RebalanceAction::Stop).await;
    assert_eq!(
        state_of(&stopped),
        pb::RebalanceState::Stopped,
        "{stopped:?}"
    );
    assert_ne!(stopped.finished_unix, 0, "{stopped:?}");
    let u = usage_ratios(&cluster).await.unwrap();
    let (mean, ratios) = spread(&u);
    eprintln!(
        "stopped {:?} after the joins: {stopped:?}\nmean {:.1}%: {}",
        started.elapsed(),
        mean * 100.0,
        show(&ratios)
    );
    // Halfway: the servers are not yet within the spread.
    assert!(
        ratios
            .values()
            .any(|r| (r - mean).abs() > stopped.spread_percent / 100.0),
        "the rebalance was already done when stopped: {stopped:?}"
    );
    let s = rebalance_status(&cluster).await;
    assert_eq!(state_of(&s), pb::RebalanceState::Stopped, "{s:?}");

    // Nothing lost: every object exact, every segment whole on distinct servers.
    let fresh = client(&cluster, Duration::from_secs(2)).await;
    check_all(&fresh, &objects, "rebalance stopped").await;
    check_stored(&cluster, &objects, None, "rebalance stopped").await;

    // Started again by an admin call: a new run.
    let restarted = rebalance(&cluster, pb::RebalanceAction::Start).await;
    assert_eq!(
        state_of(&restarted),
        pb::RebalanceState::Running,
        "{restarted:?}"
    );
    assert_eq!(restarted.reason, "admin", "{restarted:?}");
    let s = wait_for(
        &cluster,
        "the restarted rebalance to move data",
        Duration::from_secs(60),
        || async {
            let s = rebalance_status(&cluster).await;
            if state_of(&s) == pb::RebalanceState::Running && s.bytes_moved > 0 {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    let (leader, term) = cluster.meta_leader(0).await.unwrap();
    cluster.kill9(NodeRef::Meta(leader as usize)).unwrap();
    eprintln!("killed system leader {leader} (term {term}) mid-rebalance: {s:?}");
    cluster
        .wait_meta_leader(0, Duration::from_secs(30), |l, t| l != leader && t > term)
        .await
        .unwrap();
    let resumed = rebalance_status(&cluster).await;
    assert_eq!(
        state_of(&resumed),
        pb::RebalanceState::Running,
        "the new leader's record: {resumed:?}"
    );
    assert_eq!(resumed.reason, "admin", "{resumed:?}");
    assert_eq!(resumed.started_unix, restarted.started_unix, "{resumed:?}");
    // Shards on the new servers once the new leader took over: what they gain from here on
    // was moved (and counted) by live leaders.
    let on_new = |referenced: &BTreeMap<String, BTreeSet<String>>| {
        new_ids
            .iter()
            .map(|id| referenced.get(id).map_or(0, BTreeSet::len))
            .sum::<usize>()
    };
    let after_kill = on_new(&check_layouts(&cluster, &objects, None, "after the kill").await);
    // The new leader carries on while the old one is still down.
    wait_for(
        &cluster,
        "the new leader to move shards to the new servers",
        Duration::from_secs(60),
        || async {
            let now = on_new(&check_layouts(&cluster, &objects, None, "resuming").await);
            if now > after_kill {
                Ok(())
            } else {
                Err(format!("{now} shards on the new servers, as at the kill"))
            }
        },
    )
    .await;
    cluster
        .restart(NodeRef::Meta(leader as usize))
        .await
        .unwrap();

    // It completes, and every up server (the new ones too) is within the spread.
    let done = wait_for(
        &cluster,
        "the rebalance to finish",
        Duration::from_secs(180),
        || async {
            let s = rebalance_status(&cluster).await;
            if state_of(&s) == pb::RebalanceState::Done {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    assert!(done.bytes_moved > 0, "{done:?}");
    let spread_points = done.spread_percent / 100.0;
    let (mean, ratios) = wait_for(
        &cluster,
        "every up server's usage within the spread of the mean",
        Duration::from_secs(30),
        || async {
            let u = usage_ratios(&cluster).await?;
            let (mean, ratios) = spread(&u);
            let far: Vec<_> = ratios
                .iter()
                .filter(|(_, r)| (**r - mean).abs() > spread_points)
                .collect();
            if u.len() == 8 && far.is_empty() {
                Ok((mean, ratios))
            } else {
                Err(format!(
                    "{} up; mean {:.1}%: {}; outside ±{:.0} points: {far:?}; the run: {done:?}",
                    u.len(),
                    mean * 100.0,
                    show(&ratios),
                    done.spread_percent
                ))
            }
        },
    )
    .await;
    eprintln!(
        "rebalanced {:?} after the joins: {done:?}\nmean {:.1}%: {}",
        started.elapsed(),
        mean * 100.0,
        show(&ratios)
    );
    for id in &new_ids {
        assert!(ratios[id] > 0.0, "new server {id} got nothing: {ratios:?}");
    }
    check_all(&fresh, &objects, "rebalanced").await;
    let referenced = check_stored(&cluster, &objects, None, "rebalanced").await;
    for id in &new_ids {
        assert!(
            referenced.get(id).is_some_and(|s| !s.is_empty()),
            "no shard was moved to new server {id}"
        );
    }
    // The run's count survives leader changes ("kept in Raft at every round's end, so a new
    // leader continues the count"): every move committed since the new leader took over is in
    // it, but for the moves a leader had in flight when it lost the leadership (at most the
    // mover's concurrency, 4; the restarted node takes its preferred leadership back).
    let gained = (on_new(&referenced) - after_kill) as u64;
    assert!(
        done.shards_moved + 4 >= gained,
        "the finished run counts {} shards moved, but the new servers gained {gained} shards \
         after the new leader took over: {done:?}",
        done.shards_moved
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A removed server restarts.

/// 3 + 4, RS 2+1: a server drained and removed, then restarted on its old data directory: it is
/// refused registration, exits with `EXIT_REMOVED` (non-zero) and says it was removed; the
/// registry still lists it REMOVED and registers nothing else at its address. Started again
/// with `--rejoin-when-removed`, it wipes its store and joins as a new, empty server; the old
/// id stays REMOVED.
#[tokio::test]
async fn a_removed_server_that_restarts_is_refused() {
    let mut opts = elastic_options(4, &[]);
    opts.ec_k = 2;
    opts.ec_m = 1;
    // A new server must stay empty here, for the rejoin check below.
    set_meta_env(&mut opts, "DOGFS_REBALANCE_ON_JOIN", "false");
    let mut cluster = Cluster::start(opts).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket(BUCKET).await.unwrap();
    let mut objects = Objects::new();
    for i in 0..4u64 {
        objects.insert(
            format!("obj/{i}"),
            data(700 + i, 200_000 + i as usize * 400_000),
        );
    }
    put_all(&c, &objects).await;

    let gone = 3usize;
    let id = cluster.chunk_node_id(gone).unwrap().to_owned();
    let addr = cluster
        .node(NodeRef::Chunk(gone))
        .unwrap()
        .grpc_addr()
        .to_string();
    assert!(!inventory(&cluster, gone).await.is_empty());
    drain(&cluster, &id).await;
    wait_drained(&cluster, &id, Duration::from_secs(60)).await;
    let n = remove(&cluster, &id)
        .await
        .unwrap_or_else(|s| panic!("RemoveNode of the drained server: {s}"));
    assert_eq!(n.state, pb::NodeState::Removed as i32, "{n:?}");
    check_all(&c, &objects, "after the removal").await;

    // Restarted on its old data dir (same id): refused, exits non-zero, says why.
    cluster.start_nowait(NodeRef::Chunk(gone)).unwrap();
    let status = cluster
        .wait_exit(NodeRef::Chunk(gone), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!status.success(), "the removed server exited {status}");
    assert_eq!(
        status.code(),
        Some(i32::from(dogfs_chunk::EXIT_REMOVED)),
        "exit status {status}"
    );
    let log =
        std::fs::read_to_string(cluster.node(NodeRef::Chunk(gone)).unwrap().log_path()).unwrap();
    let last_run = log.rsplit("===== harness: start #").next().unwrap();
    assert!(
        last_run.contains("was removed"),
        "the refused server's log does not say it was removed:\n{last_run}"
    );
    let nodes = cluster.list_nodes().await.unwrap();
    let old = nodes.iter().find(|n| n.node_id == id).unwrap();
    assert_eq!(old.state, pb::NodeState::Removed as i32, "{old:?}");
    let at_addr: Vec<_> = nodes.iter().filter(|n| n.address == addr).collect();
    assert_eq!(
        at_addr.len(),
        1,
        "only the removed record has its address: {at_addr:?}"
    );
    check_all(&c, &objects, "after the refusal").await;

    // With --rejoin-when-removed: a new id at the same address, UP and empty.
    cluster
        .set_env(NodeRef::Chunk(gone), "DOGFS_REJOIN_WHEN_REMOVED", "true")
        .unwrap();
    cluster.start_nowait(NodeRef::Chunk(gone)).unwrap();
    let new_id = wait_for(
        &cluster,
        "the server to rejoin under a new id",
        Duration::from_secs(60),
        || async {
            let mut cc = cluster
                .chunk_client(gone)
                .await
                .map_err(|e| e.to_string())?;
            let info = cc
                .node_info(NodeInfoRequest {})
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            let now = info.node_id.replace('-', "");
            if now == id {
                return Err("still the old id".to_owned());
            }
            let nodes = cluster.list_nodes().await.map_err(|e| e.to_string())?;
            if nodes.iter().any(|n| {
                n.node_id == now && n.address == addr && n.state == pb::NodeState::Up as i32
            }) {
                Ok(now)
            } else {
                Err(format!("{now} not UP at {addr}: {nodes:?}"))
            }
        },
    )
    .await;
    assert_ne!(new_id, id);
    let nodes = cluster.list_nodes().await.unwrap();
    let old = nodes.iter().find(|n| n.node_id == id).unwrap();
    assert_eq!(old.state, pb::NodeState::Removed as i32, "{old:?}");
    let have = inventory(&cluster, gone).await;
    assert!(
        have.is_empty(),
        "the rejoined server kept {} shard files",
        have.len()
    );
    check_all(&c, &objects, "after the rejoin").await;
}
