//! `dogfs cluster status|nodes`: the admin API's answers as printable tables and as JSON
//! (the generated proto types carry no serde, so this module mirrors the fields it shows).

use dogfs_proto::meta::{ChunkNode, ClusterStatusResponse, ErasureScheme, NodeState};
use serde::Serialize;

use crate::human;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusView {
    pub answered_by: u64,
    pub meta_nodes: Vec<MetaNodeView>,
    pub groups: Vec<GroupView>,
    pub chunk_nodes: Vec<ChunkNodeView>,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub default_scheme: Option<SchemeView>,
    pub partitions: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetaNodeView {
    pub node_id: u64,
    pub address: String,
    pub reachable: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupView {
    pub group_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkNodeView {
    pub node_id: String,
    pub address: String,
    pub zone: String,
    /// `up`, `suspect`, `down`, `draining`, `removed` or `unknown`.
    pub state: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub shard_count: u64,
    pub corrupt_shards: u64,
    pub io_errors: u64,
    pub registered_unix: i64,
    pub last_heartbeat_unix: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SchemeView {
    pub codec: String,
    pub k: u32,
    pub m: u32,
    pub cell_size: u64,
}

impl From<&ErasureScheme> for SchemeView {
    fn from(s: &ErasureScheme) -> Self {
        SchemeView {
            codec: s.codec.clone(),
            k: s.k,
            m: s.m,
            cell_size: s.cell_size,
        }
    }
}

impl std::fmt::Display for SchemeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}+{}, {} cells",
            self.codec,
            self.k,
            self.m,
            human::size(self.cell_size)
        )
    }
}

pub fn state_name(state: i32) -> &'static str {
    match NodeState::try_from(state) {
        Ok(NodeState::Up) => "up",
        Ok(NodeState::Suspect) => "suspect",
        Ok(NodeState::Down) => "down",
        Ok(NodeState::Draining) => "draining",
        Ok(NodeState::Removed) => "removed",
        Ok(NodeState::Unspecified) | Err(_) => "unknown",
    }
}

impl From<&ChunkNode> for ChunkNodeView {
    fn from(n: &ChunkNode) -> Self {
        let usage = n.usage.unwrap_or_default();
        ChunkNodeView {
            node_id: n.node_id.clone(),
            address: n.address.clone(),
            zone: n.zone.clone(),
            state: state_name(n.state).to_owned(),
            capacity_bytes: usage.capacity_bytes,
            used_bytes: usage.used_bytes,
            available_bytes: usage.available_bytes,
            shard_count: usage.shard_count,
            corrupt_shards: usage.corrupt_shards,
            io_errors: usage.io_errors,
            registered_unix: n.registered_unix,
            last_heartbeat_unix: n.last_heartbeat_unix,
        }
    }
}

impl From<&ClusterStatusResponse> for StatusView {
    fn from(s: &ClusterStatusResponse) -> Self {
        StatusView {
            answered_by: s.node_id,
            meta_nodes: s
                .meta_nodes
                .iter()
                .map(|n| MetaNodeView {
                    node_id: n.node_id,
                    address: n.address.clone(),
                    reachable: n.reachable,
                })
                .collect(),
            groups: s
                .groups
                .iter()
                .map(|g| GroupView {
                    group_id: g.group_id,
                    leader_id: g.leader_id,
                    term: g.term,
                    commit_index: g.commit_index,
                    applied_index: g.applied_index,
                })
                .collect(),
            chunk_nodes: s.chunk_nodes.iter().map(ChunkNodeView::from).collect(),
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            available_bytes: s.available_bytes,
            default_scheme: s.default_scheme.as_ref().map(SchemeView::from),
            partitions: s.partitions,
        }
    }
}

impl StatusView {
    /// Every group has a leader and `chunks` chunk servers are up: what `dogfs dev` waits for.
    pub fn is_ready(&self, chunks: usize) -> bool {
        !self.groups.is_empty()
            && self.groups.iter().all(|g| g.leader_id.is_some())
            && self.chunk_nodes.iter().filter(|n| n.state == "up").count() >= chunks
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let up = self.chunk_nodes.iter().filter(|n| n.state == "up").count();
        let led = self.groups.iter().filter(|g| g.leader_id.is_some()).count();
        out.push_str(&format!(
            "cluster: {} metadata nodes, {}/{} groups with a leader, {}/{} chunk servers up\n",
            self.meta_nodes.len(),
            led,
            self.groups.len(),
            up,
            self.chunk_nodes.len()
        ));
        out.push_str(&format!(
            "storage: {} used of {}, {} available",
            human::size(self.used_bytes),
            human::size(self.capacity_bytes),
            human::size(self.available_bytes)
        ));
        if let Some(s) = &self.default_scheme {
            out.push_str(&format!("; default scheme {s}"));
        }
        out.push_str(&format!("; {}\n", human::partitions(self.partitions)));
        out.push_str(&format!(
            "\nmetadata nodes (answered by {}):\n",
            self.answered_by
        ));
        out.push_str(&format!(
            "  {:<6} {:<24} {}\n",
            "ID", "ADDRESS", "REACHABLE"
        ));
        for n in &self.meta_nodes {
            out.push_str(&format!(
                "  {:<6} {:<24} {}\n",
                n.node_id,
                n.address,
                if n.reachable { "yes" } else { "NO" }
            ));
        }
        out.push_str("\ngroups:\n");
        out.push_str(&format!(
            "  {:<12} {:<8} {:>6} {:>10} {:>10}\n",
            "GROUP", "LEADER", "TERM", "COMMIT", "APPLIED"
        ));
        for g in &self.groups {
            let name = if g.group_id == 0 {
                "0 (system)".to_owned()
            } else {
                g.group_id.to_string()
            };
            let leader = g
                .leader_id
                .map_or_else(|| "none".to_owned(), |l| l.to_string());
            out.push_str(&format!(
                "  {:<12} {:<8} {:>6} {:>10} {:>10}\n",
                name, leader, g.term, g.commit_index, g.applied_index
            ));
        }
        out.push_str("\nchunk servers:\n");
        out.push_str(&render_nodes(&self.chunk_nodes));
        out
    }
}

