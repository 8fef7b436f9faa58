//! Metadata commit benchmark (DESIGN §12): 3 in-process metadata nodes on loopback with their
//! data on the real disk; PutInlineObject (one Raft entry, durably replicated) from 1 client
//! (latency p50/p99) and from 256 concurrent clients (commits/s); the disk's fdatasync floor
//! measured in the same run, and the leader's WAL syncs per commit.
//!
//! `cargo bench -p dogfs-meta --bench commit`; the directory is `$DOGFS_BENCH_DIR` if set, else
//! a temporary directory under the system temp dir (it must be on the real disk, not tmpfs).
//! `DOGFS_BENCH_SECS` sets the length of the throughput phase (default 8).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_meta::catalog::partition_of;
use dogfs_meta::{MetaConfig, MetaServer};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use tonic::transport::{Channel, Endpoint};

const CLIENTS: usize = 256;
const CHANNELS: usize = 16;

fn floor(dir: &Path) -> Duration {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("floor"))
        .unwrap();
    let rec = [0x5au8; 256];
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        f.write_all(&rec).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    lat[lat.len() / 2]
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_lazy()
}

fn req(key: String) -> pb::PutInlineObjectRequest {
    pb::PutInlineObjectRequest {
        bucket: "bench".into(),
        key,
        data: Bytes::from_static(&[7u8; 100]),
        ..Default::default()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let workers = std::env::var("DOGFS_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // Object partitions (Raft groups besides the system group); DOGFS_BENCH_PARTITIONS.
    let partitions: u64 = std::env::var("DOGFS_BENCH_PARTITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let base = std::env::var_os("DOGFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::tempdir_in(base).unwrap();
    println!("commit bench directory: {}", root.path().display());
    let secs: u64 = std::env::var("DOGFS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);

    let floor_before = floor(root.path());

    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut servers = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let mut cfg =
            MetaConfig::for_tests(i as u64, peers.clone(), root.path().join(format!("n{i}")));
        cfg.partitions = partitions;
        if let Some(n) = std::env::var("DOGFS_PROPOSER_IN_FLIGHT")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            cfg.proposer_in_flight = n;
        }
        servers.push(MetaServer::start(cfg, l, None).await.unwrap());
    }
    let end = Instant::now() + Duration::from_secs(30);
    while !servers.iter().all(|s| s.readiness().is_ok()) {
        assert!(Instant::now() < end, "cluster not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c0 = MetaServiceClient::new(channel(&peers[0]));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match c0
            .create_bucket(pb::CreateBucketRequest {
                bucket: "bench".into(),
            })
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::AlreadyExists => break,
            Err(e) => {
                assert!(Instant::now() < end, "create bucket: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Clients talk to each key's partition leader (what a client does after GetClusterMap).
    let map = c0
        .get_cluster_map(pb::GetClusterMapRequest {})
        .await
        .unwrap()
        .into_inner();
    let leaders: Vec<String> = (0..=partitions)
        .map(|g| {
            map.groups
                .iter()
                .find(|x| x.group_id == g)
                .map(|x| x.leader_address.clone())
                .unwrap()
        })
        .collect();
    println!("group leaders: {leaders:?}");
    let bucket = BucketName::parse("bench").unwrap();
    let leader_for = |key: &str| -> usize {
        let p = partition_of(&bucket, &ObjectKey::parse(key).unwrap(), partitions);
        let addr = &leaders[p as usize];
        peers.iter().position(|a| a == addr).unwrap()
    };
    let clients: Vec<Vec<MetaServiceClient<Channel>>> = peers
        .iter()
        .map(|a| {
            (0..CHANNELS)
                .map(|_| MetaServiceClient::new(channel(a)))
                .collect()
        })
        .collect();

    // Warm-up.
    for i in 0..200 {
        let k = format!("warm-{i}");
        let mut c = clients[leader_for(&k)][0].clone();
        c.put_inline_object(req(k)).await.unwrap();
    }

    // 1 client, sequential.
    let syncs0 = servers[0].metrics().wal_syncs.get();
    let mut lat = Vec::new();
    let n1 = 3000;
    for i in 0..n1 {
        let k = format!("one-{i}");
        let mut c = clients[leader_for(&k)][0].clone();
        let t = Instant::now();
        c.put_inline_object(req(k)).await.unwrap();
        lat.push(t.elapsed());
    }
    let syncs1 = servers[0].metrics().wal_syncs.get();
    lat.sort();
    let (p50, p99) = (pct(&lat, 0.50), pct(&lat, 0.99));

    // Scaling probe (DOGFS_BENCH_PROBE=1): 16 and 64 clients for 2 s each.
    if std::env::var_os("DOGFS_BENCH_PROBE").is_some() {
        for n in [16usize, 64] {
            let syncs: Vec<u64> = servers
                .iter()
                .map(|s| s.metrics().wal_syncs.get())
                .collect();
            let micros: Vec<u64> = servers
                .iter()
                .map(|s| s.metrics().wal_sync_micros.get())
                .collect();
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for t in 0..n {
                let (stop, done, clients) = (Arc::clone(&stop), Arc::clone(&done), clients.clone());
                let l = leaders.clone();
                let (peers, bucket) = (peers.clone(), bucket.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let k = format!("p{n}-{t}-{i}");
                        i += 1;
                        let p = partition_of(&bucket, &ObjectKey::parse(&k).unwrap(), partitions);
                        let li = peers.iter().position(|a| *a == l[p as usize]).unwrap_or(0);
                        let mut c = clients[li][t % CHANNELS].clone();
                        c.put_inline_object(req(k)).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
            let d: Vec<u64> = servers
                .iter()
                .zip(&syncs)
                .map(|(s, b)| s.metrics().wal_syncs.get() - b)
                .collect();
            let avg: Vec<String> = servers
                .iter()
                .zip(&micros)
                .zip(&d)
                .map(|((s, b), n)| {
                    format!(
                        "{} µs",
                        (s.metrics().wal_sync_micros.get() - b) / (*n).max(1)
                    )
                })
                .collect();
            let text = servers[0]
                .metrics()
                .render(&servers[0].node().handle())
                .unwrap();
            for l in text.lines().filter(|l| {
                l.contains("PutInlineObject")
                    && (l.contains("_sum") || l.contains("_count"))
                    && l.contains("rpc_seconds")
            }) {
                println!("  {l}");
            }
            println!(
                "probe {n} clients: {} commits in 2 s; WAL syncs per node {d:?}, mean sync {avg:?}",
                done.load(Ordering::Relaxed)
            );
        }
    }

    // 256 clients for `secs` seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let leaders_idx: Vec<usize> = (0..partitions + 1)
        .map(|g| {
            peers
                .iter()
                .position(|a| *a == leaders[g as usize])
                .unwrap_or(0)
        })
        .collect();
    let mut tasks = Vec::new();
    let syncs2 = servers[0].metrics().wal_syncs.get();
    let started = Instant::now();
    for t in 0..CLIENTS {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let clients = clients.clone();
        let leaders_idx = leaders_idx.clone();
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("c{t}-{i}");
                i += 1;
                let p = partition_of(&bucket, &ObjectKey::parse(&k).unwrap(), partitions);
                let mut c = clients[leaders_idx[p as usize]][t % CHANNELS].clone();
                c.put_inline_object(req(k)).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let syncs3 = servers[0].metrics().wal_syncs.get();
    let commits = done.load(Ordering::Relaxed);
    let rate = commits as f64 / elapsed.as_secs_f64();
    let floor_after = floor(root.path());
    let fl = floor_before.min(floor_after);
    let batch = commits as f64 / (syncs3 - syncs2).max(1) as f64;
    let per_commit = elapsed.as_secs_f64() / commits as f64;

    println!("fdatasync floor (p50): before {floor_before:?}, after {floor_after:?}");
    println!(
        "1 client:   {n1} commits, p50 {p50:?}, p99 {p99:?} ({:.2}x the floor at p50); node 0 WAL syncs/commit {:.2}",
        p50.as_secs_f64() / fl.as_secs_f64(),
        (syncs1 - syncs0) as f64 / n1 as f64
    );
    println!(
        "{CLIENTS} clients: {commits} commits in {elapsed:.2?} = {rate:.0} commits/s; node 0: {} WAL syncs, {batch:.1} commits per sync; {:.1} µs per commit vs floor/batch {:.2} µs",
        syncs3 - syncs2,
        per_commit * 1e6,
        fl.as_secs_f64() * 1e6 / batch
    );
    println!(
        "bars: 1-client p50 <= 1 ms: {}; >= 10k commits/s at {CLIENTS} clients: {}",
        if p50 <= Duration::from_millis(1) {
            "MET"
        } else {
            "MISSED"
        },
        if rate >= 10_000.0 { "MET" } else { "MISSED" }
    );
    for s in servers {
        s.shutdown().await.unwrap();
    }
}
