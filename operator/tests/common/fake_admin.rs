//! A recorded fake of the metadata service's admin API with the semantics the operator relies
//! on: a drain moves shards off a server a few per `ListNodes` (each to an up server that holds
//! no shard of that segment), `RemoveNode` is refused until the server is empty, a removed id is
//! never reused (a server that comes back registers under a new id), a new server registers one
//! pod sync after its pod appears, and a rebalance moves shards onto emptier servers over calls.
//!
//! It also models the data: segments of k+m shards on distinct servers. A server's shards are
//! only available while its pod runs, so a StatefulSet shrunk past a server that still holds
//! shards shows up as segments short of shards; [`FakeAdmin::losses`] records every such
//! moment, and the flow tests assert it stays empty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use dogfs_operator::admin::{
    Admin, Connector, Drain, Error, Failure, Health, Node, NodeState, Rebalance, RebalanceState,
};
use dogfs_operator::build::Names;
use futures::future::BoxFuture;

/// Bytes per shard in the model.
pub const SHARD_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct FakeNode {
    id: String,
    ordinal: i32,
    registered_unix: i64,
    draining: bool,
    surveyed: bool,
    removed: bool,
    moved: u64,
}

#[derive(Debug)]
struct State {
    names: Names,
    k: usize,
    m: usize,
    nodes: Vec<FakeNode>,
    /// Per segment, the ids of the servers holding its shards.
    segments: Vec<Vec<String>>,
    /// Chunk pods that run now.
    pods: BTreeSet<i32>,
    /// Pods that appeared at the last sync and register at the next.
    starting: BTreeSet<i32>,
    next_id: u32,
    clock: i64,
    moves_per_poll: usize,
    rebalance: Rebalance,
    /// Every call that changes something, in order: `DrainNode node-7` …
    calls: Vec<String>,
    /// Every moment the data was short of shards, with why.
    losses: Vec<String>,
    /// While set, every call fails with this.
    failing: Option<Failure>,
    /// The CA bundle the operator handed the connector at each connect (`None`: plaintext).
    connections: Vec<Option<String>>,
    /// The admin token each connect was given.
    tokens: Vec<Option<String>>,
}

/// The fake; clones share the same cluster.
#[derive(Debug, Clone)]
pub struct FakeAdmin(Arc<Mutex<State>>);

