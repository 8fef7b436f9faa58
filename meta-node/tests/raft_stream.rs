//! The node-pair Raft stream (`RaftService.Stream`): many groups multiplexed on one stream per
//! peer, peers restarting and connections dropping or freezing under load, groups appearing and
//! disappearing under a running stream, the fallback to unary calls for a peer without the
//! stream, and the error mapping of calls over the stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dogfs_meta::raft::node::default_raft_config;
use dogfs_meta::raft::stream::ReplyStream;
use dogfs_meta::raft::{
    Command, Connections, Key, MultiRaft, NetworkFactory, NodeConfig, RaftHandle, RaftServer,
    Response, TransportCounts, TransportMode, Write,
};
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use dogfs_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use dogfs_proto::raft::{RaftFrame, RaftMessage, RaftMessageKind, RaftReply, RaftRequest};
use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, SnapshotPolicy, Vote};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Status, Streaming};

/// Longest wait for any condition (leaders, writes, catch-up).
const WAIT: Duration = Duration::from_secs(20);

fn key(k: &str) -> Key {
    Key::new("object", k.as_bytes())
}

fn put(k: &str, v: &str) -> Command {
    Command::writes(vec![Write::Put(key(k), v.as_bytes().to_vec())])
}

/// Every node's handle, shared with the writer tasks; a node is taken out before it stops
/// (its handle keeps the database open) and put back once restarted.
type Handles = Arc<RwLock<BTreeMap<u64, RaftHandle>>>;

/// The handle of the node that leads `group` and says so itself.
fn leader_of(handles: &Handles, group: u64) -> Option<(u64, RaftHandle)> {
    let hs = handles.read().unwrap();
    hs.iter().find_map(|(id, h)| {
        let rx = h.raft(group).ok()?.metrics();
        let m = rx.borrow();
        (m.state.is_leader() && m.current_leader == Some(*id)).then(|| (*id, h.clone()))
    })
}

/// Waits until some node leads `group`.
async fn wait_leader(handles: &Handles, group: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((id, _)) = leader_of(handles, group) {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader for group {group}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes through the group's current leader until the write is acknowledged (retrying across
/// leader changes and lost connections; a retried put of the same value is idempotent).
/// Returns the entry's log index.
async fn write(handles: &Handles, group: u64, k: &str, v: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "write {group}/{k} not acknowledged within {WAIT:?}"
        );
        let Some((_, h)) = leader_of(handles, group) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let res =
            tokio::time::timeout(Duration::from_secs(5), h.client_write(group, put(k, v))).await;
        drop(h);
        match res {
            Ok(Ok(Response::Applied { version })) => return version,
            Ok(Ok(other)) => panic!("unexpected response {other:?}"),
            // Not the leader any more, stopped, lost quorum for a while: try again.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The writes acknowledged so far, per group, and their count (to wait on).
#[derive(Default)]
struct Acked {
    models: Mutex<BTreeMap<u64, BTreeMap<String, String>>>,
    count: watch::Sender<usize>,
}

impl Acked {
    fn record(&self, group: u64, k: String, v: String) {
        self.models
            .lock()
            .unwrap()
            .entry(group)
            .or_default()
            .insert(k, v);
        self.count.send_modify(|c| *c += 1);
    }

    fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `n` writes were acknowledged.
    async fn wait_for(&self, n: usize, what: &str) {
        let mut rx = self.count.subscribe();
        let res = tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(res, Ok(Ok(_))),
            "{what}: only {} of {n} writes acknowledged within {WAIT:?}",
            self.count()
        );
    }

    fn models(&self) -> BTreeMap<u64, BTreeMap<String, String>> {
        self.models.lock().unwrap().clone()
    }
}

/// Writers that keep putting new keys to `groups` (one sequential writer per group) until
/// stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    acked: Arc<Acked>,
}

impl Load {
    fn start(handles: &Handles, groups: &[u64]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Acked::default());
        let tasks = groups
            .iter()
            .map(|&g| {
                let (handles, stop, acked) = (handles.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (k, v) = (format!("k{i:06}"), format!("g{g}-v{i}"));
                        write(&handles, g, &k, &v).await;
                        acked.record(g, k, v);
                        i += 1;
                    }
                })
            })
            .collect();
        Load { stop, tasks, acked }
    }

    /// Stops the writers (each finishes its current write) and returns what was acknowledged.
    async fn stop(self) -> BTreeMap<u64, BTreeMap<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.models()
    }
}

