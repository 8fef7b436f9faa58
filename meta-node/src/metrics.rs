//! Prometheus metrics of a metadata node, served on `/metrics`. Group gauges are refreshed
//! from `Raft::metrics()` at scrape time, so they cost nothing between scrapes.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::raft::RaftHandle;
use crate::wal::SyncObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: String,
}

/// Counters of the Raft transport: `side` is `caller` (this node's outgoing calls) or
/// `callee` (the streams peers opened to it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub side: &'static str,
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: u64,
}

/// Every metric of the process, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rpcs: Family<RpcLabels, Counter>,
    pub rpc_seconds: Family<RpcLabels, Histogram>,
    pub wal_sync_seconds: Histogram,
    pub wal_syncs: Counter,
    /// Sum of WAL sync durations in microseconds (the histogram's sum, readable in-process).
    pub wal_sync_micros: Counter,
    pub forwarded: Counter,
    /// Linearizable reads served under a leader lease (no quorum round).
    pub lease_reads: Counter,
    /// Quorum rounds of the read index (a lease was missing or expired).
    pub read_index_rounds: Counter,
    pub gc_deleted: Counter,
    pub uploads_expired: Counter,
    /// Shards rebuilt and committed by the partitions this node leads, and their bytes.
    pub repair_shards: Counter,
    pub repair_bytes: Counter,
    pub repair_failures: Counter,
    /// Shard moves (drains and rebalancing) run by this node as the system group's leader.
    pub moved_shards: Counter,
    pub moved_bytes: Counter,
    pub move_failures: Counter,
    /// Shards queued for repair from scrubber and client reports.
    pub repair_reports: Counter,
    /// Orphan collection (`crate::orphans`): shards found on a chunk server that nothing
    /// references and that are past the grace period, and those of them queued for deletion
    /// (the GC then deletes them; `gc_shards_deleted` counts the deletions).
    pub orphans_found: Counter,
    pub orphans_deleted: Counter,
    /// From this node's last repair pass over the partitions it leads.
    pub repair_backlog: Gauge,
    pub repair_waiting: Gauge,
    pub repair_unreadable: Gauge,
    leader: Family<GroupLabel, Gauge>,
    term: Family<GroupLabel, Gauge>,
    commit: Family<GroupLabel, Gauge>,
    applied: Family<GroupLabel, Gauge>,
    apply_lag: Family<GroupLabel, Gauge>,
    transport: Family<TransportLabel, Gauge>,
    wal_synced_groups: Gauge,
    wal_synced_submissions: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("dogfs_meta");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "gRPC requests by method and status code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 20))
        });
        registry.register(
            "rpc_seconds",
            "gRPC request latency by method and status code",
            rpc_seconds.clone(),
        );
        // 20 µs .. ~10 s
        let wal_sync_seconds = Histogram::new(exponential_buckets(0.00002, 2.0, 20));
        registry.register(
            "wal_sync_seconds",
            "Duration of each WAL fdatasync (one per group-commit batch)",
            wal_sync_seconds.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let wal_syncs = counter("wal_syncs", "WAL fdatasync calls (group-commit batches)");
        let wal_sync_micros = Counter::default();
        let forwarded = counter(
            "forwarded_requests",
            "Requests forwarded to another node's leader",
        );
        let lease_reads = counter(
            "lease_reads",
            "Linearizable reads served under this node's leader lease, without a quorum round",
        );
        let read_index_rounds = counter(
            "read_index_rounds",
            "Read-index quorum rounds (no valid leader lease when a linearizable read came)",
        );
        let gc_deleted = counter(
            "gc_shards_deleted",
            "Shards deleted from chunk servers by garbage collection",
        );
        let uploads_expired = counter("uploads_expired", "Pending uploads expired");
        let repair_shards = counter(
            "repair_shards",
            "Shards rebuilt and recorded by the partitions this node leads",
        );
        let repair_bytes = counter("repair_bytes", "Bytes of shards rebuilt and recorded");
        let repair_failures = counter(
            "repair_failures",
            "Shard rebuilds that failed or could not be recorded",
        );
        let moved_shards = counter(
            "moved_shards",
            "Shards moved by drains and rebalancing and recorded (this node as system leader)",
        );
        let moved_bytes = counter("moved_bytes", "Bytes of shards moved and recorded");
        let move_failures = counter(
            "move_failures",
            "Shard moves that failed or could not be recorded",
        );
        let repair_reports = counter(
            "repair_reports",
            "Shards queued for repair from scrubber and client reports",
        );
        let orphans_found = counter(
            "orphans_found",
            "Shards on chunk servers referenced by nothing, past the orphan grace period",
        );
        let orphans_deleted = counter(
            "orphans_deleted",
            "Orphan shards queued for deletion by the garbage collector",
        );
        let mut plain_gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let repair_backlog = plain_gauge(
            "repair_backlog_segments",
            "Segments due for repair in the partitions this node leads (last pass)",
        );
        let repair_waiting = plain_gauge(
            "repair_waiting_segments",
            "Segments short of shards only on servers down for less than repair_after",
        );
        let repair_unreadable = plain_gauge(
            "repair_unreadable_segments",
            "Segments with fewer than k readable shards in the partitions this node leads",
        );
        let wal_synced_groups = plain_gauge(
            "wal_synced_groups",
            "Sum over WAL fdatasyncs of the Raft groups each made durable (divide by the syncs)",
        );
        let wal_synced_submissions = plain_gauge(
            "wal_synced_submissions",
            "Sum over WAL fdatasyncs of the record submissions each made durable",
        );
        let mut gauge = |name: &str, help: &str| {
            let f = Family::<GroupLabel, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let leader = gauge(
            "group_leader_id",
            "The group's leader as seen by this node (-1: unknown)",
        );
        let term = gauge("group_term", "The group's current term on this node");
        let commit = gauge(
            "group_commit_index",
            "Highest log index this node knows to be committed (its log end on followers)",
        );
        let applied = gauge("group_applied_index", "Last log index applied on this node");
        let apply_lag = gauge(
            "group_apply_lag",
            "Log entries written on this node and not yet applied",
        );
        let transport = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "raft_transport",
            "Raft transport counters since start: node-pair stream frames and messages sent and \
             received, streams opened, unary calls; side caller (outgoing) or callee (served)",
            transport.clone(),
        );
        Arc::new(Metrics {
            registry,
            rpcs,
            rpc_seconds,
            wal_sync_seconds,
            wal_syncs,
            wal_sync_micros,
            forwarded,
            lease_reads,
            read_index_rounds,
            gc_deleted,
            uploads_expired,
            repair_shards,
            repair_bytes,
            repair_failures,
            moved_shards,
            moved_bytes,
            move_failures,
            repair_reports,
            orphans_found,
            orphans_deleted,
            repair_backlog,
            repair_waiting,
            repair_unreadable,
            leader,
            term,
            commit,
            applied,
            apply_lag,
            transport,
            wal_synced_groups,
            wal_synced_submissions,
        })
    }

    /// The WAL hook that feeds `wal_sync_seconds`.
    pub fn sync_observer(self: &Arc<Self>) -> SyncObserver {
        let (h, n) = (self.wal_sync_seconds.clone(), self.wal_syncs.clone());
        let us = self.wal_sync_micros.clone();
        SyncObserver(Arc::new(move |d: Duration| {
            h.observe(d.as_secs_f64());
            n.inc();
            us.inc_by(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }))
    }

    /// Counts one RPC.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            method,
            code: format!("{code:?}"),
        };
        self.rpcs.get_or_create(&labels).inc();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Refreshes the group gauges and renders everything in the OpenMetrics text format.
    pub fn render(&self, raft: &RaftHandle) -> Result<String, std::fmt::Error> {
        for group in raft.group_ids() {
            let Ok(r) = raft.raft(group) else { continue };
            let m = r.metrics().borrow().clone();
            let l = GroupLabel { group };
            let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.leader
                .get_or_create(&l)
                .set(m.current_leader.map_or(-1, as_i64));
            self.term.get_or_create(&l).set(as_i64(m.current_term));
            let applied = m.last_applied.map_or(0, |id| id.index);
            let last = m.last_log_index.unwrap_or(0);
            self.commit.get_or_create(&l).set(as_i64(last.max(applied)));
            self.applied.get_or_create(&l).set(as_i64(applied));
            self.apply_lag
                .get_or_create(&l)
                .set(as_i64(last.saturating_sub(applied)));
        }
        let (caller, callee) = raft.transport_counts();
        for (side, c) in [("caller", caller), ("callee", callee)] {
            for (what, v) in [
                ("frames_sent", c.frames_sent),
                ("messages_sent", c.messages_sent),
                ("frames_received", c.frames_received),
                ("messages_received", c.messages_received),
                ("streams_opened", c.streams_opened),
                ("unary_calls", c.unary_calls),
            ] {
                self.transport
                    .get_or_create(&TransportLabel { side, what })
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        if let Some(w) = raft.wal_stats() {
            self.wal_synced_groups
                .set(i64::try_from(w.synced_groups).unwrap_or(i64::MAX));
            self.wal_synced_submissions
                .set(i64::try_from(w.synced_submissions).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