impl FakeAdmin {
    /// `servers` chunk servers (ordinals 0..servers), all registered and up, holding
    /// `segments` segments of k+m shards spread round-robin.
    pub fn new(names: Names, k: usize, m: usize, servers: i32, segments: usize) -> FakeAdmin {
        let mut state = State {
            names,
            k,
            m,
            nodes: Vec::new(),
            segments: Vec::new(),
            pods: (0..servers).collect(),
            starting: BTreeSet::new(),
            next_id: 0,
            clock: 1_000,
            moves_per_poll: 4,
            rebalance: Rebalance::default(),
            calls: Vec::new(),
            losses: Vec::new(),
            failing: None,
            connections: Vec::new(),
            tokens: Vec::new(),
        };
        for ordinal in 0..servers {
            state.register(ordinal);
        }
        let ids: Vec<String> = state.nodes.iter().map(|n| n.id.clone()).collect();
        for s in 0..segments {
            let holders = (0..k + m)
                .map(|i| ids[(s + i) % ids.len()].clone())
                .collect();
            state.segments.push(holders);
        }
        FakeAdmin(Arc::new(Mutex::new(state)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Shards moved per draining server per `ListNodes`.
    pub fn set_moves_per_poll(&self, n: usize) {
        self.lock().moves_per_poll = n;
    }

    /// Every call fails with `failure` (`None`: answers again).
    pub fn set_failing(&self, failure: Option<Failure>) {
        self.lock().failing = failure;
    }

    /// Marks a server's pod as not running (down) without touching the StatefulSet.
    pub fn stop_pod(&self, ordinal: i32) {
        let mut s = self.lock();
        s.pods.remove(&ordinal);
        s.check(&format!("pod {ordinal} stopped"));
    }

    /// What the StatefulSet controller did: these chunk pods exist now. New pods register at
    /// the next sync; a server whose pod went away stops serving its shards.
    pub fn sync_pods(&self, pods: &BTreeSet<i32>) {
        let mut s = self.lock();
        let ready: Vec<i32> = s.starting.intersection(pods).copied().collect();
        for ordinal in ready {
            s.register(ordinal);
        }
        let new: BTreeSet<i32> = pods
            .iter()
            .copied()
            .filter(|o| !s.pods.contains(o) && !s.starting.contains(o))
            .collect();
        s.pods = pods.difference(&new).copied().collect();
        s.starting = new;
        s.check("pods synced");
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The CA bundle given with each connect, in order (`None`: a plaintext connection).
    pub fn connections(&self) -> Vec<Option<String>> {
        self.lock().connections.clone()
    }

    pub fn tokens(&self) -> Vec<Option<String>> {
        self.lock().tokens.clone()
    }

    pub fn losses(&self) -> Vec<String> {
        self.lock().losses.clone()
    }

    /// The registry id of the server at `ordinal` (the latest, not removed).
    pub fn id_of(&self, ordinal: i32) -> Option<String> {
        self.lock().live(ordinal).map(|n| n.id.clone())
    }

    /// Shards held per live ordinal.
    pub fn shards_per_ordinal(&self) -> BTreeMap<i32, usize> {
        let s = self.lock();
        s.nodes
            .iter()
            .filter(|n| !n.removed)
            .map(|n| (n.ordinal, s.held(&n.id)))
            .collect()
    }

    /// The fewest available shards of any segment (k+m when nothing is missing).
    pub fn min_available(&self) -> usize {
        let s = self.lock();
        s.segments
            .iter()
            .map(|holders| s.available(holders))
            .min()
            .unwrap_or(s.k + s.m)
    }
}

impl State {
    fn register(&mut self, ordinal: i32) {
        // A removed server's id is never reused: it comes back under a new one.
        if let Some(n) = self
            .nodes
            .iter_mut()
            .find(|n| n.ordinal == ordinal && !n.removed)
        {
            n.registered_unix = self.clock;
            return;
        }
        self.next_id += 1;
        self.clock += 1;
        self.nodes.push(FakeNode {
            id: format!("node-{}", self.next_id),
            ordinal,
            registered_unix: self.clock,
            draining: false,
            surveyed: false,
            removed: false,
            moved: 0,
        });
    }

    fn live(&self, ordinal: i32) -> Option<&FakeNode> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.ordinal == ordinal && !n.removed)
    }

    fn node(&self, id: &str) -> Option<&FakeNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn running(&self, id: &str) -> bool {
        self.node(id)
            .is_some_and(|n| !n.removed && self.pods.contains(&n.ordinal))
    }

    fn held(&self, id: &str) -> usize {
        self.segments
            .iter()
            .filter(|h| h.iter().any(|x| x == id))
            .count()
    }

    fn available(&self, holders: &[String]) -> usize {
        holders.iter().filter(|id| self.running(id)).count()
    }

    /// Records any segment short of shards.
    fn check(&mut self, when: &str) {
        let full = self.k + self.m;
        let short: Vec<String> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, h)| self.available(h) < full)
            .map(|(i, h)| format!("segment {i}: {}/{full}", self.available(h)))
            .collect();
        if !short.is_empty() {
            self.losses.push(format!("{when}: {}", short.join(", ")));
        }
    }

    fn eligible(&self, holders: &[String]) -> Option<String> {
        // The emptiest up server that holds no shard of the segment.
        self.nodes
            .iter()
            .filter(|n| !n.removed && !n.draining && self.pods.contains(&n.ordinal))
            .filter(|n| !holders.contains(&n.id))
            .min_by_key(|n| (self.held(&n.id), n.ordinal))
            .map(|n| n.id.clone())
    }

