//! The chunk-server registry and the cluster config, in the system group (DESIGN §5, §7;
//! `docs/meta-service.md`). Deterministic builders on the Raft KV, like [`crate::catalog`]:
//! read at the leader, build a [`Prepared`] command with conditions, commit.
//!
//! A node's record keeps two independent parts: its **liveness** (up, suspect, down — set by
//! the system group leader's liveness task from heartbeats) and its **admin state** (active,
//! draining, removed — set only by admin calls, so heartbeats never undo a drain).

use dogfs_core::placement::{NodeId, NodeState, NodeView};
use serde::{Deserialize, Serialize};

use crate::catalog::records;
use crate::catalog::{CatalogError, Check, Prepared};
use crate::raft::{Condition, Key, KvReader, KvSpace, Write};

/// System group: node id (16 bytes, big-endian) → [`NodeRecord`].
pub const NODES: &str = "node";
/// System group: `"config"` → [`ClusterConfig`].
pub const CLUSTER: &str = "cluster";
const CONFIG_KEY: &[u8] = b"config";

/// Heartbeat-driven state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Up,
    Suspect,
    Down,
}

/// Operator-driven state; survives heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminState {
    Active,
    Draining,
    Removed,
}

/// Usage as last persisted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub shard_count: u64,
    pub corrupt_shards: u64,
    pub io_errors: u64,
}

impl Usage {
    /// Worth a Raft entry: some counter of errors moved, or used/available bytes moved by more
    /// than 1% of capacity, or the shard count by more than 1%.
    pub fn differs_meaningfully(&self, other: &Usage) -> bool {
        let pct = |a: u64, b: u64, base: u64| a.abs_diff(b) > base / 100;
        let cap = self.capacity_bytes.max(other.capacity_bytes).max(1);
        self.capacity_bytes != other.capacity_bytes
            || self.corrupt_shards != other.corrupt_shards
            || self.io_errors != other.io_errors
            || pct(self.used_bytes, other.used_bytes, cap)
            || pct(self.available_bytes, other.available_bytes, cap)
            || pct(
                self.shard_count,
                other.shard_count,
                self.shard_count.max(other.shard_count).max(100),
            )
    }
}

/// A chunk server in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u128,
    pub address: String,
    /// Empty: no failure domain.
    pub zone: String,
    pub liveness: Liveness,
    pub admin: AdminState,
    pub usage: Usage,
    pub registered_unix: u64,
    /// When the usage was last persisted.
    pub usage_unix: u64,
}

impl NodeRecord {
    /// The one state clients and placement see: removed > down > draining > suspect > up.
    pub fn state(&self) -> NodeState {
        match (self.admin, self.liveness) {
            (AdminState::Removed, _) => NodeState::Removed,
            (_, Liveness::Down) => NodeState::Down,
            (AdminState::Draining, _) => NodeState::Draining,
            (_, Liveness::Suspect) => NodeState::Suspect,
            (AdminState::Active, Liveness::Up) => NodeState::Up,
        }
    }

    /// What placement sees: capacity is `used + available`, so the server's reserve is not room.
    pub fn view(&self) -> NodeView {
        NodeView {
            id: NodeId::from_u128(self.id),
            zone: (!self.zone.is_empty()).then(|| self.zone.clone()),
            state: self.state(),
            capacity_bytes: self
                .usage
                .used_bytes
                .saturating_add(self.usage.available_bytes),
            used_bytes: self.usage.used_bytes,
        }
    }
}

/// Settings fixed when the cluster is bootstrapped (DESIGN §5: P and the partition hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub partitions: u64,
    /// Always `"fnv1a64"` so far.
    pub partition_hash: String,
    pub created_unix: u64,
}

/// The key of a node record.
pub fn node_key(id: u128) -> Key {
    Key::new(NODES, id.to_be_bytes().to_vec())
}

/// The key of the cluster config.
pub fn config_key() -> Key {
    Key::new(CLUSTER, CONFIG_KEY.to_vec())
}

/// The record of a node and its version.
pub fn get_node<S: KvSpace>(
    system: &KvReader<S>,
    id: u128,
) -> Result<Option<(NodeRecord, u64)>, CatalogError> {
    system
        .get(&node_key(id))?
        .map(|v| Ok((records::decode("node record", &v.value)?, v.version)))
        .transpose()
}

