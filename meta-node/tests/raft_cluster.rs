//! The Raft transport and `MultiRaft`: three nodes in one process on loopback, three groups,
//! leader failover, restarts, no re-initialization, catch-up by snapshot, and the transport's
//! status codes and error mapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dogfs_meta::raft::node::default_raft_config;
use dogfs_meta::raft::{
    Command, Connections, Key, MultiRaft, NetworkFactory, NodeConfig, NodeError, Response,
    TypeConfig, Write,
};
use dogfs_proto::raft::RaftRequest;
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{InstallSnapshotRequest, VoteRequest};
use openraft::storage::SnapshotMeta;
use openraft::{BasicNode, ServerState, SnapshotPolicy, StoredMembership, Vote};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::time::Instant;

const GROUPS: [u64; 3] = [0, 1, 2];
const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    dirs: BTreeMap<u64, TempDir>,
    addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, MultiRaft>,
    snapshot_every: u64,
}

fn key(k: &str) -> Key {
    Key::new("object", k.as_bytes())
}

fn put(k: &str, v: &str) -> Command {
    Command::writes(vec![Write::Put(key(k), v.as_bytes().to_vec())])
}

impl Cluster {
    async fn start(snapshot_every: u64) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
            dirs.insert(id, TempDir::new().unwrap());
        }
        let mut c = Cluster {
            dirs,
            addrs,
            nodes: BTreeMap::new(),
            snapshot_every,
        };
        for (id, l) in listeners {
            c.start_node_on(id, l).await;
        }
        c
    }

    fn config(&self, id: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(
            id,
            self.addrs.clone(),
            self.dirs[&id].path().join("data"),
            GROUPS.to_vec(),
        );
        cfg.raft = openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 2,
            purge_batch_size: 1,
            ..default_raft_config()
        };
        cfg
    }

    async fn start_node_on(&mut self, id: u64, l: TcpListener) {
        let node = MultiRaft::start(self.config(id), l).await.unwrap();
        self.nodes.insert(id, node);
    }

    async fn restart(&mut self, id: u64) {
        let l = TcpListener::bind(&self.addrs[&id]).await.unwrap();
        self.start_node_on(id, l).await;
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    async fn initialize_all(&self) -> BTreeMap<u64, Vec<u64>> {
        let mut out = BTreeMap::new();
        for (id, n) in &self.nodes {
            out.insert(*id, n.initialize(&self.addrs).await.unwrap());
        }
        out
    }

    /// Waits until a running node leads `group` and says so itself.
    async fn leader(&self, group: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, any) = self.nodes.iter().next().unwrap();
            let left = deadline.saturating_duration_since(Instant::now());
            let m = any
                .raft(group)
                .unwrap()
                .wait(Some(left))
                .metrics(
                    |m| {
                        m.current_leader
                            .is_some_and(|l| self.nodes.contains_key(&l))
                    },
                    "a running leader",
                )
                .await
                .unwrap();
            let l = m.current_leader.unwrap();
            let left = deadline.saturating_duration_since(Instant::now());
            let ok = self.nodes[&l]
                .raft(group)
                .unwrap()
                .wait(Some(left.min(Duration::from_secs(2))))
                .state(ServerState::Leader, "leader says so")
                .await;
            if ok.is_ok() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader for group {group}");
        }
    }

    /// Writes through the group's current leader, retrying across leader changes; returns
    /// the entry's index.
    async fn write(&self, group: u64, k: &str, v: &str) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let l = self.leader(group).await;
            match self.nodes[&l].client_write(group, put(k, v)).await {
                Ok(Response::Applied { version }) => return version,
                Ok(other) => panic!("unexpected response {other:?}"),
                Err(e @ NodeError::NotLeader { .. }) | Err(e @ NodeError::ClientWrite { .. }) => {
                    assert!(Instant::now() < deadline, "write failed: {e}");
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// Waits until every running node applied `index` in `group`.
    async fn wait_applied(&self, group: u64, index: u64) {
        for (id, n) in &self.nodes {
            n.raft(group)
                .unwrap()
                .wait(Some(WAIT))
                .applied_index_at_least(Some(index), &format!("node {id} group {group} applied"))
                .await
                .unwrap();
        }
    }

    /// Checks every running node holds exactly `model`'s values in `group`.
    fn check(&self, group: u64, model: &BTreeMap<String, String>) {
        for (id, n) in &self.nodes {
            let r = n.reader(group).unwrap();
            for (k, v) in model {
                let got = r.get(&key(k)).unwrap();
                assert_eq!(
                    got.map(|g| g.value),
                    Some(v.as_bytes().to_vec()),
                    "node {id} group {group} key {k}"
                );
            }
            let all = r.list("object", b"", None, usize::MAX).unwrap();
            assert_eq!(all.len(), model.len(), "node {id} group {group} key count");
        }
    }
}

/// Writes `n` keys to every group, waits for all nodes, checks all models.
async fn write_round(
    c: &Cluster,
    models: &mut BTreeMap<u64, BTreeMap<String, String>>,
    round: &str,
    n: usize,
) {
    for g in GROUPS {
        let mut last = 0;
        for i in 0..n {
            let (k, v) = (format!("{round}-{i}"), format!("g{g}-{round}-{i}"));
            last = c.write(g, &k, &v).await;
            models.entry(g).or_default().insert(k, v);
        }
        c.wait_applied(g, last).await;
        c.check(g, &models[&g]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_three_groups_failover_restart() {
    let mut c = Cluster::start(10_000).await;
    let init = c.initialize_all().await;
    assert_eq!(
        init[&1],
        GROUPS.to_vec(),
        "the lowest id initializes every group"
    );
    assert!(init[&2].is_empty() && init[&3].is_empty());
    // One channel per peer, shared by all groups.
    let mut models = BTreeMap::new();
    write_round(&c, &mut models, "a", 10).await;
    for n in c.nodes.values() {
        assert!(
            n.connections().len() <= 2,
            "at most one pooled channel per peer"
        );
    }
    let l = c.leader(0).await;
    assert_eq!(
        c.nodes[&l].connections().len(),
        2,
        "a leader talks to both peers"
    );
    // Initializing again is a no-op.
    assert!(c.initialize_all().await.values().all(|v| v.is_empty()));

    // Stop the leader of group 1: a new leader is elected, writes continue in every group.
    let victim = c.leader(1).await;
    c.stop(victim).await;
    let new_leader = c.leader(1).await;
    assert_ne!(new_leader, victim);
    write_round(&c, &mut models, "b", 10).await;

    // The old leader restarts from its directories and catches up.
    c.restart(victim).await;
    write_round(&c, &mut models, "c", 5).await;

    // Everything restarts: data kept, nothing re-initialized.
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
    for id in [1, 2, 3] {
        c.restart(id).await;
    }
    let init = c.initialize_all().await;
    assert!(
        init.values().all(|v| v.is_empty()),
        "re-initialized: {init:?}"
    );
    for g in GROUPS {
        c.leader(g).await;
        // The state machines are back at once (sled), before any new write.
        let last = c.write(g, "after-restart", "x").await;
        models
            .get_mut(&g)
            .unwrap()
            .insert("after-restart".into(), "x".into());
        c.wait_applied(g, last).await;
        c.check(g, &models[&g]);
    }
    write_round(&c, &mut models, "d", 3).await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_rejoins_by_snapshot() {
    let mut c = Cluster::start(10).await;
    c.initialize_all().await;
    let mut models = BTreeMap::new();
    write_round(&c, &mut models, "a", 5).await;

    // Stop node 3 and wipe it.
    c.stop(3).await;
    let dir = c.dirs[&3].path().join("data");
    std::fs::remove_dir_all(&dir).unwrap();
    // Enough writes for snapshots and purges on the others.
    write_round(&c, &mut models, "b", 30).await;
    for g in GROUPS {
        let l = c.leader(g).await;
        c.nodes[&l]
            .raft(g)
            .unwrap()
            .wait(Some(WAIT))
            .metrics(|m| m.purged.is_some(), "leader purged its log")
            .await
            .unwrap();
    }

    // It restarts empty (and is not the lowest id, so it does not initialize).
    c.restart(3).await;
    assert!(c.nodes[&3].initialize(&c.addrs).await.unwrap().is_empty());
    for g in GROUPS {
        let m = c.nodes[&3]
            .raft(g)
            .unwrap()
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some(), "node 3 installed a snapshot")
            .await
            .unwrap();
        assert!(m.snapshot.is_some());
    }
    write_round(&c, &mut models, "c", 3).await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_status_codes_and_error_mapping() {
    let dir = TempDir::new().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let peers: BTreeMap<u64, String> = [(1, addr.clone())].into();
    let node = MultiRaft::start(NodeConfig::new(1, peers, dir.path(), vec![7]), l)
        .await
        .unwrap();

    let mut client = RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let vote = bincode::serialize(&VoteRequest::new(Vote::new(1u64, 2u64), None)).unwrap();
    // Unknown group.
    let st = client
        .vote(RaftRequest {
            group_id: 99,
            payload: Bytes::from(vote.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound, "{st:?}");
    assert!(st.message().contains("99"));
    // Undecodable payload.
    let st = client
        .append_entries(RaftRequest {
            group_id: 7,
            payload: Bytes::from_static(b"\x01"),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    // A good request gets openraft's Result back.
    let reply = client
        .vote(RaftRequest {
            group_id: 7,
            payload: Bytes::from(vote.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let res: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        bincode::deserialize(&reply.payload).unwrap();
    assert!(res.is_ok(), "{res:?}");

    // Through the network factory: a hosted group answers, an unknown group and a closed port
    // are Unreachable (never RemoteError).
    let conns = Connections::default();
    let opt = RPCOption::new(Duration::from_secs(2));
    let mut f = NetworkFactory::new(2, 7, conns.clone());
    let mut net = f.new_client(1, &BasicNode::new(&addr)).await;
    net.vote(VoteRequest::new(Vote::new(2u64, 2u64), None), opt.clone())
        .await
        .unwrap();
    // An error of the remote Raft itself is a RemoteError: a snapshot chunk at offset 10 of a
    // snapshot whose stream never started.
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new(2u64, 2u64),
        meta: SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "nope".into(),
        },
        offset: 10,
        data: vec![1, 2, 3],
        done: false,
    };
    let e = net.install_snapshot(chunk, opt.clone()).await.unwrap_err();
    match e {
        RPCError::RemoteError(r) => {
            assert_eq!(r.target, 1);
            assert!(
                matches!(
                    r.source,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_))
                ),
                "{r:?}"
            );
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let mut f = NetworkFactory::new(2, 8, conns.clone());
    let mut net = f.new_client(1, &BasicNode::new(&addr)).await;
    let e = net
        .vote(VoteRequest::new(Vote::new(2u64, 2u64), None), opt.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    assert_eq!(conns.len(), 1, "two groups, one channel");

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut net = f.new_client(3, &BasicNode::new(&closed_addr)).await;
    let e = net
        .vote(VoteRequest::new(Vote::new(2u64, 2u64), None), opt.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    let mut net = f.new_client(4, &BasicNode::new("not a uri\u{0}")).await;
    let e = net
        .vote(VoteRequest::new(Vote::new(2u64, 2u64), None), opt)
        .await
        .unwrap_err();
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");

    node.shutdown().await.unwrap();
}