    /// One round of the mover: drains, then the rebalance.
    fn tick(&mut self) {
        self.clock += 1;
        let draining: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.draining && !n.removed)
            .map(|n| n.id.clone())
            .collect();
        for id in draining {
            let mut moved = 0;
            for seg in 0..self.segments.len() {
                if moved == self.moves_per_poll {
                    break;
                }
                let Some(pos) = self.segments[seg].iter().position(|x| *x == id) else {
                    continue;
                };
                if let Some(target) = self.eligible(&self.segments[seg].clone()) {
                    self.segments[seg][pos] = target;
                    moved += 1;
                }
            }
            if let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) {
                n.surveyed = true;
                n.moved += moved as u64;
            }
        }
        if self.rebalance.state == RebalanceState::Running {
            let mut moved = 0;
            while moved < self.moves_per_poll {
                let live: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| !n.removed && !n.draining && self.pods.contains(&n.ordinal))
                    .map(|n| n.id.clone())
                    .collect();
                let Some(full) = live.iter().max_by_key(|id| self.held(id)).cloned() else {
                    break;
                };
                let Some(empty) = live.iter().min_by_key(|id| self.held(id)).cloned() else {
                    break;
                };
                if self.held(&full) <= self.held(&empty) + 1 {
                    self.rebalance.state = RebalanceState::Done;
                    self.rebalance.bytes_planned = 0;
                    break;
                }
                let Some(seg) = self
                    .segments
                    .iter()
                    .position(|h| h.contains(&full) && !h.contains(&empty))
                else {
                    self.rebalance.state = RebalanceState::Done;
                    break;
                };
                let pos = self.segments[seg].iter().position(|x| *x == full).unwrap();
                self.segments[seg][pos] = empty;
                moved += 1;
                self.rebalance.shards_moved += 1;
                self.rebalance.bytes_moved += SHARD_BYTES;
            }
            if self.rebalance.state == RebalanceState::Running {
                self.rebalance.bytes_planned = SHARD_BYTES;
            }
        }
        self.check("mover round");
    }

    fn node_view(&self, n: &FakeNode) -> Node {
        let held = self.held(&n.id) as u64;
        let state = if n.removed {
            NodeState::Removed
        } else if n.draining {
            NodeState::Draining
        } else if self.pods.contains(&n.ordinal) {
            NodeState::Up
        } else {
            NodeState::Down
        };
        Node {
            id: n.id.clone(),
            address: self.names.chunk_address(n.ordinal),
            state,
            registered_unix: n.registered_unix,
            drain: (n.draining && !n.removed).then(|| Drain {
                shards_left: if n.surveyed { held } else { 0 },
                bytes_left: if n.surveyed { held * SHARD_BYTES } else { 0 },
                shards_moved: n.moved,
                bytes_moved: n.moved * SHARD_BYTES,
                shards_stuck: 0,
                failures: 0,
                surveyed: n.surveyed,
            }),
            capacity_bytes: 100 * SHARD_BYTES,
            used_bytes: held * SHARD_BYTES,
        }
    }

    fn fail(&self) -> Option<Failure> {
        self.failing.clone()
    }
}

fn not_found(id: &str) -> Failure {
    Failure::Status {
        code: "NotFound".into(),
        message: format!("no chunk server {id}"),
    }
}

impl Admin for FakeAdmin {
    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, Error>> {
        Box::pin(async move {
            let mut s = self.lock();
            if let Some(f) = s.fail() {
                return Err(Error::ListNodes(f));
            }
            s.tick();
            Ok(s.nodes.iter().map(|n| s.node_view(n)).collect())
        })
    }

