//! Three real `dogfs-meta` processes on loopback: kill -9 of a partition leader during a stream
//! of commits, restart and catch-up, catch-up by snapshot after the log moved on, a restart of
//! the whole cluster, and a wiped node 0 that rejoins instead of bootstrapping again. Every
//! assertion is on data read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(60);

struct Proc {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    peers: Vec<String>,
    dirs: Vec<PathBuf>,
    _root: TempDir,
    procs: Vec<Option<Proc>>,
    extra: Vec<(&'static str, String)>,
}

/// A free port outside the kernel's ephemeral range (below 32768 by default), so that a killed
/// node's port cannot become some outgoing connection's source port before the node restarts
/// on it; `TAKEN` keeps the parallel tests of this binary apart.
fn free_port() -> u16 {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&l| l > 11_000)
        .unwrap_or(32_768);
    let mut taken = TAKEN.lock().unwrap();
    for _ in 0..1000 {
        let port = rand::random_range(10_000..low);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port below {low}");
}

impl Cluster {
    fn start(extra: Vec<(&'static str, String)>) -> Cluster {
        let root = TempDir::new().unwrap();
        let peers: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("n{i}"))).collect();
        let mut c = Cluster {
            peers,
            dirs,
            _root: root,
            procs: vec![None, None, None],
            extra,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    /// Starts node `i` and waits (with a deadline) for its "metadata node serving" line.
    fn spawn(&mut self, i: usize) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dogfs-meta"));
        cmd.env("DOGFS_NODE_ID", i.to_string())
            .env("DOGFS_PEERS", self.peers.join(","))
            .env("DOGFS_GRPC_ADDR", &self.peers[i])
            .env("DOGFS_HTTP_ADDR", "127.0.0.1:0")
            .env("DOGFS_DATA_DIR", &self.dirs[i])
            .env("DOGFS_PARTITIONS", "2")
            .env("DOGFS_LOG_FORMAT", "json")
            .env("DOGFS_SHUTDOWN_GRACE_SECS", "1")
            .env("RUST_LOG", "info");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l2 = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("metadata node serving") && line.contains("\"grpc_addr\":\"") {
                    let _ = tx.send(());
                }
                l2.lock().unwrap().push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("dogfs-meta did not report serving in time");
        self.procs[i] = Some(Proc { child, logs });
    }

    fn kill(&mut self, i: usize) {
        // Drop sends SIGKILL (kill -9) and reaps the process.
        self.procs[i] = None;
    }

    fn logs(&self, i: usize) -> Vec<String> {
        self.procs[i].as_ref().unwrap().logs.lock().unwrap().clone()
    }

    async fn client(&self, i: usize) -> MetaServiceClient<Channel> {
        client(&self.peers, i)
    }

    /// The leader of `group`, as node `via` sees it.
    async fn leader(&self, via: usize, group: u64) -> Option<usize> {
        let map = self
            .client(via)
            .await
            .get_cluster_map(pb::GetClusterMapRequest {})
            .await
            .ok()?
            .into_inner();
        map.groups
            .iter()
            .find(|g| g.group_id == group)
            .and_then(|g| g.leader_id)
            .map(|l| l as usize)
    }
}

fn client(peers: &[String], i: usize) -> MetaServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", peers[i]))
        .unwrap()
        .connect_lazy();
    MetaServiceClient::new(ch)
}

fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// Runs `f` against live nodes in turn until it succeeds or the deadline passes.
async fn retry<T, F, Fut>(c: &[String], alive: &[usize], mut f: F) -> T
where
    F: FnMut(MetaServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let end = Instant::now() + DEADLINE;
    let mut n = 0;
    loop {
        let via = alive[n % alive.len()];
        n += 1;
        match f(client(c, via)).await {
            Ok(v) => return v,
            Err(s) if retryable(&s) && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("call failed for good: {s:?}"),
        }
    }
}

async fn create_bucket(c: &Cluster, name: &str) {
    retry(&c.peers, &[0, 1, 2], |mut m| {
        let name = name.to_string();
        async move {
            match m
                .create_bucket(pb::CreateBucketRequest { bucket: name })
                .await
            {
                // A retried create may find its own earlier attempt.
                Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                r => r.map(|_| ()),
            }
        }
    })
    .await;
}

async fn put(c: &Cluster, alive: &[usize], key: &str) {
    put_to(&c.peers, alive, key).await;
}

async fn put_to(peers: &[String], alive: &[usize], key: &str) {
    retry(peers, alive, |mut m| {
        let key = key.to_string();
        async move {
            m.put_inline_object(pb::PutInlineObjectRequest {
                bucket: "procs".into(),
                data: Bytes::from(key.clone().into_bytes()),
                key,
                ..Default::default()
            })
            .await
            .map(|_| ())
        }
    })
    .await;
}

