//! `dogfs cluster status|nodes`: the admin API's answers as printable tables and as JSON
//! (the generated proto types carry no serde, so this module mirrors the fields it shows).

use dogfs_proto::meta::{ChunkNode, ClusterStatusResponse, ErasureScheme, NodeState, RepairStatus};
use serde::Serialize;

use crate::admin::view::{DrainView, RebalanceView, render_draining};
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
    /// Absent from metadata nodes older than the repair service.
    pub repair: Option<RepairView>,
    /// As the system group's leader reports it; absent when it is unreachable (and from
    /// metadata nodes older than the mover).
    pub rebalance: Option<RebalanceView>,
}

/// Redundancy and repair (DESIGN §7): segments short of shards by how many are left, the
/// backlog and the rate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RepairView {
    /// Only segments short of shards; every other segment has all k+m.
    pub degraded: Vec<RedundancyView>,
    pub unreadable_segments: u64,
    pub backlog_segments: u64,
    pub waiting_segments: u64,
    pub repaired_shards: u64,
    pub repaired_bytes: u64,
    pub repair_bytes_per_sec: f64,
    pub repair_failures: u64,
    pub orphans_deleted: u64,
    pub min_write_shards: u32,
    pub repair_after_secs: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RedundancyView {
    pub shards_left: u32,
    pub shards_total: u32,
    pub segments: u64,
}

impl From<&RepairStatus> for RepairView {
    fn from(r: &RepairStatus) -> Self {
        RepairView {
            degraded: r
                .degraded
                .iter()
                .map(|d| RedundancyView {
                    shards_left: d.shards_left,
                    shards_total: d.shards_total,
                    segments: d.segments,
                })
                .collect(),
            unreadable_segments: r.unreadable_segments,
            backlog_segments: r.backlog_segments,
            waiting_segments: r.waiting_segments,
            repaired_shards: r.repaired_shards,
            repaired_bytes: r.repaired_bytes,
            repair_bytes_per_sec: r.repair_bytes_per_sec,
            repair_failures: r.repair_failures,
            orphans_deleted: r.orphans_deleted,
            min_write_shards: r.min_write_shards,
            repair_after_secs: r.repair_after_secs,
        }
    }
}

impl RepairView {
    fn render(&self) -> String {
        let mut out = String::from(
            "
redundancy and repair:
",
        );
        if self.degraded.is_empty() {
            out.push_str(
                "  every segment has all its shards
",
            );
        }
        for d in &self.degraded {
            let what = if d.shards_left + 1 >= d.shards_total {
                "one shard short"
            } else {
                "short of shards"
            };
            out.push_str(&format!(
                "  {:>8} segments with {}/{} shards ({what})
",
                d.segments, d.shards_left, d.shards_total
            ));
        }
        if self.unreadable_segments > 0 {
            out.push_str(&format!(
                "  {:>8} segments UNREADABLE until a server returns (fewer than k shards left)
",
                self.unreadable_segments
            ));
        }
        out.push_str(&format!(
            "  backlog: {} segments being repaired, {} waiting for repair_after ({} s); \
             write quorum {} shards\n",
            self.backlog_segments,
            self.waiting_segments,
            self.repair_after_secs,
            self.min_write_shards
        ));
        out.push_str(&format!(
            "  repaired: {} shards, {} ({}/s over the last minute); {} failed attempts; {} \
             orphans deleted\n",
            self.repaired_shards,
            human::size(self.repaired_bytes),
            human::size(self.repair_bytes_per_sec as u64),
            self.repair_failures,
            self.orphans_deleted
        ));
        out
    }
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
    /// Scrubber: completed passes and progress through the current one (0..=1).
    pub scrub_passes: u64,
    pub scrub_progress: f64,
    /// When it was marked down (0 unless down).
    pub down_since_unix: i64,
    /// While draining, or drained and not yet removed: what is left and what was moved.
    pub drain: Option<DrainView>,
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
            scrub_passes: n.scrub_passes,
            scrub_progress: n.scrub_progress,
            down_since_unix: n.down_since_unix,
            drain: n.drain.as_ref().map(DrainView::from),
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
            repair: s.repair.as_ref().map(RepairView::from),
            rebalance: s.rebalance.as_ref().map(RebalanceView::from),
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
        if let Some(r) = &self.repair {
            out.push_str(&r.render());
        }
        out.push_str(&render_draining(&self.chunk_nodes));
        if let Some(r) = &self.rebalance {
            out.push_str(&format!("\nrebalance: {}\n", r.line()));
        }
        out.push_str("\nchunk servers:\n");
        out.push_str(&render_nodes(&self.chunk_nodes));
        out
    }
}

