//! Metadata commit benchmark (DESIGN §12): 3 in-process metadata nodes on loopback with their
//! data on the real disk; PutInlineObject (one Raft entry, durably replicated) from 1 client
//! (latency p50/p99) and from 256 concurrent clients (commits/s); the disk's fdatasync floor
//! measured in the same run, and the leader's WAL syncs per commit.
//!
//! `cargo bench -p dogfs-meta --bench commit`; the directory is `$DOGFS_BENCH_DIR` if set, else
//! a temporary directory under the system temp dir (it must be on the real disk, not tmpfs).
//! `DOGFS_BENCH_SECS` sets the length of the throughput phase (default 8), `DOGFS_BENCH_CLIENTS`
//! its clients (default 256).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

// The same allocator as the `dogfs-meta` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Clients of the throughput phase; DOGFS_BENCH_CLIENTS overrides (e.g. 16, the cluster
/// bench's small-object concurrency).
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

/// What a phase cost across the three nodes, for the per-commit figures: Raft frames and unary
/// calls sent (each is one HTTP/2 message and a wake-up of the peer's connection), messages in
/// the frames, WAL syncs and the groups they covered, and the process's context switches
/// (every wake-up of a sleeping thread is one).
#[derive(Debug, Clone, Copy, Default)]
struct Costs {
    frames: u64,
    unary: u64,
    messages: u64,
    syncs: u64,
    synced_groups: u64,
    switches: u64,
}

impl Costs {
    fn now(servers: &[MetaServer]) -> Costs {
        let mut c = Costs {
            switches: thread_switches().values().sum(),
            ..Costs::default()
        };
        for s in servers {
            let h = s.node().handle();
            let (out, _) = h.transport_counts();
            c.frames += out.frames_sent;
            c.unary += out.unary_calls;
            c.messages += out.messages_sent;
            if let Some(w) = h.wal_stats() {
                c.syncs += w.syncs;
                c.synced_groups += w.synced_groups;
            }
        }
        c
    }

    fn minus(&self, o: &Costs) -> Costs {
        Costs {
            frames: self.frames - o.frames,
            unary: self.unary - o.unary,
            messages: self.messages - o.messages,
            syncs: self.syncs - o.syncs,
            synced_groups: self.synced_groups - o.synced_groups,
            switches: self.switches - o.switches,
        }
    }

    fn per(&self, commits: f64) -> String {
        format!(
            "{:.2} raft frames + {:.2} unary calls (node→node requests, {:.2} messages in frames), \
             {:.2} WAL syncs ({:.2} groups per sync), {:.1} context switches",
            self.frames as f64 / commits,
            self.unary as f64 / commits,
            self.messages as f64 / commits,
            self.syncs as f64 / commits,
            self.synced_groups as f64 / self.syncs.max(1) as f64,
            self.switches as f64 / commits,
        )
    }
}

/// CPU seconds this process used so far (user + system), from `/proc/self/stat`.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock
    // ticks of USER_HZ, which is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds per thread kind of this process (from `/proc/self/task/*/stat`): the bench's
/// clients, the servers' tokio workers, the WAL writers, sled's IO threads, the rest.
fn thread_cpu() -> std::collections::BTreeMap<&'static str, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("", |(n, _)| n);
        let kind = thread_kind(name);
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(kind).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// The kind of a thread of this process, by name.
fn thread_kind(name: &str) -> &'static str {
    if name.starts_with("bench-client") {
        "bench clients"
    } else if name.starts_with("tokio-rt") {
        "servers (tokio)"
    } else if name.starts_with("dogfs-wal") {
        "WAL writers"
    } else if name.starts_with("sled") || name.starts_with("log flusher") {
        "sled threads"
    } else {
        "other"
    }
}

/// Context switches (voluntary and not) per thread kind of this process so far.
fn thread_switches() -> std::collections::BTreeMap<&'static str, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let mut kind = "other";
        let mut n = 0;
        for line in status.lines() {
            if let Some(name) = line.strip_prefix("Name:") {
                kind = thread_kind(name.trim());
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        *out.entry(kind).or_insert(0) += n;
    }
    out
}