/// Every node record, in id order.
pub fn list_nodes<S: KvSpace>(system: &KvReader<S>) -> Result<Vec<NodeRecord>, CatalogError> {
    system
        .list(NODES, b"", None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| records::decode("node record", &v.value))
        .collect()
}

/// The cluster config, once bootstrapped.
pub fn get_config<S: KvSpace>(system: &KvReader<S>) -> Result<Option<ClusterConfig>, CatalogError> {
    system
        .get(&config_key())?
        .map(|v| records::decode("cluster config", &v.value))
        .transpose()
}

/// Records the cluster config once (`Absent`); a second bootstrap attempt fails with `Conflict`.
pub fn init_config(config: &ClusterConfig) -> Result<Prepared, CatalogError> {
    let mut p = Prepared::new("recording the cluster config");
    let key = config_key();
    p.require(Condition::Absent(key.clone()), Check::Unchanged);
    p.write(Write::Put(key, records::encode("cluster config", config)?));
    Ok(p)
}

/// Register: a new record (up, active), or an existing one with a new address, zone and usage,
/// marked up again; its admin state and registration time are kept.
pub fn register<S: KvSpace>(
    system: &KvReader<S>,
    id: u128,
    address: &str,
    zone: &str,
    usage: Usage,
    now_unix: u64,
) -> Result<(Prepared, NodeRecord), CatalogError> {
    let current = get_node(system, id)?;
    let record = match &current {
        Some((r, _)) => NodeRecord {
            address: address.to_owned(),
            zone: zone.to_owned(),
            liveness: Liveness::Up,
            usage,
            usage_unix: now_unix,
            ..r.clone()
        },
        None => NodeRecord {
            id,
            address: address.to_owned(),
            zone: zone.to_owned(),
            liveness: Liveness::Up,
            admin: AdminState::Active,
            usage,
            registered_unix: now_unix,
            usage_unix: now_unix,
        },
    };
    let p = put_node(&record, current.map(|(_, v)| v))?;
    Ok((p, record))
}

/// Rewrites a node's record if `change` changed it: `Ok(None)` when nothing changed,
/// `NoSuchNode` when it is not registered.
pub fn update_node<S: KvSpace>(
    system: &KvReader<S>,
    id: u128,
    change: impl FnOnce(&mut NodeRecord),
) -> Result<Option<(Prepared, NodeRecord)>, RegistryError> {
    let (old, version) = get_node(system, id)?.ok_or(RegistryError::NoSuchNode { id })?;
    let mut new = old.clone();
    change(&mut new);
    if new == old {
        return Ok(None);
    }
    Ok(Some((put_node(&new, Some(version))?, new)))
}

fn put_node(record: &NodeRecord, version: Option<u64>) -> Result<Prepared, CatalogError> {
    let mut p = Prepared::new("updating the chunk server registry");
    let key = node_key(record.id);
    p.require(
        crate::catalog::ops::unchanged(key.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Put(key, records::encode("node record", record)?));
    Ok(p)
}

/// Registry failures beyond the catalogue's.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("chunk server {} is not registered", format_node_id(*.id))]
    NoSuchNode { id: u128 },
    #[error("invalid chunk server id {input:?}: expected 32 hex characters or a hyphenated UUID")]
    InvalidNodeId { input: String },
    #[error("chunk server {} was removed; its id is not reused", format_node_id(*.id))]
    Removed { id: u128 },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Node ids on the wire: 32 lowercase hex characters (meta.proto).
pub fn format_node_id(id: u128) -> String {
    format!("{id:032x}")
}

/// Accepts the 32-hex form and the hyphenated UUID form chunk servers print.
pub fn parse_node_id(input: &str) -> Result<u128, RegistryError> {
    let err = || RegistryError::InvalidNodeId {
        input: input.chars().take(80).collect(),
    };
    if input.len() == 32 {
        if !input.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        return u128::from_str_radix(input, 16).map_err(|_| err());
    }
    input
        .parse::<NodeId>()
        .map(NodeId::as_u128)
        .map_err(|_| err())
}
