//! Drain progress and rebalance status as printable text and as JSON (the generated proto
//! types carry no serde), shared by `dogfs admin ...` and `dogfs cluster status`.

use dogfs_proto::meta::{DrainProgress, RebalanceState, RebalanceStatus};
use serde::Serialize;

use crate::cluster::ChunkNodeView;
use crate::human;

/// What is left on a draining server and what the mover did (`ChunkNode.drain`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrainView {
    pub shards_left: u64,
    pub bytes_left: u64,
    /// Moved off it by the current system-group leader since it took over.
    pub shards_moved: u64,
    pub bytes_moved: u64,
    /// Shards no server can take now; they wait for the cluster to change.
    pub shards_stuck: u64,
    pub failures: u64,
    /// When metadata last counted what is left (0: not yet since its leader took over).
    pub surveyed_unix: i64,
    /// Targets of pending uploads on the server; they do not hold a removal back.
    pub upload_shards: u64,
    /// Counted, and no object shard is left: the server may be removed.
    pub drained: bool,
}

impl From<&DrainProgress> for DrainView {
    fn from(d: &DrainProgress) -> Self {
        DrainView {
            shards_left: d.shards_left,
            bytes_left: d.bytes_left,
            shards_moved: d.shards_moved,
            bytes_moved: d.bytes_moved,
            shards_stuck: d.shards_stuck,
            failures: d.failures,
            surveyed_unix: d.surveyed_unix,
            upload_shards: d.upload_shards,
            // Until a survey, zero left only means "not counted yet".
            drained: d.surveyed_unix != 0 && d.shards_left == 0 && d.bytes_left == 0,
        }
    }
}

impl DrainView {
    /// One line: `surveying`, `empty: moved 12 shards (192.0 MiB)`, or `30 shards (480.0 MiB)
    /// left, moved 12 (192.0 MiB), 2 stuck, 1 failed attempts`.
    pub fn summary(&self) -> String {
        let moved = format!(
            "{} shards ({})",
            self.shards_moved,
            human::size(self.bytes_moved)
        );
        if self.surveyed_unix == 0 {
            return if self.shards_moved > 0 {
                format!("counting what is left; moved {moved}")
            } else {
                "counting what is left".to_owned()
            };
        }
        let uploads = if self.upload_shards > 0 {
            format!(
                " ({} pending upload targets, which do not hold a removal back)",
                self.upload_shards
            )
        } else {
            String::new()
        };
        if self.drained {
            return format!("empty: moved {moved}{uploads}");
        }
        let mut s = format!(
            "{} shards ({}) left, moved {moved}",
            self.shards_left,
            human::size(self.bytes_left)
        );
        if self.shards_stuck > 0 {
            s.push_str(&format!(
                ", {} stuck (no server can take them now)",
                self.shards_stuck
            ));
        }
        if self.failures > 0 {
            s.push_str(&format!(", {} failed attempts", self.failures));
        }
        s.push_str(&uploads);
        s
    }
}

/// The state of a chunk server for people: `drained` for a draining one with nothing left
/// (the registry keeps it `draining` until it is removed), else the registry's state.
pub fn shown_state(n: &ChunkNodeView) -> &str {
    match &n.drain {
        Some(d) if d.drained && n.state == "draining" => "drained",
        _ => &n.state,
    }
}

/// `dogfs admin nodes`: one row per chunk server, drain progress last.
pub fn render_admin_nodes(nodes: &[ChunkNodeView]) -> String {
    let row = |id: &str, addr: &str, zone: &str, state: &str, used: &str, cap: &str, pct: &str| {
        format!("{id:<32} {addr:<22} {zone:<8} {state:<9} {used:>10} {cap:>10} {pct:>5}")
    };
    let mut out = format!(
        "{} {:>8}  {}\n",
        row(
            "NODE", "ADDRESS", "ZONE", "STATE", "USED", "CAPACITY", "USE%"
        ),
        "SHARDS",
        "DRAIN"
    );
    for n in nodes {
        let pct = use_percent(n.used_bytes, n.capacity_bytes);
        let zone = if n.zone.is_empty() { "-" } else { &n.zone };
        let drain = n
            .drain
            .as_ref()
            .map_or_else(|| "-".to_owned(), DrainView::summary);
        out.push_str(&format!(
            "{} {:>8}  {drain}\n",
            row(
                &n.node_id,
                &n.address,
                zone,
                shown_state(n),
                &human::size(n.used_bytes),
                &human::size(n.capacity_bytes),
                &pct
            ),
            n.shard_count
        ));
    }
    out
}