/// The chunk server table (`cluster status` and `cluster nodes`).
pub fn render_nodes(nodes: &[ChunkNodeView]) -> String {
    let mut out = format!(
        "  {:<32} {:<22} {:<8} {:<9} {:>10} {:>10} {:>5} {:>8} {}\n",
        "NODE", "ADDRESS", "ZONE", "STATE", "USED", "CAPACITY", "USE%", "SHARDS", "LAST HEARTBEAT"
    );
    for n in nodes {
        let pct = if n.capacity_bytes > 0 {
            format!(
                "{:.0}%",
                n.used_bytes as f64 * 100.0 / n.capacity_bytes as f64
            )
        } else {
            "-".to_owned()
        };
        let zone = if n.zone.is_empty() { "-" } else { &n.zone };
        out.push_str(&format!(
            "  {:<32} {:<22} {:<8} {:<9} {:>10} {:>10} {:>5} {:>8} {}\n",
            n.node_id,
            n.address,
            zone,
            n.state,
            human::size(n.used_bytes),
            human::size(n.capacity_bytes),
            pct,
            n.shard_count,
            human::time(n.last_heartbeat_unix)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use dogfs_proto::meta::{GroupStatus, MetaNodeStatus, NodeUsage};

    fn status(leaders: &[Option<u64>], states: &[NodeState]) -> ClusterStatusResponse {
        ClusterStatusResponse {
            node_id: 1,
            meta_nodes: vec![MetaNodeStatus {
                node_id: 1,
                address: "127.0.0.1:7000".into(),
                reachable: true,
            }],
            groups: leaders
                .iter()
                .enumerate()
                .map(|(i, l)| GroupStatus {
                    group_id: i as u64,
                    leader_id: *l,
                    term: 2,
                    commit_index: 10,
                    applied_index: 10,
                })
                .collect(),
            chunk_nodes: states
                .iter()
                .enumerate()
                .map(|(i, s)| ChunkNode {
                    node_id: format!("{i:032x}"),
                    address: format!("127.0.0.1:{}", 7100 + i),
                    zone: String::new(),
                    state: *s as i32,
                    usage: Some(NodeUsage {
                        capacity_bytes: 1 << 30,
                        used_bytes: 1 << 29,
                        ..Default::default()
                    }),
                    registered_unix: 1,
                    last_heartbeat_unix: 1_795_680_000,
                    ..Default::default()
                })
                .collect(),
            capacity_bytes: 6 << 30,
            used_bytes: 3 << 29,
            available_bytes: 1 << 30,
            default_scheme: Some(ErasureScheme {
                codec: "rs".into(),
                k: 4,
                m: 2,
                cell_size: 1 << 20,
            }),
            partitions: 2,
            repair: None,
        }
    }

    #[test]
    fn ready_needs_every_leader_and_enough_servers_up() {
        let up = [NodeState::Up; 2];
        assert!(StatusView::from(&status(&[Some(1), Some(2), Some(3)], &up)).is_ready(2));
        assert!(!StatusView::from(&status(&[Some(1), None, Some(3)], &up)).is_ready(2));
        let one_down = [NodeState::Up, NodeState::Suspect];
        assert!(!StatusView::from(&status(&[Some(1)], &one_down)).is_ready(2));
        assert!(!StatusView::from(&status(&[], &up)).is_ready(2));
    }

    #[test]
    fn renders_and_serialises() {
        let v = StatusView::from(&status(&[Some(1), None], &[NodeState::Up, NodeState::Down]));
        let text = v.render();
        assert!(
            text.contains("1/2 groups with a leader, 1/2 chunk servers up"),
            "{text}"
        );
        assert!(text.contains("0 (system)"), "{text}");
        assert!(text.contains("none"), "{text}");
        assert!(text.contains("down"), "{text}");
        assert!(text.contains("rs 4+2, 1.0 MiB cells"), "{text}");
        assert!(text.contains("50%"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(json["chunk_nodes"][1]["state"], "down");
        assert_eq!(json["groups"][1]["leader_id"], serde_json::Value::Null);
        assert_eq!(json["default_scheme"]["k"], 4);
    }
}