    fn rebalance_status(&self) -> BoxFuture<'_, Result<Rebalance, Error>> {
        Box::pin(async move {
            let s = self.lock();
            if let Some(f) = s.fail() {
                return Err(Error::RebalanceStatus(f));
            }
            Ok(s.rebalance.clone())
        })
    }

    fn cluster_health(&self) -> BoxFuture<'_, Result<Health, Error>> {
        Box::pin(async move {
            let s = self.lock();
            if let Some(f) = s.fail() {
                return Err(Error::ClusterStatus(f));
            }
            let full = s.k + s.m;
            let short = s.segments.iter().filter(|h| s.available(h) < full).count() as u64;
            let unreadable = s.segments.iter().filter(|h| s.available(h) < s.k).count() as u64;
            let live = s.nodes.iter().filter(|n| !n.removed).count() as u64;
            let used = (s.segments.len() * full) as u64 * SHARD_BYTES;
            Ok(Health {
                backlog_segments: short,
                unreadable_segments: unreadable,
                waiting_segments: 0,
                capacity_bytes: live * 100 * SHARD_BYTES,
                used_bytes: used,
                available_bytes: (live * 100 * SHARD_BYTES).saturating_sub(used),
            })
        })
    }

    fn drain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let err = |source| Error::DrainNode {
                node: node_id.to_string(),
                source,
            };
            let mut s = self.lock();
            if let Some(f) = s.fail() {
                return Err(err(f));
            }
            s.calls.push(format!("DrainNode {node_id}"));
            let node = s
                .nodes
                .iter_mut()
                .find(|n| n.id == node_id)
                .ok_or_else(|| err(not_found(node_id)))?;
            if node.removed {
                return Err(err(Failure::Refused(format!("{node_id} was removed"))));
            }
            if !node.draining {
                node.draining = true;
                node.surveyed = false;
            }
            Ok(())
        })
    }

    fn undrain_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let err = |source| Error::UndrainNode {
                node: node_id.to_string(),
                source,
            };
            let mut s = self.lock();
            if let Some(f) = s.fail() {
                return Err(err(f));
            }
            s.calls.push(format!("UndrainNode {node_id}"));
            let node = s
                .nodes
                .iter_mut()
                .find(|n| n.id == node_id)
                .ok_or_else(|| err(not_found(node_id)))?;
            if node.removed {
                return Err(err(Failure::Refused(format!("{node_id} was removed"))));
            }
            node.draining = false;
            node.surveyed = false;
            Ok(())
        })
    }

    fn remove_node<'a>(&'a self, node_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let err = |source| Error::RemoveNode {
                node: node_id.to_string(),
                source,
            };
            let mut s = self.lock();
            if let Some(f) = s.fail() {
                return Err(err(f));
            }
            s.calls.push(format!("RemoveNode {node_id}"));
            let node = s
                .node(node_id)
                .cloned()
                .ok_or_else(|| err(not_found(node_id)))?;
            if node.removed {
                return Ok(());
            }
            let held = s.held(node_id);
            if !(node.draining && node.surveyed && held == 0) {
                return Err(err(Failure::Refused(format!(
                    "chunk server {node_id} is not empty: {held} shards left"
                ))));
            }
            if s.pods.contains(&node.ordinal) {
                // The server would re-register under a new id right away: the operator must
                // wait for the pod to stop first.
                s.losses
                    .push(format!("{node_id} removed while its pod still runs"));
            }
            if let Some(n) = s.nodes.iter_mut().find(|n| n.id == node_id) {
                n.removed = true;
            }
            Ok(())
        })
    }

    fn start_rebalance(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut s = self.lock();
            if let Some(f) = s.fail() {
                return Err(Error::StartRebalance(f));
            }
            s.calls.push("Rebalance START".to_string());
            s.rebalance = Rebalance {
                state: RebalanceState::Running,
                reason: "admin".into(),
                shards_moved: 0,
                bytes_moved: 0,
                bytes_planned: 0,
            };
            Ok(())
        })
    }
}

impl Connector for FakeAdmin {
    fn connect(
        &self,
        _names: &Names,
        ca: Option<&str>,
        token: Option<&str>,
    ) -> Result<Arc<dyn Admin>, Error> {
        let mut state = self.lock();
        state.connections.push(ca.map(str::to_string));
        state.tokens.push(token.map(str::to_string));
        drop(state);
        Ok(Arc::new(self.clone()))
    }
}