fn use_percent(used: u64, capacity: u64) -> String {
    if capacity > 0 {
        format!("{:.0}%", used as f64 * 100.0 / capacity as f64)
    } else {
        "-".to_owned()
    }
}

/// `cluster status`: a section for the servers being drained, empty when there are none.
pub fn render_draining(nodes: &[ChunkNodeView]) -> String {
    let draining: Vec<(&ChunkNodeView, &DrainView)> = nodes
        .iter()
        .filter_map(|n| n.drain.as_ref().map(|d| (n, d)))
        .collect();
    if draining.is_empty() {
        return String::new();
    }
    let mut out = String::from("\ndraining:\n");
    for (n, d) in draining {
        out.push_str(&format!("  {} {}: {}\n", n.node_id, n.address, d.summary()));
    }
    out
}

/// `RebalanceStatus` (`admin rebalance ...` and `cluster status`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RebalanceView {
    /// `idle` (never started), `running`, `stopped`, `done` or `unknown`.
    pub state: String,
    /// Why it started: `admin` or `server joined`.
    pub reason: String,
    pub started_unix: i64,
    pub finished_unix: i64,
    pub spread_percent: f64,
    pub mean_used_percent: f64,
    pub max_deviation_percent: f64,
    pub shards_moved: u64,
    pub bytes_moved: u64,
    /// An estimate: what the last round planned and has not moved yet.
    pub bytes_planned: u64,
    pub failures: u64,
    /// Over the last minute, drains included.
    pub bytes_per_sec: f64,
}

pub fn rebalance_state_name(state: i32) -> &'static str {
    match RebalanceState::try_from(state) {
        Ok(RebalanceState::Idle) => "idle",
        Ok(RebalanceState::Running) => "running",
        Ok(RebalanceState::Stopped) => "stopped",
        Ok(RebalanceState::Done) => "done",
        Ok(RebalanceState::Unspecified) | Err(_) => "unknown",
    }
}

impl From<&RebalanceStatus> for RebalanceView {
    fn from(r: &RebalanceStatus) -> Self {
        RebalanceView {
            state: rebalance_state_name(r.state).to_owned(),
            reason: r.reason.clone(),
            started_unix: r.started_unix,
            finished_unix: r.finished_unix,
            spread_percent: r.spread_percent,
            mean_used_percent: r.mean_used_percent,
            max_deviation_percent: r.max_deviation_percent,
            shards_moved: r.shards_moved,
            bytes_moved: r.bytes_moved,
            bytes_planned: r.bytes_planned,
            failures: r.failures,
            bytes_per_sec: r.bytes_per_sec,
        }
    }
}

impl RebalanceView {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    fn moved(&self) -> String {
        format!(
            "moved {} shards ({})",
            self.shards_moved,
            human::size(self.bytes_moved)
        )
    }

    fn usage(&self) -> String {
        format!(
            "usage mean {:.1}%, max deviation {:.1} points (spread {:.1})",
            self.mean_used_percent, self.max_deviation_percent, self.spread_percent
        )
    }

