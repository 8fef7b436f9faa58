//! The chunk-server registry and the cluster config, in the system group (DESIGN §5, §7;
//! `docs/meta-service.md`). Deterministic builders on the Raft KV, like [`crate::catalog`]:
//! read at the leader, build a [`Prepared`] command with conditions, commit.
//!
//! A node's record keeps two independent parts: its **liveness** (up, suspect, down — set by
//! the system group leader's liveness task from heartbeats) and its **admin state** (active,
//! draining, removed — set only by admin calls, so heartbeats never undo a drain).

pub mod rebalance;

use dogfs_core::placement::{NodeId, NodeState, NodeView};
use serde::{Deserialize, Serialize};

use crate::catalog::records;
use crate::catalog::{CatalogError, Check, Prepared};
use crate::raft::{Condition, Key, KvReader, KvSpace, Write};

/// System group: node id (16 bytes, big-endian) → [`NodeRecord`].
pub const NODES: &str = "node";
/// System group: `"config"` → [`ClusterConfig`].
pub const CLUSTER: &str = "cluster";
/// System group: node id (16 bytes, big-endian) → when the liveness task last marked it down
/// (unix seconds, 8 bytes BE). Kept beside the record (whose encoding is fixed) and only
/// meaningful while the node is down: repair starts `repair_after` later.
pub const DOWN_SINCE: &str = "nodedown";
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
    /// Worth a Raft entry: capacity or some error counter moved, or used bytes, available
    /// bytes or the shard count moved by more than 1% of their own (larger) value.
    ///
    /// Relative to the value itself, not to capacity: measured against a 250 GiB disk, a new
    /// server's first tens of MiB and first shards were "not meaningful" and the registry
    /// showed 0 B and 0 shards until the periodic rewrite a minute later. Relative steps keep
    /// the entry rate bounded (at most one per heartbeat while a node fills, rarer as it grows)
    /// and still persist the first byte and the first shard at once.
    pub fn differs_meaningfully(&self, other: &Usage) -> bool {
        let moved = |a: u64, b: u64| a.abs_diff(b) > a.max(b) / 100;
        self.capacity_bytes != other.capacity_bytes
            || self.corrupt_shards != other.corrupt_shards
            || self.io_errors != other.io_errors
            || moved(self.used_bytes, other.used_bytes)
            || moved(self.available_bytes, other.available_bytes)
            || moved(self.shard_count, other.shard_count)
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

/// The key of a node's down-since time.
pub fn down_since_key(id: u128) -> Key {
    Key::new(DOWN_SINCE, id.to_be_bytes().to_vec())
}

/// Adds "down since `now_unix`" to a command that marks the node down.
pub fn record_down_since(p: &mut Prepared, id: u128, now_unix: u64) {
    p.write(Write::Put(
        down_since_key(id),
        now_unix.to_be_bytes().to_vec(),
    ));
}

/// When node `id` was last marked down, if ever.
pub fn down_since<S: KvSpace>(system: &KvReader<S>, id: u128) -> Result<Option<u64>, CatalogError> {
    system
        .get(&down_since_key(id))?
        .map(|v| {
            <[u8; 8]>::try_from(v.value.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| CatalogError::Corrupt {
                    what: "down-since entry",
                    reason: format!("value of {} bytes", v.value.len()),
                })
        })
        .transpose()
}

/// Every node's down-since time (only meaningful for nodes that are down).
pub fn down_since_all<S: KvSpace>(
    system: &KvReader<S>,
) -> Result<std::collections::HashMap<u128, u64>, CatalogError> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in system.list(DOWN_SINCE, b"", None, usize::MAX)? {
        let id = <[u8; 16]>::try_from(k.as_slice()).map(u128::from_be_bytes);
        let at = <[u8; 8]>::try_from(v.value.as_slice()).map(u64::from_be_bytes);
        match (id, at) {
            (Ok(id), Ok(at)) => {
                out.insert(id, at);
            }
            _ => {
                return Err(CatalogError::Corrupt {
                    what: "down-since entry",
                    reason: format!("key of {} bytes, value of {} bytes", k.len(), v.value.len()),
                });
            }
        }
    }
    Ok(out)
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

/// Marks a node removed for good (RemoveNode; the caller checked it holds nothing referenced).
/// `None` when it already is.
pub fn remove<S: KvSpace>(
    system: &KvReader<S>,
    id: u128,
) -> Result<Option<(Prepared, NodeRecord)>, RegistryError> {
    update_node(system, id, |n| n.admin = AdminState::Removed)
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
    #[error(
        "chunk server {} was removed from the cluster; its id is not reused. Its shards are no \
         longer referenced: wipe its data directory (or start it with --rejoin-when-removed) to \
         join as a new server",
        format_node_id(*.id)
    )]
    RegisterRemoved { id: u128 },
    #[error(
        "chunk server {} is active and up: drain it first (DrainNode, `dogfs admin drain`), \
         then remove it once it is empty",
        format_node_id(*.id)
    )]
    RemoveActive { id: u128 },
    #[error(
        "chunk server {} still holds {shards} shard(s) that objects reference{}; {}",
        format_node_id(*.id),
        if *.down { " and it is down" } else { "" },
        if *.down {
            "wait until repair has rebuilt them elsewhere (after repair_after), or bring it back"
        } else {
            "wait until the drain has moved them (NodeStatus shows what is left)"
        }
    )]
    RemoveNotEmpty { id: u128, shards: u64, down: bool },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, shards: u64) -> Usage {
        Usage {
            capacity_bytes: 250 << 30,
            used_bytes: used,
            available_bytes: (200 << 30) - used,
            shard_count: shards,
            ..Usage::default()
        }
    }

    #[test]
    fn first_bytes_and_first_shard_are_meaningful_on_a_big_disk() {
        // The reported bug: 10 MiB and one shard on a 250 GiB disk were below the threshold.
        assert!(usage(0, 0).differs_meaningfully(&usage(10 << 20, 0)));
        assert!(usage(0, 0).differs_meaningfully(&usage(0, 1)));
        assert!(usage(10 << 20, 1).differs_meaningfully(&usage(10 << 20, 2)));
    }

    #[test]
    fn small_relative_moves_are_not_meaningful() {
        assert!(!usage(0, 0).differs_meaningfully(&usage(0, 0)));
        let big = usage(100 << 30, 100_000);
        assert!(!big.differs_meaningfully(&usage((100 << 30) + (500 << 20), 100_500)));
        assert!(big.differs_meaningfully(&usage(102 << 30, 100_000)));
        assert!(big.differs_meaningfully(&usage(100 << 30, 102_000)));
    }

    #[test]
    fn capacity_and_error_counters_always_count() {
        let a = usage(1 << 30, 10);
        let b = Usage { io_errors: 1, ..a };
        assert!(a.differs_meaningfully(&b));
        let c = Usage {
            corrupt_shards: 1,
            ..a
        };
        assert!(a.differs_meaningfully(&c));
        let d = Usage {
            capacity_bytes: a.capacity_bytes + 1,
            ..a
        };
        assert!(a.differs_meaningfully(&d));
    }
}