/// The chunk server table (`cluster status` and `cluster nodes`).
pub fn render_nodes(nodes: &[ChunkNodeView]) -> String {
    let mut out = format!(
        "  {:<32} {:<22} {:<8} {:<9} {:>10} {:>10} {:>5} {:>8} {:>12} {}\n",
        "NODE",
        "ADDRESS",
        "ZONE",
        "STATE",
        "USED",
        "CAPACITY",
        "USE%",
        "SHARDS",
        "SCRUB",
        "LAST HEARTBEAT"
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
        // Passes done, then how far into the current one.
        let scrub = format!(
            "{}+{:.0}%",
            n.scrub_passes,
            n.scrub_progress.clamp(0.0, 1.0) * 100.0
        );
        out.push_str(&format!(
            "  {:<32} {:<22} {:<8} {:<9} {:>10} {:>10} {:>5} {:>8} {:>12} {}\n",
            n.node_id,
            n.address,
            zone,
            n.state,
            human::size(n.used_bytes),
            human::size(n.capacity_bytes),
            pct,
            n.shard_count,
            scrub,
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
            rebalance: None,
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

    #[test]
    fn renders_redundancy_backlog_and_scrub() {
        let mut st = status(&[Some(1)], &[NodeState::Up, NodeState::Down]);
        st.chunk_nodes[0].scrub_passes = 3;
        st.chunk_nodes[0].scrub_progress = 0.25;
        st.repair = Some(RepairStatus {
            degraded: vec![
                dogfs_proto::meta::RedundancyCount {
                    shards_left: 4,
                    shards_total: 6,
                    segments: 2,
                },
                dogfs_proto::meta::RedundancyCount {
                    shards_left: 5,
                    shards_total: 6,
                    segments: 17,
                },
            ],
            unreadable_segments: 1,
            backlog_segments: 18,
            waiting_segments: 1,
            repaired_shards: 40,
            repaired_bytes: 40 << 20,
            repair_bytes_per_sec: (2 << 20) as f64,
            repair_failures: 2,
            orphans_deleted: 5,
            min_write_shards: 5,
            repair_after_secs: 600,
        });
        let v = StatusView::from(&st);
        let text = v.render();
        for want in [
            "2 segments with 4/6 shards (short of shards)",
            "17 segments with 5/6 shards (one shard short)",
            "1 segments UNREADABLE",
            "18 segments being repaired, 1 waiting for repair_after (600 s); write quorum 5",
            "repaired: 40 shards, 40.0 MiB (2.0 MiB/s over the last minute); 2 failed",
            "5 orphans deleted",
            "3+25%",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(json["repair"]["degraded"][1]["shards_left"], 5);
        assert_eq!(json["repair"]["backlog_segments"], 18);
        assert_eq!(json["chunk_nodes"][0]["scrub_passes"], 3);
        let healthy = StatusView::from(&status(&[Some(1)], &[NodeState::Up])).render();
        assert!(!healthy.contains("redundancy"), "{healthy}");
        assert!(!healthy.contains("draining"), "{healthy}");
        assert!(!healthy.contains("rebalance"), "{healthy}");
    }

    #[test]
    fn renders_drain_progress_and_the_rebalance() {
        let mut st = status(&[Some(1)], &[NodeState::Up, NodeState::Draining]);
        st.chunk_nodes[1].drain = Some(dogfs_proto::meta::DrainProgress {
            shards_left: 7,
            bytes_left: 7 << 24,
            shards_moved: 3,
            bytes_moved: 3 << 24,
            shards_stuck: 1,
            failures: 0,
            surveyed_unix: 1_795_680_000,
            upload_shards: 0,
        });
        st.rebalance = Some(dogfs_proto::meta::RebalanceStatus {
            state: dogfs_proto::meta::RebalanceState::Running as i32,
            reason: "admin".into(),
            started_unix: 1_795_680_000,
            bytes_moved: 5 << 30,
            shards_moved: 320,
            bytes_planned: 1 << 30,
            bytes_per_sec: (100 << 20) as f64,
            spread_percent: 10.0,
            mean_used_percent: 40.0,
            max_deviation_percent: 15.0,
            ..Default::default()
        });
        let v = StatusView::from(&st);
        let text = v.render();
        for want in [
            "\ndraining:\n",
            &format!(
                "  {} 127.0.0.1:7101: 7 shards (112.0 MiB) left, moved 3 shards (48.0 MiB), 1 \
                 stuck",
                st.chunk_nodes[1].node_id
            ),
            "\nrebalance: running (admin) since ",
            "moved 320 shards (5.0 GiB), ~1.0 GiB planned, 100.0 MiB/s; usage mean 40.0%, \
             max deviation 15.0 points (spread 10.0)",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(json["chunk_nodes"][1]["drain"]["shards_left"], 7);
        assert_eq!(
            json["chunk_nodes"][1]["drain"]["surveyed_unix"],
            1_795_680_000
        );
        assert_eq!(json["chunk_nodes"][0]["drain"], serde_json::Value::Null);
        assert_eq!(json["rebalance"]["state"], "running");
        assert_eq!(json["rebalance"]["bytes_moved"], 5u64 << 30);
        assert_eq!(json["rebalance"]["bytes_per_sec"], f64::from(100u32 << 20));
        // Older servers: no rebalance, and JSON says so with null.
        let old = StatusView::from(&status(&[Some(1)], &[NodeState::Up]));
        assert_eq!(
            serde_json::to_value(&old).unwrap()["rebalance"],
            serde_json::Value::Null
        );
    }
}