/// Machine-wide (busy, total) CPU seconds from `/proc/stat`, to tell whether other work
/// shared the cores during a phase.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// Commits not answered at the first node tried (a leader moved: an election, e.g. when the
/// shared machine starved the heartbeats, or leader balancing); reported, since they inflate
/// latencies and CPU per commit.
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// One PutInlineObject to `node` (its partition's leader when the bench started), retried on
/// the next node while the group has no leader there (UNAVAILABLE: an election, or leaders
/// being moved between nodes).
async fn put(clients: &[Vec<MetaServiceClient<Channel>>], node: usize, ch: usize, key: String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut node = node;
    loop {
        let mut c = clients[node][ch].clone();
        match c.put_inline_object(req(key.clone())).await {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
                node = (node + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("put {key}: {e:?}"),
        }
    }
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
    // The clients run on a runtime of their own (threads named `bench-client`), so the CPU
    // they take is accounted apart from the servers' (`thread_cpu`).
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(clients_rt.handle().clone()));
}

async fn run(crt: tokio::runtime::Handle) {
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
        // A/B of the Raft transport (`stream` or `unary`) and of the coalesced heartbeats.
        if let Ok(t) = std::env::var("DOGFS_RAFT_TRANSPORT") {
            cfg.raft_transport = t.parse().unwrap();
        }
        if let Ok(v) = std::env::var("DOGFS_RAFT_COALESCE_HEARTBEATS") {
            cfg.raft_coalesce_heartbeats = v.parse().unwrap();
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
    // The nodes spread leaders after bootstrap (`tasks::leader_balance`): wait until the map
    // has a leader for every group, every node leads some, and it has not changed for 2 s, so
    // that the measured phases do not chase moving leaders.
    let mut leaders: Vec<String> = Vec::new();
    let mut stable_since = Instant::now();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let map = c0
            .get_cluster_map(pb::GetClusterMapRequest {})
            .await
            .unwrap()
            .into_inner();
        let now: Vec<String> = (0..=partitions)
            .map(|g| {
                map.groups
                    .iter()
                    .find(|x| x.group_id == g)
                    .map(|x| x.leader_address.clone())
                    .unwrap_or_default()
            })
            .collect();
        if now != leaders || now.iter().any(String::is_empty) {
            leaders = now;
            stable_since = Instant::now();
        } else if (stable_since.elapsed() >= Duration::from_secs(2)
            && leaders
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == peers.len())
            || Instant::now() > end
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("group leaders: {leaders:?}");
    let bucket = BucketName::parse("bench").unwrap();
    let leader_for = |key: &str| -> usize {
        let p = partition_of(&bucket, &ObjectKey::parse(key).unwrap(), partitions);
        let addr = &leaders[p as usize];
        peers.iter().position(|a| a == addr).unwrap()
    };
    // Created inside the client runtime: a lazy channel's tasks run where it was created.
    let _entered = crt.enter();
    let clients: Vec<Vec<MetaServiceClient<Channel>>> = peers
        .iter()
        .map(|a| {
            (0..CHANNELS)
                .map(|_| MetaServiceClient::new(channel(a)))
                .collect()
        })
        .collect();

    // Idle: only heartbeats travel. With coalesced heartbeats each node sends those of every
    // group it leads to a peer together, so they share frames.
    let idle0 = Costs::now(&servers);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Costs::now(&servers).minus(&idle0);
    println!(
        "idle 2 s: {:.0} frames/s + {:.0} unary calls/s carrying {:.0} messages/s ({:.2} messages per frame) from the three nodes",
        idle.frames as f64 / 2.0,
        idle.unary as f64 / 2.0,
        (idle.messages + idle.unary) as f64 / 2.0,
        idle.messages as f64 / idle.frames.max(1) as f64
    );

    // Warm-up.
    for i in 0..200 {
        let k = format!("warm-{i}");
        put(&clients, leader_for(&k), 0, k).await;
    }

    println!(
        "raft transport: {:?}, coalesced heartbeats: {}",
        servers[0].node().handle().connections().transport(),
        std::env::var("DOGFS_RAFT_COALESCE_HEARTBEATS").unwrap_or_else(|_| "true".into())
    );
    // 1 client, sequential.
    let syncs0 = servers[0].metrics().wal_syncs.get();
    let costs_one = Costs::now(&servers);
    let cpu_one = process_cpu();
    let threads_one = thread_cpu();
    let mut lat = Vec::new();
    let n1 = 3000;
    for i in 0..n1 {
        let k = format!("one-{i}");
        let t = Instant::now();
        put(&clients, leader_for(&k), 0, k).await;
        lat.push(t.elapsed());
    }
    let syncs1 = servers[0].metrics().wal_syncs.get();
    let costs_one = Costs::now(&servers).minus(&costs_one);
    let cpu_one = process_cpu() - cpu_one;
    let split_one: Vec<String> = thread_cpu()
        .iter()
        .map(|(k, v)| {
            let d = v - threads_one.get(k).copied().unwrap_or(0.0);
            format!("{k} {:.0} µs", d * 1e6 / n1 as f64)
        })
        .collect();
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
                tasks.push(crt.spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let k = format!("p{n}-{t}-{i}");
                        i += 1;
                        let p = partition_of(&bucket, &ObjectKey::parse(&k).unwrap(), partitions);
                        let li = peers.iter().position(|a| *a == l[p as usize]).unwrap_or(0);
                        put(&clients, li, t % CHANNELS, k).await;
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
    let costs0 = Costs::now(&servers);
    let cpu0 = process_cpu();
    let threads0 = thread_cpu();
    let switches0 = thread_switches();
    let m0 = machine_cpu();
    let started = Instant::now();
    let n_clients: usize = std::env::var("DOGFS_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENTS);
    for t in 0..n_clients {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let clients = clients.clone();
        let leaders_idx = leaders_idx.clone();
        let bucket = bucket.clone();
        tasks.push(crt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("c{t}-{i}");
                i += 1;
                let p = partition_of(&bucket, &ObjectKey::parse(&k).unwrap(), partitions);
                put(&clients, leaders_idx[p as usize], t % CHANNELS, k).await;
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
    let cpu = process_cpu() - cpu0;
    let threads1 = thread_cpu();
    let switches1 = thread_switches();
    let m1 = machine_cpu();
    let syncs3 = servers[0].metrics().wal_syncs.get();
    let costs = Costs::now(&servers).minus(&costs0);
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
    println!("1 client, per commit: {}", costs_one.per(n1 as f64));
    println!(
        "1 client CPU: {:.0} µs per commit (every commit its own Raft entry): {}",
        cpu_one * 1e6 / n1 as f64,
        split_one.join(", ")
    );
    println!(
        "{n_clients} clients: {commits} commits in {elapsed:.2?} = {rate:.0} commits/s; node 0: {} WAL syncs, {batch:.1} commits per sync; {:.1} µs per commit vs floor/batch {:.2} µs",
        syncs3 - syncs2,
        per_commit * 1e6,
        fl.as_secs_f64() * 1e6 / batch
    );
    println!(
        "{n_clients} clients CPU: this process {:.2} cores ({:.0} µs CPU per commit, clients included); whole machine busy {:.2} of {:.0} cores",
        cpu / elapsed.as_secs_f64(),
        cpu * 1e6 / commits as f64,
        (m1.0 - m0.0) / elapsed.as_secs_f64(),
        (m1.1 - m0.1) / elapsed.as_secs_f64()
    );
    let split: Vec<String> = threads1
        .iter()
        .map(|(k, v)| {
            let d = v - threads0.get(k).copied().unwrap_or(0.0);
            format!("{k} {:.0} µs", d * 1e6 / commits as f64)
        })
        .collect();
    println!(
        "{n_clients} clients, per commit: {}",
        costs.per(commits as f64)
    );
    let split_switches: Vec<String> = switches1
        .iter()
        .map(|(k, v)| {
            let d = v - switches0.get(k).copied().unwrap_or(0);
            format!("{k} {:.2}", d as f64 / commits as f64)
        })
        .collect();
    println!(
        "{n_clients} clients context switches per commit by thread: {}",
        split_switches.join(", ")
    );
    println!(
        "{n_clients} clients CPU per commit by thread: {}",
        split.join(", ")
    );
    println!(
        "commits retried on another node (no leader at the first one: election or leader move): {}",
        RETRIES.load(Ordering::Relaxed)
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