/// Three nodes in this process, every one hosting `groups`; `advertised` is the peers map
/// (a node's address there may be a relay in front of it).
struct Cluster {
    groups: Vec<u64>,
    dirs: BTreeMap<u64, TempDir>,
    listen: BTreeMap<u64, String>,
    advertised: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, MultiRaft>,
    handles: Handles,
}

impl Cluster {
    /// Starts three nodes; `relay_for` puts a [`Relay`] in front of that node.
    async fn start(groups: Vec<u64>, relay_for: Option<u64>) -> (Cluster, Option<Relay>) {
        let mut listeners = BTreeMap::new();
        let mut listen = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listen.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
            dirs.insert(id, TempDir::new().unwrap());
        }
        let mut advertised = listen.clone();
        let mut relay = None;
        if let Some(id) = relay_for {
            let r = Relay::start(listen[&id].clone()).await;
            advertised.insert(id, r.addr.clone());
            relay = Some(r);
        }
        let mut c = Cluster {
            groups,
            dirs,
            listen,
            advertised,
            nodes: BTreeMap::new(),
            handles: Handles::default(),
        };
        for (id, l) in listeners {
            c.start_node_on(id, l).await;
        }
        let members = c.advertised.clone();
        for n in c.nodes.values() {
            n.initialize(&members).await.unwrap();
        }
        for &g in &c.groups {
            wait_leader(&c.handles, g).await;
        }
        (c, relay)
    }

    fn config(&self, id: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(
            id,
            self.advertised.clone(),
            self.dirs[&id].path().join("data"),
            self.groups.clone(),
        );
        cfg.raft = openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            // No snapshots: every message travels on the streams.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(100_000),
            ..default_raft_config()
        };
        cfg
    }

    async fn start_node_on(&mut self, id: u64, l: TcpListener) {
        let node = MultiRaft::start(self.config(id), l).await.unwrap();
        self.handles.write().unwrap().insert(id, node.handle());
        self.nodes.insert(id, node);
    }

    async fn stop(&mut self, id: u64) {
        self.handles.write().unwrap().remove(&id);
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    /// Restarts a stopped node from its directory on its old address.
    async fn restart(&mut self, id: u64) {
        let l = TcpListener::bind(&self.listen[&id]).await.unwrap();
        self.start_node_on(id, l).await;
    }

    async fn stop_all(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// The caller-side counters of `id` (its outgoing streams and calls).
    fn caller_counts(&self, id: u64) -> TransportCounts {
        self.nodes[&id].handle().transport_counts().0
    }

    /// The server-side counters of `id` (the streams it serves).
    fn callee_counts(&self, id: u64) -> TransportCounts {
        self.nodes[&id].handle().transport_counts().1
    }

    /// Writes a barrier to every group in `models`, waits until every node applied it, and
    /// checks every node holds exactly the model's values.
    async fn check(&self, mut models: BTreeMap<u64, BTreeMap<String, String>>) {
        for (&g, model) in models.iter_mut() {
            let index = write(&self.handles, g, "zz-barrier", "b").await;
            model.insert("zz-barrier".into(), "b".into());
            for (id, n) in &self.nodes {
                n.raft(g)
                    .unwrap()
                    .wait(Some(WAIT))
                    .applied_index_at_least(Some(index), &format!("node {id} group {g} applied"))
                    .await
                    .unwrap();
                let r = n.reader(g).unwrap();
                for (k, v) in model.iter() {
                    let got = r.get(&key(k)).unwrap();
                    assert_eq!(
                        got.map(|g| g.value),
                        Some(v.as_bytes().to_vec()),
                        "node {id} group {g} key {k}"
                    );
                }
                let all = r.list("object", b"", None, usize::MAX).unwrap();
                assert_eq!(all.len(), model.len(), "node {id} group {g} key count");
            }
        }
    }
}

fn sum(counts: impl IntoIterator<Item = TransportCounts>) -> TransportCounts {
    counts
        .into_iter()
        .fold(TransportCounts::default(), |a, c| TransportCounts {
            frames_sent: a.frames_sent + c.frames_sent,
            messages_sent: a.messages_sent + c.messages_sent,
            frames_received: a.frames_received + c.frames_received,
            messages_received: a.messages_received + c.messages_received,
            streams_opened: a.streams_opened + c.streams_opened,
            unary_calls: a.unary_calls + c.unary_calls,
        })
}

/// Three votes of group 7 to the node at `addr` through `conns` (each must succeed); the
/// pool's counters after them.
async fn three_votes(conns: &Connections, addr: &str, opt: &RPCOption) -> TransportCounts {
    let mut net = NetworkFactory::new(2, 7, conns.clone())
        .new_client(1, &BasicNode::new(addr))
        .await;
    for _ in 0..3 {
        net.vote(VoteRequest::new(Vote::new(1u64, 2u64), None), opt.clone())
            .await
            .unwrap();
    }
    conns.stats().counts()
}

/// Waits (polling, at most `within`) until `cond` holds.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP relay in front of a node: every accepted connection is forwarded to `target`. It can
/// cut all current connections at once, and freeze (stop forwarding) and thaw.
struct Relay {
    addr: String,
    kill: watch::Sender<u64>,
    paused: watch::Sender<bool>,
    live: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (kill, kill_rx) = watch::channel(0u64);
        let (paused, paused_rx) = watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let live2 = live.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = l.accept().await else {
                    continue;
                };
                let mut kill = kill_rx.clone();
                // Only later cuts end this connection.
                kill.borrow_and_update();
                let paused = paused_rx.clone();
                let live = live2.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    live.fetch_add(1, Ordering::SeqCst);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = async { tokio::join!(pump(ir, ow, paused.clone()), pump(or, iw, paused)) } => {}
                        // Dropping both sockets closes them on both sides.
                        _ = kill.changed() => {}
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay {
            addr,
            kill,
            paused,
            live,
            accept,
        }
    }

    /// Connections being relayed now.
    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Closes every connection relayed now; returns how many there were.
    fn cut(&self) -> usize {
        let n = self.live();
        self.kill.send_modify(|g| *g += 1);
        n
    }

    /// Stops (true) or resumes (false) forwarding bytes, in both directions, on every
    /// connection, current or new.
    fn freeze(&self, frozen: bool) {
        self.paused.send_replace(frozen);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `r` to `w`, holding each chunk back while the relay is frozen.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, mut paused: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = paused.wait_for(|p| !*p).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// A single node hosting `groups`, its own only member; returns it with its address.
async fn single_node(dir: &TempDir, groups: Vec<u64>) -> (MultiRaft, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let peers: BTreeMap<u64, String> = [(1, addr.clone())].into();
    let node = MultiRaft::start(NodeConfig::new(1, peers, dir.path(), groups), l)
        .await
        .unwrap();
    (node, addr)
}

fn vote_payload() -> Bytes {
    Bytes::from(bincode::serialize(&VoteRequest::new(Vote::new(1u64, 2u64), None)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_interleave_on_one_stream_per_peer() {
    let groups: Vec<u64> = (0..12).collect();
    let (c, _) = Cluster::start(groups.clone(), None).await;
    // 12 groups × 30 writes, all groups at once.
    let tasks: Vec<_> = groups
        .iter()
        .map(|&g| {
            let handles = c.handles.clone();
            tokio::spawn(async move {
                let mut model = BTreeMap::new();
                for i in 0..30 {
                    let (k, v) = (format!("k{i:03}"), format!("g{g}-v{i}"));
                    write(&handles, g, &k, &v).await;
                    model.insert(k, v);
                }
                (g, model)
            })
        })
        .collect();
    let mut models = BTreeMap::new();
    for t in tasks {
        let (g, model) = t.await.unwrap();
        models.insert(g, model);
    }
    c.check(models).await;

    let callers: Vec<TransportCounts> = [1, 2, 3].map(|id| c.caller_counts(id)).to_vec();
    let callees: Vec<TransportCounts> = [1, 2, 3].map(|id| c.callee_counts(id)).to_vec();
    for (id, k) in [1, 2, 3].iter().zip(&callers) {
        // One stream per peer (two peers), and a little room for a reconnect.
        assert!(
            k.streams_opened <= 4,
            "node {id} opened {} streams for 2 peers: {k:?}",
            k.streams_opened
        );
    }
    let out = sum(callers);
    let served = sum(callees);
    eprintln!("many_groups: outgoing {out:?}; served {served:?}");
    assert!(
        out.streams_opened >= 2,
        "the leader streams to both peers: {out:?}"
    );
    assert!(out.streams_opened <= 12, "≤ 2 per ordered pair: {out:?}");
    // The server counts a stream when it starts serving it, before the caller sees it open.
    assert!(
        served.streams_opened >= out.streams_opened && served.streams_opened <= 12,
        "served {served:?}"
    );
    assert!(
        out.messages_sent > out.frames_sent,
        "some frames carried several messages: {out:?}"
    );
    assert!(
        served.messages_sent > served.frames_sent,
        "some reply frames carried several replies: {served:?}"
    );
    assert_eq!(out.unary_calls, 0, "no snapshots, nothing unary: {out:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restarted_mid_stream() {
    let groups: Vec<u64> = (0..4).collect();
    let (mut c, _) = Cluster::start(groups.clone(), None).await;
    // A node that leads none of the groups (usually the bootstrapping node 1 leads them all);
    // else the one leading the fewest, and only the groups it does not lead are written.
    let mut led: BTreeMap<u64, usize> = [(1, 0), (2, 0), (3, 0)].into();
    let mut leaders = BTreeMap::new();
    for &g in &groups {
        let l = wait_leader(&c.handles, g).await;
        *led.get_mut(&l).unwrap() += 1;
        leaders.insert(g, l);
    }
    let victim = *led.iter().rev().min_by_key(|(_, n)| **n).unwrap().0;
    let written: Vec<u64> = groups
        .iter()
        .copied()
        .filter(|g| leaders[g] != victim)
        .collect();
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != victim).collect();
    let opened = |c: &Cluster| -> u64 {
        survivors
            .iter()
            .map(|&i| c.caller_counts(i).streams_opened)
            .sum()
    };

    let load = Load::start(&c.handles, &written);
    load.acked.wait_for(20, "before the restart").await;
    let before_stop = opened(&c);
    c.stop(victim).await;
    let n = load.acked.count();
    load.acked.wait_for(n + 20, "while the peer is down").await;
    c.restart(victim).await;
    let n = load.acked.count();
    load.acked.wait_for(n + 30, "after the restart").await;
    // The survivors reach the restarted node over new streams.
    wait_until(WAIT, "the survivors open new streams", || {
        opened(&c) > before_stop
    })
    .await;
    wait_until(WAIT, "the restarted node serves streams", || {
        c.callee_counts(victim).streams_opened >= 1
    })
    .await;
    let models = load.stop().await;
    eprintln!(
        "peer_restarted_mid_stream: node {victim} restarted; survivors opened {before_stop} \
         streams before, {} after; {} writes acked",
        opened(&c),
        models.values().map(|m| m.len()).sum::<usize>()
    );
    assert_eq!(
        models.len(),
        written.len(),
        "every written group acknowledged writes"
    );
    // Every acknowledged write is on all three nodes, the restarted one included.
    c.check(models).await;
    let out = sum(survivors.iter().map(|&i| c.caller_counts(i)));
    assert_eq!(out.unary_calls, 0, "{out:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_lost_with_the_connection() {
    let groups: Vec<u64> = (0..4).collect();
    let (c, relay) = Cluster::start(groups.clone(), Some(3)).await;
    let relay = relay.unwrap();
    let load = Load::start(&c.handles, &groups);
    let all_led_by_3 = || {
        groups
            .iter()
            .all(|&g| leader_of(&c.handles, g).is_some_and(|(id, _)| id == 3))
    };

    // Cut every connection into node 3 several times, each time after more writes went
    // through and its peers reconnected.
    let mut killed = 0;
    for round in 0..4 {
        let n = load.acked.count();
        load.acked
            .wait_for(n + 10, &format!("before cut {round}"))
            .await;
        wait_until(WAIT, "a peer connects through the relay", || {
            relay.live() >= 1 || all_led_by_3()
        })
        .await;
        killed += relay.cut();
    }
    assert!(killed >= 1, "the cuts hit live connections");
    let n = load.acked.count();
    load.acked.wait_for(n + 20, "after the cuts").await;
    wait_until(WAIT, "node 3's peers reconnect", || {
        c.callee_counts(3).streams_opened >= 2
    })
    .await;

    // Frozen: the relay holds every byte for 1.5 s. Calls into node 3 time out meanwhile.
    let frozen_at = Instant::now();
    relay.freeze(true);
    let conns = Connections::default();
    let mut probe = NetworkFactory::new(9, groups[0], conns.clone())
        .new_client(3, &BasicNode::new(&relay.addr))
        .await;
    let opt = RPCOption::new(Duration::from_millis(500));
    let t = Instant::now();
    // A vote of a stale term: refused, no effect on the group.
    let e = probe
        .vote(VoteRequest::new(Vote::new(0u64, 9u64), None), opt.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Timeout(_)), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let during = load.acked.count();
    tokio::time::sleep_until(frozen_at + Duration::from_millis(1500)).await;
    relay.freeze(false);
    let n = load.acked.count();
    load.acked.wait_for(n + 20, "after the freeze").await;
    // The probe's stream comes through once the relay forwards again.
    let t = Instant::now();
    let deadline = t + WAIT;
    loop {
        match probe
            .vote(VoteRequest::new(Vote::new(0u64, 9u64), None), opt.clone())
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "probe after the freeze: {e:?}"),
        }
    }
    let models = load.stop().await;
    eprintln!(
        "frames_lost_with_the_connection: {killed} connections cut, node 3 served {} streams, \
         {n} writes acked when the freeze ended ({during} when the probe timed out), {} in all",
        c.callee_counts(3).streams_opened,
        models.values().map(|m| m.len()).sum::<usize>()
    );
    assert_eq!(models.len(), groups.len());
    c.check(models).await;
    c.stop_all().await;
    drop(relay);
}

/// Reads reply frames until every call of `ids` has its reply, or panics after a deadline.
async fn replies(inbound: &mut Streaming<RaftFrame>, ids: &[u64]) -> HashMap<u64, RaftMessage> {
    let mut got = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ids.iter().any(|id| !got.contains_key(id)) {
        let frame = tokio::time::timeout_at(deadline, inbound.message())
            .await
            .expect("replies within 5 s")
            .expect("the stream did not fail")
            .expect("the stream did not end");
        for m in frame.messages {
            assert!(ids.contains(&m.call_id), "unexpected reply {m:?}");
            assert!(got.insert(m.call_id, m).is_none(), "one reply per call");
        }
    }
    got
}

fn msg(call_id: u64, group_id: u64, kind: i32, payload: Bytes) -> RaftMessage {
    RaftMessage {
        call_id,
        group_id,
        kind,
        payload,
        ..Default::default()
    }
}

fn assert_vote_ok(m: &RaftMessage) {
    assert_eq!(m.code, 0, "{m:?}");
    let res: Result<VoteResponse<u64>, RaftError<u64>> = bincode::deserialize(&m.payload).unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_added_and_removed_under_a_running_stream() {
    let dir = TempDir::new().unwrap();
    let (node, addr) = single_node(&dir, vec![7]).await;
    let registry = node.registry().clone();
    let mut client = RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel::<RaftFrame>();
    let outbound = futures::stream::unfold(rx, |mut rx| async move {
        let f = rx.recv().await?;
        Some((f, rx))
    });
    let mut inbound = client
        .stream(Request::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let vote = RaftMessageKind::Vote as i32;
    let append = RaftMessageKind::AppendEntries as i32;

    // One frame: a good vote, an unknown group, an undecodable payload, an unknown kind.
    tx.send(RaftFrame {
        messages: vec![
            msg(1, 7, vote, vote_payload()),
            msg(2, 99, vote, vote_payload()),
            msg(3, 7, append, Bytes::from_static(b"\x01")),
            msg(4, 7, 42, vote_payload()),
        ],
    })
    .unwrap();
    let got = replies(&mut inbound, &[1, 2, 3, 4]).await;
    assert_vote_ok(&got[&1]);
    assert_eq!(got[&1].group_id, 7);
    assert_eq!(got[&2].code, Code::NotFound as i32, "{:?}", got[&2]);
    assert!(got[&2].error.contains("99"), "{:?}", got[&2]);
    assert_eq!(got[&2].group_id, 99);
    assert_eq!(got[&3].code, Code::InvalidArgument as i32, "{:?}", got[&3]);
    assert_eq!(got[&4].code, Code::InvalidArgument as i32, "{:?}", got[&4]);
    assert!(got[&4].error.contains("42"), "{:?}", got[&4]);

    // The group goes away under the open stream...
    let raft = registry.remove(7).unwrap().expect("group 7 was hosted");
    assert!(registry.group_ids().is_empty());
    tx.send(RaftFrame {
        messages: vec![msg(5, 7, vote, vote_payload())],
    })
    .unwrap();
    let got = replies(&mut inbound, &[5]).await;
    assert_eq!(got[&5].code, Code::NotFound as i32, "{:?}", got[&5]);
    assert!(got[&5].error.contains('7'), "{:?}", got[&5]);

    // ...and comes back: the same stream reaches it again.
    registry.insert(7, raft).unwrap();
    tx.send(RaftFrame {
        messages: vec![msg(6, 7, vote, vote_payload())],
    })
    .unwrap();
    let got = replies(&mut inbound, &[6]).await;
    assert_vote_ok(&got[&6]);
    let (_, served) = node.handle().transport_counts();
    assert_eq!(served.streams_opened, 1, "all on one stream: {served:?}");
    assert_eq!(served.messages_received, 6, "{served:?}");
    assert_eq!(served.frames_received, 3, "{served:?}");

    // Shutting the node down ends the stream promptly, though the caller keeps its side open.
    let shutdown = tokio::spawn(node.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(3), inbound.message())
        .await
        .expect("the stream ends within 3 s of the shutdown");
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "no more replies after the shutdown: {end:?}"
    );
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap()
        .unwrap();
    drop(tx);
}

/// A node of a version before the stream: the unary calls only.
struct OldServer {
    inner: RaftServer,
}

#[tonic::async_trait]
impl RaftService for OldServer {
    async fn vote(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, Status> {
        RaftService::vote(&self.inner, request).await
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, Status> {
        RaftService::append_entries(&self.inner, request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, Status> {
        RaftService::install_snapshot(&self.inner, request).await
    }

    type StreamStream = ReplyStream;

    async fn stream(
        &self,
        _request: Request<Streaming<RaftFrame>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("this node predates the raft stream"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_unary_for_a_peer_without_the_stream() {
    let dir = TempDir::new().unwrap();
    let (node, addr) = single_node(&dir, vec![7]).await;
    let old_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old_l.local_addr().unwrap().to_string();
    let old = OldServer {
        inner: RaftServer::new(node.registry().clone()),
    };
    let old_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(old))
            .serve_with_incoming(TcpIncoming::from(old_l)),
    );
    let opt = RPCOption::new(Duration::from_secs(2));

    // The stream is refused with UNIMPLEMENTED: the call goes unary and succeeds, and so do
    // the next ones, without trying the stream again.
    let conns = Connections::default();
    let k = three_votes(&conns, &old_addr, &opt).await;
    assert!(k.unary_calls >= 3, "{k:?}");
    assert_eq!(k.streams_opened, 0, "{k:?}");
    assert_eq!(k.frames_sent, 0, "{k:?}");

    // TransportMode::Unary against a node that serves the stream: unary calls only.
    let conns = Connections::default().with_transport(TransportMode::Unary);
    assert_eq!(conns.transport(), TransportMode::Unary);
    let k = three_votes(&conns, &addr, &opt).await;
    assert_eq!(k.unary_calls, 3, "{k:?}");
    assert_eq!(k.streams_opened, 0, "{k:?}");
    assert_eq!(k.frames_sent, 0, "{k:?}");
    let (_, served) = node.handle().transport_counts();
    assert_eq!(
        served.streams_opened, 0,
        "the node served no stream: {served:?}"
    );

    old_server.abort();
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_error_mapping() {
    let dir = TempDir::new().unwrap();
    let (node, addr) = single_node(&dir, vec![7]).await;
    let relay = Relay::start(addr.clone()).await;
    let opt = RPCOption::new(Duration::from_millis(500));
    let vote = || VoteRequest::new(Vote::new(1u64, 2u64), None);

    // A hosted group answers over the stream.
    let conns = Connections::default();
    let mut f = NetworkFactory::new(2, 7, conns.clone());
    let mut net = f.new_client(1, &BasicNode::new(&addr)).await;
    net.vote(vote(), opt.clone()).await.unwrap();
    let k = conns.stats().counts();
    assert_eq!((k.streams_opened, k.unary_calls), (1, 0), "{k:?}");

    // An unknown group (NOT_FOUND on the stream) is Unreachable, on the same stream.
    let mut f8 = NetworkFactory::new(2, 8, conns.clone());
    let mut net8 = f8.new_client(1, &BasicNode::new(&addr)).await;
    let e = net8.vote(vote(), opt.clone()).await.unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    net.vote(vote(), opt.clone()).await.unwrap();
    assert_eq!(conns.stats().counts().streams_opened, 1);

    // A closed port is Unreachable.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut net = f.new_client(3, &BasicNode::new(&closed_addr)).await;
    let e = net.vote(vote(), opt.clone()).await.unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");

    // A frozen node: a stream opened before the freeze, and one that cannot even open, both
    // time out within the call's time — no hang, no other error.
    let relayed = Connections::default();
    let mut net = NetworkFactory::new(2, 7, relayed.clone())
        .new_client(1, &BasicNode::new(&relay.addr))
        .await;
    net.vote(vote(), opt.clone()).await.unwrap();
    relay.freeze(true);
    for what in ["open stream", "fresh connection"] {
        let mut client = if what == "open stream" {
            NetworkFactory::new(2, 7, relayed.clone())
                .new_client(1, &BasicNode::new(&relay.addr))
                .await
        } else {
            NetworkFactory::new(2, 7, Connections::default())
                .new_client(1, &BasicNode::new(&relay.addr))
                .await
        };
        let t = Instant::now();
        let e = client.vote(vote(), opt.clone()).await.unwrap_err();
        let took = t.elapsed();
        match &e {
            RPCError::Timeout(t) => assert_eq!(t.target, 1, "{e:?}"),
            other => panic!("{what}: expected a timeout, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
            "{what}: timed out after {took:?}, the ttl is 500 ms"
        );
    }
    // Thawed, the open stream carries calls again.
    relay.freeze(false);
    let deadline = Instant::now() + WAIT;
    while let Err(e) = net.vote(vote(), opt.clone()).await {
        assert!(Instant::now() < deadline, "after the thaw: {e:?}");
    }
    assert_eq!(
        relayed.stats().counts().streams_opened,
        1,
        "the stream survived the freeze"
    );

    drop(relay);
    node.shutdown().await.unwrap();
}