/// Every key reads back with its data through node `via` (stale: from that node's own state,
/// so this checks that it caught up), within the deadline.
async fn wait_all_readable(
    c: &Cluster,
    via: usize,
    keys: &[String],
    consistency: pb::ReadConsistency,
) {
    let end = Instant::now() + DEADLINE;
    let mut m = c.client(via).await;
    for k in keys {
        loop {
            let r = m
                .get_object(pb::GetObjectRequest {
                    bucket: "procs".into(),
                    key: k.clone(),
                    consistency: consistency as i32,
                })
                .await;
            match r {
                Ok(g) => {
                    assert_eq!(g.into_inner().inline_data.as_ref(), k.as_bytes());
                    break;
                }
                Err(s) => {
                    assert!(
                        Instant::now() < end,
                        "node {via}: {k} not readable in time: {s:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn wait_leaders(c: &Cluster, via: usize) {
    wait_leaders_where(c, via, |_| true).await;
}

/// Waits until node `via` names, for every group, a leader that `ok` accepts.
async fn wait_leaders_where(c: &Cluster, via: usize, ok: impl Fn(usize) -> bool) {
    let end = Instant::now() + DEADLINE;
    loop {
        let mut led = true;
        for g in 0..3 {
            led &= c.leader(via, g).await.is_some_and(&ok);
        }
        if led {
            return;
        }
        assert!(
            Instant::now() < end,
            "node {via}: no acceptable leaders in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes with every group led and the bucket `procs` created.
async fn cluster_with_bucket(extra: Vec<(&'static str, String)>) -> Cluster {
    let c = Cluster::start(extra);
    wait_leaders(&c, 0).await;
    create_bucket(&c, "procs").await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_during_commits_then_restart_everything() {
    let mut c = cluster_with_bucket(Vec::new()).await;
    let mut acked = Vec::new();
    for i in 0..40 {
        let k = format!("before-{i:03}");
        put(&c, &[0, 1, 2], &k).await;
        acked.push(k);
    }
    // kill -9 the leader of partition 1 while 4 writers stream commits through the other
    // nodes; each records only what was acknowledged.
    let victim = c.leader(0, 1).await.unwrap();
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let done = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (peers, alive, done) = (c.peers.clone(), alive.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                for i in 0..40 {
                    let k = format!("during-{w}-{i:03}");
                    put_to(&peers, &alive, &k).await;
                    done.lock().unwrap().push(k);
                }
            })
        })
        .collect();
    let end = Instant::now() + DEADLINE;
    while done.lock().unwrap().len() < 20 {
        assert!(Instant::now() < end, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.kill(victim);
    for w in writers {
        w.await.unwrap();
    }
    acked.extend(done.lock().unwrap().iter().cloned());
    assert_eq!(acked.len(), 40 + 160);
    let new_leader = c.leader(alive[0], 1).await;
    assert!(
        new_leader.is_some_and(|l| l != victim),
        "partition 1 has a new leader"
    );
    wait_all_readable(&c, alive[0], &acked, pb::ReadConsistency::Linearizable).await;
    // The old leader restarts from its directory and catches up (its own state, stale reads).
    c.spawn(victim);
    wait_all_readable(&c, victim, &acked, pb::ReadConsistency::Stale).await;
    // All three killed and restarted: every acknowledged object is still there.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        wait_all_readable(&c, i, &acked, pb::ReadConsistency::Linearizable).await;
    }
    put(&c, &[0, 1, 2], "after-restart").await;
    for i in 0..3 {
        assert!(
            !c.logs(i)
                .iter()
                .any(|l| l.contains("bootstrapped a new cluster")),
            "a restart must not bootstrap"
        );
    }
}

fn snapshot_files(dir: &Path) -> usize {
    walk(&dir.join("snapshots"))
}

fn walk(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map_while(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { 1 }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_by_snapshot() {
    let mut c = cluster_with_bucket(vec![
        ("DOGFS_SNAPSHOT_EVERY", "20".into()),
        ("DOGFS_SNAPSHOT_KEEP", "5".into()),
    ])
    .await;
    c.kill(2);
    let mut acked = Vec::new();
    for i in 0..150 {
        let k = format!("k{i:04}");
        put(&c, &[0, 1], &k).await;
        acked.push(k);
    }
    assert_eq!(snapshot_files(&c.dirs[2]), 0, "node 2 had no snapshot yet");
    c.spawn(2);
    wait_all_readable(&c, 2, &acked, pb::ReadConsistency::Stale).await;
    // The leaders purged their logs far past node 2's end: it must have installed snapshots.
    assert!(
        snapshot_files(&c.dirs[2]) > 0,
        "node 2 installed a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_0_rejoins_instead_of_bootstrapping() {
    let mut c = cluster_with_bucket(vec![
        ("DOGFS_SNAPSHOT_EVERY", "20".into()),
        ("DOGFS_SNAPSHOT_KEEP", "5".into()),
    ])
    .await;
    let mut acked = Vec::new();
    for i in 0..60 {
        let k = format!("k{i:04}");
        put(&c, &[0, 1, 2], &k).await;
        acked.push(k);
    }
    c.kill(0);
    std::fs::remove_dir_all(&c.dirs[0]).unwrap();
    c.spawn(0);
    wait_all_readable(&c, 0, &acked, pb::ReadConsistency::Stale).await;
    let logs = c.logs(0);
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("bootstrapped a new cluster")),
        "the wiped node 0 bootstrapped again"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("peers already form a cluster")),
        "node 0 saw the existing cluster"
    );
    put(&c, &[0, 1, 2], "after-rejoin").await;
    wait_all_readable(
        &c,
        0,
        &["after-rejoin".to_string()],
        pb::ReadConsistency::Stale,
    )
    .await;
}

/// A node killed while leading restarts as the leader of the same term without an election
/// (openraft 0.9 restores a committed vote for itself), and it cannot tell which entries at the
/// end of its log were committed and acknowledged: its committed marker lags by design, and its
/// engine may have lost its unflushed tail. Here every node's engine is wiped after a kill -9 of
/// the whole cluster (the worst such loss; the WAL is the source of truth), and every
/// acknowledged object must be there on the first linearizable read through every node — a
/// `NotFound` is a stale read, not something to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_leaders_never_serve_reads_behind_acknowledged_writes() {
    let mut c = cluster_with_bucket(Vec::new()).await;
    let mut acked = Vec::new();
    // Three rounds: each is likely, not certain, to open the window (below), and each would
    // fail this test without the restored-log wait.
    for round in 0..3 {
        for i in 0..10 {
            let k = format!("r{round}-k{i:02}");
            put(&c, &[0, 1, 2], &k).await;
            acked.push(k);
        }
        // The leader of partition 1 restarts first, alone, so its replication is behind when
        // the others come up (it backs off), and it is read through first: that is the widest
        // window for a read index that misses the restored log.
        let first = c.leader(0, 1).await.unwrap();
        let order: Vec<usize> = std::iter::once(first)
            .chain((0..3).filter(|i| *i != first))
            .collect();
        for i in 0..3 {
            c.kill(i);
        }
        for dir in &c.dirs {
            std::fs::remove_dir_all(dir.join("sled")).unwrap();
        }
        for &i in &order {
            c.spawn(i);
        }
        for &via in &order {
            // Newest first: the last writes are the ones a lagging read index misses.
            for k in acked.iter().rev() {
                let got = retry(&c.peers, &[via], |mut m| {
                    let key = k.clone();
                    async move {
                        m.get_object(pb::GetObjectRequest {
                            bucket: "procs".into(),
                            key,
                            consistency: pb::ReadConsistency::Linearizable as i32,
                        })
                        .await
                    }
                })
                .await;
                assert_eq!(got.into_inner().inline_data.as_ref(), k.as_bytes());
            }
            let listed = retry(&c.peers, &[via], |mut m| async move {
                m.list_objects(pb::ListObjectsRequest {
                    bucket: "procs".into(),
                    consistency: pb::ReadConsistency::Linearizable as i32,
                    ..Default::default()
                })
                .await
            })
            .await
            .into_inner();
            let mut keys: Vec<String> = listed.objects.iter().map(|o| o.key.clone()).collect();
            keys.sort();
            let mut want = acked.clone();
            want.sort();
            assert_eq!(keys, want, "round {round}: node {via} listed a stale view");
        }
    }
}

/// The amnesia guard (docs/meta-service.md): a node that lost its disk does not vote until it
/// has caught up. Objects are acknowledged by nodes 0 and 1 while node 2 is down; then node 1
/// loses its disk and node 0 goes down. Node 2 (stale) and the wiped node 1 are a majority:
/// with the wiped node's vote, node 2 would win, and the objects, which only node 0 still has,
/// would be overwritten. With the guard no leader is elected until node 0 is back, and then
/// every acknowledged object reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_votes_a_stale_node_into_leadership() {
    let mut c = cluster_with_bucket(Vec::new()).await;
    let mut acked = Vec::new();
    c.kill(2);
    for i in 0..20 {
        let k = format!("k{i:04}");
        put(&c, &[0, 1], &k).await;
        acked.push(k);
    }
    c.kill(0);
    c.kill(1);
    std::fs::remove_dir_all(&c.dirs[1]).unwrap();
    c.spawn(1);
    c.spawn(2);
    // Several election timeouts (0.5–1 s each): node 2 campaigns again and again.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        for via in [1, 2] {
            for g in 0..3 {
                // Node 0 may still be named: node 2 restarts with its saved vote for it.
                let leader = c.leader(via, g).await;
                assert!(
                    !matches!(leader, Some(1 | 2)),
                    "group {g}: node {leader:?} was elected without a node that remembers it"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.spawn(0);
    for via in 0..3 {
        wait_all_readable(&c, via, &acked, pb::ReadConsistency::Linearizable).await;
    }
    // Node 1 catches up and votes again (its log says so for every group); then, with node 0
    // down once more, nodes 1 and 2 elect leaders by themselves.
    let end = Instant::now() + DEADLINE;
    loop {
        let lifted = c
            .logs(1)
            .iter()
            .filter(|l| l.contains("amnesia guard lifted"))
            .count();
        if lifted == 3 {
            break;
        }
        assert!(Instant::now() < end, "node 1 lifted {lifted} of 3 guards");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.kill(0);
    wait_leaders_where(&c, 1, |l| l != 0).await;
    wait_all_readable(&c, 1, &acked, pb::ReadConsistency::Linearizable).await;
}