    fn reason(&self) -> String {
        if self.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.reason)
        }
    }

    /// The one-line summary `cluster status` prints (and `admin` commands' confirmations).
    pub fn line(&self) -> String {
        let mut s = match self.state.as_str() {
            "idle" => return "idle (never started)".to_owned(),
            "running" => format!(
                "running{} since {}: {}, ~{} planned, {}/s",
                self.reason(),
                human::time(self.started_unix),
                self.moved(),
                human::size(self.bytes_planned),
                human::size(self.bytes_per_sec as u64)
            ),
            state => format!(
                "{state}{} at {}: {}",
                self.reason(),
                human::time(self.finished_unix),
                self.moved()
            ),
        };
        s.push_str(&format!("; {}", self.usage()));
        if self.failures > 0 {
            s.push_str(&format!("; {} failed moves", self.failures));
        }
        s
    }

    /// `admin rebalance status`: one field a line.
    pub fn render(&self) -> String {
        let rate = format!(
            "{}/s over the last minute (drains included)",
            human::size(self.bytes_per_sec as u64)
        );
        let lines = [
            format!("state:      {}{}", self.state, self.reason()),
            format!("started:    {}", human::time(self.started_unix)),
            format!("finished:   {}", human::time(self.finished_unix)),
            format!(
                "moved:      {} shards, {}",
                self.shards_moved,
                human::size(self.bytes_moved)
            ),
            format!(
                "planned:    {} not moved yet (estimate of the last round)",
                human::size(self.bytes_planned)
            ),
            format!("rate:       {rate}"),
            format!(
                "usage:      mean {:.1}%, max deviation {:.1} points; done within {:.1}",
                self.mean_used_percent, self.max_deviation_percent, self.spread_percent
            ),
            format!("failures:   {}", self.failures),
        ];
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use dogfs_proto::meta::{ChunkNode, NodeState, NodeUsage};

    pub(crate) fn node(i: u8, state: NodeState, drain: Option<DrainProgress>) -> ChunkNode {
        ChunkNode {
            node_id: format!("{i:02x}{}", "ab".repeat(15)),
            address: format!("10.0.0.{i}:7100"),
            zone: String::new(),
            state: state as i32,
            usage: Some(NodeUsage {
                capacity_bytes: 1 << 30,
                used_bytes: 1 << 28,
                shard_count: 16,
                ..Default::default()
            }),
            drain,
            ..Default::default()
        }
    }

    fn progress(left: u64, surveyed: i64) -> DrainProgress {
        DrainProgress {
            shards_left: left,
            bytes_left: left << 20,
            shards_moved: 12,
            bytes_moved: 12 << 20,
            shards_stuck: 0,
            failures: 0,
            surveyed_unix: surveyed,
            upload_shards: 0,
        }
    }

    #[test]
    fn drained_needs_a_survey_that_found_nothing() {
        assert!(!DrainView::from(&progress(0, 0)).drained);
        assert!(!DrainView::from(&progress(3, 1_800_000_000)).drained);
        assert!(DrainView::from(&progress(0, 1_800_000_000)).drained);
    }

    #[test]
    fn drain_summaries() {
        assert_eq!(
            DrainView::from(&progress(0, 0)).summary(),
            "counting what is left; moved 12 shards (12.0 MiB)"
        );
        assert_eq!(
            DrainView::from(&progress(0, 5)).summary(),
            "empty: moved 12 shards (12.0 MiB)"
        );
        let mut uploading = progress(0, 5);
        uploading.upload_shards = 2;
        let v = DrainView::from(&uploading);
        assert!(v.drained, "pending uploads do not hold a removal back");
        assert_eq!(
            v.summary(),
            "empty: moved 12 shards (12.0 MiB) (2 pending upload targets, which do not hold a \
             removal back)"
        );
        let mut p = progress(30, 5);
        p.shards_stuck = 2;
        p.failures = 1;
        assert_eq!(
            DrainView::from(&p).summary(),
            "30 shards (30.0 MiB) left, moved 12 shards (12.0 MiB), 2 stuck (no server can \
             take them now), 1 failed attempts"
        );
    }

    #[test]
    fn admin_table_shows_drain_progress_and_drained_state() {
        let nodes = [
            node(1, NodeState::Up, None),
            node(2, NodeState::Draining, Some(progress(30, 5))),
            node(3, NodeState::Draining, Some(progress(0, 5))),
        ];
        let views: Vec<ChunkNodeView> = nodes.iter().map(ChunkNodeView::from).collect();
        let text = render_admin_nodes(&views);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("NODE "), "{text}");
        assert!(lines[0].ends_with("SHARDS  DRAIN"), "{text}");
        assert!(
            lines[1].contains(" up ") && lines[1].ends_with("  -"),
            "{text}"
        );
        assert!(
            lines[1].contains("256.0 MiB") && lines[1].contains("25%"),
            "{text}"
        );
        assert!(lines[2].contains(" draining "), "{text}");
        assert!(lines[2].ends_with("30 shards (30.0 MiB) left, moved 12 shards (12.0 MiB)"));
        assert!(lines[3].contains(" drained "), "{text}");
        assert!(
            lines[3].ends_with("empty: moved 12 shards (12.0 MiB)"),
            "{text}"
        );
        // JSON keeps the registry's state and adds the progress.
        let json = serde_json::to_value(&views[1]).unwrap();
        assert_eq!(json["state"], "draining");
        assert_eq!(json["drain"]["shards_left"], 30);
        assert_eq!(json["drain"]["drained"], false);
        assert_eq!(
            serde_json::to_value(&views[0]).unwrap()["drain"],
            serde_json::Value::Null
        );
        assert_eq!(
            serde_json::to_value(&views[2]).unwrap()["drain"]["drained"],
            true
        );
        let section = render_draining(&views);
        assert!(section.starts_with("\ndraining:\n"), "{section}");
        assert_eq!(section.lines().count(), 4, "{section}");
        assert_eq!(render_draining(&views[..1]), "");
    }

    pub(crate) fn rebalance(state: RebalanceState) -> RebalanceStatus {
        RebalanceStatus {
            state: state as i32,
            reason: "server joined".into(),
            started_unix: 1_795_680_000,
            finished_unix: if state == RebalanceState::Running {
                0
            } else {
                1_795_680_600
            },
            spread_percent: 10.0,
            mean_used_percent: 41.25,
            max_deviation_percent: 12.5,
            shards_moved: 120,
            bytes_moved: 120 << 24,
            bytes_planned: 2 << 30,
            failures: 0,
            bytes_per_sec: (85 << 20) as f64,
        }
    }

    #[test]
    fn rebalance_lines() {
        let running = RebalanceView::from(&rebalance(RebalanceState::Running));
        assert!(running.is_running());
        assert_eq!(
            running.line(),
            "running (server joined) since 2026-11-26 08:00:00: moved 120 shards (1.9 GiB), \
             ~2.0 GiB planned, 85.0 MiB/s; usage mean 41.2%, max deviation 12.5 points \
             (spread 10.0)"
        );
        let mut done = rebalance(RebalanceState::Done);
        done.failures = 3;
        let done = RebalanceView::from(&done);
        assert!(!done.is_running());
        let line = done.line();
        assert!(
            line.starts_with("done (server joined) at 2026-11-26 08:10:00: moved 120"),
            "{line}"
        );
        assert!(line.ends_with("; 3 failed moves"), "{line}");
        let idle = RebalanceView::from(&RebalanceStatus {
            state: RebalanceState::Idle as i32,
            ..Default::default()
        });
        assert_eq!(idle.line(), "idle (never started)");
        assert_eq!(
            RebalanceView::from(&RebalanceStatus::default()).state,
            "unknown"
        );
        let text = running.render();
        for want in [
            "state:      running (server joined)",
            "finished:   -",
            "moved:      120 shards, 1.9 GiB",
            "planned:    2.0 GiB not moved yet",
            "rate:       85.0 MiB/s",
            "usage:      mean 41.2%, max deviation 12.5 points; done within 10.0",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let json = serde_json::to_value(&running).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(json["bytes_planned"], 2u64 << 30);
        assert_eq!(json["reason"], "server joined");
    }
}
